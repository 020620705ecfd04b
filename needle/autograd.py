"""Reverse-mode automatic differentiation: Value, Tensor, TensorOp and backward.

A Tensor is a node of the op graph: it remembers the op that made it and its inputs, and
holds its value as an NDArray (``cached_data``). ``backward()`` walks the graph in reverse
topological order, asking each op for the gradients of its inputs.
"""
import contextlib
import numbers

import numpy as np

from . import backend_ndarray as nd
from .backend_ndarray import NDArray
from .errors import DeviceMismatchError

_GRAD_ENABLED = [True]


class no_grad(contextlib.ContextDecorator):  # noqa: N801 - named like a function, as in PyTorch
    """Within this block (or decorated function), ops record no graph: inference, optimizer
    updates, backward. A class rather than a generator: entering costs ~0.3 us, not ~2."""

    def __enter__(self):
        _GRAD_ENABLED.append(False)
        return self

    def __exit__(self, *exc):
        _GRAD_ENABLED.pop()
        return False


def grad_enabled():
    return _GRAD_ENABLED[-1]


class Op:
    """An operation on Values: ``compute`` on NDArrays and ``gradient`` as Tensor ops."""

    def __call__(self, *args):
        raise NotImplementedError

    def compute(self, *args):
        """Forward on raw NDArrays; returns an NDArray (or a tuple for tuple ops)."""
        raise NotImplementedError

    def gradient(self, out_grad, node):
        """Gradients of the output w.r.t. each input, as Tensors, given ``out_grad``."""
        raise NotImplementedError

    def gradient_as_tuple(self, out_grad, node):
        grad = self.gradient(out_grad, node)
        return tuple(grad) if isinstance(grad, (tuple, list)) else (grad,)


class Value:
    """A node of the graph: an op, its inputs and its computed value. Values are computed
    eagerly, when made (``make_from_op``), so ``cached_data`` is always set."""

    op = None
    inputs = ()
    cached_data = None
    requires_grad = False

    def realize_cached_data(self):
        if self.cached_data is None:
            self.cached_data = self.op.compute(*[x.realize_cached_data() for x in self.inputs])
        return self.cached_data

    def is_leaf(self):
        return self.op is None

    def _init_leaf(self, cached_data, requires_grad):
        self.op, self.inputs = None, []
        self.cached_data, self.requires_grad = cached_data, requires_grad

    @classmethod
    def make_const(cls, data, requires_grad=False):
        value = cls.__new__(cls)
        value._init_leaf(data, requires_grad)
        return value

    @classmethod
    def make_from_op(cls, op, inputs):
        # runs on every op: plain loops, and no graph bookkeeping when nothing will
        # differentiate through the result
        device, data = None, []
        for x in inputs:
            d = x.cached_data  # inputs were computed when they were made
            data.append(d)
            if isinstance(x, Tensor):
                if device is None:
                    device = d._device
                elif d._device is not device and d._device != device:
                    raise DeviceMismatchError(
                        f"{type(op).__name__}: inputs are on different devices ({device} and "
                        f"{d._device}); move them with .to()")
        value = cls.__new__(cls)
        value.cached_data = op.compute(*data)
        if _GRAD_ENABLED[-1]:
            for x in inputs:
                if x.requires_grad:
                    value.op, value.inputs, value.requires_grad = op, list(inputs), True
                    break
        return value


class TensorOp(Op):
    """An op whose output is a single Tensor."""

    def __call__(self, *args):
        return Tensor.make_from_op(self, args)


class TensorTupleOp(Op):
    """An op whose output is a tuple of Tensors (``split``)."""

    def __call__(self, *args):
        return TensorTuple.make_from_op(self, args)


