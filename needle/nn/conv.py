"""Convolution layer (NCHW at the module boundary, NHWC for ops.conv)."""
import math

from .. import init, ops
from ..errors import ShapeError
from .module import Module, Parameter


class Conv(Module):
    """2-D convolution with padding ``kernel_size // 2`` ('same' for odd kernel sizes; an
    even kernel makes the output one larger, as in PyTorch with the same padding).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: an int (square kernels).
        stride: an int.
        bias: whether to add a learned per-channel bias of shape (out_channels,).

    ``weight`` has shape (k, k, in_channels, out_channels). Input and output are NCHW.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, bias=True,
                 device=None, dtype="float32"):
        super().__init__()
        if not isinstance(kernel_size, int):
            raise TypeError(f"Conv kernel_size must be an int, got {kernel_size!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
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
            raise ShapeError(f"Conv({self.in_channels}, {self.out_channels}) expects NCHW input "
                             f"with {self.in_channels} channels, got shape {x.shape}")
        return ops.conv(x, self.weight, self.stride, self.kernel_size // 2, channels_first=True)
