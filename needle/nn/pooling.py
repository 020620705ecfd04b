"""2-D max and average pooling of NCHW input.

Both are written with differentiable ops that every device has: for each of the k*k offsets
in the window, one strided slice (``ops.get_item``) picks that offset of every window; max
pooling takes the elementwise ``ops.maximum`` of the k*k slices and average pooling adds
them and divides by k*k. The gradient of a slice scatters back into the input, so
overlapping windows (stride < kernel) accumulate, as in PyTorch.
"""
import numpy as np

from .. import ops
from ..autograd import Tensor
from ..errors import ShapeError
from .module import Module


def _pair(value, name):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"pooling {name} must be an int or a pair of ints, got {value!r}")
    return pair


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(kernel_size if stride is None else stride, "stride")
        self.padding = _pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{type(self).__name__}: kernel_size and stride must be positive, "
                             f"got {kernel_size!r} and {stride!r}")
        if any(p < 0 or 2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{type(self).__name__}: padding must be between 0 and half the "
                             f"kernel size, got padding {padding!r} for kernel {kernel_size!r}")

    def _check(self, x):
        if x.ndim != 4:
            raise ShapeError(f"{type(self).__name__} expects NCHW input, got shape {x.shape}")
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if x.shape[2] + 2 * ph < kh or x.shape[3] + 2 * pw < kw:
            raise ShapeError(f"{type(self).__name__}: input {x.shape} (padded by "
                             f"{self.padding}) is smaller than the kernel {self.kernel_size}")

    def _windows(self, padded):
        """The k*k strided slices of ``padded``: slice (di, dj) holds offset (di, dj) of
        every window, shape (N, C, out_h, out_w)."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        h, w = padded.shape[2:]
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
        return [ops.get_item(padded, (slice(None), slice(None),
                                      slice(di, di + sh * (ho - 1) + 1, sh),
                                      slice(dj, dj + sw * (wo - 1) + 1, sw)))
                for di in range(kh) for dj in range(kw)]

    def _pad(self, x):
        (ph, pw) = self.padding
        return ops.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x

    def extra_repr(self):
        def show(p):
            return p[0] if p[0] == p[1] else p
        return (f"kernel_size={show(self.kernel_size)}, stride={show(self.stride)}, "
                f"padding={show(self.padding)}")


class MaxPool2d(_Pool2d):
    """Max over each ``kernel_size`` window of NCHW input (``torch.nn.MaxPool2d``).

    Args:
        kernel_size: the window, an int or (kh, kw).
        stride: the step between windows; defaults to ``kernel_size``.
        padding: implicit padding on each side (at most half the kernel), which never wins
            the max.

    Output size per spatial axis: ``(size + 2 * padding - k) // stride + 1`` (floor mode;
    no ``ceil_mode``, ``dilation`` or ``return_indices``). Padding is done as zero padding
    plus a constant that is 0 inside and the dtype's most negative finite value outside, so
    padded positions act as -inf without an inf in the graph. Where several elements of a
    window tie for the max, the gradient goes to one of them (the first offset in the
    window), as PyTorch does, though not necessarily to the same one.

    Example:
        >>> pool = needle.nn.MaxPool2d(2)
        >>> pool(needle.init.randn(1, 3, 8, 8)).shape
        (1, 3, 4, 4)
    """

    def forward(self, x):
        self._check(x)
        padded = self._pad(x)
        if padded is not x:
            (ph, pw), (h, w) = self.padding, padded.shape[2:]
            outside = np.full((1, 1, h, w), np.finfo(x.dtype).min)
            outside[:, :, ph:h - ph, pw:w - pw] = 0.0
            padded = padded + Tensor(outside, device=x.device, dtype=x.dtype,
                                     requires_grad=False)
        windows = self._windows(padded)
        out = windows[0]
        for w in windows[1:]:
            out = ops.maximum(out, w)
        return out


class AvgPool2d(_Pool2d):
    """Mean over each ``kernel_size`` window of NCHW input (``torch.nn.AvgPool2d``).

    Args:
        kernel_size: the window, an int or (kh, kw).
        stride: the step between windows; defaults to ``kernel_size``.
        padding: zero padding on each side (at most half the kernel); padded zeros count in
            the mean (PyTorch's default ``count_include_pad=True``).

    Floor mode only (no ``ceil_mode`` or ``divisor_override``).

    Example:
        >>> needle.nn.AvgPool2d(2)(needle.init.randn(1, 3, 8, 8)).shape
        (1, 3, 4, 4)
    """

    def forward(self, x):
        self._check(x)
        windows = self._windows(self._pad(x))
        out = windows[0]
        for w in windows[1:]:
            out = out + w
        return out / len(windows)
