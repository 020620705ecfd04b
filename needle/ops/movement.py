"""Ops that move data without arithmetic: reshape, broadcast, transpose/permute, stack,
split, concatenate, flip, dilate, pad and indexing."""
import numbers

from ..autograd import SparseTupleGrad, TensorOp, TensorTupleOp
from ..backend_ndarray import NDArray, canonical_dtype
from ..backend_ndarray import concatenate as nd_concatenate
from ..backend_ndarray import full
from ..backend_ndarray import split as nd_split
from ..backend_ndarray import stack as nd_stack
from ..backend_ndarray.ndarray import _normalize_axes, prod
from ..errors import ShapeError


class Reshape(TensorOp):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def compute(self, a):
        return a.reshape(self.shape)

    def gradient(self, out_grad, node):
        return reshape(out_grad, node.inputs[0].shape)


class BroadcastTo(TensorOp):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def compute(self, a):
        return a.broadcast_to(self.shape)

    def gradient(self, out_grad, node):
        in_shape = node.inputs[0].shape
        lead = len(self.shape) - len(in_shape)
        axes = tuple(range(lead)) + tuple(
            lead + i for i, d in enumerate(in_shape) if d == 1 and self.shape[lead + i] != 1)
        from .reduce import summation  # reductions import this module
        grad = summation(out_grad, axes) if axes else out_grad
        return reshape(grad, in_shape)


class Permute(TensorOp):
    def __init__(self, axes):
        self.axes = tuple(axes)

    def compute(self, a):
        return a.permute(self.axes)

    def gradient(self, out_grad, node):
        inverse = [0] * len(self.axes)
        for i, ax in enumerate(self.axes):
            inverse[ax % len(self.axes)] = i
        return permute(out_grad, inverse)


def _swap_order(ndim, axes):
    """The permutation swapping ``axes=(i, j)`` (default the last two)."""
    if ndim < 2:
        raise ShapeError(f"transpose needs at least 2 dimensions, got {ndim}")
    i, j = ((_normalize_axes(ax, ndim)[0] for ax in axes) if axes is not None
            else (ndim - 2, ndim - 1))
    order = list(range(ndim))
    order[i], order[j] = order[j], order[i]
    return order


class Transpose(TensorOp):
    """Classic Needle's ``Transpose(axes)``: swap two axes, the last two by default."""

    def __init__(self, axes=None):
        self.axes = axes

    def compute(self, a):
        return a.permute(_swap_order(a.ndim, self.axes))

    def gradient(self, out_grad, node):
        return Transpose(self.axes)(out_grad)


def transpose(a, axes=None):
    """Swap two axes (Needle semantics): ``axes=(i, j)``, default the last two."""
    return permute(a, _swap_order(a.ndim, axes))


def flatten(a, start_dim=0, end_dim=-1):
    """Merge axes ``start_dim`` .. ``end_dim`` (inclusive) into one, as ``torch.flatten``."""
    if a.ndim == 0:
        return reshape(a, (1,))
    start, end = (_normalize_axes(d, a.ndim)[0] for d in (start_dim, end_dim))
    if start > end:
        raise ShapeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    shape = a.shape
    return reshape(a, shape[:start] + (prod(shape[start:end + 1]),) + shape[end + 1:])


def unsqueeze(a, dim):
    """A new axis of size 1 at ``dim`` (``-1``: last), as ``torch.unsqueeze``."""
    (dim,) = _normalize_axes(dim, a.ndim + 1)
    return reshape(a, a.shape[:dim] + (1,) + a.shape[dim:])


def squeeze(a, dim=None):
    """Drop axes of size 1 (all of them, or ``dim``, which may be a tuple); as in PyTorch,
    naming an axis whose size is not 1 leaves it."""
    axes = set(_normalize_axes(dim, a.ndim)) if dim is not None else set(range(a.ndim))
    return reshape(a, tuple(d for i, d in enumerate(a.shape) if not (i in axes and d == 1)))


class ToDevice(TensorOp):
    """A copy on another device; the gradient goes back to the source's device."""

    def __init__(self, device):
        self.device = device

    def compute(self, a):
        return a.to(self.device)

    def gradient(self, out_grad, node):
        return ToDevice(node.inputs[0].device)(out_grad)


class AsType(TensorOp):
    """A copy in another dtype; the gradient is cast back to the source's dtype."""

    def __init__(self, dtype):
        self.dtype = dtype

    def compute(self, a):
        return NDArray(a, dtype=self.dtype)

    def gradient(self, out_grad, node):
        return AsType(node.inputs[0].dtype)(out_grad)


def to_device(a, device):
    if device == a.device:
        return a
    out = ToDevice(device)(a)
    if a.is_mask:
        out.is_mask = True
    return out


def astype(a, dtype):
    dtype = canonical_dtype(dtype)
    a.device.check_dtype(dtype)
    return a if dtype == a.dtype else AsType(dtype)(a)


class Stack(TensorOp):
    def __init__(self, axis):
        self.axis = axis

    def compute(self, args):
        return nd_stack(list(args), self.axis)

    def gradient(self, out_grad, node):
        return split(out_grad, self.axis)


class Split(TensorTupleOp):
    def __init__(self, axis):
        self.axis = axis

    def compute(self, a):
        return tuple(nd_split(a, self.axis))

    def gradient(self, out_grad, node):
        return stack(list(out_grad.tuple()), self.axis)


