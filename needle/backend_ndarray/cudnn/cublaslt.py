"""GEMMs on cuBLASLt through nvmath-python's low-level bindings (``nvmath.bindings.cublasLt``).

cuBLASLt is column-major. A row-major ``(m, k) @ (k, n)`` product is the column-major
product ``(n, k) @ (k, m)`` of the same buffers, so every caller swaps its operands and no
data moves. Transposed operands are a flag, so the backward products of a Linear layer need
no transposed copies.

A *plan* (descriptors, layouts and an algorithm) is built once per shape, dtype, precision,
epilogue and operand alignment and then reused: running one is a single ``cublasLt.matmul``
call. The algorithm is autotuned on the plan's first call: cuBLASLt's heuristic proposes up
to :data:`CANDIDATES` and the fastest on the real operands, run as an eager loop runs them,
wins (the heuristic's first choice ran 1024^3-4096^3 fp32 at 0.92x cuBLAS on an H100, and
thin shapes at 0.5x). That is why this module uses the bindings rather than
``nvmath.linalg.advanced.Matmul``, whose Python layer costs ~59 µs per call.

Even so, ``cublasLtMatmul`` costs the host 8-14 µs a call on the lent H200, as long as a
thin GEMM runs on the GPU. An eager loop calls each GEMM on the same addresses step after
step (weights stay put, and freed buffers are reused per size), so a plan may *replay*:
the second call on a tuple of addresses captures the call into a CUDA graph, and later
calls on that tuple launch the graph (~3 µs). The tuner turns replay on for a plan only
where it measured faster (:class:`_Replays`).

Inside a device graph (``needle.compile``'s recorded calls, see ``cuda/capture.py``) none of
that host time exists: there a plan runs ``graph_algo``, the fastest of up to
:data:`GRAPH_CANDIDATES` proposals by GPU time alone, timed on the priming run as a CUDA
graph of back-to-back calls. For the thin GEMMs of a batch-64 MLP that is usually a
split-K algorithm the eager tuner rejects for its second launch.
"""
import functools
import time

import numpy as np

from ..cuda.capture import capturing, for_graph

#: cuBLASLt scratch space; 32 MiB is what NVIDIA recommends on Hopper
WORKSPACE_BYTES = 32 << 20
#: epilogue names of :meth:`CublasLt.gemm` -> cublasLt.Epilogue members
EPILOGUES = {"none": "DEFAULT", "bias": "BIAS", "relu": "RELU_BIAS", "gelu": "GELU_BIAS",
             "bgrada": "BGRADA"}
PRECISIONS = ("highest", "tf32", "bf16")
#: algorithms the heuristic proposes per plan (it rarely has more), timed on first use:
#: best of TUNING_SAMPLES windows of ~TUNING_WINDOW_MS of calls back to back (at most
#: TUNING_MAX_CALLS), so a 20 us GEMM is tuned in ~5 ms and a 4096^3 one in ~0.1 s
CANDIDATES, TUNING_SAMPLES, TUNING_WINDOW_MS, TUNING_MAX_CALLS = 8, 3, 0.2, 20
#: inside a device graph (needle.compile's replays) the host issues nothing per GEMM and
#: only GPU time counts: up to GRAPH_CANDIDATES proposals are timed as GRAPH_TUNING_CALLS
#: back-to-back calls in one CUDA graph (best of TUNING_SAMPLES launches)
GRAPH_CANDIDATES, GRAPH_TUNING_CALLS = 32, 8
#: ... until the timed launches of one plan have taken GRAPH_TUNING_MS (a large GEMM is
#: tuned over the heuristic's first proposals only)
GRAPH_TUNING_MS = 200.0
#: host time Needle adds to each eager GEMM around cuBLASLt's call (``Tensor @ Tensor`` took
#: 14.0 us on the lent H200's host, 8.0 of them in cublasLtMatmul, measured 2026-11-30)
EAGER_HOST_MS = 0.006
#: a plan replays graphs where that ran an eager loop at most REPLAY_GAIN of the direct
#: call's time; it keeps at most REPLAY_GRAPHS graphs (then starts over)
REPLAY_GAIN, REPLAY_GRAPHS = 0.97, 64
_ITEMSIZE = {"float32": 4, "float64": 8}


