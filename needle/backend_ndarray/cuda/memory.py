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


def _cupy_alloc(nbytes):
    """``cupy.cuda.alloc``, imported on the first allocation (importing this module must not
    need CuPy); it then takes this function's place, so later allocations skip the import."""
    global _cupy_alloc
    import cupy

    _cupy_alloc = cupy.cuda.alloc
    return _cupy_alloc(nbytes)


class CudaBuffer:
    """A flat device buffer of ``size`` elements of ``dtype``.

    ``ptr`` is the device address (0 for an empty buffer). The memory comes from CuPy's
    memory pool and returns to it when the buffer is garbage-collected.
    """

    __slots__ = ("size", "dtype", "nbytes", "mem", "ptr")

    def __init__(self, size, dtype):
        self.nbytes = 0  # counted only once the allocation succeeded (see __del__)
        self.size = size = int(size)
        dt = _DTYPES.get(dtype)
        self.dtype = dt = np.dtype(dtype) if dt is None else dt
        nbytes = size * dt.itemsize
        self.mem = _cupy_alloc(nbytes) if nbytes else None
        self.ptr = self.mem.ptr if nbytes else 0  # read once: launches pass it on every call
        self.nbytes = nbytes
        _Stats.take(nbytes)

    def __del__(self):
        _Stats.give(self.nbytes)

    def __repr__(self):
        return f"CudaBuffer(size={self.size}, dtype={self.dtype.name}, ptr={self.ptr:#x})"


def memory_stats():
    """``bytes_in_use`` / ``peak_bytes`` of Needle's CUDA buffers, plus CuPy's pool totals."""
    import cupy

    pool = cupy.get_default_memory_pool()
    return {"bytes_in_use": _Stats.in_use, "peak_bytes": _Stats.peak,
            "pool_used_bytes": pool.used_bytes(), "pool_total_bytes": pool.total_bytes()}


def reset_peak():
    _Stats.peak = _Stats.in_use
