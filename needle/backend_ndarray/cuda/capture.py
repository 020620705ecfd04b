"""A call's device work recorded once as a CUDA graph and launched on later calls.

Two users: ``needle.compile`` (a whole compiled call, :class:`DeviceGraph`) and the eager
LSTM layer ops (:class:`StaticReplays`, a graph on buffers of its own).

``needle.compile`` replays a compiled call on cuda and cudnn through :class:`DeviceGraph`:

1. ``with graph.priming():`` the call runs for real once on the graph's own stream, so
   every plan is tuned (for the GPU time it takes inside a graph), every kernel compiled
   and every workspace sized (none of which a capture may do);
2. :meth:`DeviceGraph.reserve` puts one free block per buffer still held back on that
   stream's free list, so that
3. :meth:`DeviceGraph.record`, which runs the same call again under stream capture (in
   relaxed mode: nothing is executed, every launch, cuBLASLt and cuDNN call is recorded),
   finds every buffer it allocates on the list: no allocation reaches CUDA during capture;
4. :meth:`DeviceGraph.launch` queues the whole graph on the current stream (one call).

Memory: CudaBuffers allocated on the graph's stream go back to that stream's free list
(memory.py keys blocks by stream), which only this graph's own call allocates from; after
the recording the graph takes those blocks off the shared lists, so the addresses
recorded in it stay its own until it is released.
"""
import contextlib
import ctypes

from . import launch
from .memory import CudaBuffer, _Blocks

_RELAXED = 2  # CU_STREAM_CAPTURE_MODE_RELAXED
#: pinned host buffers a graph's scalar uploads rotate through (see DeviceGraph.upload)
STAGING_BUFFERS = 8
_P = ctypes.c_void_p


class _Capture:
    """Whether a capture is under way: cuBLASLt then calls GEMMs directly (its per-GEMM
    graphs cannot be launched inside another capture). ``kept`` collects the buffers
    uploaded from the host during it (index arrays, constant for the graph): they are
    filled at once, outside the graph, and live as long as the graph. ``priming``: the
    run before a recording is under way (libraries tune for time on the GPU alone)."""

    active = False
    kept = None
    priming = False


def capturing():
    return _Capture.active


def for_graph():
    """Whether the work queued now runs inside a device graph: the recording, or the run
    that primes it. Inside a graph the host issues nothing per call, so a library picks
    its algorithm by GPU time alone."""
    return _Capture.active or _Capture.priming


def _driver():
    """libcuda with the graph calls' argument types set (they are not on a hot path but
    cuGraphLaunch, and converting two pointers costs well under a microsecond)."""
    lib = launch.driver()
    if not hasattr(lib, "_needle_graphs"):
        for name, args in (("cuStreamBeginCapture_v2", [_P, ctypes.c_int]),
                           ("cuStreamEndCapture", [_P, ctypes.POINTER(_P)]),
                           ("cuGraphGetNodes", [_P, _P, ctypes.POINTER(ctypes.c_size_t)]),
                           ("cuGraphInstantiateWithFlags", [ctypes.POINTER(_P), _P,
                                                            ctypes.c_ulonglong]),
                           ("cuGraphLaunch", [_P, _P]), ("cuGraphExecDestroy", [_P]),
                           ("cuMemcpyHtoDAsync_v2", [ctypes.c_ulonglong, _P, ctypes.c_size_t,
                                                     _P]),
                           ("cuGraphDestroy", [_P])):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
        lib._needle_graphs = True
    return lib


def _check(result, what):
    if result:
        raise RuntimeError(f"{what} failed: {launch.error_text(result)}")


