"""CudaBackend: the backend contract (contract.py) on Needle's own CUDA kernels.

Each op picks an entry point from kernels.py and a launch shape, and launches it with
CuPy on the current CuPy stream. All arithmetic happens in kernels/*.cu; CuPy supplies
memory, copies between host and device, compilation and launches.
"""
import math

import numpy as np

from ..contract import Backend
from . import compiler, gemm, kernels, layout
from .memory import CudaBuffer, memory_stats, reset_peak

THREADS = 256  # block size of the 1-D kernels (the reduce and row kernels require it)
_NO_DEVICE = 100  # cudaErrorNoDevice
_H2D, _D2H, _D2D = 1, 2, 3  # cudaMemcpyKind
# Largest im2col matrix conv2d materialises at once (elements); bigger batches go in chunks.
CONV_WORKSPACE = 1 << 27


def _ptr(address):
    return np.uint64(address)


def _i64(value):
    return np.int64(value)


def _i32(value):
    return np.int32(value)


def _cuda():
    import cupy

    return cupy.cuda


class _Runtime:
    """Per-process state made on first use: the GPU's properties and its compiled kernels."""

    def __init__(self):
        device = _cuda().Device()
        self.arch = device.compute_capability  # e.g. "90"
        self.sm_count = device.attributes["MultiProcessorCount"]
        self.max_blocks = 32 * self.sm_count  # grid-stride kernels never need more
        self.kernels = compiler.KernelCache(self.arch)
        self._by_parts = {}  # name parts -> kernel: launches are hot, skip the name lookup

    def launch(self, parts, grid, block, args):
        fn = self._by_parts.get(parts)
        if fn is None:
            fn = self._by_parts[parts] = self.kernels.function(*kernels.name(*parts))
        fn(grid, block, args)


