"""GPU buffers and a small caching pool, so eager code does not create a wgpu buffer for
every intermediate result.

A freed buffer goes back to the pool while commands recorded earlier may still use it.
That is safe because every later use of a buffer is ordered after them on the one queue:
kernels and copies go into the same pending encoder, and uploads take the queue's
``write_buffer`` path only when nothing is pending (see ``Recorder.upload``).
"""
import numpy as np

FLOAT32 = np.dtype("float32")


class Buffer:
    """A flat float32 array in GPU memory: the contract's buffer object.

    ``size`` is in elements and ``dtype`` a numpy dtype; ``gpu`` is the wgpu buffer, which
    may be larger than ``size`` elements (pool buckets).
    """

    __slots__ = ("gpu", "size", "dtype", "_pool",
                 "__weakref__")  # needle.compile tells state from temporaries by liveness

    def __init__(self, gpu, size, pool=None):
        self.gpu, self.size, self.dtype, self._pool = gpu, size, FLOAT32, pool

    @property
    def nbytes(self):
        return self.size * 4

    def __del__(self):
        pool = self._pool
        if pool is not None:
            try:
                pool.release(self.gpu)
            except Exception:  # interpreter shutdown: nothing left to give back to
                pass

    def __repr__(self):
        return f"webgpu.Buffer(size={self.size})"


def _bucket(nbytes):
    """Allocation size for ``nbytes``: 256-byte steps up to 1 MiB, then eighths of a
    power of two, so freed buffers fit later requests of about the same size."""
    n = max(nbytes, 16)
    if n <= 1 << 20:
        return -(-n // 256) * 256
    step = 1 << (n.bit_length() - 4)
    return -(-n // step) * step


class BufferPool:
    """Free wgpu buffers by size, up to ``keep_bytes`` in all.

    The pool holds a reference to every wgpu buffer it hands out until it drops it. A
    :class:`Buffer` caught in a reference cycle (autograd graphs, exception tracebacks) is
    finalized in arbitrary order with what it references; without this reference, the
    wgpu buffer could be released first and then recycled, dead, from the pool.
    """

    def __init__(self, ctx, keep_bytes=256 << 20):
        self._ctx = ctx
        usage = ctx.wgpu.BufferUsage
        self._usage = usage.STORAGE | usage.COPY_SRC | usage.COPY_DST
        self._owned = set()
        self._free = {}
        self._kept = 0
        self.keep_bytes = keep_bytes
        self.in_use = self.peak = 0  # bytes of the wgpu buffers now leased out

    def alloc(self, size):
        nbytes = _bucket(size * 4)
        if nbytes > self._ctx.limits.max_buffer:
            nbytes = -(-max(size * 4, 16) // 16) * 16  # no bucket slack near the limit
        free = self._free.get(nbytes)
        if free:
            gpu = free.pop()
            self._kept -= nbytes
        else:
            gpu = self._ctx.device.create_buffer(size=nbytes, usage=self._usage)
            self._owned.add(gpu)
        self.in_use += gpu.size
        self.peak = max(self.peak, self.in_use)
        return Buffer(gpu, size, self)

    def release(self, gpu):
        self.in_use -= gpu.size
        if self._kept + gpu.size <= self.keep_bytes:
            self._free.setdefault(gpu.size, []).append(gpu)
            self._kept += gpu.size
        else:  # dropped: wgpu frees it once no submitted work uses it
            self._owned.discard(gpu)

    def stats(self):
        return {"bytes_in_use": self.in_use, "peak_bytes": self.peak,
                "pool_free_bytes": self._kept, "pool_total_bytes": self.in_use + self._kept}

    def clear(self):
        """Drop every free buffer."""
        for free in self._free.values():
            self._owned.difference_update(free)
        self._free.clear()
        self._kept = 0
