"""Reductions: summation, max and logsumexp over axes."""
from ..autograd import Tensor, TensorOp
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
        out = ((a - m.broadcast_to(a.shape)).exp().sum(axes, keepdims=True)).log() + m
        return out if self.keepdims else out.reshape(tuple(a.shape[i] for i in kept))

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        kshape = _keepdims_shape(a.shape, _normalize_axes(self.axes, a.ndim))
        lse = reshape(node.detach(), kshape)
        return broadcast_to(reshape(out_grad, kshape), a.shape) * exp(a - broadcast_to(lse, a.shape))


def summation(a, axes=None, keepdims=False):
    return Summation(axes, keepdims)(a)


def max(a, axes=None, keepdims=False):  # noqa: A001 - Needle's public name
    return Max(axes, keepdims)(a)


def logsumexp(a, axes=None, keepdims=False):
    return LogSumExp(axes, keepdims)(a)


from .elementwise import exp  # noqa: E402
from .movement import broadcast_to, reshape  # noqa: E402
