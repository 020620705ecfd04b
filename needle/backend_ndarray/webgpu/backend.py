"""needle.webgpu(): the backend contract on our own WGSL kernels, run through wgpu on
Metal (Apple GPUs), Vulkan (NVIDIA, AMD, Intel, Mesa's lavapipe) or DX12.

Buffers stay on the GPU; every op records one or more compute dispatches into the pending
command encoder (recorder.py) and returns without waiting. ``to_numpy`` and
``synchronize`` submit and wait. float32 only: WGSL has no float64.
"""
import struct
from dataclasses import replace
from math import prod

import numpy as np

from ...errors import DeviceUnavailableError, DTypeError
from ..contract import Backend, Declined, scatter_segments
from . import gemm, plans
from .context import DeviceLimitError, Unavailable, open_context
from .kernels import KernelCache
from .memory import BufferPool
from .recorder import Recorder

SHORT_ROW = 64       # reductions over rows this short use one thread per row
ROW_CHUNK = 4096     # long single rows are reduced in chunks of about this many, then again


def _pack(fmt, *values):
    return struct.pack("<" + fmt, *values)


def _size(nbytes):
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes} bytes"


def _pad8(values):
    return tuple(values) + (0,) * (plans.MAX_DIMS - len(values))


class WebGPUBackend(Backend):
    """The webgpu device's backend.

    Args:
        adapter: substring of the adapter name to use (default: env NEEDLE_WEBGPU_ADAPTER,
            else the high-performance adapter wgpu picks).
        subgroups: use subgroup operations in reductions where the adapter has them
            (default True; env NEEDLE_WEBGPU_SUBGROUPS=0 turns them off).
        max_binding: cap, in bytes, on one storage binding (tests set a small one to
            exercise how large tensors are split).
        batch: dispatches recorded before a submit (default 64).

    Example:
        >>> needle.webgpu().backend.adapter_info()["backend"]
        'Vulkan'
    """

    name = "webgpu"
    dtypes = ("float32",)

    def __init__(self, adapter=None, subgroups=None, max_binding=None, batch=64):
        self._reason = None
        try:
            self._ctx = open_context(adapter, subgroups, max_binding)
        except Unavailable as e:
            self._ctx, self._reason = None, str(e)
            return
        reduce_file = ("workgroup_reduce_subgroup.wgsl" if self._ctx.subgroups
                       else "workgroup_reduce_shared.wgsl")
        self._kernels = KernelCache(self._ctx.device, {"workgroup_reduce.wgsl": reduce_file})
        self._rec = Recorder(self._ctx, batch)
        self._pool = BufferPool(self._ctx)
        limits = self._ctx.limits
        self._max_elems = limits.max_binding // 4
        self._align = max(limits.storage_align // 4, 1)
        self._max_groups = limits.max_groups
        self._max_shared = limits.max_workgroup_storage

    def unavailable_reason(self):
        return self._reason

    def adapter_info(self):
        """The adapter in use: name, vendor, backend ("Metal", "Vulkan", "D3D12"),
        adapter_type, subgroups, features, limits, wgpu_version."""
        if self._ctx is None:
            raise DeviceUnavailableError(f"needle.webgpu() is not available: {self._reason}")
        return self._ctx.info()

    def memory_stats(self):
        """``{"bytes_in_use", "peak_bytes", "pool_free_bytes", "pool_total_bytes"}`` of the
        buffers this backend allocated (pool buckets counted whole)."""
        return self._pool.stats()

    def reset_peak_memory(self):
        self._pool.peak = self._pool.in_use

    def stats(self):
        """Counters: dispatches recorded, submissions made, bind groups made (the others
        were reused), pipelines compiled."""
        return {"dispatches": self._rec.dispatches, "submissions": self._rec.submissions,
                "bind_groups": self._rec.bind_groups, "pending": self._rec.pending,
                "pipelines": len(self._kernels)}

    # -- generated kernels (needle.compile's fusion groups: compiler/codegen/wgsl.py) ---------
    generated_kernels = "wgsl"

    @property
    def max_storage_buffers(self):
        """Storage buffers one kernel may bind on this adapter."""
        return self._ctx.limits.max_storage_buffers

    @property
    def max_binding_elements(self):
        """float32 elements one storage binding may hold on this adapter."""
        return self._max_elems

    def generated_kernel(self, name, text):
        return self._kernels.generated(name, text)

    def launch_generated(self, kernel, outs, ins, params, groups):
        """Record one dispatch of a generated kernel: binding 0 its parameters, then each
        of ``outs`` and ``ins`` (buffers, bound whole), ``groups`` workgroups."""
        bindings = {1 + b: self._whole(buf, "a generated kernel")
                    for b, buf in enumerate(list(outs) + list(ins))}
        self._rec.dispatch(kernel, bindings, params, plans.grid(groups, self._max_groups))

    # -- launching ----------------------------------------------------------------------
    def _run(self, file, entry, bindings, params, groups, consts=None, parts=()):
        """Record one dispatch; ``groups`` is a 1-D count (laid out as a 2-D grid) or an
        explicit ``(x, y, z)``."""
        kernel = self._kernels.get(file, entry, consts, parts)
        if isinstance(groups, int):
            groups = plans.grid(groups, self._max_groups)
        elif max(groups) > self._max_groups:
            raise DeviceLimitError(f"{entry}: grid {groups} exceeds this adapter's "
                                   f"{self._max_groups} workgroups per dimension")
        self._rec.dispatch(kernel, bindings, params, groups)

    def _span(self, buf, start, count):
        """Binding of elements ``[start, start + count)``; start is a multiple of the
        binding alignment."""
        return (buf.gpu, start * 4, max(count, 1) * 4)

    def _whole(self, buf, what):
        """Binding of all of ``buf``, or a clear error if it exceeds one binding."""
        if buf.size > self._max_elems:
            raise DeviceLimitError(
                f"needle.webgpu() {what}: an operand of {_size(buf.size * 4)} exceeds this "
                f"adapter's largest storage binding ({_size(self._max_elems * 4)}); split "
                f"the work into smaller tensors")
        return (buf.gpu, 0, max(buf.size, 4) * 4)  # vec4 views need 16 bytes at least

    def _elementwise(self, file, entry, ins, outs, params, consts=None):
        """Run an elementwise kernel over ``outs[0].size`` elements in binding-sized
        chunks. ``ins``/``outs``: ``{binding: buffer}``; ``params(start, count)`` packs."""
        n = next(iter(outs.values())).size
        if n == 0:
            return
        for start, count in plans.chunks(n, self._max_elems, self._align):
            bindings = {b: self._span(buf, start, count) for b, buf in {**ins, **outs}.items()}
            self._run(file, entry, bindings, params(start, count), -(-count // 256), consts)

    # -- memory -------------------------------------------------------------------------
    def alloc(self, size, dtype):
        if np.dtype(dtype) != np.float32:
            raise DTypeError(f"needle.webgpu() holds float32 only (WGSL has no float64), "
                             f"not {np.dtype(dtype).name}")
        if size * 4 > self._ctx.limits.max_buffer:
            raise DeviceLimitError(
                f"needle.webgpu(): a buffer of {size} float32 ({_size(size * 4)}) exceeds "
                f"this adapter's max buffer size ({_size(self._ctx.limits.max_buffer)})")
        return self._pool.alloc(size)

    def from_numpy(self, array, out):
        self._rec.upload(np.ascontiguousarray(array, dtype=np.float32).reshape(-1), out.gpu)

    def to_numpy(self, a, shape, strides, offset):
        n = prod(shape)
        if n == 0:  # (a mapping cannot be empty)
            return np.empty(shape, np.float32)
        if plans.simplify(shape, strides)[1] in ((), (1,)):  # one contiguous run
            data = self._rec.download(a.gpu, offset * 4, n * 4)
        else:
            tmp = self.alloc(n, np.float32)
            self.compact(a, tmp, shape, strides, offset)
            data = self._rec.download(tmp.gpu, 0, n * 4)
        return data.reshape(shape)

    def synchronize(self):
        self._rec.synchronize()

    def flush(self):
        """Submit the recorded work without waiting for it (it still runs in order)."""
        self._rec.flush()

    def one_submission(self):
        """A context manager: every op recorded in the block (and whatever was pending
        before it) goes into one ``queue.submit``, made without waiting when the outermost
        block ends, however many dispatches that is. A host read or ``synchronize`` inside
        the block still submits at once (so the block then makes more than one).

        Example:
            >>> with backend.one_submission():
            ...     y = train_step(x)  # hundreds of dispatches, one submission
        """
        return self._rec.one_submission()

    # -- movement -----------------------------------------------------------------------
    def fill(self, out, value):
        self._elementwise("buffers.wgsl", "fill", {}, {2: out},
                          lambda start, count: _pack("IfI", count, value, 0))

    def _strided(self, entry, view_buf, compact_buf, shape, strides, offset, value=0.0):
        # strided.wgsl binds src at 1 and dst at 2; the view is src for compact only
        view_b, compact_b = (1, 2) if entry == "compact" else (2, 1)
        for shp, strd, off, base in plans.strided_pieces(shape, strides, offset,
                                                         self._max_elems, self._align):
            n = prod(shp)
            lo, hi = plans.span(shp, strd, off)
            vstart, vlen, _ = plans.window(lo, hi - lo + 1, self._align)
            bindings = {view_b: self._span(view_buf, vstart, vlen)}
            cbase = 0
            if compact_buf is not None:
                cstart, clen, cbase = plans.window(base, n, self._align)
                bindings[compact_b] = self._span(compact_buf, cstart, clen)
            params = _pack("IIifIIII8I8i", n, len(shp), off - vstart, value, cbase, 0, 0, 0,
                           *_pad8(shp), *_pad8(strd))
            self._run("strided.wgsl", entry, bindings, params, -(-n // 256))

    def compact(self, a, out, shape, strides, offset):
        self._strided("compact", a, out, shape, strides, offset)

    def ewise_setitem(self, a, out, shape, strides, offset):
        if a.gpu is out.gpu:  # one buffer cannot be bound read-only and writable at once
            a = self._copy(a)
        self._strided("ewise_setitem", out, a, shape, strides, offset)

    def scalar_setitem(self, size, value, out, shape, strides, offset):
        self._strided("scalar_setitem", out, None, shape, strides, offset, value)

    def _copy(self, a):
        out = self.alloc(a.size, np.float32)
        self._rec.copy(a.gpu, 0, out.gpu, 0, a.size * 4)
        return out

    # -- arithmetic ---------------------------------------------------------------------
    def unary(self, op, a, out):
        self._elementwise("elementwise.wgsl", "unary", {1: a}, {3: out},
                          lambda start, count: _pack("IfI", count, 0.0, 0),
                          {"OP": "UNARY_" + op.upper()})

    def binary(self, op, a, b, out):
        self._elementwise("elementwise.wgsl", "binary", {1: a, 2: b}, {3: out},
                          lambda start, count: _pack("IfI", count, 0.0, 0),
                          {"OP": "BINARY_" + op.upper()})

    def scalar(self, op, a, value, out):
        self._elementwise("elementwise.wgsl", "scalar", {1: a}, {3: out},
                          lambda start, count: _pack("IfI", count, value, 0),
                          {"OP": "BINARY_" + op.upper()})

    def select(self, cond, a, b, out):
        self._elementwise("elementwise.wgsl", "select_ab", {1: a, 2: b, 4: cond}, {3: out},
                          lambda start, count: _pack("IfI", count, 0.0, 0),
                          {"OP": "BINARY_NE"})

    def reduce(self, op, a, out, reduce_size):
        rows, row_len = out.size, reduce_size
        consts = {"OP": "REDUCE_" + op.upper(), "WG": 256}
        if row_len <= SHORT_ROW:
            self._reduce_pass("reduce_short_rows", a, out, rows, row_len, row_len, 1, consts)
            return
        chunks = 1
        if row_len > 2 * ROW_CHUNK and rows < 1024:  # too few rows to fill the GPU
            chunks = min(-(-row_len // ROW_CHUNK), -(-2048 // rows))
        chunk_len = -(-row_len // chunks)
        chunks = -(-row_len // chunk_len)
        if chunks == 1:
            self._reduce_pass("reduce_rows", a, out, rows, row_len, chunk_len, 1, consts)
            return
        partial = self.alloc(rows * chunks, np.float32)
        self._reduce_pass("reduce_rows", a, partial, rows, row_len, chunk_len, chunks, consts)
        self.reduce(op, partial, out, chunks)

    def _reduce_pass(self, entry, a, out, rows, row_len, chunk_len, chunks, consts):
        # rows go in groups whose input fits one binding window; results of a group that
        # does not start at an aligned output offset go through a scratch buffer + copy
        group = (self._max_elems - self._align) // row_len
        if group < 1:
            raise DeviceLimitError(
                f"needle.webgpu() reduce: one row of {row_len} elements exceeds this "
                f"adapter's largest storage binding ({self._max_elems} elements)")
        for r0 in range(0, rows, group):
            count = min(group, rows - r0)
            start, length, a_off = plans.window(r0 * row_len, count * row_len, self._align)
            whole = count == rows
            dst = out if whole else self.alloc(count * chunks, np.float32)
            params = _pack("IIIII", count, row_len, chunk_len, chunks, a_off)
            groups = count * chunks if entry == "reduce_rows" else -(-count // 256)
            self._run("reduce.wgsl", entry, {1: self._span(a, start, length),
                                             2: self._whole(dst, "reduce")},
                      params, groups, consts)
            if not whole:
                self._rec.copy(dst.gpu, 0, out.gpu, r0 * chunks * 4, count * chunks * 4)

    # -- gather (integer indexing) ------------------------------------------------------
    def _upload_u32(self, values):
        """A buffer holding host integers ``values`` as u32 (gather.wgsl binds it as
        array<u32>; its bytes go through the one upload path, seen as float32)."""
        buf = self.alloc(len(values), np.float32)
        self.from_numpy(np.ascontiguousarray(values, dtype=np.uint32).view(np.float32), buf)
        return buf

    def take(self, a, index, out):
        if out.size == 0:
            return
        idx, a_whole = self._upload_u32(index), self._whole(a, "take")
        for start, count in plans.chunks(out.size, self._max_elems, self._align):
            self._run("gather.wgsl", "take", {1: a_whole, 2: self._span(idx, start, count),
                                              3: self._span(out, start, count)},
                      _pack("I", count), -(-count // 256))

    def scatter_add(self, a, index, out):
        if a.size == 0:
            return
        if a.gpu is out.gpu:  # one buffer cannot be bound read-only and writable at once
            a = self._copy(a)
        order, targets, starts = (self._upload_u32(v) for v in scatter_segments(index))
        bindings = {1: a, 3: out, 4: starts, 5: targets, 6: order}
        self._run("gather.wgsl", "scatter_add",
                  {b: self._whole(buf, "scatter_add") for b, buf in bindings.items()},
                  _pack("I", targets.size), -(-targets.size // 256))

    def embedding(self, weight, ids, out, n, rows, dim):
        if not n * dim:
            return
        if out.size > self._max_elems >= weight.size:  # (take writes out piece by piece)
            self.take(weight, self._positions(ids, n, rows, dim), out)
            return
        self._embedding("embedding", {1: weight, 2: ids, 3: out}, n, rows, dim)

    def embedding_backward(self, grad, ids, dweight, n, rows, dim):
        self.fill(dweight, 0.0)
        if n * dim:
            self._embedding("embedding_backward", {1: grad, 2: ids, 4: dweight}, n, rows, dim)

    def _embedding(self, entry, bindings, n, rows, dim):
        """A thread per element of the (n, dim) rows (wgsl/embedding.wgsl)."""
        self._run("embedding.wgsl", entry, {b: self._whole(buf, entry) for b, buf in
                                            bindings.items()},
                  _pack("III", n, rows, dim), -(-(n * dim) // 256))

    def _positions(self, ids, n, rows, dim):
        """The flat positions of the rows ``ids`` pick, read on the host, for a result
        larger than one binding (gathered piece by piece). The ops layer checks the ids of
        an eager call; here a replay's are checked too (a take cannot make the NaN row an
        id out of range gets elsewhere)."""
        values = self.to_numpy(ids, (n,), (1,), 0)
        bad = (values < 0) | (values >= rows)
        if bad.any():
            raise IndexError(f"embedding: ids must lie in [0, {rows}), got "
                             f"{values[bad][:4]} (a table larger than one binding)")
        return (values.astype(np.int64)[:, None] * dim + np.arange(dim)).reshape(-1)

    # -- recurrent layers ------------------------------------------------------------------
    def lstm(self, xp, w_hh, h0, c0, hs, cs, gates, steps, batch, hidden):
        # per step one product of the running h and a cell dispatch (wgsl/lstm.wgsl), all
        # in the call's one submission; the cell reads and writes the sequences at offsets
        n = batch * hidden
        self._fits_one_binding(xp)
        h, c, hz = self._copy(h0), self._copy(c0), self.alloc(4 * n, np.float32)
        bindings = {b: self._whole(buf, "lstm") for b, buf in
                    ((1, xp), (2, hz), (3, c), (4, gates), (5, cs), (6, hs), (7, h))}
        for t in range(steps):
            self.matmul(h, w_hh, hz, 1, batch, hidden, 4 * hidden)
            self._run("lstm.wgsl", "lstm_cell", bindings,
                      _pack("IIII", n, hidden, t * 4 * n, t * n), -(-n // 256))

    def lstm_backward(self, dhs, dcs, w_hh, c0, cs, gates, dz, dh0, dc0, steps, batch, hidden):
        # dh0 and dc0 carry the gradients back through the steps (ending as the initial
        # states'); dz[t] is copied to a buffer of its own for the product dz[t] @ W_hh^T
        n = batch * hidden  # (sequences that fit: the forward declined the others)
        w_t, dz_t = self.alloc(w_hh.size, np.float32), self.alloc(4 * n, np.float32)
        self.compact(w_hh, w_t, (4 * hidden, hidden), (1, 4 * hidden), 0)
        self.fill(dh0, 0.0)
        self.fill(dc0, 0.0)
        bindings = {b: self._whole(buf, "lstm_backward") for b, buf in
                    ((1, gates), (2, cs), (3, c0), (4, dhs), (5, dcs), (6, dh0), (7, dc0),
                     (8, dz))}
        for t in reversed(range(steps)):
            self._run("lstm_backward.wgsl", "lstm_cell_backward", bindings,
                      _pack("IIIIIIII", n, hidden, t * 4 * n, t * n, int(t == 0), 0, 0, 0),
                      -(-n // 256))
            self._rec.copy(dz.gpu, t * 4 * n * 4, dz_t.gpu, 0, 4 * n * 4)
            self.matmul(dz_t, w_t, dh0, 1, batch, 4 * hidden, hidden)

    def _fits_one_binding(self, sequence):
        """The layer binds its sequences whole: larger ones go to the composition."""
        if sequence.size > self._max_elems:
            raise Declined(f"webgpu lstm: a sequence of {_size(sequence.size * 4)} exceeds one "
                           f"storage binding")

    def matmul(self, a, b, out, batch, m, k, n):
        self._gemm(gemm.plan(batch, m, k, n, max_shared=self._max_shared), a, b, out,
                   batch, m, k, n, (0,) * 7)

    def conv2d(self, a, w, out, in_shape, kernel, out_channels, stride):
        images, h, wd, c = in_shape
        ho, wo = (h - kernel) // stride + 1, (wd - kernel) // stride + 1
        m, k = images * ho * wo, kernel * kernel * c
        io = "conv4" if c % 4 == 0 and out_channels % 4 == 0 else "conv"
        self._gemm(gemm.plan(1, m, k, out_channels, io=io, max_shared=self._max_shared), a, w,
                   out, 1, m, k, out_channels, (h, wd, c, kernel, stride, ho, wo))

    def _gemm(self, plan, a, b, out, batch, m, k, n, conv):
        if plan.splits > 1 and plan.splits * batch * m * n > self._max_elems:
            plan = replace(plan, splits=1, k_split=k)  # no room for split-K partials
        splits = plan.splits
        c = out if splits == 1 else self.alloc(splits * batch * m * n, np.float32)
        bindings = {1: self._whole(a, "matmul"), 2: self._whole(b, "matmul"),
                    3: self._whole(c, "matmul")}
        gx, gy = plan.groups(m, n)
        per_dispatch = max(self._max_groups // splits, 1)
        for batch0 in range(0, batch, per_dispatch):
            count = min(per_dispatch, batch - batch0)
            params = _pack("16I", m, k, n, plan.k_split, splits, batch0, batch, 0,
                           *conv[:4], *conv[4:], 0)
            self._run("matmul.wgsl", "matmul", bindings, params, (gx, gy, count * splits),
                      plan.consts(), parts=(f"matmul_io_{plan.io}.wgsl",))
        if splits > 1:
            total = batch * m * n
            self._run("buffers.wgsl", "sum_slices",
                      {1: self._whole(c, "matmul"), 2: self._whole(out, "matmul")},
                      _pack("IfI", total, 0.0, splits), -(-total // 256))

    # -- fused --------------------------------------------------------------------------
    def _rows(self, entry, bindings, rows, cols, eps=0.0, groups=None):
        wg = 64 if cols <= 256 else 256
        bound = {b: self._whole(buf, entry) for b, buf in bindings.items()}
        self._run("rows.wgsl", entry, bound, _pack("IIf", rows, cols, eps),
                  rows if groups is None else groups(wg), {"WG": wg})

    def logsumexp(self, a, out, rows, cols):
        self._rows("logsumexp", {1: a, 4: out}, rows, cols)

    def softmax(self, a, out, rows, cols):
        self._rows("softmax", {1: a, 3: out}, rows, cols)

    def cross_entropy(self, logits, labels, loss, grad, rows, cols):
        self._rows("cross_entropy", {1: logits, 2: labels, 3: grad, 4: loss}, rows, cols)

    def layernorm(self, x, weight, bias, out, mean, rstd, rows, cols, eps):
        self._rows("layernorm", {1: x, 3: out, 4: mean, 5: rstd, 6: weight, 7: bias},
                   rows, cols, eps)

    def layernorm_backward(self, grad, x, weight, mean, rstd, dx, dweight, dbias, rows, cols):
        self._rows("layernorm_backward_dx",
                   {1: x, 2: grad, 3: dx, 4: mean, 5: rstd, 6: weight}, rows, cols)
        self._rows("layernorm_backward_dwb",
                   {1: x, 2: grad, 3: dweight, 4: mean, 5: rstd, 8: dbias}, rows, cols,
                   groups=lambda wg: -(-cols // wg))

    def bias_act(self, a, bias, out, rows, cols, act):
        consts = {"OP": "UNARY_RELU" if act == "relu" else "UNARY_IDENTITY"}
        for start, count in plans.chunks(out.size, self._max_elems, self._align):
            bindings = {1: self._span(a, start, count), 2: self._whole(bias, "bias_act"),
                        3: self._span(out, start, count)}
            self._run("elementwise.wgsl", "bias_act", bindings,
                      _pack("IfII", count, 0.0, cols, start % cols), -(-count // 256), consts)

    def batchnorm(self, x, x_bias, mean, var, weight, bias, out, channels, inner, eps, act):
        consts = {"OP": "UNARY_RELU" if act == "relu" else "UNARY_IDENTITY",
                  "HAS_X_BIAS": x_bias is not None}
        vectors = {b: self._whole(v, "batchnorm") for b, v in
                   ((2, mean if x_bias is None else x_bias), (3, mean), (4, var), (5, weight),
                    (6, bias))}
        for start, count in plans.chunks(out.size, self._max_elems, self._align):
            bindings = {1: self._span(x, start, count), **vectors, 7: self._span(out, start, count)}
            self._run("batchnorm.wgsl", "batchnorm", bindings,
                      _pack("IIIIfIII", count, start, channels, inner, eps, 0, 0, 0),
                      -(-count // 256), consts)

    def running_stats(self, running_mean, running_var, mean, var, momentum, unbiased):
        self._elementwise("running_stats.wgsl", "running_stats", {2: mean, 4: var},
                          {1: running_mean, 3: running_var}, lambda start, count: _pack(
                              "Ifff", count, momentum, 1 - momentum, unbiased))

    def sgd_update(self, param, grad, buf, lr, momentum, weight_decay, first_step):
        entry, ins, outs = "sgd", {2: grad}, {1: param}
        if buf is not None:
            entry, outs = "sgd_momentum", {1: param, 3: buf}
        self._elementwise("optim.wgsl", entry, ins, outs, lambda start, count: _pack(
            "IfffIfffffff", count, lr, weight_decay, momentum, int(first_step),
            0, 0, 0, 0, 0, 1, 1))

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
        self._elementwise("optim.wgsl", "adam", {2: grad}, {1: param, 3: m, 4: v},
                          lambda start, count: _pack(
                              "IfffIfffffff", count, lr, weight_decay, 0.0, 0, beta1, beta2,
                              eps, 1 - beta1, 1 - beta2, 1 - beta1 ** step, 1 - beta2 ** step))
