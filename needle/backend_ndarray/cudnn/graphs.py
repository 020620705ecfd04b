"""cuDNN graphs (through ``nvidia-cudnn-frontend``) for convolution, attention and LayerNorm.

A graph is built, checked and planned once per shape and then executed with raw device
addresses. Activations are NHWC (Needle's conv layout) or NCHW (an NCHW model's tensors, as
stored). Weights are given to cuDNN packed in the activations' layout, KRSC (c_out, kh, kw,
c_in) for NHWC and KCRS (c_out, c_in, kh, kw) for NCHW: measured on an H100 (cuDNN 9,
frontend 1.32), cuDNN accepted the strides of Needle's (kh, kw, c_in, c_out) weights and then
read and wrote them as KRSC anyway, so the backend copies weights to and from that layout.
"""
import ctypes
import functools

import numpy as np



class Unsupported(Exception):
    """cuDNN has no engine for this graph."""


@functools.lru_cache(maxsize=None)
def _cudnn():
    import cudnn

    return cudnn


def _packed(n, c, h, w, channels_first):
    """cuDNN dims (always N, C, H, W, or K, C, R, S for a weight) and the strides of a packed
    NHWC (KRSC) or, with ``channels_first``, NCHW (KCRS) tensor."""
    if channels_first:
        return [n, c, h, w], [c * h * w, h * w, w, 1]
    return [n, c, h, w], [h * w * c, 1, w * c, c]


class Graphs:
    """The cuDNN handle, a growing workspace and every graph built so far."""

    #: how graphs execute: "raw" (the frontend's C++ call under its public ``execute``, see
    #: :class:`_RawExecute`; falls back to "ordered" where unavailable) or "ordered" (the
    #: public ``execute`` with a tuple of addresses and their uids)
    form = "raw"

    def __init__(self):
        import cupy

        cudnn = _cudnn()
        self.handle = cudnn.create_handle()
        self._backend_handle = getattr(self.handle, "backend_handle", None)
        self._cupy_cuda = cupy.cuda
        self._stream = None
        self._workspace, self._workspace_bytes = None, 0
        self._retired = []
        self.cache = {}

    def run(self, graph, pointers):
        """Execute ``graph`` on CuPy's current stream with the device addresses of its
        operands, in the order of ``graph.uids`` (the graph's own ``fixed`` ones last)."""
        if graph.fixed:
            pointers = pointers + graph.fixed
        stream = self._cupy_cuda.get_current_stream().ptr
        if stream != self._stream:
            _cudnn().set_stream(self.handle, stream)
            self._stream = stream
        need = graph.workspace
        if need > self._workspace_bytes:
            # the old one is kept: a recorded CUDA graph (needle.compile) may still use it
            self._retired.append(self._workspace)
            self._workspace, self._workspace_bytes = self._cupy_cuda.alloc(need), need
        workspace = self._workspace.ptr if need else None
        raw = graph.raw
        if raw and self.form == "raw":
            raw(pointers, workspace or 0, self._backend_handle)
            return
        graph.graph.execute(tuple(pointers), workspace, handle=self.handle,
                            tensor_uids=graph.uids)
        if raw is None:  # decided after one public execute, which finishes the frontend's setup
            graph.raw = _RawExecute.make(graph, self._backend_handle) or False

    def get(self, cls, *key):
        """The cached graph ``cls(self.handle, *key)``, built on first use.

        Raises :class:`Unsupported` (again, without rebuilding) if cuDNN refused it."""
        full = (cls,) + key
        graph = self.cache.get(full)
        if graph is None:
            try:
                graph = cls(self.handle, *key)
            except Unsupported as e:
                graph = e
            self.cache[full] = graph
        if isinstance(graph, Unsupported):
            raise graph
        return graph


