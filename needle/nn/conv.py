"""Convolution layers (NCHW at the module boundary)."""
import math

from .. import init, ops
from ..errors import ShapeError
from .module import Module, Parameter, check_dtype


class Conv(Module):
    """2-D convolution of NCHW input, classic Needle: padding ``kernel_size // 2`` unless
    given ('same' for odd kernel sizes and stride 1; an even kernel makes the output one
    larger, as PyTorch with that padding). ``Conv2d`` is the same layer with PyTorch's
    default ``padding=0``.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: an int (square kernels).
        stride: an int.
        padding: zero padding on each side, an int; None (the default) means
            ``kernel_size // 2``.
        bias: whether to add a learned per-channel bias of shape (out_channels,).
        device, dtype: where and in which dtype the parameters live; the input must have
            the same dtype (else ``needle.DTypeError``).

    ``weight`` has shape (k, k, in_channels, out_channels) (PyTorch's is
    ``weight.permute(2, 3, 1, 0)`` of that). Output size per spatial axis:
    ``(size + 2 * padding - k) // stride + 1``.

    Example:
        >>> conv = needle.nn.Conv(3, 8, 3)           # padding 1: 32x32 stays 32x32
        >>> conv(needle.init.randn(2, 3, 32, 32)).shape
        (2, 8, 32, 32)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None,
                 bias=True, device=None, dtype="float32"):
        super().__init__()
        for name, v in (("kernel_size", kernel_size), ("stride", stride)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise TypeError(f"{type(self).__name__} {name} must be a positive int, got {v!r}")
        if padding is None:
            padding = kernel_size // 2
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise TypeError(f"{type(self).__name__} padding must be an int >= 0 or None, got "
                            f"{padding!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        k = kernel_size
        self.weight = Parameter(init.kaiming_uniform(
            in_channels * k * k, out_channels * k * k, shape=(k, k, in_channels, out_channels),
            device=device, dtype=dtype))
        bound = 1.0 / math.sqrt(in_channels * k * k)
        self.bias = Parameter(init.rand(out_channels, low=-bound, high=bound, device=device,
                                        dtype=dtype)) if bias else None

    def forward(self, x):
        if self.bias is None:
            return self.convolve(x)
        # the bias along the channels: an NHWC view puts them last, for one fused kernel
        y = ops.bias_act(ops.permute(self.convolve(x), (0, 2, 3, 1)), self.bias)
        return ops.permute(y, (0, 3, 1, 2))

    def convolve(self, x):
        """The convolution without the bias, NCHW in and out: ``Sequential`` hands the bias
        to a following BatchNorm's kernel instead."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(f"{type(self).__name__}({self.in_channels}, {self.out_channels}) "
                             f"expects NCHW input with {self.in_channels} channels, got shape "
                             f"{x.shape}")
        check_dtype(self, x, self.weight)
        k, p = self.kernel_size, self.padding
        if x.shape[2] + 2 * p < k or x.shape[3] + 2 * p < k:
            raise ShapeError(f"{type(self).__name__}: input {x.shape} padded by {p} is smaller "
                             f"than the kernel ({k}x{k})")
        return ops.conv(x, self.weight, self.stride, p, channels_first=True)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        return s if self.bias is not None else s + ", bias=False"


class Conv2d(Conv):
    """``Conv`` with PyTorch's default ``padding=0`` (``torch.nn.Conv2d``'s argument order,
    square int kernel, stride and padding; no dilation or groups). Classic Needle's
    ``Conv`` pads ``kernel_size // 2`` by default instead.

    Example:
        >>> needle.nn.Conv2d(3, 8, 3)(needle.init.randn(2, 3, 32, 32)).shape
        (2, 8, 30, 30)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 device=None, dtype="float32"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias, device,
                         dtype)