class DeviceGraph:
    """One recorded call (see the module docstring). Needs CuPy and a GPU.

    Attributes:
        stream: the CuPy stream the call runs and is recorded on.
        nodes: the recorded graph's node count (kernels, copies, fills), once recorded.
    """

    def __init__(self):
        import cupy

        self._cuda = cupy.cuda
        self._lib = _driver()
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._exec = self.nodes = None
        self._kept = []  # memory the graph uses: uploads while recording, its free blocks
        self._uploaded, self._staging, self._next = {}, None, 0  # see upload()

    @contextlib.contextmanager
    def priming(self):
        """``with graph.priming():`` the run before :meth:`record`, on this graph's stream:
        everything it tunes, builds and allocates is then ready for the recording."""
        with self.stream:
            outer, _Capture.priming = _Capture.priming, True
            try:
                yield
            finally:
                _Capture.priming = outer

    def reserve(self, buffers):
        """A free block on this graph's stream for each of ``buffers`` (CudaBuffers the
        first run left alive, which the recording run will need again)."""
        with self.stream:
            for buf in buffers:
                if buf.nbytes:
                    CudaBuffer(buf.size, buf.dtype)  # dropped at once: kept on our list

    def record(self, fn):
        """Record what ``fn()`` queues (it runs on this graph's stream, under capture) and
        return its result. Raises what the capture raised; nothing is left half-done."""
        lib, stream = self._lib, _P(self.stream.ptr)
        self._cuda.Device().synchronize()  # earlier work first: the graph waits on nothing
        graph = _P()
        with self.stream:
            _check(lib.cuStreamBeginCapture_v2(stream, _RELAXED), "cuStreamBeginCapture")
            _Capture.active, _Capture.kept = True, self._kept
            try:
                result = fn()
            finally:
                _Capture.active, _Capture.kept = False, None
                ended = lib.cuStreamEndCapture(stream, ctypes.byref(graph))
        try:
            _check(ended, "recording the call (cuStreamEndCapture)")
            count = ctypes.c_size_t()
            _check(lib.cuGraphGetNodes(graph, None, ctypes.byref(count)), "cuGraphGetNodes")
            exec_ = _P()
            _check(lib.cuGraphInstantiateWithFlags(ctypes.byref(exec_), graph, 0),
                   "cuGraphInstantiate")
        finally:
            if graph.value:
                lib.cuGraphDestroy(graph)
        self._exec, self.nodes = exec_, count.value
        self._own_blocks()
        self._launch = lib.cuGraphLaunch
        self._upload = lib.cuMemcpyHtoDAsync_v2
        return result

    def _own_blocks(self):
        """Take this stream's free blocks off the shared lists: the graph's temporaries
        live there, and the lists are emptied back into CuPy's pool when memory runs out
        (memory.py), which would hand the addresses to other buffers."""
        ptr = self.stream.ptr
        for key in [k for k in _Blocks.free if k[0] == ptr]:
            blocks = _Blocks.free.pop(key)
            _Blocks.cached_bytes -= key[1] * len(blocks)
            self._kept.extend(blocks)

    def launch(self):
        """Queue the recorded work on the current stream."""
        result = self._launch(self._exec, self._stream())
        if result:
            _check(result, "cuGraphLaunch")

    def upload(self, dst, array):
        """Copy host ``array`` (C-contiguous, the same size on every call) to ``dst`` on the
        current stream, if its bytes differ from the last upload (``dst`` is the graph's
        own input: nothing else writes it).

        Through pinned staging buffers, used in turn: from pageable memory CUDA would wait
        for the stream to finish first, and the host could never run ahead of the GPU. A
        buffer is reused once the copy that last read it has run (its event)."""
        data = array.tobytes()
        if data == self._uploaded.get(dst):
            return
        self._uploaded.pop(dst, None)
        if self._staging is None:
            self._staging = [(self._cuda.alloc_pinned_memory(max(len(data), 8)),
                              self._cuda.Event(block=False, disable_timing=True))
                             for _ in range(STAGING_BUFFERS)]
        memory, event = self._staging[self._next]
        self._next = (self._next + 1) % STAGING_BUFFERS
        event.synchronize()  # (long done, unless the GPU is STAGING_BUFFERS calls behind)
        ctypes.memmove(memory.ptr, data, len(data))
        stream = self._cuda.get_current_stream()
        result = self._upload(dst, memory.ptr, len(data), _P(stream.ptr))
        if result:
            _check(result, "cuMemcpyHtoDAsync")
        event.record(stream)
        self._uploaded[dst] = data

    def _stream(self):
        return _P(self._cuda.get_current_stream().ptr)

    def __del__(self):
        if _Blocks is None or not hasattr(self, "stream"):
            return
        if self._exec is not None:
            try:  # the memory goes back once no queued launch can still use it
                self._cuda.runtime.deviceSynchronize()
            except Exception:  # noqa: BLE001 - at interpreter exit CUDA may be gone
                pass
            self._lib.cuGraphExecDestroy(self._exec)
            self._exec = None
        self._own_blocks()  # (buffers freed since the recording came back to our list)
        self._kept = []


class StaticReplays:
    """An eager backend call that issues many launches (an LSTM layer: a product and a cell
    kernel per time step) replayed as one :class:`DeviceGraph` recorded on buffers of its
    own: per call, the inputs are copied into the graph's buffers, the graph is launched
    and its outputs are copied out (two copy launches: the caller's addresses change from
    call to call, the graph's do not). The graph for a key is recorded on the key's second
    call; a key seen once runs directly, as does everything inside needle.compile's own
    recording. At most ``limit`` keys keep a graph (each holds copies of its buffers).

    Args:
        backend: the CudaBackend whose ``copy_ranges`` moves the buffers.
    """

    def __init__(self, backend, limit=8):
        self.backend, self.limit = backend, limit
        self.graphs, self.seen, self.failed = {}, set(), False

    def run(self, key, call, inputs, outputs):
        """``call(*inputs, *outputs)``; ``outputs`` must be written whole by the call. The
        key must name everything the work depends on but the buffers (shapes, dtype)."""
        if for_graph() or self.failed:
            call(*inputs, *outputs)
            return
        entry = self.graphs.get(key)
        if entry is None:
            if key not in self.seen:
                if len(self.seen) >= 16 * self.limit:
                    self.seen.clear()
                self.seen.add(key)
                call(*inputs, *outputs)
                return
            entry = self._record(key, call, inputs, outputs)
            if entry is None:
                call(*inputs, *outputs)
                return
        else:
            graph, own_in, own_out = entry
            self._copy(own_in, inputs)
            graph.launch()
        self._copy(outputs, entry[2])

    def _record(self, key, call, inputs, outputs):
        """Prime and record the call on fresh buffers holding this call's inputs; returns
        ``(graph, own inputs, own outputs)``, the outputs holding this call's results, or
        None where the recording failed (this call and every later one then run
        directly)."""
        own_in = [CudaBuffer(b.size, b.dtype) for b in inputs]
        own_out = [CudaBuffer(b.size, b.dtype) for b in outputs]
        self._copy(own_in, inputs)
        graph = DeviceGraph()
        graph._cuda.Device().synchronize()  # the graph's stream does not wait on the caller's
        with graph.priming():
            call(*own_in, *own_out)  # this call's results, every plan tuned and compiled
        try:
            graph.record(lambda: call(*own_in, *own_out))
        except Exception:  # noqa: BLE001 - whatever refused the capture: direct calls
            self.failed = True
            return None
        if len(self.graphs) >= self.limit:  # (a graph freed while queued waits for it: __del__)
            self.graphs.clear()
        self.graphs[key] = entry = (graph, own_in, own_out)
        return entry

    def _copy(self, dst, src):
        self.backend.copy_ranges([(d.ptr, s.ptr, s.nbytes) for d, s in zip(dst, src) if s.nbytes])