class _RawExecute:
    """One graph's execution as a single call into the frontend's C++ layer.

    The public ``execute`` spends ~20 us of Python per call describing each operand, even
    for bare addresses (measured on an H100 with frontend 1.32, 2026-11-23).
    Below it, the frontend hands cuDNN a ``void*[]`` of the operands in ascending uid order
    (``_lowered_graph._execute_with_raw_ptrs``); this class fills such an array and makes that
    call. It is private frontend API, so :meth:`make` returns None (and the public path
    stays) unless every piece is there and the plan is one of cuDNN's own engines.
    """

    def __init__(self, execute, slots, size, plan_index):
        self._execute, self._slots, self._plan_index = execute, slots, plan_index
        self._array = (ctypes.c_void_p * size)()  # one per graph: Needle runs one thread
        self._address = ctypes.addressof(self._array)

    @classmethod
    def make(cls, graph, backend_handle):
        g = graph.graph
        try:
            lowered = g._lowered_graph
            execute = lowered._execute_with_raw_ptrs
            if g.selected_engine is not None or backend_handle is None:
                return None  # a Python engine, or a handle this class cannot pass
            order = list(g._variant_pack_uids() or ())
            if sorted(order) != sorted(graph.uids):
                return None
            cfg = g._materialize_backend_plan(g._plan_index) if g._plans else None
        except Exception:  # noqa: BLE001 - any frontend that differs keeps the public path
            return None
        index = -1 if cfg is None or cfg.cpp_index is None else cfg.cpp_index
        return cls(execute, [order.index(uid) for uid in graph.uids], len(order), index)

    def __call__(self, pointers, workspace, handle):
        array = self._array
        for slot, address in zip(self._slots, pointers):
            array[slot] = address
        self._execute(self._address, len(array), workspace, handle, self._plan_index)


def _finish(graph, handle, forbid_tensor_cores):
    """Validate, plan and build ``graph``; its workspace size in bytes."""
    cudnn = _cudnn()
    try:
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        if forbid_tensor_cores:  # fp32 stays exact fp32 (no TF32) unless the user asked
            graph.deselect_numeric_notes([cudnn.numerical_note.TENSOR_CORE])
        graph.check_support()
        graph.build_plans()
    except (cudnn.cudnnGraphNotSupportedError, RuntimeError) as e:
        raise Unsupported(str(e)) from None
    return graph.get_workspace_size()


class _Graph:
    """A built cuDNN graph (``graph``), its workspace size, and the ``uids`` of its operands
    in the order :meth:`Graphs.run` takes their addresses."""

    raw = None  # the graph's _RawExecute, or False where there is none (set by Graphs.run)
    fixed = ()  # addresses after the caller's in every run (host scalars, scratch buffers)

    def _built(self, g, handle, forbid_tensor_cores, *operands):
        self.graph = g
        self.workspace = _finish(g, handle, forbid_tensor_cores)
        self.uids = tuple(t.uid for t in operands)  # assigned while the graph is built


class ConvGraph(_Graph):
    """One of conv forward (``fprop``), data gradient (``dgrad``) or weight gradient
    (``wgrad``) for input ``(n, h, w, c)``, a square ``kernel``, ``k_out`` outputs; NHWC
    tensors and a KRSC weight, or NCHW and KCRS with ``channels_first``."""

    def __init__(self, handle, kind, dtype, precision, n, h, w, c, kernel, k_out, stride,
                 padding, channels_first=False):
        cudnn = _cudnn()
        dt = cudnn.data_type.DOUBLE if dtype == "float64" else cudnn.data_type.FLOAT
        ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
        g = cudnn.pygraph(io_data_type=dt, intermediate_data_type=dt, compute_data_type=dt,
                          handle=handle)
        x_dim, x_stride = _packed(n, c, h, w, channels_first)
        y_dim, y_stride = _packed(n, k_out, ho, wo, channels_first)
        w_dim, w_stride = _packed(k_out, c, kernel, kernel, channels_first)
        geometry = dict(padding=[padding, padding], stride=[stride, stride], dilation=[1, 1],
                        compute_data_type=dt)
        if kind == "fprop":
            self.x = g.tensor(name="x", dim=x_dim, stride=x_stride, data_type=dt)
            self.w = g.tensor(name="w", dim=w_dim, stride=w_stride, data_type=dt)
            self.y = g.conv_fprop(image=self.x, weight=self.w, **geometry)
            self.y.set_output(True).set_dim(y_dim).set_stride(y_stride).set_data_type(dt)
            operands = (self.x, self.w, self.y)
        elif kind == "dgrad":
            self.dy = g.tensor(name="dy", dim=y_dim, stride=y_stride, data_type=dt)
            self.w = g.tensor(name="w", dim=w_dim, stride=w_stride, data_type=dt)
            self.dx = g.conv_dgrad(loss=self.dy, filter=self.w, **geometry)
            self.dx.set_output(True).set_dim(x_dim).set_stride(x_stride).set_data_type(dt)
            operands = (self.dy, self.w, self.dx)
        else:
            self.x = g.tensor(name="x", dim=x_dim, stride=x_stride, data_type=dt)
            self.dy = g.tensor(name="dy", dim=y_dim, stride=y_stride, data_type=dt)
            self.dw = g.conv_wgrad(image=self.x, loss=self.dy, **geometry)
            self.dw.set_output(True).set_dim(w_dim).set_stride(w_stride).set_data_type(dt)
            operands = (self.x, self.dy, self.dw)
        self._built(g, handle, dtype == "float32" and precision == "highest", *operands)