class Unsupported(Exception):
    """cuBLASLt has no algorithm for this GEMM (e.g. an epilogue with float64)."""


@functools.lru_cache(maxsize=None)
def _bindings():
    from nvmath import CudaDataType
    from nvmath.bindings import cublas, cublasLt

    return cublasLt, cublas, CudaDataType


def _alignment(*addresses):
    """The largest power of two (<= 256) dividing every address: what cuBLASLt may assume."""
    align = 256
    for a in addresses:
        while a % align:
            align //= 2
    return align


class _Plan:
    """Descriptors and the chosen algorithm of one GEMM configuration."""

    def __init__(self, handle, key):
        lt, cublas, cuda_dtype = _bindings()
        (dtype, precision, ta, tb, m, n, k, lda, ldb, ldd, batch, strides, epilogue,
         align) = key
        data = cuda_dtype.CUDA_R_64F if dtype == "float64" else cuda_dtype.CUDA_R_32F
        if dtype == "float64":
            compute = cublas.ComputeType.COMPUTE_64F
        else:
            compute = {"highest": cublas.ComputeType.COMPUTE_32F,
                       "tf32": cublas.ComputeType.COMPUTE_32F_FAST_TF32,
                       "bf16": cublas.ComputeType.COMPUTE_32F_FAST_16BF}[precision]
        self._owned = []  # (destroy function, handle) pairs released in close()
        self.desc = self._make(lt.matmul_desc_create(compute, data), lt.matmul_desc_destroy)
        A = lt.MatmulDescAttribute
        _set(lt.matmul_desc_set_attribute, lt.get_matmul_desc_attribute_dtype, self.desc,
             A.TRANSA, 1 if ta else 0)
        _set(lt.matmul_desc_set_attribute, lt.get_matmul_desc_attribute_dtype, self.desc,
             A.TRANSB, 1 if tb else 0)
        _set(lt.matmul_desc_set_attribute, lt.get_matmul_desc_attribute_dtype, self.desc,
             A.EPILOGUE, int(getattr(lt.Epilogue, EPILOGUES[epilogue])))
        # stored shapes (before the transpose flags) of A, B and D, column-major
        a_shape = (k, m) if ta else (m, k)
        b_shape = (n, k) if tb else (k, n)
        self.layouts = [self._layout(data, rows, cols, ld, batch, stride)
                        for (rows, cols), ld, stride in zip((a_shape, b_shape, (m, n)),
                                                            (lda, ldb, ldd), strides)]
        pref = self._make(lt.matmul_preference_create(), lt.matmul_preference_destroy)
        P = lt.MatmulPreferenceAttribute
        _set(lt.matmul_preference_set_attribute, lt.get_matmul_preference_attribute_dtype, pref,
             P.MAX_WORKSPACE_BYTES, WORKSPACE_BYTES)
        for attr in (P.MIN_ALIGNMENT_A_BYTES, P.MIN_ALIGNMENT_B_BYTES, P.MIN_ALIGNMENT_C_BYTES,
                     P.MIN_ALIGNMENT_D_BYTES):
            _set(lt.matmul_preference_set_attribute, lt.get_matmul_preference_attribute_dtype,
                 pref, attr, align)
        self.results = lt.MatmulHeuristicResult(GRAPH_CANDIDATES)
        count = np.zeros(1, dtype=np.int32)
        a_desc, b_desc, d_desc = self.layouts
        try:
            lt.matmul_algo_get_heuristic(handle, self.desc, a_desc, b_desc, d_desc, d_desc, pref,
                                         GRAPH_CANDIDATES, self.results.ptr,
                                         count.ctypes.data)
        except lt.cuBLASLtError as e:  # NOT_SUPPORTED for this combination
            self.close()
            raise Unsupported(f"{key}: {e}") from None
        if count[0] == 0:
            self.close()
            raise Unsupported(f"no cuBLASLt algorithm for {key}")
        # the algorithm is the first member of each cublasLtMatmulHeuristicResult_t
        size = lt.matmul_heuristic_result_dtype.itemsize
        self.candidates = [self.results.ptr + i * size for i in range(int(count[0]))]
        self.algo = self.candidates[0]
        self.tuned = False  # whether self.algo is the eager loop's fastest (tune())
        self.graph_algo = None  # the fastest inside a device graph, once timed
        one = np.float64 if dtype == "float64" else np.float32
        self.alpha, self.beta = np.ones(1, dtype=one), np.zeros(1, dtype=one)
        self.bias_attr = int(A.BIAS_POINTER) if epilogue != "none" else None
        self.replays = None  # _Replays, where the tuner found graph replay faster
        self.bias_value = np.zeros(1, dtype=np.uint64)  # the epilogue's vector's address
        # ... as last set on the descriptor; 0 (the address callers pass) with no epilogue
        self.bias = None if epilogue != "none" else 0
        # host addresses read on every call (numpy's .ctypes costs a microsecond or so)
        self.alpha_ptr, self.beta_ptr = self.alpha.ctypes.data, self.beta.ctypes.data
        self.bias_value_ptr = self.bias_value.ctypes.data

    def _make(self, handle, destroy):
        self._owned.append((destroy, handle))
        return handle

    def _layout(self, data, rows, cols, ld, batch, stride):
        lt = _bindings()[0]
        layout = self._make(lt.matrix_layout_create(data, rows, cols, ld),
                            lt.matrix_layout_destroy)
        if batch > 1:
            L = lt.MatrixLayoutAttribute
            _set(lt.matrix_layout_set_attribute, lt.get_matrix_layout_attribute_dtype, layout,
                 L.BATCH_COUNT, batch)
            _set(lt.matrix_layout_set_attribute, lt.get_matrix_layout_attribute_dtype, layout,
                 L.STRIDED_BATCH_OFFSET, stride)
        return layout

    def tune(self, run):
        """Keep the heuristic's first :data:`CANDIDATES` proposal that runs an eager loop
        fastest; ``run(algo)`` launches the GEMM with that algorithm."""
        if len(self.candidates) > 1:
            self.algo = fastest(self.candidates[:CANDIDATES], run)
        self.tuned = True

    def close(self):
        for destroy, handle in reversed(self._owned):
            destroy(handle)
        self._owned.clear()


