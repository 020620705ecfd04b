"""Arrays on devices: NDArray views, the device registry and the backend contract.

It also carries classic Needle's (CMU 10-414/714) module-level array API, so course code
written as ``import needle.backend_ndarray as nd`` runs: ``nd.array``, ``nd.empty``,
``nd.full``, ``nd.broadcast_to``, ``nd.reshape``, ``nd.maximum``, ``nd.log``, ``nd.exp``,
``nd.tanh``, ``nd.sum``, ``nd.flip``, ``nd.cpu_numpy()`` and ``nd.BackendDevice`` (the
name of :class:`Device` there), plus :func:`from_dlpack` (NDArrays over other libraries'
memory; ``needle.dlpack`` makes Tensors of them).
"""
import sys as _sys
import types as _types

from .contract import (ACTIVATIONS, BINARY_OPS, FOREACH_OPS, FUSED_OPS, LAYER_OPS,
                       LINEAR_ACTIVATIONS, REDUCE_OPS, UNARY_OPS, Backend, Declined)
from .device import (BackendDevice, Device, all_devices, canonical_dtype, cpu, cpu_numpy, cuda,
                     cudnn, default_device, device, webgpu)
from .dlpack import from_dlpack
from .ndarray import (NDArray, broadcast_shapes, compact_strides, concatenate, empty, full, prod,
                      split, stack, where)
from .classic import (FlatView, array, broadcast_to, exp, flip, log, maximum, reshape,  # noqa: I001
                      tanh)
from .classic import sum  # noqa: A004 - classic Needle's nd.sum (shadows the builtin here)


class _Package(_types.ModuleType):
    """This package's module type. The device functions ``cuda()``, ``cudnn()`` and
    ``webgpu()`` share their names with the backend subpackages, and importing a subpackage
    sets the parent's attribute to it (``setattr(package, "cuda", module)``): without this,
    ``nd.cuda()`` would stop being callable once the cuda backend was loaded (classic
    Needle's tests call ``nd.cuda().enabled()`` and then ``nd.cuda()``). The subpackages
    stay importable by their full names (``from needle.backend_ndarray.cuda import memory``)."""

    def __setattr__(self, name, value):
        if name in ("cuda", "cudnn", "webgpu") and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
