"""CudaBackend: the backend contract (contract.py) on Needle's own CUDA kernels.

Each op picks an entry point from kernels.py and a launch shape, and launches it on the
current CuPy stream through launch.py (``cuLaunchKernel``, the arguments packed as the
kernel's PTX declares them). All arithmetic happens in kernels/*.cu; CuPy supplies
memory, copies between host and device, and module loading.

A training step of small ops is bound by the host time per launch, so the launch path
passes plain Python ints and floats (launch.py packs them) and looks up each kernel and
each dtype's kernel suffix in a dict once resolved.
"""
import functools
import math
import struct

import numpy as np

from ..contract import Backend, scatter_segments
from . import compiler, gemm, kernels, layout, nvrtc
from .capture import _Capture
from .memory import CudaBuffer, _Blocks, memory_stats, reset_peak

THREADS = 256  # block size of the 1-D kernels (the reduce and row kernels require it)
_GRID_Y = 65535  # CUDA's limit on a grid's y dimension
#: rows per block and threads per block of kernels/attention.cu (ATT_ROWS, x ATT_TPR)
_ATTENTION_ROWS, _ATTENTION_THREADS = 32, 128
_BLOCK = (THREADS, 1, 1)
#: tensors per launch of the *_update_many kernels, and the struct that carries them by value
#: (kernels/fused.cu's SgdList / AdamList, field by field)
FOREACH_MAX = 32
_SGD_LIST = struct.Struct(f"<{3 * FOREACH_MAX}Q{FOREACH_MAX}q{FOREACH_MAX + 1}i{FOREACH_MAX}ii")
_ADAM_LIST = struct.Struct(f"<{4 * FOREACH_MAX}Q{FOREACH_MAX}q{2 * FOREACH_MAX}d"
                           f"{FOREACH_MAX + 1}ii")
#: blocks per tensor at most in those launches (each block strides over its tensor)
FOREACH_BLOCKS = 256
_NO_DEVICE = 100  # cudaErrorNoDevice
_H2D, _D2H, _D2D = 1, 2, 3  # cudaMemcpyKind
# Largest im2col matrix conv2d materialises at once (elements); bigger batches go in chunks.
CONV_WORKSPACE = 1 << 27
# dtype -> kernel name suffix, keyed by the numpy dtype: np.dtype(x).name costs ~1.5 µs
_SUFFIX = {np.dtype(name): sfx for name, sfx in kernels.SUFFIX.items()}


class _Runtime:
    """Per-process state made on first use: the GPU's properties, its compiled kernels,
    and the CuPy calls the hot path makes.

    Args:
        arch: compute capability, e.g. ``"90"``.
        sm_count: multiprocessors of the GPU.
        kernel_cache: :class:`compiler.KernelCache` (``.kernel(file, name)`` -> launch.Kernel).
        cuda: the ``cupy.cuda`` module (the tests pass a stand-in).
    """

    def __init__(self, arch, sm_count, kernel_cache, cuda):
        self.arch = arch
        self.sm_count = sm_count
        self.max_blocks = 32 * sm_count  # grid-stride kernels never need more
        self.kernels = kernel_cache
        self.cuda = cuda
        self.current_stream = cuda.get_current_stream
        self.memcpy_async = cuda.runtime.memcpyAsync
        self._by_parts = {}  # name parts -> kernel: launches are hot, skip the name lookup
        self._upload_stream = None

    @classmethod
    def for_current_device(cls):
        import cupy

        device = cupy.cuda.Device()
        arch = device.compute_capability
        return cls(arch, device.attributes["MultiProcessorCount"], compiler.KernelCache(arch),
                   cupy.cuda)

    def upload_now(self, dst, array):
        """Copy host ``array`` to address ``dst`` on a stream of its own and wait for it
        (usable while another stream is being captured)."""
        if self._upload_stream is None:
            self._upload_stream = self.cuda.Stream(non_blocking=True)
        self.memcpy_async(dst, array.ctypes.data, array.nbytes, _H2D, self._upload_stream.ptr)
        self._upload_stream.synchronize()

    def launch(self, parts, grid, block, args):
        """Launch the kernel ``kernels.name(*parts)`` on CuPy's current stream.

        ``grid`` and ``block`` are ``(x, y, z)``; ``args`` are Python ints and floats, one
        per kernel parameter.
        """
        kernel = self._by_parts.get(parts)
        if kernel is None:
            kernel = self._by_parts[parts] = self.kernels.kernel(*kernels.name(*parts))
        kernel(grid, block, self.current_stream().ptr, args)


