"""Ops that move data without arithmetic: reshape, broadcast, transpose/permute, stack,
split, concatenate, flip, dilate, pad and indexing."""
from ..autograd import SparseTupleGrad, TensorOp, TensorTupleOp
from ..backend_ndarray import concatenate as nd_concatenate
from ..backend_ndarray import full
from ..backend_ndarray import split as nd_split
from ..backend_ndarray import stack as nd_stack
from ..backend_ndarray.ndarray import _normalize_axes
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


def transpose(a, axes=None):
    """Swap two axes (Needle semantics): ``axes=(i, j)``, default the last two."""
    if a.ndim < 2:
        raise ShapeError(f"transpose needs at least 2 dimensions, got shape {a.shape}")
    i, j = ((_normalize_axes(ax, a.ndim)[0] for ax in axes) if axes is not None
            else (a.ndim - 2, a.ndim - 1))
    order = list(range(a.ndim))
    order[i], order[j] = order[j], order[i]
    return permute(a, order)


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
        return a[self.index].compact()

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


def dilate(a, axes, dilation):
    return Dilate(axes, dilation)(a) if dilation else a


def undilate(a, axes, dilation):
    return UnDilate(axes, dilation)(a) if dilation else a


def pad(a, axes):
    return Pad(axes)(a)


def get_item(a, index):
    return GetItem(index)(a)

