"""DLPack: NDArrays sharing memory with PyTorch, JAX, CuPy and NumPy arrays, without copies.

Import (:func:`from_dlpack`) takes anything with ``__dlpack__``. Memory on the host becomes
a cpu NDArray viewing the producer's memory (through ``numpy.from_dlpack``); memory on an
NVIDIA GPU becomes a cuda (or, when asked, cudnn) NDArray viewing it (through
``cupy.from_dlpack``; see ``cuda/dlpack.py``). Either way the NDArray keeps the producer's
array alive, and writes on one side are seen on the other. Only a request for another
device (``device=needle.webgpu()``, or host memory onto a GPU) copies.

Export (``NDArray.__dlpack__`` / ``__dlpack_device__``, which ``Tensor`` forwards to) hands
out the NDArray's own buffer with its shape, strides and offset: ``torch.from_dlpack(t)``
writes through to Needle's memory. A view with negative strides (``flip``) is exported as a
compact copy, because DLPack consumers reject negative strides (PyTorch aborts on them);
with ``copy=False`` that raises BufferError instead. webgpu memory cannot be shared:
exporting it raises BufferError (use ``.numpy()``).

DLPack carries any dtype; Needle holds float32 and float64 and raises DTypeError for others
(cast first: ``x.float()`` in PyTorch, ``x.astype("float32")`` in NumPy / JAX / CuPy).
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import DTypeError
from .device import cpu, cuda
from .device import device as lookup_device
from .ndarray import NDArray

# DLPack device types (dlpack.h DLDeviceType)
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
_HOST = (KDL_CPU, KDL_CUDA_HOST)
_CUDA = (KDL_CUDA, KDL_CUDA_MANAGED)
_DTYPES = ("float32", "float64")
_GPU_DEVICES = ("cuda", "cudnn")


def _unsupported_dtype(x):
    """The name of ``x``'s dtype when it is one Needle does not hold (``"int64"``,
    ``"bfloat16"``: NumPy cannot even import that one), else None (also when unknown)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return None
    name = str(dtype).rsplit(".", 1)[-1]  # torch.float32 -> float32
    if name == "bfloat16":
        return name
    try:
        name = np.dtype(name).name
    except TypeError:
        return None
    return None if name in _DTYPES else name


def check_dtype(dtype):
    """``dtype``'s name if Needle holds it, else DTypeError saying to cast first."""
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name not in _DTYPES:
        raise DTypeError(f"from_dlpack: {name} data cannot become a Needle array (Needle holds "
                         f"{', '.join(_DTYPES)}); cast it first, e.g. x.float() in PyTorch or "
                         f"x.astype('float32') in NumPy, JAX or CuPy")
    return name


def from_dlpack(x, device=None):
    """An NDArray sharing the memory of ``x`` (anything with ``__dlpack__``: a PyTorch
    tensor, a JAX, CuPy or NumPy array, a Needle NDArray or Tensor).

    Args:
        x: the producer's array.
        device: the Needle device to put it on. By default host memory becomes a
            ``needle.cpu()`` array and CUDA memory a ``needle.cuda()`` one, both without a
            copy; ``needle.cudnn()`` also takes CUDA memory without a copy. Any other choice
            copies (through the host).

    Raises:
        TypeError: ``x`` does not support DLPack.
        DTypeError: its dtype is not float32 / float64 (cast it first).
        BufferError: the producer refuses to export (e.g. a PyTorch tensor that requires
            grad: ``detach()`` it), or its memory is on a device Needle cannot read.
    """
    if not hasattr(x, "__dlpack__"):
        raise TypeError(f"from_dlpack needs an object with __dlpack__ (a PyTorch tensor, or a "
                        f"JAX, CuPy or NumPy array), not {type(x).__name__}")
    device = None if device is None else lookup_device(device)
    unsupported = _unsupported_dtype(x)
    if unsupported:
        check_dtype(unsupported)  # raises, before the import
    kind, device_id = x.__dlpack_device__() if hasattr(x, "__dlpack_device__") else (KDL_CPU, 0)
    kind = int(kind)
    if kind in _CUDA:
        target = device or cuda()
        from .cuda.dlpack import import_array, to_host  # needs CuPy (and a GPU)
        if target.name in _GPU_DEVICES:
            return import_array(x, target, int(device_id))
        host = to_host(x)
        return NDArray(host, device=target, dtype=check_dtype(host.dtype))
    if kind in _HOST:
        host = np.from_dlpack(x)
        dtype = check_dtype(host.dtype)
        target = device or cpu()
        if target == cpu():
            return adopt_host(host, target)
        return NDArray(host, device=target, dtype=dtype)
    raise BufferError(f"from_dlpack: the array is on DLPack device type {kind}; Needle reads "
                      f"host (1) and CUDA (2) memory")


