"""Needle: a readable deep-learning framework with its own accelerator backends.

Example:
    >>> import needle
    >>> x = needle.Tensor([[1.0, 2.0], [3.0, 4.0]], device=needle.cpu())
    >>> (x @ x).sum().numpy()
    array(54., dtype=float32)
"""
from . import backend_ndarray, data, init, nn, ops, optim
from .autograd import Tensor, TensorTuple, no_grad
from .backend_ndarray import (NDArray, all_devices, cpu, cuda, cudnn, default_device, device,
                              webgpu)
from .errors import (CompileError, DeviceMismatchError, DeviceUnavailableError, DTypeError,
                     NeedleError, ShapeError)
from .ops import *  # noqa: F401,F403 - classic Needle exposes ops at the top level
from .dlpack import from_dlpack
from .serialization import load, save
from .compiler.api import compile  # noqa: A001 - needle.compile, as torch.compile
from . import stablehlo  # noqa: E402 - needs the compiler above

float32, float64 = "float32", "float64"
__version__ = "0.1.0"
