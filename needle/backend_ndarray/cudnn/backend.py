"""CudnnBackend: the cuda device's buffers and kernels, with NVIDIA's libraries where they win.

Routed to the libraries:

* every matmul (2-D and batched) and the fused ``linear``/``linear_backward`` ops: cuBLASLt
  (cublaslt.py), with the bias, ReLU and GELU epilogues and the bias-gradient epilogue;
* ``conv``/``conv_backward``: cuDNN's convolution graphs (graphs.py) for float32; float64
  on the cuda device's im2col + GEMM;
* ``attention``/``attention_backward``: cuDNN's flash attention, which reads bf16 only, so
  it runs when the user chose ``set_matmul_precision("bf16")`` (otherwise the cuda device's
  exact fp32/fp64 kernels);
* ``layernorm``/``layernorm_backward``: ours or cuDNN's, whichever measured faster for the
  shape on first use (both measured on an H200, 2026-11-30, in
  bench/results/H200-2026-11-30-e47498f; `needle-bench --suite micro-norms` times the layers).

Everything else (elementwise, reductions, softmax, BatchNorm, optimizers) is the cuda
device's own kernels: the class derives from CudaBackend and shares its buffers.
"""

import functools

import numpy as np

from ..cuda.backend import CudaBackend
from ..cuda.memory import CudaBuffer
from . import cublaslt, graphs

#: numpy dtype -> its name (numpy's ``dtype.name`` is a Python property: ~1 us a call)
_NAMES = {np.dtype(name): name for name in ("float32", "float64")}
_LINEAR_EPILOGUE = {"identity": "bias", "relu": "relu", "gelu": "gelu"}