def element_layout(shape, byte_strides, itemsize):
    """A view's strides in elements, the offset of its first element from its lowest one
    and the number of elements from its lowest to its highest (the extent a flat buffer
    must cover); None when a byte stride is not a whole number of elements."""
    if any(s % itemsize for s in byte_strides):
        return None
    strides = tuple(s // itemsize for s in byte_strides)
    offset = sum((d - 1) * -s for d, s in zip(shape, strides) if s < 0 and d > 1)
    extent = 1 + sum((d - 1) * abs(s) for d, s in zip(shape, strides) if d > 1)
    return strides, offset, extent


def adopt_host(host, device):
    """A cpu NDArray viewing NumPy array ``host`` (any strides; no copy): its flat buffer
    is the producer's memory from the view's lowest element to its highest."""
    dtype = check_dtype(host.dtype)
    if host.size == 0:
        return NDArray.make(host.shape, device=device, dtype=dtype)
    layout = element_layout(host.shape, host.strides, host.itemsize) \
        if host.dtype.isnative else None
    if layout is None:  # byte-swapped, or strides between elements: copy
        return NDArray(host, device=device, dtype=dtype)
    strides, offset, extent = layout
    # the same memory with every axis ascending, so its first element is the lowest one
    lowest = host[tuple(slice(None, None, -1) if s < 0 and d > 1 else slice(None)
                        for d, s in zip(host.shape, strides))]
    flat = as_strided(lowest, shape=(extent,), strides=(host.itemsize,))
    return NDArray._make(tuple(host.shape), strides, device, flat, offset, dtype)


def host_view(array, copy=None):
    """A NumPy array over a cpu NDArray's buffer with its layout (no copy); for negative
    strides a view of a compact copy (BufferError if ``copy`` is False)."""
    from .numpy_backend import _view

    if any(s < 0 and d > 1 for d, s in zip(array.shape, array.strides)):
        if copy is False:
            raise BufferError(f"a view with negative strides {array.strides} cannot be shared "
                              f"through DLPack without a copy (copy=False was asked)")
        array = array.compact()
    return _view(array._handle, array.shape, array.strides, array.offset)


def to_dlpack(array, stream=None, **kwargs):
    """``array.__dlpack__``: a DLPack capsule over the NDArray's memory (see the module)."""
    name = array.device.name
    if name == "cpu":
        return host_view(array, kwargs.get("copy")).__dlpack__(stream=stream, **kwargs)
    if name in _GPU_DEVICES:
        from .cuda.dlpack import export_array
        return export_array(array, stream=stream, **kwargs)
    raise BufferError(f"needle.{name}() memory cannot be shared through DLPack (it lives in "
                      f"{name} buffers no other library reads); copy it out with .numpy()")


def dlpack_device(array):
    """``array.__dlpack_device__``: ``(device type, device id)`` as DLPack numbers them."""
    name = array.device.name
    if name == "cpu":
        return (KDL_CPU, 0)
    if name in _GPU_DEVICES:
        from .cuda.dlpack import device_id
        return (KDL_CUDA, device_id(array._handle))
    raise BufferError(f"needle.{name}() memory cannot be shared through DLPack; copy it out "
                      f"with .numpy()")
