"""Reductions: summation, max, min, mean, argmax/argmin and logsumexp over axes."""
import numbers

import numpy as np

from ..autograd import Tensor, TensorOp
from ..backend_ndarray import NDArray
from ..backend_ndarray.ndarray import _normalize_axes, prod


def _keepdims_shape(shape, axes):
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


class Summation(TensorOp):
    def __init__(self, axes=None, keepdims=False):
        self.axes, self.keepdims = axes, keepdims

    def compute(self, a):
        return a.sum(self.axes, keepdims=self.keepdims)

    def gradient(self, out_grad, node):
        shape = node.inputs[0].shape
        axes = _normalize_axes(self.axes, len(shape))
        return broadcast_to(reshape(out_grad, _keepdims_shape(shape, axes)), shape)


class Max(TensorOp):
    """Max over axes; ties share the gradient equally (like ``torch.amax``)."""

    def __init__(self, axes=None, keepdims=False):
        self.axes, self.keepdims = axes, keepdims

    def compute(self, a):
        return a.max(self.axes, keepdims=self.keepdims)

    def gradient(self, out_grad, node):
        a = node.inputs[0].realize_cached_data()
        axes = _normalize_axes(self.axes, a.ndim)
        kshape = _keepdims_shape(a.shape, axes)
        mask = a == node.realize_cached_data().reshape(kshape).broadcast_to(a.shape)
        mask = mask / mask.sum(axes, keepdims=True).broadcast_to(a.shape)
        return broadcast_to(reshape(out_grad, kshape), a.shape) * Tensor.make_const(mask)


class LogSumExp(TensorOp):
    """``log(sum(exp(a), axes))``, stable; one fused kernel when the backend has it."""

    def __init__(self, axes=None, keepdims=False):
        self.axes, self.keepdims = axes, keepdims

    def compute(self, a):
        axes = _normalize_axes(self.axes, a.ndim)
        kept = tuple(i for i in range(a.ndim) if i not in axes)
        kshape = _keepdims_shape(a.shape, axes)
        backend = a.device.backend
        if backend.supports("logsumexp") and a.size:
            rows = prod(a.shape[i] for i in kept)
            src = a.permute(kept + axes).compact()
            out = a._new(tuple(a.shape[i] for i in kept))
            backend.logsumexp(src._handle, out._handle, rows, src.size // rows)
            out = out.reshape(kshape) if self.keepdims else out
            return out
        m = a.max(axes, keepdims=True)
        # an infinite max is not subtracted (inf - inf is NaN): a row of -inf gives -inf
        # and a row holding +inf gives +inf, as PyTorch
        big = float(np.finfo(a.dtype).max)
        m = m.maximum(-big).minimum(big)
        out = ((a - m.broadcast_to(a.shape)).exp().sum(axes, keepdims=True)).log() + m
        return out if self.keepdims else out.reshape(tuple(a.shape[i] for i in kept))

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        kshape = _keepdims_shape(a.shape, _normalize_axes(self.axes, a.ndim))
        lse = reshape(node.detach(), kshape)
        return broadcast_to(reshape(out_grad, kshape), a.shape) * exp(a - broadcast_to(lse, a.shape))


def _check_axes(axes, op):
    """``axes`` as given (None, an int or a sequence of ints), or a TypeError naming it."""
    # (every summation asks, gradients included: plain ints and tuples of them go straight)
    if axes is None or type(axes) is int or (
            type(axes) is tuple and all([type(a) is int for a in axes])):
        return axes
    items = (axes,) if isinstance(axes, numbers.Number) else axes
    if axes is not None and not (isinstance(items, (tuple, list)) and all(
            isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in items)):
        raise TypeError(f"{op}: axes must be None, an int or a tuple of ints, got {axes!r}")
    return axes if axes is None or isinstance(axes, numbers.Integral) else tuple(int(a) for a in axes)


def summation(a, axes=None, keepdims=False):
    return Summation(_check_axes(axes, "sum"), keepdims)(a)


def max(a, axes=None, keepdims=False):  # noqa: A001 - Needle's public name
    return Max(_check_axes(axes, "max"), keepdims)(a)


def min(a, axes=None, keepdims=False):  # noqa: A001 - as torch.amin
    return -Max(_check_axes(axes, "min"), keepdims)(-a)


def mean(a, axes=None, keepdims=False):
    """Mean over ``axes`` (all by default)."""
    axes = _check_axes(axes, "mean")
    count = prod(a.shape[i] for i in _normalize_axes(axes, a.ndim))
    return Summation(axes, keepdims)(a) / count  # (NaN for an empty tensor, as PyTorch)


def logsumexp(a, axes=None, keepdims=False):
    return LogSumExp(_check_axes(axes, "logsumexp"), keepdims)(a)


def argmax(a, axis=None, keepdims=False):
    """Index of the first maximum along ``axis`` (of the flattened tensor when None), in
    a's dtype (Needle has no integer tensors yet; indices are exact below 2**24 in
    float32). NaN counts as the maximum, as in PyTorch. No gradient."""
    return _arg_extreme(a, axis, keepdims, "argmax")


def argmin(a, axis=None, keepdims=False):
    """Index of the first minimum along ``axis``; see :func:`argmax`."""
    return _arg_extreme(a, axis, keepdims, "argmin")


def _arg_extreme(a, axis, keepdims, op):
    if axis is not None and not (isinstance(axis, numbers.Integral) and not isinstance(axis, bool)):
        raise TypeError(f"{op}: axis must be None or an int, got {axis!r}")
    x = a.realize_cached_data()
    if op == "argmin":
        x = -x
    flat = axis is None
    if flat:
        x, axis = x.reshape((x.size,)), 0
    (axis,) = _normalize_axes(axis, x.ndim)
    n = x.shape[axis]
    if n == 0:
        raise ValueError(f"{op} of an empty axis (shape {a.shape})")
    # the first position holding the maximum (or a NaN) gets the largest weight, n - i
    hit = (x == x.max(axis, keepdims=True).broadcast_to(x.shape)).maximum(x != x)
    weights = NDArray(np.arange(n, 0, -1), device=x.device, dtype=x.dtype)
    weights = weights.reshape(tuple(n if i == axis else 1 for i in range(x.ndim)))
    index = n - (hit * weights.broadcast_to(x.shape)).max(axis, keepdims=keepdims)
    if flat and keepdims:
        index = index.reshape((1,) * a.ndim)
    return Tensor.make_const(index)


from .elementwise import exp  # noqa: E402
from .movement import broadcast_to, reshape  # noqa: E402