class TensorTuple(Value):
    """A tuple of Tensors as one graph node (the input of stack/concatenate)."""

    def __len__(self):
        return len(self.realize_cached_data())

    def __getitem__(self, index):
        from .ops import tuple_get_item
        return tuple_get_item(self, index)

    def tuple(self):
        return tuple(self[i] for i in range(len(self)))

    @property
    def device(self):
        return self.realize_cached_data()[0].device

    def detach(self):
        return TensorTuple.make_const(self.realize_cached_data())

    def __repr__(self):
        return f"needle.TensorTuple({self.tuple()})"


class Tensor(Value):
    """An n-dimensional array that records the ops applied to it, for ``backward()``.

    Args:
        array: a Tensor, NDArray, numpy array or nested list.
        device: a Needle device (default: the array's device, else ``needle.default_device()``).
        dtype: ``"float32"`` or ``"float64"``; by default float32 for host data (lists,
            numpy arrays) and the source's dtype for a Tensor or NDArray.
        requires_grad: whether gradients flow to this tensor.

    Example:
        >>> x = needle.Tensor([[1.0, 2.0]], device=needle.cpu())
        >>> (x * x).sum().backward()
        >>> x.grad.numpy()
        array([[2., 4.]], dtype=float32)
    """

    grad = None

    def __init__(self, array, *, device=None, dtype=None, requires_grad=True):
        if isinstance(array, Tensor):
            array = array.realize_cached_data()
        if isinstance(array, NDArray):
            data = array.to(device or array.device).astype(dtype or array.dtype)
            if data is array:
                data = NDArray(array)  # a Tensor never aliases its source's buffer
        else:
            data = NDArray(np.asarray(array), device=device, dtype=dtype or "float32")
        self._init_leaf(data, requires_grad)

    @staticmethod
    def make_const(data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.realize_cached_data()
        return Value.make_const.__func__(Tensor, data, requires_grad)

    # -- data access ----------------------------------------------------------------------
    @property
    def data(self):
        """The value without its history (shares the buffer)."""
        return self.detach()

    @data.setter
    def data(self, value):
        value = value.realize_cached_data() if isinstance(value, Tensor) else value
        if value.shape != self.shape or value.dtype != self.dtype:
            raise ValueError(f"assigning data of shape {value.shape} / {value.dtype} to a tensor "
                             f"of shape {self.shape} / {self.dtype}")
        self.cached_data = value

    def detach(self):
        return Tensor.make_const(self.realize_cached_data())

    # read on every op: straight to the NDArray's fields (a value is computed when made)
    shape = property(lambda self: self.cached_data._shape)
    dtype = property(lambda self: self.cached_data._dtype)
    device = property(lambda self: self.cached_data._device)
    ndim = property(lambda self: len(self.cached_data._shape))
    size = property(lambda self: self.cached_data.size)

    def numpy(self):
        return self.realize_cached_data().numpy()

    def to(self, device):
        """A copy of this tensor's value on ``device`` (no history)."""
        return Tensor(self.realize_cached_data().to(device), requires_grad=self.requires_grad)

    def item(self):
        return self.numpy().item()

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"needle.Tensor({self.numpy()}, device={self.device})"

    def __str__(self):
        return str(self.numpy())

    # -- autograd -------------------------------------------------------------------------
    def backward(self, out_grad=None):
        """Accumulate d(self)/d(leaf) into ``.grad`` of every leaf that requires grad.

        ``out_grad`` defaults to ones (so a scalar loss needs none). As in PyTorch, leaf
        gradients accumulate across calls: the optimizer's ``reset_grad()`` clears them.
        """
        if out_grad is None:
            out_grad = Tensor(nd.full(self.shape, 1.0, dtype=self.dtype, device=self.device),
                              requires_grad=False)
        elif out_grad.shape != self.shape:
            raise ValueError(f"backward: out_grad shape {out_grad.shape} differs from the "
                             f"tensor's shape {self.shape}")
        compute_gradient_of_variables(self, out_grad)

    # -- operators (implemented in needle.ops; imported lazily to avoid a cycle) ------------
    def __add__(self, other):
        return _ops().add(self, other)

    def __sub__(self, other):
        return _ops().subtract(self, other)

    def __rsub__(self, other):
        return _ops().add_scalar(_ops().negate(self), other)

    def __mul__(self, other):
        return _ops().multiply(self, other)

    def __truediv__(self, other):
        return _ops().divide(self, other)

    def __rtruediv__(self, other):
        return _ops().mul_scalar(_ops().power_scalar(self, -1.0), other)

    def __pow__(self, other):
        if not isinstance(other, numbers.Number):
            raise TypeError("Tensor ** needs a Python number exponent (power_scalar)")
        return _ops().power_scalar(self, other)

    def __neg__(self):
        return _ops().negate(self)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __getitem__(self, index):
        return _ops().get_item(self, index)

    __radd__ = __add__
    __rmul__ = __mul__

    def sum(self, axes=None, keepdims=False):
        return _ops().summation(self, axes, keepdims)

    def max(self, axes=None, keepdims=False):
        return _ops().max(self, axes, keepdims)

    def reshape(self, *shape):
        return _ops().reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def transpose(self, axes=None):
        return _ops().transpose(self, axes)

    def permute(self, *axes):
        return _ops().permute(self, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes)

    def broadcast_to(self, shape):
        return _ops().broadcast_to(self, shape)

    def relu(self):
        return _ops().relu(self)

    def exp(self):
        return _ops().exp(self)

    def log(self):
        return _ops().log(self)

    @property
    def T(self):
        return _ops().transpose(self)


_OPS = None


def _ops():
    """needle.ops (which imports this module), imported once: every Tensor operator asks."""
    global _OPS
    if _OPS is None:
        from . import ops
        _OPS = ops
    return _OPS


def find_topo_sort(node_list):
    """Nodes reachable from ``node_list`` in topological order (iterative post-order DFS)."""
    order, visited = [], set()
    for root in node_list:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            stack.extend((x, False) for x in reversed(node.inputs) if id(x) not in visited)
    return order


def compute_gradient_of_variables(output_tensor, out_grad):
    """Reverse-mode sweep from ``output_tensor``; sets ``.grad`` on nodes needing it."""
    grads = {id(output_tensor): [out_grad]}
    with no_grad():
        for node in reversed(find_topo_sort([output_tensor])):
            parts = grads.pop(id(node), None)
            if parts is None:
                continue
            grad = _sum_grads(parts)
            if node.is_leaf():
                if node.requires_grad:
                    node.grad = grad if node.grad is None else (node.grad + grad).detach()
                    node.grad = node.grad.detach()
                continue
            for inp, g in zip(node.inputs, node.op.gradient_as_tuple(grad, node)):
                if inp.requires_grad and g is not None:
                    grads.setdefault(id(inp), []).append(g)


class SparseTupleGrad:
    """The gradient of a TensorTuple from indexing it: only some entries are non-zero.

    Keeping it sparse until all contributions are summed avoids building a full tuple of
    zeros per index (quadratic for an RNN that splits a sequence into time steps)."""

    def __init__(self, entries, like):
        self.entries, self.like = entries, like


def _sum_grads(parts):
    if not any(isinstance(p, (SparseTupleGrad, TensorTuple)) for p in parts):
        grad = parts[0]
        for g in parts[1:]:
            grad = grad + g
        return grad
    from .ops import make_tuple
    entries, like = {}, None
    for p in parts:
        if isinstance(p, TensorTuple):
            p = SparseTupleGrad(dict(enumerate(p.tuple())), p)
        like = p.like
        for i, g in p.entries.items():
            entries[i] = g if i not in entries else entries[i] + g
    values = like.realize_cached_data()
    return make_tuple(*[entries[i] if i in entries else
                        Tensor.make_const(nd.full(v.shape, 0.0, v.dtype, v.device))
                        for i, v in enumerate(values)])