def _per_call_ms(call, calls):
    """(GPU, host) milliseconds per call of ``calls`` calls issued back to back: between CUDA
    events, and the host's time to issue them."""
    import cupy

    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    began = time.perf_counter()
    for _ in range(calls):
        call()
    issued = time.perf_counter() - began
    stop.record()
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) / calls, issued * 1e3 / calls


def eager_ms(call, per_call_ms=_per_call_ms):
    """Milliseconds per call that an eager loop of ``call`` takes.

    Such a loop takes, per GEMM, the longer of the GPU's time and the host's: the call
    plus :data:`EAGER_HOST_MS` of Needle's own. ``call`` runs once to load its kernels, once
    to estimate its time, then the best of :data:`TUNING_SAMPLES` windows of
    ~:data:`TUNING_WINDOW_MS` of calls back to back counts.
    """
    call()
    estimate = max(per_call_ms(call, 1))
    calls = max(1, min(TUNING_MAX_CALLS, int(TUNING_WINDOW_MS / max(estimate, 1e-3))))
    return min(max(gpu, host + EAGER_HOST_MS)
               for gpu, host in (per_call_ms(call, calls) for _ in range(TUNING_SAMPLES)))


def fastest(candidates, run, per_call_ms=_per_call_ms):
    """The candidate that runs an eager loop of these GEMMs fastest (:func:`eager_ms`).

    Timed one call at a time instead, a thin GEMM's best algorithm loses to one that looks
    faster alone but launches a split-K reduction (64x1024x4096 on an H200: 20.4 us back to
    back for the best, 23.3 for the single-call choice). At 32x512x2048 the host sets the
    pace, and a one-kernel algorithm (7.9 us to issue) beats split-K ones (9.5 us) that are
    faster on the GPU.
    """
    scores = [(eager_ms(lambda algo=algo: run(algo), per_call_ms), i)
              for i, algo in enumerate(candidates)]
    return candidates[min(scores)[1]]