class CudnnBackend(CudaBackend):
    """NVIDIA GPUs through cuBLASLt (nvmath-python) and cuDNN (nvidia-cudnn-frontend).

    Example:
        >>> x = needle.Tensor(np.ones((2, 3)), device=needle.cudnn())   # needs a GPU
        >>> needle.cudnn().backend.set_matmul_precision("bf16")          # opt in to bf16
    """

    name = "cudnn"
    #: "highest": exact fp32; "tf32" / "bf16": tensor cores with rounded inputs (fp32 only)
    matmul_precision = "highest"

    # made on first use, after the GPU is known to work; then plain attributes (hot path)
    @functools.cached_property
    def lt(self):
        return cublaslt.CublasLt()

    @functools.cached_property
    def graphs(self):
        return graphs.Graphs()

    def unavailable_reason(self):
        reason = super().unavailable_reason()
        if reason:
            return reason
        for module, package in (("nvmath.bindings.cublasLt", "nvmath-python"),
                                ("cudnn", "nvidia-cudnn-frontend")):
            try:
                __import__(module)
            except Exception as e:  # noqa: BLE001 - ImportError, or a library that fails to load
                return f"{package} is missing or cannot load ({e})"
        return None

    @classmethod
    def set_matmul_precision(cls, precision):
        """Choose how fp32 matmuls, convs and attention run on this device.

        Args:
            precision: ``"highest"`` (default): exact fp32, as NumPy; ``"tf32"``: tensor
                cores with inputs rounded to TF32 (~1e-3 relative error); ``"bf16"``: tensor
                cores with inputs rounded to bf16 (~1e-2), and attention through cuDNN's
                fused flash attention. float64 is always exact.
        """
        if precision not in cublaslt.PRECISIONS:
            raise ValueError(f"matmul precision must be one of {cublaslt.PRECISIONS}, "
                             f"not {precision!r}")
        cls.matmul_precision = precision

    def _cudnn_attention(self, dtype):
        """cuDNN's flash attention reads bf16 only: it runs when the user opted in to bf16
        products; otherwise attention is the cuda device's exact kernels."""
        return dtype == np.float32 and self.matmul_precision == "bf16" and int(self.rt.arch) >= 80

    # -- matmul through cuBLASLt ---------------------------------------------------------
    def matmul(self, a, b, out, batch, m, k, n):
        # (NDArray calls this with m, k, n and batch > 0; an eager product is bound by the
        # host time of this path, so it goes straight to the plan lookup)
        self.lt.gemm(b.ptr, a.ptr, out.ptr, n, m, k, n, k, n, _NAMES[a.dtype],
                     self.matmul_precision, False, False, batch, (k * n, m * k, m * n))

    def _gemm(self, pa, pb, pc, batch, m, k, n, dtype):
        """Row-major (m, k) @ (k, n) = column-major (n, k) @ (k, m): operands swap."""
        if m * n * batch == 0:
            return
        if k == 0:
            self._fill(pc, 0, batch * m * n, dtype)
            return
        self.lt.gemm(pb, pa, pc, n, m, k, n, k, n, _NAMES[dtype], self.matmul_precision,
                     batch=batch, strides=(k * n, m * k, m * n))

    def linear(self, x, w, bias, out, m, k, n, act):
        if act == "gelu" and x.dtype == np.float64:
            # cuBLASLt's GELU epilogue loses float64 precision (4e-9 relative, measured)
            super().linear(x, w, bias, out, m, k, n, act)
            return
        try:
            self.lt.gemm(w.ptr, x.ptr, out.ptr, n, m, k, n, k, n, _NAMES[x.dtype],
                         self.matmul_precision, epilogue=_LINEAR_EPILOGUE[act], bias=bias.ptr)
        except cublaslt.Unsupported:  # no epilogue for this case: GEMM, then our kernels
            super().linear(x, w, bias, out, m, k, n, act)

    def linear_backward(self, grad, x, w, dx, dw, dbias, m, k, n):
        dtype, precision = _NAMES[x.dtype], self.matmul_precision
        if dx is not None:  # dx (m, k) = grad @ w.T: column-major (k, m) = op(w) @ grad
            self.lt.gemm(w.ptr, grad.ptr, dx.ptr, k, m, n, n, n, k, dtype, precision,
                         trans_a=True)
        # dw (k, n) = x.T @ grad: column-major (n, k) = grad @ op(x); the BGRADA epilogue
        # sums grad over the GEMM's k (the batch rows) into dbias on the way
        args = (grad.ptr, x.ptr, dw.ptr, n, k, m, n, k, n, dtype, precision)
        try:
            self.lt.gemm(*args, trans_b=True, epilogue="bgrada", bias=dbias.ptr)
        except cublaslt.Unsupported:
            self.lt.gemm(*args, trans_b=True)
            self._map(("colsum", self._sfx(x.dtype)), n, (grad.ptr, dbias.ptr, m, n))

    # -- convolution through cuDNN -------------------------------------------------------
    def _conv_graph(self, kind, dtype, in_shape, kernel, k_out, stride, padding,
                    channels_first=False):
        try:
            return self.graphs.get(graphs.ConvGraph, kind, _NAMES[dtype], self.matmul_precision,
                                   *in_shape, kernel, k_out, stride, padding, channels_first)
        except graphs.Unsupported as e:
            layout = "NCHW" if channels_first else "NHWC"
            raise RuntimeError(f"cuDNN has no {kind} convolution for {layout} input {in_shape}, "
                               f"kernel {kernel}, {k_out} outputs, stride {stride}, padding "
                               f"{padding}, {dtype.name}: {e}") from None

    def _weight_packed(self, w, kernel, c, k_out, channels_first=False):
        """A KRSC (k_out, kh, kw, c_in) or, with ``channels_first``, KCRS (k_out, c_in, kh, kw)
        copy of a (kh, kw, c_in, k_out) weight (graphs.py says why), kept with the weight's
        buffer until that is written (CudaBuffer.derived): inference packs each weight once."""
        key = ("packed", kernel, c, k_out, channels_first)
        cache = w.derived
        if cache is None:
            cache = w.derived = {}
        out = cache.get(key)
        if out is not None:
            return out
        out = cache[key] = CudaBuffer(w.size, w.dtype)
        k_stride, c_stride, r_stride, s_stride = 1, k_out, kernel * c * k_out, c * k_out
        if channels_first:
            shape, strides = (k_out, c, kernel, kernel), (k_stride, c_stride, r_stride, s_stride)
        else:
            shape, strides = (k_out, kernel, kernel, c), (k_stride, r_stride, s_stride, c_stride)
        self._strided("compact", w.ptr, out.ptr, shape, strides, 0, w.dtype)
        return out

    def conv(self, x, w, out, in_shape, kernel, out_channels, stride, padding,
             channels_first=False):
        if x.dtype != np.float32:  # cuDNN has no float64 NHWC convolution: ours
            super().conv(x, w, out, in_shape, kernel, out_channels, stride, padding,
                         channels_first)
            return
        g = self._conv_graph("fprop", x.dtype, in_shape, kernel, out_channels, stride, padding,
                             channels_first)
        weight = self._weight_packed(w, kernel, in_shape[3], out_channels, channels_first)
        self.graphs.run(g, (x.ptr, weight.ptr, out.ptr))

    def conv_backward(self, grad, x, w, dx, dw, in_shape, kernel, out_channels, stride, padding,
                      channels_first=False):
        if x.dtype != np.float32:
            super().conv_backward(grad, x, w, dx, dw, in_shape, kernel, out_channels, stride,
                                  padding, channels_first)
            return
        geometry = (in_shape, kernel, out_channels, stride, padding, channels_first)
        c, k = in_shape[3], kernel
        if dx is not None:
            g = self._conv_graph("dgrad", x.dtype, *geometry)
            weight = self._weight_packed(w, k, c, out_channels, channels_first)
            self.graphs.run(g, (grad.ptr, weight.ptr, dx.ptr))
        if dw is not None:  # cuDNN writes KCRS (NCHW) or KRSC (NHWC); Needle's is (k, k, c, k_out)
            g = self._conv_graph("wgrad", x.dtype, *geometry)
            packed = CudaBuffer(dw.size, dw.dtype)
            self.graphs.run(g, (x.ptr, grad.ptr, packed.ptr))
            strides = (k, 1, k * k, k * k * c) if channels_first else (k * c, c, 1, k * k * c)
            self._strided("compact", packed.ptr, dw.ptr, (k, k, c, out_channels), strides, 0,
                          dw.dtype)

    # -- LayerNorm: ours or cuDNN's, whichever measured faster per shape ------------------
    @functools.cached_property
    def _choices(self):
        return {}  # (op, shape...) -> "ours" or the cuDNN graph that measured faster

    def _ours_or_cudnn(self, key, graph_args, ours, args, pointers):
        """Run ``ours(self, *args)`` or cuDNN's ``LayerNormGraph(*graph_args)`` on
        ``pointers``, whichever measured faster for ``key``. The first call times both on its
        own buffers, as an eager loop runs them (cublaslt.fastest). Neither wins everywhere,
        and the host's speed moves the line (bench/results/H200-2026-11-30-e47498f)."""
        choice = self._choices.get(key)
        if choice is None:
            try:
                graph = self.graphs.get(graphs.LayerNormGraph, *graph_args)
            except graphs.Unsupported:
                choice = "ours"
            else:
                choice = cublaslt.fastest(("ours", graph), lambda c: ours(self, *args)
                                          if c == "ours" else self.graphs.run(c, pointers))
            self._choices[key] = choice
        if choice == "ours":
            ours(self, *args)
        else:
            self.graphs.run(choice, pointers)

    def layernorm(self, x, weight, bias, out, mean, rstd, rows, cols, eps):
        args = (x, weight, bias, out, mean, rstd, rows, cols, eps)
        if x.dtype != np.float32:
            super().layernorm(*args)
            return
        self._ours_or_cudnn(("layernorm", rows, cols, eps), ("forward", rows, cols, eps),
                            CudaBackend.layernorm, args,
                            (x.ptr, weight.ptr, bias.ptr, out.ptr, mean.ptr, rstd.ptr))

    def layernorm_backward(self, grad, x, weight, mean, rstd, dx, dweight, dbias, rows, cols):
        args = (grad, x, weight, mean, rstd, dx, dweight, dbias, rows, cols)
        if x.dtype != np.float32:
            super().layernorm_backward(*args)
            return
        self._ours_or_cudnn(("layernorm_backward", rows, cols), ("backward", rows, cols, 0.0),
                            CudaBackend.layernorm_backward, args,
                            (grad.ptr, x.ptr, weight.ptr, mean.ptr, rstd.ptr, dx.ptr,
                             dweight.ptr, dbias.ptr))

    # -- attention through cuDNN (bf16) --------------------------------------------------
    def _to_bf16(self, a):
        out = CudaBuffer(a.size, np.uint16)
        self._map(("cast", "f32", "bf16"), a.size, (a.ptr, out.ptr, a.size))
        return out

    def _from_bf16(self, a, out):
        self._map(("cast", "bf16", "f32"), a.size, (a.ptr, out.ptr, a.size))

    def attention(self, q, k, v, out, stats, batch, seq_q, seq_k, dim, scale, causal):
        if not self._cudnn_attention(q.dtype):
            super().attention(q, k, v, out, stats, batch, seq_q, seq_k, dim, scale, causal)
            return
        g = self.graphs.get(graphs.AttentionGraph, "forward", batch, seq_q, seq_k, dim, scale,
                            causal)
        qb, kb, vb = self._to_bf16(q), self._to_bf16(k), self._to_bf16(v)
        ob = CudaBuffer(out.size, np.uint16)
        self.graphs.run(g, (qb.ptr, kb.ptr, vb.ptr, ob.ptr, stats.ptr))
        self._from_bf16(ob, out)

    def attention_backward(self, q, k, v, out, stats, grad, dq, dk, dv, batch, seq_q, seq_k,
                           dim, scale, causal):
        if not self._cudnn_attention(q.dtype):
            super().attention_backward(q, k, v, out, stats, grad, dq, dk, dv, batch, seq_q,
                                       seq_k, dim, scale, causal)
            return
        g = self.graphs.get(graphs.AttentionGraph, "backward", batch, seq_q, seq_k, dim, scale,
                            causal)
        inputs = [self._to_bf16(a) for a in (q, k, v, out, grad)]  # alive until the graph ran
        grads = [CudaBuffer(a.size, np.uint16) for a in (dq, dk, dv)]
        self.graphs.run(g, [a.ptr for a in inputs] + [stats.ptr] + [a.ptr for a in grads])
        for buf, target in zip(grads, (dq, dk, dv)):
            self._from_bf16(buf, target)
