"""A small helper that appends IR nodes to a graph: types inferred, scalars shared."""
import numpy as np

from ..ops import add_node


class Builder:
    """Appends nodes to ``graph`` (attributes as keywords; the op table checks them)."""

    def __init__(self, graph):
        self.graph = graph
        self._scalars = {}  # (dtype, bits) -> the one constant node of that scalar

    def emit(self, op, inputs, **attrs):
        node = add_node(self.graph, op, inputs, attrs)
        return node.outputs[0] if len(node.outputs) == 1 else node.outputs

    def constant(self, array):
        return self.emit("constant", [], value=np.array(array))

    def scalar(self, value, dtype):
        """A rank-0 constant, one node per distinct (dtype, value)."""
        array = np.array(value, dtype=dtype)
        key = (dtype, array.tobytes())
        if key not in self._scalars:
            self._scalars[key] = self.constant(array)
        return self._scalars[key]

    def full(self, value, shape, dtype):
        return self.broadcast(self.scalar(value, dtype), shape)

    def broadcast(self, scalar, shape):
        """A rank-0 value broadcast to ``shape``."""
        shape = list(shape)
        return self.emit("broadcast_in_dim", [scalar], broadcast_dimensions=[], shape=shape) \
            if shape else scalar

    def reshape(self, value, shape):
        shape = tuple(int(d) for d in shape)
        if value.shape == shape:
            return value
        return self.emit("reshape", [value], shape=list(shape))

    def take(self, flat, positions):
        """``flat[positions[:, 0]]`` of a rank-1 value with constant int64 positions."""
        return self.emit("gather", [flat, self.constant(positions)], offset_dims=[],
                         collapsed_slice_dims=[0], start_index_map=[0], index_vector_dim=1,
                         slice_sizes=[1])

    def scatter(self, flat, positions, updates, computation):
        """``flat`` with ``updates`` added into (``"add"``) or written over (``"replace"``)
        its elements ``positions[:, 0]``: rank-1 values, constant int64 positions."""
        return self.emit("scatter", [flat, self.constant(positions), updates],
                         update_window_dims=[], inserted_window_dims=[0],
                         scatter_dims_to_operand_dims=[0], index_vector_dim=1,
                         computation=computation)

    def reduce(self, value, dims, computation, init):
        return self.emit("reduce", [value, self.scalar(init, value.dtype)],
                         dimensions=list(dims), computation=computation)
