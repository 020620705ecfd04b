"""DLPack on the cuda and cudnn devices: CUDA memory shared with PyTorch, JAX and CuPy.

Import: ``cupy.from_dlpack`` views the producer's memory (it passes CuPy's current stream,
the one Needle launches on, so the producer's pending work is ordered before ours); a
:meth:`CudaBuffer.foreign` buffer over that address keeps the CuPy array, and with it the
producer's memory, alive. It is never returned to Needle's block cache.

Export: a CuPy array over the NDArray's buffer (``cupy.cuda.UnownedMemory`` owned by the
CudaBuffer, so Needle's memory stays allocated while the consumer holds it), whose
``__dlpack__(stream=...)`` makes the consumer's stream wait for Needle's.

Writes by the consumer into exported memory are not seen by caches of derived data (the
cudnn device's packed conv weights, ``CudaBuffer.derived``): write through Needle, or
re-create the tensor, before using a weight written from outside in a cudnn conv.

Nothing here imports CuPy until called.
"""
from ...errors import DeviceMismatchError, DeviceUnavailableError
from ..dlpack import check_dtype, element_layout
from ..ndarray import NDArray
from .memory import CudaBuffer


def _cupy():
    try:
        import cupy
    except ImportError as e:
        raise DeviceUnavailableError(f"DLPack on CUDA memory needs CuPy ({e}); install it "
                                     f"with: pip install 'needle[cuda]'") from None
    return cupy


def device_id(buf):
    """The CUDA device (ordinal) holding CudaBuffer ``buf``."""
    if buf.mem is not None:
        return buf.mem.device_id
    owner = getattr(buf, "owner", None)
    if owner is not None and hasattr(owner, "device"):  # a foreign buffer's CuPy array
        return owner.device.id
    return _cupy().cuda.runtime.getDevice()


def import_array(x, device, producer_device):
    """A ``device`` (cuda or cudnn) NDArray viewing the CUDA memory of ``x``: no copy
    (unless its strides fall between elements)."""
    device.backend  # noqa: B018 - raises DeviceUnavailableError saying what is missing
    cupy = _cupy()
    current = cupy.cuda.runtime.getDevice()
    if producer_device != current:
        raise DeviceMismatchError(
            f"from_dlpack: the array is on CUDA device {producer_device}, but needle."
            f"{device.name}() runs on device {current}; move the array there, or make its "
            f"device current first (cupy.cuda.Device({producer_device}).use())")
    arr = cupy.from_dlpack(x)
    dtype = check_dtype(arr.dtype)
    if arr.size == 0:
        return NDArray.make(arr.shape, device=device, dtype=dtype)
    layout = element_layout(arr.shape, arr.strides, arr.itemsize)
    if layout is None:  # strides between elements: one compact copy on the GPU
        arr = cupy.ascontiguousarray(arr)
        layout = element_layout(arr.shape, arr.strides, arr.itemsize)
    strides, offset, extent = layout
    lowest = arr.data.ptr - offset * arr.itemsize  # the view's lowest element
    buf = CudaBuffer.foreign(lowest, extent, arr.dtype, owner=arr)
    return NDArray._make(tuple(arr.shape), strides, device, buf, offset, dtype)


def to_host(x):
    """A NumPy copy of the CUDA array ``x`` (for a request to put it on another device)."""
    cupy = _cupy()
    return cupy.asnumpy(cupy.from_dlpack(x))


def export_array(array, stream=None, **kwargs):
    """``NDArray.__dlpack__`` on cuda / cudnn: a capsule over the array's own memory."""
    cupy = _cupy()
    if any(s < 0 and d > 1 for d, s in zip(array.shape, array.strides)):
        if kwargs.get("copy") is False:
            raise BufferError(f"a view with negative strides {array.strides} cannot be shared "
                              f"through DLPack without a copy (copy=False was asked)")
        array = array.compact()
    buf = array._handle
    if array.size == 0 or not buf.nbytes:
        view = cupy.empty(array.shape, dtype=buf.dtype)
    else:
        item = buf.dtype.itemsize
        mem = cupy.cuda.UnownedMemory(buf.ptr, buf.nbytes, buf, device_id(buf))
        view = cupy.ndarray(array.shape, dtype=buf.dtype,
                            memptr=cupy.cuda.MemoryPointer(mem, array.offset * item),
                            strides=tuple(s * item for s in array.strides))
    return view.__dlpack__(stream=stream, **kwargs)