class CudaBackend(Backend):
    """NVIDIA GPUs through Needle's CUDA kernels (NVRTC-compiled, launched with CuPy).

    Example:
        >>> import needle
        >>> x = needle.NDArray([[1.0, 2.0]], device=needle.cuda())   # needs a GPU
        >>> (x @ x.permute((1, 0))).numpy()
        array([[5.]], dtype=float32)
    """

    name = "cuda"
    dtypes = ("float32", "float64")
    #: "highest": exact fp32 FFMA (default); "tf32": tensor cores, ~1e-3 relative error
    matmul_precision = "highest"
    #: fp32 SGEMM configurations (kernels.SGEMM_TILES): large products, small ones (gemm.py)
    sgemm_tile = gemm.DEFAULT_SGEMM_TILE
    sgemm_small_tile = gemm.DEFAULT_SGEMM_SMALL_TILE

    def __init__(self):
        self._runtime = None  # nothing touches CuPy until the first op

    @property
    def rt(self):
        if self._runtime is None:
            self._runtime = _Runtime()
        return self._runtime

    def unavailable_reason(self):
        try:
            import cupy
        except ImportError as e:
            return f"CuPy is not installed ({e})"
        except Exception as e:  # noqa: BLE001 - a broken install must not crash the import
            return f"CuPy could not be imported: {e}"
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # noqa: BLE001 - CUDARuntimeError, or a missing libcuda
            if getattr(e, "status", None) == _NO_DEVICE:
                return "no NVIDIA GPU found"
            return f"the NVIDIA driver could not be loaded: {e}"
        return None if count > 0 else "no NVIDIA GPU found"

    @classmethod
    def set_matmul_precision(cls, precision):
        """Choose how fp32 matmuls (and convs) run on this device.

        Args:
            precision: ``"highest"`` (default): exact fp32 on CUDA cores, as NumPy;
                ``"tf32"``: inputs rounded to TF32 on tensor cores, much faster, about 1e-3
                relative error. float64 is always exact.

        Example:
            >>> needle.cuda().backend.set_matmul_precision("tf32")
        """
        if precision not in gemm.PRECISIONS:
            raise ValueError(f"matmul precision must be one of {gemm.PRECISIONS}, not {precision!r}")
        cls.matmul_precision = precision

    # -- memory --------------------------------------------------------------------------
    def alloc(self, size, dtype):
        return CudaBuffer(size, dtype)

    def _stream(self):
        return _cuda().get_current_stream()

    def _memcpy(self, dst, src, nbytes, kind):
        if nbytes and dst != src:
            _cuda().runtime.memcpyAsync(dst, src, nbytes, kind, self._stream().ptr)

    def from_numpy(self, array, out):
        array = np.ascontiguousarray(array, dtype=out.dtype)
        # pageable source: the call returns once the data is staged, so `array` may go
        self._memcpy(out.ptr, array.ctypes.data, out.nbytes, _H2D)

    def to_numpy(self, a, shape, strides, offset):
        out = np.empty(shape, dtype=a.dtype)
        if out.size == 0:
            return out
        if layout.is_contiguous(*layout.coalesce(shape, strides)):
            src, tmp = a.ptr + offset * a.dtype.itemsize, None
        else:  # gather the view on the GPU, then copy one dense block down
            tmp = CudaBuffer(out.size, a.dtype)
            self.compact(a, tmp, shape, strides, offset)
            src = tmp.ptr
        self._memcpy(out.ctypes.data, src, out.nbytes, _D2H)
        self._stream().synchronize()
        return out

    def synchronize(self):
        _cuda().runtime.deviceSynchronize()

    def memory_stats(self):
        """``{"bytes_in_use", "peak_bytes", "pool_used_bytes", "pool_total_bytes"}``."""
        return memory_stats()

    def reset_peak_memory(self):
        reset_peak()

    # -- launch helpers ------------------------------------------------------------------
    @staticmethod
    def _sfx(dtype):
        return kernels.SUFFIX[np.dtype(dtype).name]

    def _map(self, parts, n, args):
        """Launch a grid-stride kernel over n items."""
        blocks = layout.launch_blocks(n, THREADS, self.rt.max_blocks)
        self.rt.launch(parts, (blocks,), (THREADS,), args)

    # -- movement ------------------------------------------------------------------------
    def fill(self, out, value):
        if out.size:
            self._fill(out.ptr, value, out.size, out.dtype)

    def _fill(self, ptr, value, n, dtype):
        self._map(("fill", self._sfx(dtype)), n, (_ptr(ptr), dtype.type(value), _i64(n)))

    def compact(self, a, out, shape, strides, offset):
        self._strided("compact", a.ptr, out.ptr, shape, strides, offset, a.dtype)

    def ewise_setitem(self, a, out, shape, strides, offset):
        self._strided("ewise_setitem", a.ptr, out.ptr, shape, strides, offset, out.dtype)

    def scalar_setitem(self, size, value, out, shape, strides, offset):
        self._strided("scalar_setitem", value, out.ptr, shape, strides, offset, out.dtype)

    def _strided(self, kind, src, dst, shape, strides, offset, dtype):
        """Copy between a compact buffer and a strided view.

        kind "compact": src is the viewed buffer, dst compact; "ewise_setitem": src compact,
        dst viewed; "scalar_setitem": src is a value, dst viewed. Addresses are raw ints.
        """
        shape, strides = layout.coalesce(shape, strides)
        n, size = math.prod(shape), dtype.itemsize
        if layout.is_contiguous(shape, strides):  # one dense run: a memcpy or a fill
            if kind == "compact":
                self._memcpy(dst, src + offset * size, n * size, _D2D)
            elif kind == "ewise_setitem":
                self._memcpy(dst + offset * size, src, n * size, _D2D)
            else:
                self._fill(dst + offset * size, src, n, dtype)
            return
        if len(shape) > layout.MAX_DIMS:  # rare: peel the outermost dim in a loop
            inner = math.prod(shape[1:]) * size
            for i in range(shape[0]):
                sub = (shape[1:], strides[1:], offset + i * strides[0], dtype)
                if kind == "compact":
                    self._strided(kind, src, dst + i * inner, *sub)
                elif kind == "ewise_setitem":
                    self._strided(kind, src + i * inner, dst, *sub)
                else:
                    self._strided(kind, src, dst, *sub)
            return
        ndim, off, *dims = layout.kernel_args(shape, strides, offset)
        first = dtype.type(src) if kind == "scalar_setitem" else _ptr(src)
        index = "i32" if n < 2**32 else "i64"
        self._map((kind, self._sfx(dtype), index), n,
                  (first, _ptr(dst), _i64(n), _i32(ndim), _i64(off), *map(_i64, dims)))

    # -- elementwise ---------------------------------------------------------------------
    def unary(self, op, a, out):
        self._map(("unary", op, self._sfx(a.dtype)), out.size,
                  (_ptr(a.ptr), _ptr(out.ptr), _i64(out.size)))

    def binary(self, op, a, b, out):
        self._map(("binary", op, self._sfx(a.dtype)), out.size,
                  (_ptr(a.ptr), _ptr(b.ptr), _ptr(out.ptr), _i64(out.size)))

    def scalar(self, op, a, value, out):
        self._map(("scalar", op, self._sfx(a.dtype)), out.size,
                  (_ptr(a.ptr), a.dtype.type(value), _ptr(out.ptr), _i64(out.size)))

    # -- reductions ----------------------------------------------------------------------
    def reduce(self, op, a, out, reduce_size):
        self._reduce_rows(op, a.ptr, out.ptr, out.size, reduce_size, a.dtype)

    def _reduce_rows(self, op, src, dst, rows, cols, dtype):
        """out[r] = op(row r of the (rows, cols) matrix at src); see kernels/reduce.cu."""
        tpr = 1 if cols <= 16 else 32 if cols <= 1024 else 256
        splits = 1
        if tpr == 256 and rows < 2 * self.rt.sm_count:
            # few long rows: split each row over several blocks, then reduce the partials
            splits = max(1, min(math.ceil(cols / 4096), math.ceil(4 * self.rt.sm_count / rows),
                                65535))
        chunk = math.ceil(cols / splits)
        splits = math.ceil(cols / chunk)
        blocks = min(math.ceil(rows / (THREADS // tpr)), self.rt.max_blocks)
        partial = CudaBuffer(rows * splits, dtype) if splits > 1 else None
        self.rt.launch(("reduce", op, self._sfx(dtype), f"t{tpr}"), (blocks, splits), (THREADS,),
                       (_ptr(src), _ptr(partial.ptr if partial else dst), _i64(rows), _i64(cols),
                        _i64(chunk)))
        if partial is not None:
            self._reduce_rows(op, partial.ptr, dst, rows, splits, dtype)

    # -- matmul and conv -----------------------------------------------------------------
    def matmul(self, a, b, out, batch, m, k, n):
        self._gemm(a.ptr, b.ptr, out.ptr, batch, m, k, n, a.dtype)

    def _gemm(self, pa, pb, pc, batch, m, k, n, dtype):
        """``batch`` row-major products (m, k) @ (k, n) at raw addresses pa, pb -> pc."""
        size = dtype.itemsize
        vec = k % 4 == 0 and n % 4 == 0 and pa % 16 == 0 and pb % 16 == 0 and pc % 16 == 0
        # tensor cores (TF32) need sm_80; older GPUs stay exact
        precision = self.matmul_precision if int(self.rt.arch) >= 80 else "highest"
        plan = gemm.plan_gemm(batch, m, k, n, dtype.name, precision, self.rt.sm_count, vec,
                              tuple(self.sgemm_tile), tuple(self.sgemm_small_tile))
        per_launch = max(1, 65535 // plan.splits)  # grid.z limit
        work = None
        if plan.splits > 1:
            work = CudaBuffer(plan.splits * min(batch, per_launch) * m * n, dtype)
        for b0 in range(0, batch, per_launch):
            nb = min(per_launch, batch - b0)
            c = pc + b0 * m * n * size
            self.rt.launch(plan.kernel, (plan.tiles, 1, nb * plan.splits), (plan.threads,),
                           (_ptr(pa + b0 * m * k * size), _ptr(pb + b0 * k * n * size),
                            _ptr(work.ptr if work else c), _i32(nb), _i32(m), _i32(n), _i32(k),
                            _i32(plan.kchunk)))
            if work is not None:
                self._map(("splitk_sum", self._sfx(dtype)), nb * m * n,
                          (_ptr(work.ptr), _ptr(c), _i64(nb * m * n), _i32(plan.splits)))

    def conv2d(self, a, w, out, in_shape, kernel, out_channels, stride):
        """im2col with our compact kernel (a 6-D strided view), then our GEMM."""
        n, h, wd, c = in_shape
        ho, wo = (h - kernel) // stride + 1, (wd - kernel) // stride + 1
        kdim, size = kernel * kernel * c, a.dtype.itemsize
        if kernel == 1 and stride == 1:  # the input already is the (n*h*w, c) matrix
            self._gemm(a.ptr, w.ptr, out.ptr, 1, n * h * wd, c, out_channels, a.dtype)
            return
        per_chunk = max(1, min(n, CONV_WORKSPACE // (ho * wo * kdim)))
        cols = CudaBuffer(per_chunk * ho * wo * kdim, a.dtype)
        for n0 in range(0, n, per_chunk):
            nb = min(per_chunk, n - n0)
            shape = (nb, ho, wo, kernel, kernel, c)
            strides = (h * wd * c, stride * wd * c, stride * c, wd * c, c, 1)
            self._strided("compact", a.ptr, cols.ptr, shape, strides, n0 * h * wd * c, a.dtype)
            self._gemm(cols.ptr, w.ptr, out.ptr + n0 * ho * wo * out_channels * size, 1,
                       nb * ho * wo, kdim, out_channels, a.dtype)

    # -- fused ---------------------------------------------------------------------------
    def _rows(self, name, rows, cols, dtype, args):
        """Launch a row kernel of fused.cu: a warp per row, or a block for long rows."""
        tpr = 32 if cols <= 1024 else 256
        blocks = min(math.ceil(rows / (THREADS // tpr)), self.rt.max_blocks)
        self.rt.launch((name, self._sfx(dtype), f"t{tpr}"), (blocks,), (THREADS,), args)

    def logsumexp(self, a, out, rows, cols):
        self._rows("logsumexp", rows, cols, a.dtype,
                   (_ptr(a.ptr), _ptr(out.ptr), _i64(rows), _i64(cols)))

    def softmax(self, a, out, rows, cols):
        self._rows("softmax", rows, cols, a.dtype,
                   (_ptr(a.ptr), _ptr(out.ptr), _i64(rows), _i64(cols)))

    def cross_entropy(self, logits, labels, loss, grad, rows, cols):
        self._rows("cross_entropy", rows, cols, logits.dtype,
                   (_ptr(logits.ptr), _ptr(labels.ptr), _ptr(loss.ptr), _ptr(grad.ptr),
                    _i64(rows), _i64(cols)))

    def layernorm(self, x, weight, bias, out, mean, rstd, rows, cols, eps):
        self._rows("layernorm", rows, cols, x.dtype,
                   (_ptr(x.ptr), _ptr(weight.ptr), _ptr(bias.ptr), _ptr(out.ptr), _ptr(mean.ptr),
                    _ptr(rstd.ptr), _i64(rows), _i64(cols), x.dtype.type(eps)))

    def layernorm_backward(self, grad, x, weight, mean, rstd, dx, dweight, dbias, rows, cols):
        dtype = x.dtype
        self._rows("layernorm_bwd_dx", rows, cols, dtype,
                   (_ptr(grad.ptr), _ptr(x.ptr), _ptr(weight.ptr), _ptr(mean.ptr),
                    _ptr(rstd.ptr), _ptr(dx.ptr), _i64(rows), _i64(cols)))
        # dweight, dbias: column sums over rows, split over rows to fill the GPU
        col_blocks = math.ceil(cols / 32)
        splits = max(1, min(math.ceil(rows / 64), math.ceil(2 * self.rt.sm_count / col_blocks),
                            65535))
        per_split = math.ceil(rows / splits)
        splits = math.ceil(rows / per_split)
        if splits == 1:
            dw, db = dweight.ptr, dbias.ptr
        else:
            parts_w, parts_b = CudaBuffer(splits * cols, dtype), CudaBuffer(splits * cols, dtype)
            dw, db = parts_w.ptr, parts_b.ptr
        self.rt.launch(("layernorm_bwd_params", self._sfx(dtype)), (col_blocks, splits), (32, 8),
                       (_ptr(grad.ptr), _ptr(x.ptr), _ptr(mean.ptr), _ptr(rstd.ptr), _ptr(dw),
                        _ptr(db), _i64(rows), _i64(cols), _i64(per_split)))
        if splits > 1:
            for parts, target in ((parts_w, dweight), (parts_b, dbias)):
                self._map(("colsum", self._sfx(dtype)), cols,
                          (_ptr(parts.ptr), _ptr(target.ptr), _i64(splits), _i64(cols)))

    def bias_act(self, a, bias, out, rows, cols, act):
        n = rows * cols
        self._map(("bias_act", act, self._sfx(a.dtype)), n,
                  (_ptr(a.ptr), _ptr(bias.ptr), _ptr(out.ptr), _i64(n), _i64(cols)))

    def sgd_update(self, param, grad, buf, lr, momentum, weight_decay, first_step):
        t = param.dtype.type
        flags = (1 if weight_decay else 0) | (2 if buf is not None else 0) | (4 if first_step else 0)
        self._map(("sgd", self._sfx(param.dtype)), param.size,
                  (_ptr(param.ptr), _ptr(grad.ptr), _ptr(buf.ptr if buf is not None else 0),
                   t(lr), t(momentum), t(weight_decay), _i32(flags), _i64(param.size)))

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
        t = param.dtype.type
        self._map(("adam", self._sfx(param.dtype)), param.size,
                  (_ptr(param.ptr), _ptr(grad.ptr), _ptr(m.ptr), _ptr(v.ptr), t(lr), t(beta1),
                   t(beta2), t(1 - beta1), t(1 - beta2), t(1 - beta1 ** step), t(1 - beta2 ** step),
                   t(eps), t(weight_decay), _i32(1 if weight_decay else 0), _i64(param.size)))
