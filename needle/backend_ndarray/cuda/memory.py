"""Device buffers: CuPy pool memory plus Needle's own usage counters."""
import numpy as np


class _Stats:
    """Bytes held by live CudaBuffers, and the most ever held at once (CudaBuffer counts)."""

    in_use = 0
    peak = 0


# dtype (name or numpy dtype) -> numpy dtype: allocations skip np.dtype's parsing
_DTYPES = {key: np.dtype(name) for name in ("float32", "float64")
           for key in (name, np.dtype(name))}


class _Blocks:
    """Blocks of freed buffers, kept for the next buffer of the same size on the same stream.

    A training or inference loop allocates the same sizes every step; taking a block from
    this list costs a fraction of a CuPy pool allocation plus its free (~4 us each on the
    lent H100's host). Reuse on the stream the block was allocated on is safe without a
    synchronisation, as in CuPy's pool: work queued earlier on that stream finishes first.
    When CuPy runs out of memory, the kept blocks go back to its pool and it retries.
    CudaBuffer takes and gives blocks inline: that is the hot path of every op's output.
    """

    free = {}  # (stream address, nbytes) -> [cupy MemoryPointer]
    cached_bytes = 0
    alloc = out_of_memory = None  # CuPy's, bound with the stream function on first use

    @staticmethod
    def stream():
        """The current CuPy stream (this first call binds CuPy's functions in its place)."""
        _Blocks.bind()
        return _Blocks.stream()

    @classmethod
    def bind(cls):
        import cupy  # not at import time: importing this module must not need CuPy

        cls.stream = staticmethod(cupy.cuda.get_current_stream)
        cls.alloc = staticmethod(cupy.cuda.alloc)
        cls.out_of_memory = cupy.cuda.memory.OutOfMemoryError

    @classmethod
    def allocate(cls, nbytes):
        """New memory from CuPy's pool (after :meth:`stream`, which binds CuPy)."""
        try:
            return cls.alloc(nbytes)
        except cls.out_of_memory:
            if not cls.cached_bytes:
                raise
            cls.release()
            return cls.alloc(nbytes)

    @classmethod
    def release(cls):
        """Return every kept block to CuPy's pool."""
        cls.free.clear()
        cls.cached_bytes = 0


class CudaBuffer:
    """A flat device buffer of ``size`` elements of ``dtype``.

    ``ptr`` is the device address (0 for an empty buffer). The memory comes from CuPy's
    memory pool; when the buffer is garbage-collected it is kept for the next buffer of its
    size (:class:`_Blocks`).

    ``derived`` caches data a backend computed from the contents (e.g. cuDNN's packed copy
    of a conv weight), keyed by the backend; :meth:`wrote` drops it. Ops only ever write
    into new buffers, so the backend methods that write into an existing one (``fill``,
    ``from_numpy``, the setitems and the optimizer updates) are the only callers of it.
    """

    __slots__ = ("size", "dtype", "nbytes", "mem", "stream", "ptr", "derived", "owner",
                 "__weakref__")  # needle.compile tells state from temporaries by liveness

    def __init__(self, size, dtype):
        self.mem = None  # first: __del__ runs even when the allocation below fails
        self.derived = None
        self.size = size = int(size)
        self.dtype = dt = _DTYPES.get(dtype) or np.dtype(dtype)
        self.nbytes = nbytes = size * dt.itemsize
        if not nbytes:
            self.ptr, self.stream = 0, None
            return
        self.stream = stream = _Blocks.stream().ptr
        kept = _Blocks.free.get((stream, nbytes))
        if kept:
            _Blocks.cached_bytes -= nbytes
            self.mem = kept.pop()
        else:
            self.mem = _Blocks.allocate(nbytes)
        self.ptr = self.mem.ptr  # read once: launches pass it on every call
        in_use = _Stats.in_use = _Stats.in_use + nbytes
        if in_use > _Stats.peak:
            _Stats.peak = in_use

    @classmethod
    def foreign(cls, ptr, size, dtype, owner):
        """A buffer over device memory Needle did not allocate (a DLPack import, see
        ``cuda/dlpack.py``): ``size`` elements of ``dtype`` at address ``ptr``, kept valid
        by ``owner`` (the producer's array), which the buffer holds. It is never kept for
        reuse (``mem`` is None) and not counted in :func:`memory_stats`."""
        buf = cls.__new__(cls)
        buf.mem = buf.derived = buf.stream = None
        buf.owner = owner
        buf.size = size = int(size)
        buf.dtype = dt = _DTYPES.get(dtype) or np.dtype(dtype)
        buf.nbytes = size * dt.itemsize
        buf.ptr = int(ptr) if buf.nbytes else 0
        return buf

    def wrote(self):
        """The contents changed in place: whatever was derived from them is stale."""
        self.derived = None

    def __del__(self):
        if self.mem is not None and _Blocks is not None:  # (None at interpreter exit)
            nbytes = self.nbytes
            _Stats.in_use -= nbytes
            _Blocks.cached_bytes += nbytes
            kept = _Blocks.free.get((self.stream, nbytes))
            if kept is None:
                _Blocks.free[self.stream, nbytes] = [self.mem]
            else:
                kept.append(self.mem)

    def __repr__(self):
        foreign = ", foreign" if getattr(self, "owner", None) is not None else ""
        return (f"CudaBuffer(size={self.size}, dtype={self.dtype.name}, ptr={self.ptr:#x}"
                f"{foreign})")


def memory_stats():
    """``bytes_in_use`` / ``peak_bytes`` of Needle's CUDA buffers, ``cached_bytes`` kept
    for reuse, plus CuPy's pool totals (which count the kept blocks as used)."""
    import cupy

    pool = cupy.get_default_memory_pool()
    return {"bytes_in_use": _Stats.in_use, "peak_bytes": _Stats.peak,
            "cached_bytes": _Blocks.cached_bytes, "pool_used_bytes": pool.used_bytes(),
            "pool_total_bytes": pool.total_bytes()}



def reset_peak():
    _Stats.peak = _Stats.in_use
