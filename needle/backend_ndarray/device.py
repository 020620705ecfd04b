"""The device registry: ``needle.cpu()``, ``needle.cuda()``, ... and what each needs.

A device object always exists (as in classic Needle); its backend is imported lazily on
first use, so ``needle.cuda()`` works on any machine and ``enabled()`` says whether it
can run. Putting data on a device that cannot run raises :class:`DeviceUnavailableError`
saying what is missing and how to install it.
"""
import importlib

import numpy as np

from ..errors import DeviceUnavailableError, DTypeError

# name -> (module, backend class, how to get it); the only place that lists devices
_REGISTRY = {
    "cpu": ("needle.backend_ndarray.numpy_backend", "NumpyBackend", None),
    "cuda": ("needle.backend_ndarray.cuda", "CudaBackend", "pip install 'needle[cuda]'"),
    "cudnn": ("needle.backend_ndarray.cudnn", "CudnnBackend", "pip install 'needle[cudnn]'"),
    "webgpu": ("needle.backend_ndarray.webgpu", "WebGPUBackend", "pip install 'needle[webgpu]'"),
}

_DTYPES = ("float32", "float64")


def canonical_dtype(dtype):
    """Map ``"float32"``, ``np.float32``, ``np.dtype('float32')`` ... to its name, or raise."""
    if dtype is None:
        return "float32"
    # the common case, on every allocation: skip numpy's parsing (but a numpy dtype object
    # compares equal to its name, so check the type: the result is always a str)
    if type(dtype) is str and dtype in _DTYPES:
        return dtype
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _DTYPES:
        raise DTypeError(f"unknown dtype {dtype!r}; Needle supports {', '.join(_DTYPES)}")
    return name


class Device:
    """A device Needle can put arrays on. Compare with ``==``; print to see its name."""

    def __init__(self, name):
        self.name = name
        self._backend = None
        self._reason = None

    def _load(self):
        if self._backend is not None or self._reason is not None:
            return
        module, cls, install = _REGISTRY[self.name]
        try:
            backend = getattr(importlib.import_module(module), cls)()
        except Exception as e:  # a missing package, or a backend that fails to load
            self._reason = f"its backend could not be loaded ({type(e).__name__}: {e})"
            if install:
                self._reason += f"; install it with: {install}"
            return
        reason = backend.unavailable_reason()
        if reason:
            self._reason = reason + (f" (install: {install})" if install else "")
        else:
            self._backend = backend

    def enabled(self):
        """Whether this device can run on this machine."""
        self._load()
        return self._backend is not None

    def unavailable_reason(self):
        """``None`` if enabled, else why not and what to install."""
        self._load()
        return self._reason

    @property
    def backend(self):
        """The backend implementing the op table; raises if the device cannot run here."""
        if self._backend is not None:  # read on every op
            return self._backend
        self._load()
        if self._backend is None:
            raise DeviceUnavailableError(f"needle.{self.name}() is not available: {self._reason}")
        return self._backend

    def check_dtype(self, dtype):
        name = canonical_dtype(dtype)
        if name not in self.backend.dtypes:
            raise DTypeError(f"needle.{self.name}() cannot hold {name}; "
                             f"it supports {', '.join(self.backend.dtypes)}")
        return name

    def synchronize(self):
        """Wait for all queued work on this device."""
        self.backend.synchronize()

    def memory_stats(self):
        """``{"bytes_in_use": ..., "peak_bytes": ...}`` of this device's allocator.

        Raises NotImplementedError on devices whose memory Needle does not manage (cpu)."""
        return self._memory_call("memory_stats")

    def reset_peak_memory(self):
        """Start a new peak: ``memory_stats()["peak_bytes"]`` becomes the bytes in use."""
        self._memory_call("reset_peak_memory")

    def _memory_call(self, name):
        method = getattr(self.backend, name, None)
        if method is None:
            raise NotImplementedError(f"{self} does not report memory statistics")
        return method()

    # -- classic Needle's array constructors on a device (``BackendDevice``) -------------
    # Random draws come from NumPy's global generator (``np.random.seed``), as in the course.
    def randn(self, *shape, dtype="float32"):
        """Standard normal samples: ``np.random.randn(*shape)`` as an NDArray here."""
        return self._random(np.random.standard_normal, shape, dtype)

    def rand(self, *shape, dtype="float32"):
        """Uniform samples in [0, 1): ``np.random.rand(*shape)`` as an NDArray here."""
        return self._random(np.random.random_sample, shape, dtype)

    def _random(self, sample, shape, dtype):
        from .ndarray import NDArray, random_host
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return NDArray._from_owned_numpy(random_host(sample, shape, self.check_dtype(dtype)),
                                         self)

    def one_hot(self, n, i, dtype="float32"):
        """Rows ``i`` (an int, integer array or NDArray of labels) of the ``n``-class
        identity: ``np.eye(n)[i]`` as an NDArray here."""
        from .ndarray import NDArray, one_hot_host
        if isinstance(i, NDArray):
            i = i.numpy()
        index = np.asarray(i)
        if index.dtype.kind == "f":
            if not np.all(index == np.round(index)):
                raise ValueError(f"one_hot: labels must be integers, got {index}")
            index = index.astype(np.int64)
        return NDArray._from_owned_numpy(one_hot_host(index, n, self.check_dtype(dtype)), self)

    def empty(self, shape, dtype="float32"):
        """A new uninitialised NDArray of ``shape`` here."""
        from .ndarray import NDArray
        return NDArray.make(shape, device=self, dtype=self.check_dtype(dtype))

    def full(self, shape, fill_value, dtype="float32"):
        """A new NDArray of ``shape`` here, every element ``fill_value``."""
        out = self.empty(shape, dtype)
        out.fill(fill_value)
        return out

    def __eq__(self, other):
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f"needle.{self.name}()"


#: classic Needle's name of the device class (``needle.backend_ndarray.BackendDevice``):
#: the same class, so ``isinstance(d, nd.BackendDevice)`` holds for every Needle device
BackendDevice = Device

_DEVICES = {name: Device(name) for name in _REGISTRY}


def cpu():
    """The NumPy CPU device; always available and the default."""
    return _DEVICES["cpu"]


def cpu_numpy():
    """Classic Needle's NumPy device: Needle's :func:`cpu`, whose backend is NumPy."""
    return _DEVICES["cpu"]


numpy_device = cpu_numpy  # its name in older course code


def cuda():
    """NVIDIA GPUs through Needle's own CUDA kernels (extra ``cuda``)."""
    return _DEVICES["cuda"]


def cudnn():
    """NVIDIA GPUs through cuBLASLt / cuDNN (extra ``cudnn``)."""
    return _DEVICES["cudnn"]


def webgpu():
    """Apple (Metal), Vulkan and DX12 GPUs through WGSL kernels (extra ``webgpu``)."""
    return _DEVICES["webgpu"]


def device(name):
    """The device called ``name`` (``"cpu"``, ``"cuda"``, ``"cudnn"``, ``"webgpu"``)."""
    if isinstance(name, Device):
        return name
    if name not in _DEVICES:
        raise ValueError(f"unknown device {name!r}; Needle has {', '.join(_DEVICES)}")
    return _DEVICES[name]


def default_device():
    return cpu()


def all_devices():
    """Every device Needle knows, available or not; ``enabled()`` tells which work here."""
    return list(_DEVICES.values())