class AttentionGraph(_Graph):
    """cuDNN flash attention, forward (with the softmax stats) or backward, on bf16
    ``(batch, 1, seq, dim)`` tensors (batch = batch x heads); the stats are float32."""

    def __init__(self, handle, kind, batch, seq_q, seq_k, dim, scale, causal):
        cudnn = _cudnn()
        bf16, f32 = cudnn.data_type.BFLOAT16, cudnn.data_type.FLOAT
        g = cudnn.pygraph(io_data_type=bf16, intermediate_data_type=f32, compute_data_type=f32,
                          handle=handle)

        def seq_tensor(name, seq):
            return g.tensor(name=name, dim=[batch, 1, seq, dim],
                            stride=[seq * dim, seq * dim, dim, 1], data_type=bf16)

        def output(t, seq, last=None, dtype=bf16):
            last = dim if last is None else last
            t.set_output(True).set_dim([batch, 1, seq, last]).set_data_type(dtype)
            t.set_stride([seq * last, seq * last, last, 1])
            return t

        self.q, self.k, self.v = seq_tensor("q", seq_q), seq_tensor("k", seq_k), seq_tensor("v", seq_k)
        mask = dict(attn_scale=scale, use_causal_mask=causal)
        if kind == "forward":
            o, stats = g.sdpa(name="sdpa", q=self.q, k=self.k, v=self.v, generate_stats=True,
                              **mask)
            self.o, self.stats = output(o, seq_q), output(stats, seq_q, 1, f32)
            operands = (self.q, self.k, self.v, self.o, self.stats)
        else:
            self.o, self.do = seq_tensor("o", seq_q), seq_tensor("do", seq_q)
            self.stats = g.tensor(name="stats", dim=[batch, 1, seq_q, 1],
                                  stride=[seq_q, seq_q, 1, 1], data_type=f32)
            dq, dk, dv = g.sdpa_backward(name="sdpa_backward", q=self.q, k=self.k, v=self.v,
                                         o=self.o, dO=self.do, stats=self.stats, **mask)
            self.dq, self.dk, self.dv = output(dq, seq_q), output(dk, seq_k), output(dv, seq_k)
            operands = (self.q, self.k, self.v, self.o, self.do, self.stats, self.dq, self.dk,
                        self.dv)
        self._built(g, handle, False, *operands)


class LayerNormGraph(_Graph):
    """LayerNorm (float32) over the last axis of ``(rows, cols)`` data: the ``forward`` pass
    (writing y, and the mean and rstd = 1 / sqrt(var + eps) of each row) or the ``backward``
    pass from those (dx, dweight, dbias)."""

    def __init__(self, handle, kind, rows, cols, eps):
        cudnn = _cudnn()
        f32 = cudnn.data_type.FLOAT
        g = cudnn.pygraph(io_data_type=f32, intermediate_data_type=f32, compute_data_type=f32,
                          handle=handle)
        data = dict(dim=[rows, cols, 1, 1], stride=[cols, 1, cols, cols], data_type=f32)
        per_col = dict(dim=[1, cols, 1, 1], stride=[cols, 1, cols, cols], data_type=f32)
        per_row = dict(dim=[rows, 1, 1, 1], stride=[1, 1, 1, 1], data_type=f32)

        def output(t, like):
            t.set_output(True).set_dim(like["dim"]).set_stride(like["stride"])
            t.set_data_type(f32)

        x, w = g.tensor(name="x", **data), g.tensor(name="w", **per_col)
        if kind == "forward":
            b = g.tensor(name="b", **per_col)
            self.host = np.full(1, eps, np.float32)  # epsilon, read through its address
            e = g.tensor(name="eps", dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=f32,
                         is_pass_by_value=True)
            y, mean, rstd = g.layernorm(name="ln", input=x, scale=w, bias=b, epsilon=e,
                                        norm_forward_phase=cudnn.norm_forward_phase.TRAINING)
            output(y, data), output(mean, per_row), output(rstd, per_row)
            self.fixed = (self.host.ctypes.data,)
            operands = (x, w, b, y, mean, rstd, e)
        else:
            dy = g.tensor(name="dy", **data)
            mean, rstd = g.tensor(name="mean", **per_row), g.tensor(name="rstd", **per_row)
            dx, dw, db = g.layernorm_backward(name="dln", grad=dy, input=x, scale=w, mean=mean,
                                              inv_variance=rstd)
            output(dx, data), output(dw, per_col), output(db, per_col)
            operands = (dy, x, w, mean, rstd, dx, dw, db)
        self._built(g, handle, False, *operands)
