"""Command batching: kernels are recorded into one pending command encoder and submitted
together, on ``flush()`` (``synchronize``, ``to_numpy``) or when ``batch`` dispatches are
pending. One ``queue.submit`` costs tens of microseconds; a chain of eager ops pays it
once per batch, not once per op.

Each dispatch's scalars and shapes go into a 256-byte slot of a uniform buffer (the
parameter arena, ``batch`` slots), filled on the host while recording and written with
``queue.write_buffer`` just before the submit. The queue orders that write after every
earlier submission and before this one, so one arena serves every batch. A dispatch's bind
group (its slot and buffers) is made once and reused whenever the same kernel binds the
same buffers at the same slot again.

Inside ``one_submission()`` nothing is submitted on reaching ``batch``: a batch that fills
the arena chains another one (kept for later batches), and every arena in use is written
before the one submit at the end of the block.
"""
import contextlib

import numpy as np

#: bind groups kept for reuse (then the cache starts over): a loop, eager or compiled,
#: dispatches the same kernels on the same pool buffers into the same parameter slots
#: every step, and making a bind group costs more than the rest of a dispatch
BIND_GROUPS = 4096


class Recorder:
    """The pending command encoder of one device."""

    def __init__(self, ctx, batch=64):
        self._ctx = ctx
        self._device = ctx.device
        wgpu = ctx.wgpu
        self._slot = -(-256 // ctx.limits.uniform_align) * ctx.limits.uniform_align
        self.batch = batch
        self._arena_bytes = self._slot * batch
        self._arena_usage = (wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST
                             | wgpu.BufferUsage.COPY_SRC)
        self._arenas = []
        self._groups = {}  # see dispatch(): bind groups by layout, slot and buffers
        self._params = bytearray()  # the host copy of every arena, end to end
        self._add_arena()
        self._map_read = wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
        self._copy_src = wgpu.BufferUsage.COPY_SRC
        self._encoder = self._pass = None
        self._fence = None
        self._pending = 0   # commands recorded since the last submit
        self._slots = 0     # parameter slots those commands use (dispatches only)
        self._held = 0      # depth of nested one_submission() blocks
        self.dispatches = 0    # counters, for tests and curiosity
        self.bind_groups = 0   # (made, not reused)
        self.submissions = 0

    @property
    def pending(self):
        """How many commands are recorded but not yet submitted."""
        return self._pending

    def _add_arena(self):
        self._arenas.append(self._device.create_buffer(
            label="needle_params", size=self._arena_bytes, usage=self._arena_usage))
        self._params += bytes(self._arena_bytes)

    @contextlib.contextmanager
    def one_submission(self):
        """Record everything up to the end of the block, and what was pending before it,
        into one ``queue.submit`` made (not waited for) when the outermost block ends.

        A flush inside the block (``to_numpy``, ``synchronize``, ``flush``) still submits
        at once, so the block then makes more than one submission.
        """
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held:
                self.flush()

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
        if self._pending >= self.batch and not self._held:
            self.flush()
        arena, slot = divmod(self._slots, self.batch)
        if arena == len(self._arenas):  # held past batch slots: chain another arena
            self._add_arena()
        at = self._slots * self._slot
        self._params[at:at + len(params)] = params
        key = (id(kernel.layout), arena, slot,
               tuple((b, id(buf), off, size) for b, (buf, off, size) in bindings.items()))
        cached = self._groups.get(key)
        if cached is None:
            entries = [{"binding": 0, "resource": {"buffer": self._arenas[arena],
                                                   "offset": slot * self._slot,
                                                   "size": self._slot}}]
            entries += [{"binding": b, "resource": {"buffer": buf, "offset": off, "size": size}}
                        for b, (buf, off, size) in bindings.items()]
            if len(self._groups) >= BIND_GROUPS:
                self._groups.clear()
            self.bind_groups += 1
            # (the buffers are kept with it: their ids in the key stay theirs)
            cached = self._groups[key] = (self._device.create_bind_group(
                layout=kernel.layout, entries=entries), kernel.layout,
                [buf for buf, _, _ in bindings.values()])
        group = cached[0]
        compute = self._compute_pass()
        compute.set_pipeline(kernel.pipeline)
        compute.set_bind_group(0, group)
        compute.dispatch_workgroups(*groups)
        self._pending += 1
        self._slots += 1
        self.dispatches += 1

    def copy(self, src, src_offset, dst, dst_offset, nbytes):
        """Record a buffer-to-buffer copy, ordered after everything recorded before it."""
        if self._pending >= self.batch and not self._held:
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
        used = self._slots * self._slot
        for arena, start in zip(self._arenas, range(0, used, self._arena_bytes)):
            self._ctx.queue.write_buffer(arena, 0, self._params, start,
                                         min(used - start, self._arena_bytes))
        self._ctx.queue.submit([self._encoder.finish()])
        self._encoder = None
        self._pending = self._slots = 0
        self.submissions += 1

    def synchronize(self):
        """Submit and wait for all recorded work. (Mapping a buffer that the last command
        writes waits for every submission; wgpu-py 0.32's on_submitted_work_done is broken.)"""
        if self._fence is None:
            self._fence = self._device.create_buffer(size=4, usage=self._map_read)
        self.copy(self._arenas[0], 0, self._fence, 0, 4)
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