class _Replays:
    """CUDA graphs of one plan's GEMM, per tuple of addresses (a, b, d, bias).

    A tuple's first call runs directly; its second is captured (on a side stream, in
    thread-local mode so that other threads' CUDA calls are not refused) and every later
    one launches the graph on the current stream. A graph holds the addresses and the
    algorithm, not the buffers: it replays exactly the call it stands for. After a capture
    fails, the plan's new tuples run directly.

    Args:
        capture: ``capture(args)`` -> a CuPy Graph of the GEMM on ``args``.
        direct: ``direct(args)`` runs the GEMM on ``args``.
    """

    def __init__(self, capture, direct):
        self._capture, self._direct = capture, direct
        self.graphs, self.seen = {}, set()
        self.failed = False

    def run(self, args):
        graph = self.graphs.get(args)
        if graph is None:
            graph = self._graph_on_second_use(args)
            if graph is None:
                self._direct(args)
                return
        graph.launch()

    def _graph_on_second_use(self, args):
        if args not in self.seen:
            if len(self.seen) >= REPLAY_GRAPHS:  # addresses that do not recur: start over
                self.seen.clear()
            self.seen.add(args)
            return None
        if self.failed:
            return None
        if len(self.graphs) >= REPLAY_GRAPHS:  # (a graph freed while queued is destroyed
            self.graphs.clear()  # by CUDA once it has run)
        try:
            graph = self._capture(args)
        except Exception:  # noqa: BLE001 - whatever refused the capture, the GEMM still runs
            self.failed = True
            return None
        self.graphs[args] = graph
        return graph


def _set(setter, attr_dtype, obj, attr, value):
    buf = np.array(value, dtype=attr_dtype(attr))
    setter(obj, attr, buf.ctypes.data, buf.itemsize)


