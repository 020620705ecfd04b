"""DLPack interop: Needle Tensors sharing memory with PyTorch, JAX, CuPy and NumPy.

Import with :func:`from_dlpack`; export by handing a Tensor to the other library's
``from_dlpack`` (``torch.from_dlpack(t)``, ``np.from_dlpack(t)``, ``cupy.from_dlpack(t)``),
which calls ``Tensor.__dlpack__`` / ``__dlpack_device__`` (:func:`tensor_dlpack`,
:func:`tensor_dlpack_device`).

The sharing is real, in both directions: on the cpu and on the cuda / cudnn devices the two
libraries then view the same memory, and an in-place write by one (``torch_tensor.add_(1)``,
an optimizer step) is seen by the other. Needle's ops never write into their inputs, so
this only matters for in-place writes. webgpu memory cannot be shared (``.numpy()`` copies
it out), and only float32 / float64 data can come in: cast other dtypes first. Details on
layouts and streams: ``needle/backend_ndarray/dlpack.py`` and ``cuda/dlpack.py``.

Example:
    >>> import torch, needle
    >>> t = torch.arange(3.0)
    >>> x = needle.dlpack.from_dlpack(t)      # no copy: x views t's memory
    >>> t.add_(1)
    >>> x.numpy()
    array([1., 2., 3.], dtype=float32)
    >>> torch.from_dlpack(x)                  # no copy either
    tensor([1., 2., 3.])
"""
from .autograd import Tensor
from .backend_ndarray import dlpack as _nd_dlpack


def from_dlpack(x, device=None, requires_grad=False):
    """A Tensor sharing the memory of ``x``: anything with ``__dlpack__`` (a PyTorch tensor,
    a JAX, CuPy or NumPy array), without a copy.

    Args:
        x: the producer's array (float32 or float64).
        device: by default ``needle.cpu()`` for host memory and ``needle.cuda()`` for CUDA
            memory; ``needle.cudnn()`` also takes CUDA memory without a copy. Any other
            device gets a copy.
        requires_grad: whether the new (leaf) tensor records gradients.

    Raises:
        TypeError: ``x`` has no ``__dlpack__``.
        DTypeError: ``x`` is not float32 / float64 (cast it first, e.g. ``x.float()``).
        BufferError: the producer refuses (a PyTorch tensor that requires grad: ``detach()``).
    """
    return Tensor.make_const(_nd_dlpack.from_dlpack(x, device), requires_grad=requires_grad)


def tensor_dlpack(tensor, **kwargs):
    """``Tensor.__dlpack__(stream=None, max_version=None, dl_device=None, copy=None)``: a
    DLPack capsule over the tensor's memory (the keywords go to the exporter as given)."""
    return tensor.realize_cached_data().__dlpack__(**kwargs)


def tensor_dlpack_device(tensor):
    """``Tensor.__dlpack_device__()``: ``(1, 0)`` on the cpu, ``(2, ordinal)`` on CUDA."""
    return tensor.realize_cached_data().__dlpack_device__()