class Concatenate(TensorOp):
    def __init__(self, axis):
        self.axis = axis

    def compute(self, args):
        return nd_concatenate(list(args), self.axis)

    def gradient(self, out_grad, node):
        parts, start = [], 0
        axis = self.axis % out_grad.ndim
        for t in node.inputs[0].tuple():
            index = (slice(None),) * axis + (slice(start, start + t.shape[axis]),)
            parts.append(get_item(out_grad, index))
            start += t.shape[axis]
        return make_tuple(*parts)


class MakeTensorTuple(TensorTupleOp):
    def compute(self, *args):
        return tuple(args)

    def gradient(self, out_grad, node):
        return tuple(out_grad.tuple())


class TupleGetItem(TensorOp):
    def __init__(self, index):
        self.index = index

    def compute(self, a):
        return a[self.index]

    def gradient(self, out_grad, node):
        return SparseTupleGrad({self.index: out_grad}, node.inputs[0])


class Flip(TensorOp):
    def __init__(self, axes):
        self.axes = axes

    def compute(self, a):
        return a.flip(self.axes).compact()

    def gradient(self, out_grad, node):
        return flip(out_grad, self.axes)


def _every_nth(axes, dilation, ndim):
    """Normalised ``axes`` and the index that picks every (dilation+1)-th element on them."""
    axes = _normalize_axes(axes, ndim)
    return axes, tuple(slice(None, None, dilation + 1) if i in axes else slice(None)
                       for i in range(ndim))


class Dilate(TensorOp):
    """Insert ``dilation`` zeros after each element along ``axes``."""

    def __init__(self, axes, dilation):
        self.axes, self.dilation = tuple(axes), dilation

    def compute(self, a):
        axes, index = _every_nth(self.axes, self.dilation, a.ndim)
        shape = tuple(d * (self.dilation + 1) if i in axes else d for i, d in enumerate(a.shape))
        out = full(shape, 0.0, a.dtype, a.device)
        out[index] = a
        return out

    def gradient(self, out_grad, node):
        return undilate(out_grad, self.axes, self.dilation)


class UnDilate(TensorOp):
    """Keep every (dilation+1)-th element along ``axes``: the adjoint of Dilate."""

    def __init__(self, axes, dilation):
        self.axes, self.dilation = tuple(axes), dilation

    def compute(self, a):
        return a[_every_nth(self.axes, self.dilation, a.ndim)[1]].compact()

    def gradient(self, out_grad, node):
        grad = dilate(out_grad, self.axes, self.dilation)
        in_shape = node.inputs[0].shape
        if grad.shape != in_shape:  # dilate rounds up: trim back to the input's shape
            grad = get_item(grad, tuple(slice(0, d) for d in in_shape))
        return grad


class Pad(TensorOp):
    """Zero padding: ``axes[i] = (before, after)``."""

    def __init__(self, axes):
        self.axes = tuple(tuple(p) for p in axes)

    def compute(self, a):
        return a.pad(self.axes)

    def gradient(self, out_grad, node):
        return get_item(out_grad, tuple(slice(lo, lo + d) for (lo, _), d in
                                        zip(self.axes, node.inputs[0].shape)))


class GetItem(TensorOp):
    """Basic indexing (ints, slices with steps, ``...``, None), NumPy semantics."""

    def __init__(self, index):
        self.index = index

    def compute(self, a):
        return a[self.index]  # a view, as NumPy's and PyTorch's: writes to it reach ``a``

    def gradient(self, out_grad, node):
        return ScatterItem(self.index, node.inputs[0].shape)(out_grad)


class ScatterItem(TensorOp):
    """Zeros of ``shape`` with ``a`` written at ``index``: the adjoint of GetItem."""

    def __init__(self, index, shape):
        self.index, self.shape = index, shape

    def compute(self, a):
        out = full(self.shape, 0.0, a.dtype, a.device)
        out[self.index] = a
        return out

    def gradient(self, out_grad, node):
        return get_item(out_grad, self.index)


def reshape(a, shape):
    return Reshape(shape)(a)


def broadcast_to(a, shape):
    return a if tuple(shape) == a.shape else BroadcastTo(shape)(a)


def permute(a, axes):
    return Permute(axes)(a)


def make_tuple(*args):
    return MakeTensorTuple()(*args)


def tuple_get_item(value, index):
    return TupleGetItem(index)(value)


def stack(args, axis=0):
    """Join same-shape tensors along a new ``axis``."""
    return Stack(axis)(make_tuple(*args))


def split(a, axis=0):
    """The slices of ``a`` along ``axis`` as a TensorTuple (the axis removed)."""
    return Split(axis)(a)


def concatenate(args, axis=0):
    """Join tensors along an existing ``axis``."""
    return Concatenate(axis)(make_tuple(*args))


def flip(a, axes=None):
    return Flip(axes)(a)


def _check_dilation(dilation, op):
    if not isinstance(dilation, numbers.Integral) or isinstance(dilation, bool) or dilation < 0:
        raise ValueError(f"{op}: dilation must be a non-negative int, got {dilation!r}")


def dilate(a, axes, dilation):
    _check_dilation(dilation, "dilate")
    return Dilate(axes, dilation)(a) if dilation else a


def undilate(a, axes, dilation):
    _check_dilation(dilation, "undilate")
    return UnDilate(axes, dilation)(a) if dilation else a


def pad(a, axes):
    return Pad(axes)(a)


def get_item(a, index):
    return GetItem(index)(a)

