"""Device buffers: CuPy pool memory plus Needle's own usage counters."""
import numpy as np


class _Stats:
    """Bytes held by live CudaBuffers, and the most ever held at once."""

    in_use = 0
    peak = 0

    @classmethod
    def take(cls, nbytes):
        cls.in_use += nbytes
        cls.peak = max(cls.peak, cls.in_use)

    @classmethod
    def give(cls, nbytes):
        cls.in_use -= nbytes


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
    """

    free = {}  # (stream address, nbytes) -> [cupy MemoryPointer]
    cached_bytes = 0
    _alloc = _stream = _out_of_memory = None  # CuPy's, bound on first use

    @classmethod
    def take(cls, nbytes):
        """(memory, stream address) for a new buffer of ``nbytes`` on the current stream."""
        if cls._alloc is None:
            import cupy  # not at import time: importing this module must not need CuPy

            cls._alloc, cls._stream = cupy.cuda.alloc, cupy.cuda.get_current_stream
            cls._out_of_memory = cupy.cuda.memory.OutOfMemoryError
        stream = cls._stream().ptr
        blocks = cls.free.get((stream, nbytes))
        if blocks:
            cls.cached_bytes -= nbytes
            return blocks.pop(), stream
        try:
            return cls._alloc(nbytes), stream
        except cls._out_of_memory:
            if not cls.cached_bytes:
                raise
            cls.release()
            return cls._alloc(nbytes), stream

    @classmethod
    def give(cls, mem, stream, nbytes):
        cls.free.setdefault((stream, nbytes), []).append(mem)
        cls.cached_bytes += nbytes

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

    __slots__ = ("size", "dtype", "nbytes", "mem", "stream", "ptr", "derived")

    def __init__(self, size, dtype):
        self.nbytes = 0  # counted only once the allocation succeeded (see __del__)
        self.size = size = int(size)
        dt = _DTYPES.get(dtype)
        self.dtype = dt = np.dtype(dtype) if dt is None else dt
        nbytes = size * dt.itemsize
        self.mem, self.stream = _Blocks.take(nbytes) if nbytes else (None, None)
        self.ptr = self.mem.ptr if nbytes else 0  # read once: launches pass it on every call
        self.nbytes = nbytes
        self.derived = None
        _Stats.take(nbytes)

    def wrote(self):
        """The contents changed in place: whatever was derived from them is stale."""
        self.derived = None

    def __del__(self):
        _Stats.give(self.nbytes)
        if self.mem is not None and _Blocks is not None:  # (None at interpreter exit)
            _Blocks.give(self.mem, self.stream, self.nbytes)

    def __repr__(self):
        return f"CudaBuffer(size={self.size}, dtype={self.dtype.name}, ptr={self.ptr:#x})"


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