class CublasLt:
    """One cuBLASLt handle, a workspace and the plans built so far (per process)."""

    def __init__(self):
        import cupy

        lt = _bindings()[0]
        self._lt = lt
        self.handle = lt.create()
        self._current_stream = cupy.cuda.get_current_stream  # looked up once: a hot path
        self.workspace = cupy.cuda.alloc(WORKSPACE_BYTES)
        self._workspace_ptr = self.workspace.ptr
        self.plans = {}
        self.unsupported = set()  # keys cuBLASLt refused once: refuse again without asking
        self._cupy_cuda = cupy.cuda
        self._capture_stream = None  # made on the first capture

    def gemm(self, a, b, d, m, n, k, lda, ldb, ldd, dtype, precision, trans_a=False,
             trans_b=False, batch=1, strides=(0, 0, 0), epilogue="none", bias=0):
        """Column-major ``D = op(A) @ op(B)`` at raw addresses (``op``: transpose if asked).

        D is (m, n) with leading dimension ``ldd``; op(A) is (m, k), op(B) is (k, n); ``strides``
        are the batch strides in elements of A, B and D. ``epilogue`` is a key of
        :data:`EPILOGUES`; ``bias`` the address of its vector (an output for ``bgrada``).
        Raises :class:`Unsupported` when cuBLASLt has no algorithm for the combination.
        """
        if batch == 1 and not (a | b | d) & 255:  # the usual case: whole pool allocations
            align = 256
        else:
            size = _ITEMSIZE[dtype]
            align = _alignment(a, b, d, *(s * size for s in strides if batch > 1))
        key = (dtype, precision, trans_a, trans_b, m, n, k, lda, ldb, ldd, batch, strides,
               epilogue, align)
        plan = self.plans.get(key)
        if plan is None:
            if key in self.unsupported:
                raise Unsupported(f"no cuBLASLt algorithm for {key}")
            try:
                plan = _Plan(self.handle, key)
            except Unsupported:
                self.unsupported.add(key)
                raise
            self.plans[key] = plan
        if for_graph():  # (no graph launch inside a capture, nor tuning)
            if plan.graph_algo is None:
                plan.graph_algo = plan.algo if capturing() else \
                    self._fastest_in_graph(plan, (a, b, d, bias))
            self._run(plan, a, b, d, bias, plan.graph_algo)
            return
        if not plan.tuned:
            plan.tune(lambda algo: self._run(plan, a, b, d, bias, algo))
            plan.replays = self._replays_if_faster(plan, (a, b, d, bias))
        if plan.replays is None:
            self._run(plan, a, b, d, bias, plan.algo)
        else:
            plan.replays.run((a, b, d, bias))

    def _fastest_in_graph(self, plan, args):
        """The candidate whose GEMM on ``args`` takes the least GPU time inside a CUDA
        graph (a recorded call issues its GEMMs with no host time between them: an
        algorithm that splits K over more blocks wins there even where an eager loop
        would wait on its extra launch)."""
        cuda = self._cupy_cuda
        cuda.Device().synchronize()  # (the operands are ready, and nothing runs beside)
        start, stop = cuda.Event(), cuda.Event()
        best, spent = None, 0.0
        for algo in plan.candidates:
            if spent > GRAPH_TUNING_MS:
                break
            try:
                graph = self._capture(plan, args, algo, GRAPH_TUNING_CALLS)
            except Exception:  # noqa: BLE001 - an algorithm this GEMM cannot run: skipped
                continue
            stream = self._capture_stream
            graph.launch(stream)
            for _ in range(TUNING_SAMPLES):
                start.record(stream)
                graph.launch(stream)
                stop.record(stream)
                stop.synchronize()
                ms = cuda.get_elapsed_time(start, stop)
                spent += ms
                if best is None or ms < best[0]:
                    best = (ms, algo)
        return plan.algo if best is None else best[1]

    def _capture(self, plan, args, algo=None, calls=1):
        """A CuPy Graph of ``calls`` runs of the plan's GEMM on ``args`` (captured, not run)
        with ``algo`` (default: the plan's)."""
        cuda = self._cupy_cuda
        if self._capture_stream is None:
            self._capture_stream = cuda.Stream(non_blocking=True)
        stream = self._capture_stream
        stream.begin_capture(cuda.runtime.streamCaptureModeThreadLocal)
        try:
            for _ in range(calls):
                self._run(plan, *args, plan.algo if algo is None else algo, stream=stream.ptr)
        finally:
            graph = stream.end_capture()
        return graph

    def _replays_if_faster(self, plan, args):
        """:class:`_Replays` for the plan where graph replay runs an eager loop faster."""
        try:
            graph = self._capture(plan, args)
        except Exception:  # noqa: BLE001 - no graphs for this GEMM: it runs directly
            return None
        direct = eager_ms(lambda: self._run(plan, *args, plan.algo))
        if eager_ms(graph.launch) > REPLAY_GAIN * direct:
            return None
        replays = _Replays(lambda call_args: self._capture(plan, call_args),
                           lambda call_args: self._run(plan, *call_args, plan.algo))
        replays.seen.add(args)
        replays.graphs[args] = graph
        return replays

    def _run(self, plan, a, b, d, bias, algo, stream=None):
        if bias != plan.bias:  # a layer's bias stays put from call to call: the descriptor
            # is only rewritten when it moves (and a plan without an epilogue never has one)
            plan.bias = plan.bias_value[0] = bias
            self._lt.matmul_desc_set_attribute(plan.desc, plan.bias_attr, plan.bias_value_ptr, 8)
        a_desc, b_desc, d_desc = plan.layouts
        self._lt.matmul(self.handle, plan.desc, plan.alpha_ptr, a, a_desc, b, b_desc,
                        plan.beta_ptr, d, d_desc, d, d_desc, algo, self._workspace_ptr,
                        WORKSPACE_BYTES, self._current_stream().ptr if stream is None else stream)