def _ptr(buf):
    """A buffer's device address, 0 (a kernel's null) for None."""
    return 0 if buf is None else buf.ptr


@functools.lru_cache(maxsize=4096)
def _strided_plan(shape, strides):
    """A view's coalesced shape and strides, element count, whether it is one dense run, and
    the movement kernels' dims arguments: a model's views recur every step, and working
    them out in Python cost more than the launch (measured on the H200's host)."""
    shape, strides = layout.coalesce(shape, strides)
    dims = layout.kernel_args(shape, strides, 0)[2:]
    return shape, strides, math.prod(shape), layout.is_contiguous(shape, strides), dims


class _Offset:
    """A buffer's address moved on by ``offset`` bytes (a chunk of a batch), for helpers
    that read ``.ptr`` and ``.dtype``."""

    __slots__ = ("ptr", "dtype")

    def __init__(self, buf, offset):
        self.ptr, self.dtype = buf.ptr + offset, buf.dtype


class CudaBackend(Backend):
    """NVIDIA GPUs through Needle's CUDA kernels (NVRTC-compiled, CuPy memory and streams).

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

    @functools.cached_property
    def rt(self):
        """The :class:`_Runtime`, made on first use: nothing touches CuPy until the first op.
        (Once made it is a plain instance attribute, so the hot path pays no property call.)"""
        return _Runtime.for_current_device()

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
        if count <= 0:
            return "no NVIDIA GPU found"
        try:  # our kernels compile with NVRTC, and their PTX gives the launch layouts
            nvrtc.version()
        except nvrtc.NvrtcError as e:
            return f"NVRTC could not be loaded: {e}"
        return None

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

    # -- generated kernels (needle.compile's fusion groups: compiler/codegen/cuda.py) --------
    generated_kernels = "cuda"

    def generated_kernel(self, name, text):
        """The launchable kernel ``name`` of generated CUDA C ``text`` (NVRTC, cached)."""
        return self.rt.kernels.generated(name, text)

    @property
    def max_blocks(self):
        """Blocks a grid-stride kernel needs at most on this GPU."""
        return self.rt.max_blocks

    def copy_ranges(self, ranges):
        """Copy each ``(dst, src, nbytes)`` of ``ranges`` (device addresses) on the current
        stream, four ranges to a kernel launch: a replayed graph's arguments in and its
        results out (a driver copy per range costs the host three times a launch)."""
        rt = self.rt
        for start in range(0, len(ranges), 4):
            chunk = ranges[start:start + 4]
            args = [x for r in chunk for x in r] + [0] * (3 * (4 - len(chunk)))
            words = max(r[2] for r in chunk) // 4 + 1  # (grid-stride: any grid is correct)
            rt.launch(("copy", "ranges4"), (min(-(-words // THREADS), rt.max_blocks),
                                            len(chunk), 1), _BLOCK, args)

    def launch_generated(self, kernel, grid, block, args):
        kernel(grid, block, self.rt.current_stream().ptr, args)

    #: needle.compile replays a call as one recorded CUDA graph here (cuda/capture.py)
    records_graphs = True

    def device_graph(self):
        """A new :class:`~.capture.DeviceGraph`."""
        from .capture import DeviceGraph
        return DeviceGraph()

    # -- memory --------------------------------------------------------------------------
    # the buffer class itself: ``alloc(size, dtype)`` makes one with no extra Python frame
    alloc = staticmethod(CudaBuffer)

    def _memcpy(self, dst, src, nbytes, kind):
        if nbytes and dst != src:
            rt = self.rt
            rt.memcpy_async(dst, src, nbytes, kind, rt.current_stream().ptr)

    def from_numpy(self, array, out):
        array = np.ascontiguousarray(array, dtype=out.dtype)
        out.wrote()
        if _Capture.kept is not None:
            # inside a recording: host data here is the graph's constant (index arrays), so
            # it is copied now, on a stream of its own, into a buffer the graph keeps. The
            # memory is new: a free block may have held a temporary of this recording,
            # which its earlier kernels would overwrite on every launch.
            _Capture.kept.append(out.mem)  # (an earlier kernel of the graph may use it)
            out.mem = _Blocks.allocate(out.nbytes)
            out.ptr = out.mem.ptr
            _Capture.kept.append(out)
            self.rt.upload_now(out.ptr, array)
            return
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
        self.rt.current_stream().synchronize()
        return out

    def synchronize(self):
        self.rt.cuda.runtime.deviceSynchronize()

    def memory_stats(self):
        """``{"bytes_in_use", "peak_bytes", "pool_used_bytes", "pool_total_bytes"}``."""
        return memory_stats()

    def reset_peak_memory(self):
        reset_peak()

    # -- launch helpers ------------------------------------------------------------------
    @staticmethod
    def _sfx(dtype):
        """The kernel name suffix of a dtype: ``"f32"`` or ``"f64"``."""
        sfx = _SUFFIX.get(dtype)
        return sfx if sfx is not None else kernels.SUFFIX[np.dtype(dtype).name]

    def _map(self, parts, n, args):
        """Launch a grid-stride kernel over n items."""
        rt = self.rt
        rt.launch(parts, (layout.launch_blocks(n, THREADS, rt.max_blocks), 1, 1), _BLOCK, args)

    # -- movement ------------------------------------------------------------------------
    def fill(self, out, value):
        out.wrote()
        if out.size:
            self._fill(out.ptr, value, out.size, out.dtype)

    def _fill(self, ptr, value, n, dtype):
        self._map(("fill", self._sfx(dtype)), n, (ptr, value, n))

    def compact(self, a, out, shape, strides, offset):
        self._strided("compact", a.ptr, out.ptr, shape, strides, offset, a.dtype)

    def ewise_setitem(self, a, out, shape, strides, offset):
        out.wrote()
        self._strided("ewise_setitem", a.ptr, out.ptr, shape, strides, offset, out.dtype)

    def scalar_setitem(self, size, value, out, shape, strides, offset):
        out.wrote()
        self._strided("scalar_setitem", value, out.ptr, shape, strides, offset, out.dtype)

    def _strided(self, kind, src, dst, shape, strides, offset, dtype):
        """Copy between a compact buffer and a strided view.

        kind "compact": src is the viewed buffer, dst compact; "ewise_setitem": src compact,
        dst viewed; "scalar_setitem": src is a value, dst viewed. Addresses are raw ints.
        """
        shape, strides, n, dense, dims = _strided_plan(tuple(shape), tuple(strides))
        size = dtype.itemsize
        if dense:  # one dense run: a memcpy or a fill
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
        index = "i32" if n < 2**32 else "i64"
        self._map((kind, self._sfx(dtype), index), n, (src, dst, n, len(shape), offset, *dims))

    # -- elementwise ---------------------------------------------------------------------
    def unary(self, op, a, out):
        self._map(("unary", op, self._sfx(a.dtype)), out.size, (a.ptr, out.ptr, out.size))

    def binary(self, op, a, b, out):
        self._map(("binary", op, self._sfx(a.dtype)), out.size, (a.ptr, b.ptr, out.ptr, out.size))

    def scalar(self, op, a, value, out):
        self._map(("scalar", op, self._sfx(a.dtype)), out.size, (a.ptr, value, out.ptr, out.size))

    def select(self, cond, a, b, out):
        self._map(("select", self._sfx(a.dtype)), out.size,
                  (cond.ptr, a.ptr, b.ptr, out.ptr, out.size))

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
        self.rt.launch(("reduce", op, self._sfx(dtype), f"t{tpr}"), (blocks, splits, 1), _BLOCK,
                       (src, partial.ptr if partial else dst, rows, cols, chunk))
        if partial is not None:
            self._reduce_rows(op, partial.ptr, dst, rows, splits, dtype)

    # -- gather (integer indexing) --------------------------------------------------------
    def _upload_index(self, values, bound):
        """A device copy of host integers ``values``, as int32 when ``bound`` (one more than
        the largest value they may hold) fits, else int64; and that type's kernel suffix."""
        dtype, sfx = (np.int32, "i32") if bound <= 2**31 else (np.int64, "i64")
        buf = CudaBuffer(len(values), dtype)
        self.from_numpy(values, buf)  # converts to dtype; its host copy may go on return
        return buf, sfx

    def take(self, a, index, out):
        if out.size:
            idx, isfx = self._upload_index(index, a.size)
            self._map(("take", self._sfx(a.dtype), isfx), out.size,
                      (a.ptr, idx.ptr, out.ptr, out.size))

    def embedding(self, weight, ids, out, n, rows, dim):
        if n * dim:
            self._map(("embedding", self._sfx(weight.dtype)), n * dim,
                      (weight.ptr, ids.ptr, out.ptr, n, rows, dim))

    def embedding_backward(self, grad, ids, dweight, n, rows, dim):
        self.fill(dweight, 0.0)
        if n * dim:
            self._map(("embedding_backward", self._sfx(grad.dtype)), n * dim,
                      (grad.ptr, ids.ptr, dweight.ptr, n, rows, dim))

    # -- attention (kernels/attention.cu) ------------------------------------------------
    attention_max_dim = kernels.ATTENTION_DIMS[-1]

    def _attention_launches(self, kind, dtype, batch, rows, dim, pointers):
        """Launch attention kernel ``kind`` over (row blocks, batch), splitting the batch
        where it passes the grid's y limit: ``pointers(b0)`` gives the kernel's arguments
        for the problems from ``b0`` on."""
        if not rows * batch:
            return
        d = next(d for d in kernels.ATTENTION_DIMS if d >= dim)
        parts, rt = (kind, self._sfx(dtype), f"d{d}"), self.rt
        for b0 in range(0, batch, _GRID_Y):
            grid = (-(-rows // _ATTENTION_ROWS), min(_GRID_Y, batch - b0), 1)
            rt.launch(parts, grid, (_ATTENTION_THREADS, 1, 1), pointers(b0))

    def attention(self, q, k, v, out, stats, batch, seq_q, seq_k, dim, scale, causal):
        size = q.dtype.itemsize
        qo, ko = seq_q * dim * size, seq_k * dim * size
        self._attention_launches("attention", q.dtype, batch, seq_q, dim, lambda b: (
            q.ptr + b * qo, k.ptr + b * ko, v.ptr + b * ko, out.ptr + b * qo,
            stats.ptr + b * seq_q * size, seq_q, seq_k, dim, scale, int(causal)))

    def attention_backward(self, q, k, v, out, stats, grad, dq, dk, dv, batch, seq_q, seq_k,
                           dim, scale, causal):
        # dq first: its kernel also writes each query's dO . O, which the dk/dv kernel reads
        size = q.dtype.itemsize
        qo, ko, so = seq_q * dim * size, seq_k * dim * size, seq_q * size
        delta = CudaBuffer(batch * seq_q, q.dtype)
        self._attention_launches("attention_bwd_dq", q.dtype, batch, seq_q, dim, lambda b: (
            q.ptr + b * qo, k.ptr + b * ko, v.ptr + b * ko, out.ptr + b * qo,
            stats.ptr + b * so, grad.ptr + b * qo, dq.ptr + b * qo, delta.ptr + b * so,
            seq_q, seq_k, dim, scale, int(causal)))
        self._attention_launches("attention_bwd_dkv", q.dtype, batch, seq_k, dim, lambda b: (
            q.ptr + b * qo, k.ptr + b * ko, v.ptr + b * ko, stats.ptr + b * so,
            grad.ptr + b * qo, delta.ptr + b * so, dk.ptr + b * ko, dv.ptr + b * ko,
            seq_q, seq_k, dim, scale, int(causal)))

    # -- recurrent layers ------------------------------------------------------------------
    @functools.cached_property
    def _layer_replays(self):
        from .capture import StaticReplays
        return StaticReplays(self)

    def _replay_key(self, *key):
        """A layer call's replay key: its shapes, and what the recorded GEMMs depend on
        (the precision and tiles chosen when recording) and the stream it queues on (one
        stream's calls share the graph's buffers in order)."""
        return key + (self.matmul_precision, tuple(self.sgemm_tile),
                      tuple(self.sgemm_small_tile), self.rt.current_stream().ptr)

    def lstm(self, xp, w_hh, h0, c0, hs, cs, gates, steps, batch, hidden):
        # 2 x steps launches: from a shape's second call on, one graph (capture.StaticReplays)
        self._layer_replays.run(self._replay_key("lstm", xp.dtype, steps, batch, hidden),
                                lambda *b: self._lstm_steps(*b, steps, batch, hidden),
                                (xp, w_hh, h0, c0), (hs, cs, gates))

    def lstm_backward(self, dhs, dcs, w_hh, c0, cs, gates, dz, dh0, dc0, steps, batch, hidden):
        self._layer_replays.run(
            self._replay_key("lstm_backward", cs.dtype, steps, batch, hidden),
            lambda *b: self._lstm_steps_backward(*b, steps, batch, hidden),
            (dhs, dcs, w_hh, c0, cs, gates), (dz, dh0, dc0))

    def _lstm_steps(self, xp, w_hh, h0, c0, hs, cs, gates, steps, batch, hidden):
        # per step one product (h[t-1] @ W_hh) and one cell kernel, on slices of the
        # sequence buffers at raw addresses: no buffer or Tensor per step
        dtype = xp.dtype
        zrow, hrow = batch * 4 * hidden * dtype.itemsize, batch * hidden * dtype.itemsize
        hz = CudaBuffer(batch * 4 * hidden, dtype)
        cell = ("lstm_cell", self._sfx(dtype))
        h_prev, c_prev = h0.ptr, c0.ptr
        for t in range(steps):
            h, c, z = hs.ptr + t * hrow, cs.ptr + t * hrow, xp.ptr + t * zrow
            self._gemm(h_prev, w_hh.ptr, hz.ptr, 1, batch, hidden, 4 * hidden, dtype)
            self._map(cell, batch * hidden,
                      (z, hz.ptr, c_prev, gates.ptr + t * zrow, c, h, batch, hidden))
            h_prev, c_prev = h, c

    def _lstm_steps_backward(self, dhs, dcs, w_hh, c0, cs, gates, dz, dh0, dc0, steps, batch,
                             hidden):
        # dh0 and dc0 carry the gradients of h and c back through the steps and end as those
        # of the initial states; dh's carry is the product dz[t] @ W_hh^T
        dtype = cs.dtype
        zrow, hrow = batch * 4 * hidden * dtype.itemsize, batch * hidden * dtype.itemsize
        w_t = CudaBuffer(w_hh.size, dtype)
        self._strided("compact", w_hh.ptr, w_t.ptr, (4 * hidden, hidden), (1, 4 * hidden), 0,
                      dtype)
        self.fill(dh0, 0.0)
        self.fill(dc0, 0.0)
        cell = ("lstm_cell_backward", self._sfx(dtype))
        for t in reversed(range(steps)):
            z, h = t * zrow, t * hrow
            self._map(cell, batch * hidden,
                      (gates.ptr + z, cs.ptr + h, c0.ptr if t == 0 else cs.ptr + h - hrow,
                       dhs.ptr + h, dcs.ptr + h, dh0.ptr, dc0.ptr, dz.ptr + z, batch, hidden))
            self._gemm(dz.ptr + z, w_t.ptr, dh0.ptr, 1, batch, 4 * hidden, hidden, dtype)

    def scatter_add(self, a, index, out):
        """Deterministic: one thread per distinct target sums its sources in order (see
        kernels/gather.cu and contract.scatter_segments)."""
        out.wrote()
        if not a.size:
            return
        order, targets, starts = scatter_segments(index)
        n = targets.size
        seg, isfx = self._upload_index(np.concatenate([starts, targets, order]),
                                       max(a.size, out.size) + 1)
        size = seg.dtype.itemsize  # seg holds starts (n + 1), targets (n), order (a.size)
        self._map(("scatter_add", self._sfx(a.dtype), isfx), n,
                  (a.ptr, seg.ptr, seg.ptr + (n + 1) * size, seg.ptr + (2 * n + 1) * size,
                   out.ptr, n))

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
            self.rt.launch(plan.kernel, (plan.tiles, 1, nb * plan.splits), (plan.threads, 1, 1),
                           (pa + b0 * m * k * size, pb + b0 * k * n * size,
                            work.ptr if work else c, nb, m, n, k, plan.kchunk))
            if work is not None:
                self._map(("splitk_sum", self._sfx(dtype)), nb * m * n,
                          (work.ptr, c, nb * m * n, plan.splits))

    def linear(self, x, w, bias, out, m, k, n, act):
        self._gemm(x.ptr, w.ptr, out.ptr, 1, m, k, n, x.dtype)
        self.bias_act(out, bias, out, m, n, "relu" if act == "relu" else "identity")
        if act == "gelu":
            self._gelu_inplace(out)

    def linear_backward(self, grad, x, w, dx, dw, dbias, m, k, n):
        # one layer's whole backward in one call: no per-product Tensor ops on the host
        dtype = x.dtype
        if dx is not None:  # dx (m, k) = grad (m, n) @ w.T
            wt = CudaBuffer(k * n, dtype)
            self._strided("compact", w.ptr, wt.ptr, (n, k), (1, n), 0, dtype)
            self._gemm(grad.ptr, wt.ptr, dx.ptr, 1, m, n, k, dtype)
        xt = CudaBuffer(m * k, dtype)  # dw (k, n) = x.T @ grad
        self._strided("compact", x.ptr, xt.ptr, (k, m), (1, k), 0, dtype)
        self._gemm(xt.ptr, grad.ptr, dw.ptr, 1, k, m, n, dtype)
        self._map(("colsum", self._sfx(dtype)), n, (grad.ptr, dbias.ptr, m, n))

    def _gelu_inplace(self, y):
        """GELU (tanh form) of a buffer with our elementwise kernels."""
        t = CudaBuffer(y.size, y.dtype)
        self.binary("mul", y, y, t)
        self.binary("mul", t, y, t)
        self.scalar("mul", t, 0.044715, t)
        self.binary("add", t, y, t)
        self.scalar("mul", t, math.sqrt(2 / math.pi), t)
        self.unary("tanh", t, t)
        self.scalar("add", t, 1.0, t)
        self.binary("mul", t, y, t)
        self.scalar("mul", t, 0.5, y)

    def conv2d(self, a, w, out, in_shape, kernel, out_channels, stride):
        """The unpadded NHWC case of :meth:`conv`."""
        self.conv(a, w, out, in_shape, kernel, out_channels, stride, 0)

    # -- the padded convolution (kernels/conv.cu around our GEMM) --------------------------
    def _conv_geometry(self, in_shape, kernel, stride, padding):
        n, h, wd, c = in_shape
        ho, wo = (h + 2 * padding - kernel) // stride + 1, (wd + 2 * padding - kernel) // stride + 1
        taps = kernel * kernel * c
        per_chunk = max(1, min(n, CONV_WORKSPACE // max(1, ho * wo * taps)))  # images at once
        return n, h, wd, c, ho, wo, taps, per_chunk

    def _im2col(self, x, cols, images, geometry, kernel, stride, padding, channels_first,
                transposed=False):
        _, h, wd, c, ho, wo, taps, _ = geometry
        self._map(("im2col", self._sfx(x.dtype)), images * ho * wo * taps,
                  (x.ptr, cols.ptr, images, c, h, wd, ho, wo, kernel, stride, padding,
                   int(channels_first), int(transposed)))

    def conv(self, x, w, out, in_shape, kernel, out_channels, stride, padding,
             channels_first=False):
        """im2col (zero padding, either layout) and our GEMM, a chunk of images at a time;
        NCHW output is the GEMM's NHWC rows transposed."""
        geometry = self._conv_geometry(in_shape, kernel, stride, padding)
        n, h, wd, c, ho, wo, taps, per_chunk = geometry
        dtype, size, pixels = x.dtype, x.dtype.itemsize, ho * wo
        if kernel == 1 and stride == 1 and padding == 0 and not channels_first:
            self._gemm(x.ptr, w.ptr, out.ptr, 1, n * h * wd, c, out_channels, dtype)
            return
        cols = CudaBuffer(per_chunk * pixels * taps, dtype)
        rows = CudaBuffer(per_chunk * pixels * out_channels, dtype) if channels_first else None
        for n0 in range(0, n, per_chunk):
            nb = min(per_chunk, n - n0)
            chunk_x = _Offset(x, n0 * h * wd * c * size)
            self._im2col(chunk_x, cols, nb, geometry, kernel, stride, padding, channels_first)
            chunk_out = out.ptr + n0 * pixels * out_channels * size
            self._gemm(cols.ptr, w.ptr, rows.ptr if channels_first else chunk_out, 1,
                       nb * pixels, taps, out_channels, dtype)
            if channels_first:  # (nb, pixels, c_out) rows -> (nb, c_out, pixels)
                self._strided("compact", rows.ptr, chunk_out, (nb, out_channels, pixels),
                              (pixels * out_channels, 1, out_channels), 0, dtype)

    def conv_backward(self, grad, x, w, dx, dw, in_shape, kernel, out_channels, stride, padding,
                      channels_first=False):
        """dw = im2col(x)^T @ grad and dx = col2im(grad @ w^T), with grad as NHWC rows (a
        transposed copy of NCHW grad), a chunk of images at a time."""
        geometry = self._conv_geometry(in_shape, kernel, stride, padding)
        n, h, wd, c, ho, wo, taps, per_chunk = geometry
        dtype, size, pixels = x.dtype, x.dtype.itemsize, ho * wo
        rows = grad
        if channels_first:  # (n, c_out, pixels) -> (n, pixels, c_out)
            rows = CudaBuffer(grad.size, dtype)
            self._strided("compact", grad.ptr, rows.ptr, (n, pixels, out_channels),
                          (out_channels * pixels, 1, pixels), 0, dtype)
        cols = CudaBuffer(per_chunk * pixels * taps, dtype)
        partial = CudaBuffer(dw.size, dtype) if dw is not None and per_chunk < n else None
        w_t = None
        if dx is not None:  # (taps, c_out) -> (c_out, taps)
            w_t = CudaBuffer(w.size, dtype)
            self._strided("compact", w.ptr, w_t.ptr, (out_channels, taps), (1, out_channels), 0,
                          dtype)
        for n0 in range(0, n, per_chunk):
            nb = min(per_chunk, n - n0)
            chunk_rows = rows.ptr + n0 * pixels * out_channels * size
            if dw is not None:  # (taps, nb * pixels) @ (nb * pixels, c_out)
                self._im2col(_Offset(x, n0 * h * wd * c * size), cols, nb, geometry, kernel,
                             stride, padding, channels_first, transposed=True)
                target = dw if n0 == 0 else partial
                self._gemm(cols.ptr, chunk_rows, target.ptr, 1, taps, nb * pixels,
                           out_channels, dtype)
                if n0:
                    self.binary("add", dw, partial, dw)
            if dx is not None:  # (nb * pixels, c_out) @ (c_out, taps), summed onto the input
                self._gemm(chunk_rows, w_t.ptr, cols.ptr, 1, nb * pixels, out_channels, taps,
                           dtype)
                self._map(("col2im", self._sfx(dtype)), nb * c * h * wd,
                          (cols.ptr, dx.ptr + n0 * h * wd * c * size, nb, c, h, wd, ho, wo,
                           kernel, stride, padding, int(channels_first)))

    # -- fused ---------------------------------------------------------------------------
    def _rows(self, name, rows, cols, dtype, args):
        """Launch a row kernel of fused.cu: a warp per row, or a block for long rows."""
        tpr = 32 if cols <= 1024 else 256
        blocks = min(math.ceil(rows / (THREADS // tpr)), self.rt.max_blocks)
        self.rt.launch((name, self._sfx(dtype), f"t{tpr}"), (blocks, 1, 1), _BLOCK, args)

    def logsumexp(self, a, out, rows, cols):
        self._rows("logsumexp", rows, cols, a.dtype, (a.ptr, out.ptr, rows, cols))

    def softmax(self, a, out, rows, cols):
        self._rows("softmax", rows, cols, a.dtype, (a.ptr, out.ptr, rows, cols))

    def cross_entropy(self, logits, labels, loss, grad, rows, cols):
        self._rows("cross_entropy", rows, cols, logits.dtype,
                   (logits.ptr, labels.ptr, loss.ptr, grad.ptr, rows, cols))

    def layernorm(self, x, weight, bias, out, mean, rstd, rows, cols, eps):
        self._rows("layernorm", rows, cols, x.dtype,
                   (x.ptr, weight.ptr, bias.ptr, out.ptr, mean.ptr, rstd.ptr, rows, cols, eps))

    def layernorm_backward(self, grad, x, weight, mean, rstd, dx, dweight, dbias, rows, cols):
        dtype = x.dtype
        self._rows("layernorm_bwd_dx", rows, cols, dtype,
                   (grad.ptr, x.ptr, weight.ptr, mean.ptr, rstd.ptr, dx.ptr, rows, cols))
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
        self.rt.launch(("layernorm_bwd_params", self._sfx(dtype)), (col_blocks, splits, 1),
                       (32, 8, 1), (grad.ptr, x.ptr, mean.ptr, rstd.ptr, dw, db, rows, cols,
                                    per_split))
        if splits > 1:
            for parts, target in ((parts_w, dweight), (parts_b, dbias)):
                self._map(("colsum", self._sfx(dtype)), cols, (parts.ptr, target.ptr, splits, cols))

    def bias_act(self, a, bias, out, rows, cols, act):
        n = rows * cols
        self._map(("bias_act", act, self._sfx(a.dtype)), n, (a.ptr, bias.ptr, out.ptr, n, cols))

    def batchnorm(self, x, x_bias, mean, var, weight, bias, out, channels, inner, eps, act):
        n = out.size
        self._map(("batchnorm", act, self._sfx(x.dtype)), n,
                  (x.ptr, _ptr(x_bias), mean.ptr, var.ptr, weight.ptr, bias.ptr, out.ptr, n,
                   channels, inner, eps))

    def batchnorm_train(self, x, weight, bias, out, mean, var, rstd, channels, inner, eps,
                        act="identity", running_mean=None, running_var=None, momentum=0.0,
                        unbiased=1.0, x_bias=None):
        # one block per channel (kernels/fused.cu): statistics, running update and output
        # in one launch
        if running_mean is not None:
            running_mean.wrote()
            running_var.wrote()
        outer = x.size // (channels * inner)
        self.rt.launch(("batchnorm_train", act, self._sfx(x.dtype)),
                       (min(channels, self.rt.max_blocks), 1, 1), _BLOCK,
                       (x.ptr, _ptr(x_bias), weight.ptr, bias.ptr, out.ptr, mean.ptr, var.ptr,
                        rstd.ptr, _ptr(running_mean), _ptr(running_var), momentum,
                        1 - momentum, unbiased, outer, channels, inner, eps))

    def batchnorm_train_backward(self, grad, x, weight, mean, rstd, dx, dweight, dbias,
                                 channels, inner, act="identity", out=None, x_bias=None,
                                 dx_bias=None):
        outer = x.size // (channels * inner)
        self.rt.launch(("batchnorm_train_bwd", act, self._sfx(x.dtype)),
                       (min(channels, self.rt.max_blocks), 1, 1), _BLOCK,
                       (grad.ptr, x.ptr, _ptr(x_bias), _ptr(out), weight.ptr, mean.ptr,
                        rstd.ptr, dx.ptr, dweight.ptr, dbias.ptr, _ptr(dx_bias), outer,
                        channels, inner))

    def running_stats(self, running_mean, running_var, mean, var, momentum, unbiased):
        running_mean.wrote()
        running_var.wrote()
        self._map(("running_stats", self._sfx(mean.dtype)), mean.size,
                  (running_mean.ptr, running_var.ptr, mean.ptr, var.ptr, momentum, 1 - momentum,
                   unbiased, mean.size))

    def sgd_update(self, param, grad, buf, lr, momentum, weight_decay, first_step):
        flags = (1 if weight_decay else 0) | (2 if buf is not None else 0) | (4 if first_step else 0)
        param.wrote()
        self._map(("sgd", self._sfx(param.dtype)), param.size,
                  (param.ptr, grad.ptr, _ptr(buf), lr, momentum, weight_decay, flags,
                   param.size))

    def sgd_update_many(self, params, grads, bufs, lr, momentum, weight_decay, first_steps):
        flags = (1 if weight_decay else 0) | (2 if momentum else 0)
        sfx = self._sfx(params[0].dtype)
        for part, first_block, blocks, pad in self._foreach(params):
            packed = _SGD_LIST.pack(
                *[p.ptr for p in params[part]], *pad, *[g.ptr for g in grads[part]], *pad,
                *[_ptr(b) for b in bufs[part]], *pad,
                *[p.size for p in params[part]], *pad, *first_block,
                *[flags | (4 if first else 0) for first in first_steps[part]], *pad,
                len(params[part]))
            self.rt.launch(("sgd_many", sfx), (blocks, 1, 1), _BLOCK,
                           (packed, lr, momentum, weight_decay))

    def adam_update_many(self, params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay,
                         steps):
        sfx = self._sfx(params[0].dtype)
        for part, first_block, blocks, pad in self._foreach(params):
            packed = _ADAM_LIST.pack(
                *[p.ptr for p in params[part]], *pad, *[g.ptr for g in grads[part]], *pad,
                *[m.ptr for m in ms[part]], *pad, *[v.ptr for v in vs[part]], *pad,
                *[p.size for p in params[part]], *pad,
                *[1 - beta1 ** t for t in steps[part]], *pad,
                *[1 - beta2 ** t for t in steps[part]], *pad, *first_block, len(params[part]))
            self.rt.launch(("adam_many", sfx), (blocks, 1, 1), _BLOCK,
                           (packed, lr, beta1, beta2, 1 - beta1, 1 - beta2, eps, weight_decay,
                            1 if weight_decay else 0))

    @staticmethod
    def _foreach(params):
        """Per launch of an ``*_update_many`` kernel (up to FOREACH_MAX tensors): the slice
        of the lists it takes, each tensor's first block (FOREACH_MAX + 1 of them, the unused
        repeating the total), the total (up to FOREACH_BLOCKS per tensor) and the zeros that
        pad the struct's arrays. Each param is marked written."""
        for lo in range(0, len(params), FOREACH_MAX):
            part = slice(lo, lo + FOREACH_MAX)
            first, total = [], 0
            for p in params[part]:
                p.wrote()
                first.append(total)
                total += max(1, min(-(-p.size // THREADS), FOREACH_BLOCKS))
            yield (part, first + [total] * (FOREACH_MAX + 1 - len(first)), total,
                   [0] * (FOREACH_MAX - len(first)))

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
        param.wrote()
        self._map(("adam", self._sfx(param.dtype)), param.size,
                  (param.ptr, grad.ptr, m.ptr, v.ptr, lr, beta1, beta2, 1 - beta1, 1 - beta2,
                   1 - beta1 ** step, 1 - beta2 ** step, eps, weight_decay,
                   1 if weight_decay else 0, param.size))
