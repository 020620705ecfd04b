"""A compiled call replayed as one recorded device graph (a CUDA graph on cuda and cudnn).

:class:`GraphReplay` holds the executor of a compiled graph and, after its first call,
the device's recording of that call (``backend.device_graph()``, see
``needle/backend_ndarray/cuda/capture.py``). Its inputs are fixed buffers: the state a
graph reads (parameters, optimizer buffers) is always the same buffers (the guards check
it), and each argument and the runtime-scalar vector are copied into a buffer of the
replay's own before the launch. The values the call returns are copied out of the
graph's buffers after it, so what call k returned survives call k+1.

The first call runs the executor for real on the graph's stream (it tunes, compiles and
allocates what it needs), the recording follows at once and later calls launch it: one
launch between two copy kernels (``backend.copy_ranges``: the arguments in, the returned
values out). Optimizer updates read their scalars
on the device (``Executor(host_scalars=False)``): the recording holds no host value.
"""
import warnings

import numpy as np

from ..backend_ndarray import NDArray
from .codegen.cuda import address
from .executor import Executor


class GraphReplay:
    """``replay(inputs)`` runs the graph's call (inputs as :meth:`Program.bind` gives
    them) and returns the executor's outputs (the aliased ones written in place).

    Args:
        graph: the optimized graph.
        device: a device whose backend ``records_graphs``.
        state: ``{input position: NDArray}`` the inputs that are the same buffers on every
            call (they are recorded as they are); the others are copied in.
        returned: how many leading outputs the caller gets (the rest are aliased to
            inputs and stay in the graph's buffers).
        executor_options: passed on to :class:`~needle.compiler.executor.Executor`.
    """

    def __init__(self, graph, device, state, returned, **executor_options):
        self.executor = Executor(graph, device, host_scalars=False, **executor_options)
        self.device, self.backend = device, device.backend
        self.state, self.returned = state, returned
        self.info = self.executor.info
        self._graph = None
        self._inputs = self._outputs = None
        self.failed = None  # why recording failed; then every call runs the executor

    def __call__(self, inputs):
        """A call on ``inputs`` as :meth:`Program.bind` gives them (the first records)."""
        if self._graph is not None:
            scalars = None
            for i, a in enumerate(inputs):
                if isinstance(a, np.ndarray):
                    scalars = a
            return self.launch([a for i, a in enumerate(inputs) if i not in self.state and
                                not isinstance(a, np.ndarray)], scalars)
        if self.failed is not None:
            return self.executor(*inputs)
        return self._record(inputs)

    @property
    def recorded(self):
        return self._graph is not None

    def launch(self, arguments, scalars):
        """A recorded call on ``arguments`` (the NDArrays of the call's Tensor arguments,
        in graph-input order) and the runtime-scalar vector (NumPy, or None): one copy
        kernel for the arguments, the launch, one copy kernel for the results."""
        graph, backend = self._graph, self.backend
        backend.copy_ranges([(ptr, data._handle.ptr, nbytes) for (ptr, nbytes), data
                             in zip(self._argument_slots, arguments)])
        if scalars is not None:
            graph.upload(self._scalar_slot, scalars.astype(self._scalar_dtype, copy=False))
        graph.launch()
        for buf in self._written:  # (the launch wrote them: data derived from them is stale)
            buf.wrote()
        out, ranges = [], []
        for o, nbytes in self._returned:
            if nbytes is None:
                out.append(NDArray(o))
                continue
            copy = NDArray.make(o.shape, device=self.device, dtype=o.dtype)
            ranges.append((copy._handle.ptr, address(o), nbytes))
            out.append(copy)
        if ranges:
            backend.copy_ranges(ranges)
        return out

    def _fast_slots(self, inputs):
        """Where :meth:`launch` copies each argument and the scalar vector, and how it
        copies each returned output (None: a strided view, copied by NDArray)."""
        graph_inputs = self.executor.graph.inputs
        self._argument_slots, self._scalar_slot = [], None
        for i, (a, static) in enumerate(zip(inputs, self._inputs)):
            if i in self.state:
                continue
            if isinstance(a, np.ndarray):
                self._scalar_slot = static._handle.ptr
                self._scalar_dtype = np.dtype(self.executor.storage(graph_inputs[i]))
            else:
                if a._handle.nbytes != static._handle.nbytes or a.dtype != static.dtype:
                    return False
                self._argument_slots.append((static._handle.ptr, static._handle.nbytes))
        self._returned = [(o, o.size * np.dtype(o.dtype).itemsize if o.is_compact() else None)
                          for o in self._outputs[:self.returned]]
        return True

    def _copy_in(self, static, value):
        if isinstance(value, np.ndarray):
            static._handle.wrote()
            self.backend.from_numpy(value, static._handle)
        else:
            static[...] = value

    def _record(self, inputs):
        """The first call: run on the graph's stream, then record the same call."""
        ex = self.executor
        arguments_written = [i for i in ex.graph.aliases.values() if i not in self.state]
        if arguments_written:  # a launch would write the replay's copy, not the argument
            self.failed = (f"the call writes argument input {arguments_written[0]} in "
                           f"place; it runs op by op")
            return ex(*inputs)
        self._inputs = [
            a if i in self.state else
            NDArray.make(a.shape, device=self.device, dtype=ex.storage(ex.graph.inputs[i]))
            for i, a in enumerate(inputs)]
        for i, a in enumerate(inputs):
            if i not in self.state:
                self._copy_in(self._inputs[i], a)
        graph = self.backend.device_graph()
        self.backend.synchronize()  # (the copies in, queued on the current stream, first)
        with graph.priming():
            outputs = ex(*self._inputs)
        graph.stream.synchronize()  # (the current stream reads its results next)
        first = [NDArray(o) for o in outputs[:self.returned]]  # the caller's own buffers
        graph.reserve([o._handle for o in outputs[:self.returned]])
        del outputs
        # data a backend derives from an input (cuDNN's packed conv weights) is derived
        # inside the recording, so each launch derives it from the input as it is then
        for a in self._inputs:
            a._handle.wrote()
        aliased = set(ex.graph.aliases.values())
        self._written = [a._handle for i, a in self.state.items() if i in aliased]
        try:
            self._outputs = graph.record(lambda: ex(*self._inputs))
            for a in self._inputs:  # (what the recording derived was never computed)
                a._handle.wrote()
            if not self._fast_slots(inputs):
                raise ValueError("an argument's buffer differs from the graph's input")
        except Exception as e:  # noqa: BLE001 - the executor still runs the call correctly
            self.failed = f"{type(e).__name__}: {e}"
            self._inputs = self._outputs = None
            warnings.warn(f"needle.compile: the call could not be recorded as a device "
                          f"graph ({self.failed}); it runs op by op", stacklevel=4)
            return first
        self._graph = graph
        return first

    def stats(self):
        """``device_graph`` (recorded, or why not), ``graph_launches_per_call`` and
        ``graph_nodes`` (the kernels, copies and fills one launch runs)."""
        if self._graph is None:
            return {"device_graph": self.failed or "not yet recorded",
                    "graph_launches_per_call": 0}
        return {"device_graph": "recorded", "graph_launches_per_call": 1,
                "graph_nodes": self._graph.nodes}

