"""Command batching: kernels are recorded into one pending command encoder and submitted
together, on ``flush()`` (``synchronize``, ``to_numpy``) or when ``batch`` dispatches are
pending. One ``queue.submit`` costs tens of microseconds; a chain of eager ops pays it
once per batch, not once per op.

Each dispatch's scalars and shapes go into a 256-byte slot of one uniform buffer (the
parameter arena), filled on the host while recording and written with one
``queue.write_buffer`` just before the submit. The queue orders that write after every
earlier submission and before this one, so one arena serves every batch.
"""
import numpy as np


class Recorder:
    """The pending command encoder of one device."""

    def __init__(self, ctx, batch=64):
        self._ctx = ctx
        self._device = ctx.device
        wgpu = ctx.wgpu
        self._slot = -(-256 // ctx.limits.uniform_align) * ctx.limits.uniform_align
        self.batch = batch
        self._arena = self._device.create_buffer(
            label="needle_params", size=self._slot * batch,
            usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC)
        self._params = bytearray(self._slot * batch)
        self._map_read = wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
        self._copy_src = wgpu.BufferUsage.COPY_SRC
        self._encoder = self._pass = None
        self._fence = None
        self._pending = 0
        self.dispatches = 0    # counters, for tests and curiosity
        self.submissions = 0

    @property
    def pending(self):
        """How many commands are recorded but not yet submitted."""
        return self._pending

    def _compute_pass(self):
        if self._encoder is None:
            self._encoder = self._device.create_command_encoder()
        if self._pass is None:
            self._pass = self._encoder.begin_compute_pass()
        return self._pass

    def _end_pass(self):
        if self._pass is not None:
            self._pass.end()
            self._pass = None

    def dispatch(self, kernel, bindings, params, groups):
        """Record one dispatch of ``kernel``.

        Args:
            bindings: ``{binding number: (wgpu buffer, byte offset, byte size)}``.
            params: the bytes of the kernel's ``Params`` struct (at most 256).
            groups: the ``(x, y, z)`` workgroup counts.
        """
        if self._pending >= self.batch:
            self.flush()
        at = self._pending * self._slot
        self._params[at:at + len(params)] = params
        entries = [{"binding": 0, "resource": {"buffer": self._arena, "offset": at,
                                               "size": self._slot}}]
        entries += [{"binding": b, "resource": {"buffer": buf, "offset": off, "size": size}}
                    for b, (buf, off, size) in bindings.items()]
        group = self._device.create_bind_group(layout=kernel.layout, entries=entries)
        compute = self._compute_pass()
        compute.set_pipeline(kernel.pipeline)
        compute.set_bind_group(0, group)
        compute.dispatch_workgroups(*groups)
        self._pending += 1
        self.dispatches += 1

    def copy(self, src, src_offset, dst, dst_offset, nbytes):
        """Record a buffer-to-buffer copy, ordered after everything recorded before it."""
        if self._pending >= self.batch:
            self.flush()
        self._end_pass()
        if self._encoder is None:
            self._encoder = self._device.create_command_encoder()
        self._encoder.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, nbytes)
        self._pending += 1

    def flush(self):
        """Submit everything recorded so far (does not wait for it)."""
        if self._encoder is None:
            return
        self._end_pass()
        if self._pending:
            self._ctx.queue.write_buffer(self._arena, 0, self._params, 0,
                                         self._pending * self._slot)
        self._ctx.queue.submit([self._encoder.finish()])
        self._encoder = None
        self._pending = 0
        self.submissions += 1

    def synchronize(self):
        """Submit and wait for all recorded work. (Mapping a buffer that the last command
        writes waits for every submission; wgpu-py 0.32's on_submitted_work_done is broken.)"""
        if self._fence is None:
            self._fence = self._device.create_buffer(size=4, usage=self._map_read)
        self.copy(self._arena, 0, self._fence, 0, 4)
        self.flush()
        self._fence.map_sync(self._ctx.wgpu.MapMode.READ)
        self._fence.unmap()

    def upload(self, array, gpu):
        """Copy a C-contiguous float32 array into the start of wgpu buffer ``gpu``."""
        if not array.nbytes:
            return
        if self._encoder is None:
            # nothing pending: the queue orders the write after all submitted work
            self._ctx.queue.write_buffer(gpu, 0, array)
        else:
            # a direct write would land before the pending commands; stage it instead
            staging = self._device.create_buffer_with_data(data=array, usage=self._copy_src)
            self.copy(staging, 0, gpu, 0, array.nbytes)

    def download(self, gpu, offset, nbytes):
        """The bytes ``[offset, offset + nbytes)`` of ``gpu`` after all recorded work."""
        staging = self._device.create_buffer(size=nbytes, usage=self._map_read)
        self.copy(gpu, offset, staging, 0, nbytes)
        self.flush()
        staging.map_sync(self._ctx.wgpu.MapMode.READ)
        data = np.frombuffer(staging.read_mapped(), dtype=np.float32)
        staging.unmap()
        return data
