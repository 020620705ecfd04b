"""Indexing beyond views: integer-array, mask and Tensor indices (a gather with a
scatter-add gradient), assignment ``t[index] = value``, ``where``, ``embedding`` and
``one_hot``.

NumPy decides what an index selects: the flat positions of the selected elements are worked
out on the host from the index and the shape alone (never from the data), then one backend
``take`` gathers them on the tensor's device. Basic indices (ints, slices, ``...``, None)
stay views (:class:`~needle.ops.movement.GetItem`).
"""
import numbers

import numpy as np

from ..autograd import Tensor, TensorOp, find_topo_sort, grad_enabled, no_grad
from ..backend_ndarray import NDArray, compact_strides, full
from ..backend_ndarray import where as nd_where
from .. import _trace_state, init
from ..errors import DeviceMismatchError, DTypeError
from .movement import broadcast_to, concatenate, get_item as basic_get_item, reshape


class Take(TensorOp):
    """``a.flat[positions]`` shaped as ``positions`` (an int64 NumPy array)."""

    def __init__(self, positions):
        self.positions = np.ascontiguousarray(positions, dtype=np.int64)

    def compute(self, a):
        out = a._new(self.positions.shape)
        if out.size:
            a.device.backend.take(a.compact()._handle, self.positions.reshape(-1), out._handle)
        return out

    def gradient(self, out_grad, node):
        return ScatterAdd(self.positions, node.inputs[0].shape)(out_grad)


class ScatterAdd(TensorOp):
    """Zeros of ``shape`` with ``a`` added at ``positions`` (repeats summed): Take's adjoint."""

    def __init__(self, positions, shape):
        self.positions, self.shape = np.ascontiguousarray(positions, dtype=np.int64), shape

    def compute(self, a):
        out = full(self.shape, 0.0, a.dtype, a.device)
        if a.size:
            a.device.backend.scatter_add(a.compact()._handle, self.positions.reshape(-1),
                                         out._handle)
        return out

    def gradient(self, out_grad, node):
        return Take(self.positions)(out_grad)


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, slice)
               or (isinstance(i, numbers.Integral) and not isinstance(i, (bool, np.bool_)))
               for i in items)


def _integers(values, what):
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    raise IndexError(f"{what} must hold integers (or be a mask from a comparison), got "
                     f"{values.dtype} values {values.reshape(-1)[:4]}")


def _host_index(index):
    """``index`` with Tensors and lists as NumPy arrays: masks (comparison results, bool
    arrays) as bool arrays, any other tensor or list as int64 (checked to hold integers)."""
    out = []
    for i in index if isinstance(index, tuple) else (index,):
        if isinstance(i, Tensor):
            values = i.numpy()
            i = values != 0 if i.is_mask else _integers(values, "a tensor used as an index")
        elif isinstance(i, (list, np.ndarray)):
            values = np.asarray(i)
            i = values if values.dtype == bool else _integers(values, "an index array")
        elif isinstance(i, (bool, np.bool_)):
            i = np.asarray(i)
        elif not (i is None or i is Ellipsis or isinstance(i, (slice, numbers.Integral))):
            raise IndexError(f"only ints, slices, ..., None, integer arrays/tensors and masks "
                             f"are valid indices, got {type(i).__name__} {i!r}")
        out.append(i)
    return tuple(out)


def _positions(shape, index):
    """Row-major flat positions, in a compact array of ``shape``, of what NumPy's
    ``array[index]`` selects, shaped as that selection. Built from one broadcast view per
    axis, so it costs the selection's size, not the array's."""
    strides = compact_strides(tuple(shape))
    pos = np.zeros((), np.int64)[index] if not shape else 0
    for axis, (dim, stride) in enumerate(zip(shape, strides)):
        along = np.arange(dim, dtype=np.int64).reshape(
            tuple(-1 if i == axis else 1 for i in range(len(shape))))
        pos = pos + np.broadcast_to(along, shape)[index] * stride
    return np.ascontiguousarray(pos, dtype=np.int64)


def get_item(a, index):
    """``a[index]`` with NumPy semantics: views for basic indices, a gather (gradient: a
    scatter-add) for integer arrays, integer tensors, lists and masks."""
    if _is_basic(index):
        return basic_get_item(a, index)
    out = Take(_positions(a.shape, _host_index(index)))(a)
    if a.is_mask:
        out.is_mask = True
    return out


class AssignBasic(TensorOp):
    """``a`` with ``value`` (already of the selection's shape) written at a basic index."""

    def __init__(self, index):
        self.index = index

    def compute(self, a, value):
        out = NDArray(a)  # a copy
        out[self.index] = value
        return out

    def gradient(self, out_grad, node):
        grad = NDArray(out_grad.realize_cached_data())
        grad[self.index] = 0.0
        return Tensor.make_const(grad), basic_get_item(out_grad, self.index)


def _as_value(value, like):
    """``value`` (a Tensor or number) as a Tensor on ``like``'s device and dtype."""
    if isinstance(value, Tensor):
        if value.device != like.device:
            raise DeviceMismatchError(f"assignment: the value is on {value.device}, the tensor "
                                      f"on {like.device}")
        if value.dtype != like.dtype:
            raise DTypeError(f"assignment: the value is {value.dtype}, the tensor {like.dtype}")
        return value
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return Tensor.make_const(full((), value, like.dtype, like.device))
    raise TypeError(f"assignment: the value must be a needle.Tensor or a number, got "
                    f"{type(value).__name__}")


def assigned(a, index, value):
    """A new tensor: ``a`` with ``value`` written at ``index`` (any index ``get_item``
    takes; for repeated positions the last write wins, as NumPy). Differentiable in ``a``
    and ``value``."""
    value = _as_value(value, a)
    if _is_basic(index):
        selection = a.realize_cached_data()[index].shape
        return AssignBasic(index)(a, broadcast_to(value, selection))
    # gather from [a's elements, the values]: position i takes its own element, or the
    # value written to it last
    selected = _positions(a.shape, _host_index(index))
    positions = selected.reshape(-1)
    n, k = a.size, positions.size
    order = np.arange(k)
    last = k - 1 - np.unique(positions[::-1], return_index=True)[1]
    source = np.arange(n, dtype=np.int64)
    source[positions[last]] = n + order[last]
    values = broadcast_to(value, selected.shape)
    flat = concatenate([reshape(a, (n,)), reshape(values, (k,))])
    return reshape(Take(source)(flat), a.shape)


def set_item_(t, index, value):
    """``t[index] = value`` in place: see ``Tensor.__setitem__``."""
    tracked = grad_enabled() and (t.requires_grad or (isinstance(value, Tensor)
                                                      and value.requires_grad))
    if tracked and t.is_leaf() and t.requires_grad:
        raise RuntimeError("a leaf Tensor that requires grad is being used in an in-place "
                           "operation (t[...] = ...); write t.data[...] or use needle.no_grad()")
    if tracked:
        # t becomes the assignment's node; its old value lives on as ``old``, which keeps the
        # buffer (and the version counter its views share) and takes t's place in the
        # value's own graph (``h[0] = h[1] * 2`` reads the old h)
        old = Tensor.__new__(Tensor)
        old.__dict__.update(t.__dict__)
        if isinstance(value, Tensor) and value.requires_grad:
            _replace_input(value, t, old)
        new = assigned(old, index, value)
        t.op, t.inputs, t.requires_grad = new.op, new.inputs, True
        t.cached_data, t._input_versions = new.cached_data, new._input_versions
        # a new buffer and version: ops that used t before this write raise in backward
        t._counter = [old._counter[0] + 1]
        t._own_version = t._counter[0]
        t.__dict__.pop("is_mask", None)
        return
    data = t.realize_cached_data()  # write into t's buffer, which its views share
    if any(s == 0 and d > 1 for d, s in zip(data.shape, data.strides)):
        raise ValueError(f"cannot write into a broadcast view (shape {data.shape}, strides "
                         f"{data.strides}): one element stands for several; write to a "
                         f"copy (t * 1) or to the tensor it was broadcast from")
    if _is_basic(index):
        value = _as_value(value, t)
        data[index] = value.realize_cached_data().broadcast_to(data[index].shape)
    else:
        with no_grad():
            data[...] = assigned(Tensor.make_const(data), index, value).realize_cached_data()
    t._version += 1


def _replace_input(root, target, replacement):
    """Point every edge to ``target`` in ``root``'s graph at ``replacement`` instead."""
    for node in find_topo_sort([root]):
        if any(x is target for x in node.inputs):
            node.inputs = [replacement if x is target else x for x in node.inputs]


class Where(TensorOp):
    """``a`` where ``condition`` is nonzero, else ``b`` (one backend select: the branch not
    taken never reaches the result, NaN included); inputs ``(condition, a, b)``, of one
    shape."""

    def compute(self, condition, a, b):
        return nd_where(condition, a, b)

    def gradient(self, out_grad, node):
        condition = node.inputs[0]
        zeros = Tensor.make_const(full(out_grad.shape, 0.0, out_grad.dtype, out_grad.device))
        return None, Where()(condition, out_grad, zeros), Where()(condition, zeros, out_grad)


def where(condition, a, b):
    """``a`` where ``condition`` is nonzero (or True), else ``b``; all three broadcast, and
    ``a``/``b`` may be numbers. The condition is a tensor (a mask from a comparison, say)
    or host data (a bool array); gradients flow to ``a`` and ``b``."""
    like = a if isinstance(a, Tensor) else b
    if not isinstance(like, Tensor):
        raise TypeError("where: a or b must be a needle.Tensor")
    a, b = _as_value(a, like), _as_value(b, like)
    if not isinstance(condition, Tensor):
        condition = Tensor(np.asarray(condition), device=like.device, dtype=like.dtype,
                           requires_grad=False)
    if condition.device != like.device:
        raise DeviceMismatchError(f"where: the condition is on {condition.device}, the values "
                                  f"on {like.device}")
    if condition.dtype != like.dtype:  # a mask: its dtype carries no meaning
        condition = Tensor.make_const(condition.realize_cached_data().astype(like.dtype))
    shape = tuple(np.broadcast_shapes(condition.shape, a.shape, b.shape))
    return Where()(*(broadcast_to(t, shape) for t in (condition, a, b)))


class Embedding(TensorOp):
    """Rows of ``weight`` (rows, dim) picked by ``ids`` (row indices in weight's dtype, on
    its device): the backend's embedding kernel reads the ids on the device."""

    def compute(self, weight, ids):
        (rows, dim), n = weight.shape, ids.size
        out = weight._new(ids.shape + (dim,))
        weight.device.backend.embedding(weight.compact()._handle, ids.compact()._handle,
                                        out._handle, n, rows, dim)
        return out

    def gradient(self, out_grad, node):
        weight, ids = node.inputs
        return EmbeddingBackward(weight.shape[0])(out_grad, ids), None


class EmbeddingBackward(TensorOp):
    """The table gradient of :class:`Embedding`: ``grad``'s rows added into the rows
    ``ids`` pick of a zero (rows, dim) table."""

    def __init__(self, rows):
        self.rows = rows

    def compute(self, grad, ids):
        n, dim = ids.size, grad.shape[-1]
        out = grad._new((self.rows, dim))
        grad.device.backend.embedding_backward(grad.compact()._handle, ids.compact()._handle,
                                               out._handle, n, self.rows, dim)
        return out

    def gradient(self, out_grad, node):
        return Embedding()(out_grad, node.inputs[1]), None


def embedding(weight, ids):
    """Rows of the ``(num_embeddings, dim)`` ``weight`` picked by integer ``ids`` (a Tensor
    holding integers, or an array) of any shape: shape ``ids.shape + (dim,)``. A gather;
    its gradient adds into the picked rows (repeats summed). ``ids`` are checked to lie in
    ``[0, num_embeddings)`` (read on the host once per ids array; where the backend has an
    embedding kernel, the lookup itself reads them on the device)."""
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, dim), got {weight.shape}")
    rows, dim = weight.shape
    # (ids are held in the table's dtype: float32 is exact up to 2**24 rows)
    if weight.device.backend.supports("embedding", weight.dtype) and \
            (rows <= 2 ** 24 or weight.dtype == "float64"):
        return Embedding()(weight, _checked_ids(ids, weight))
    values = ids.numpy() if isinstance(ids, Tensor) else np.asarray(ids)
    index = _row_indices(values, rows)
    return Take(index[..., None] * dim + np.arange(dim))(weight)


def _row_indices(values, rows):
    """Host ``values`` as integer row indices, checked to lie in ``[0, rows)``."""
    index = _integers(values, "embedding ids")
    if index.size and (index.min() < 0 or index.max() >= rows):
        raise IndexError(f"embedding: ids must lie in [0, {rows}), got values in "
                         f"[{index.min()}, {index.max()}]")
    return index


def _checked_ids(ids, weight):
    """``ids`` as a constant of weight's dtype on its device, checked to be row indices.

    The check reads the ids back once per ids array (remembered on it, with its version),
    and not while needle.compile traces (the kernels give NaN rows for ids out of range)."""
    rows = weight.shape[0]
    if not (isinstance(ids, Tensor) and ids.device == weight.device):
        values = ids.numpy() if isinstance(ids, Tensor) else np.asarray(ids)
        _row_indices(values, rows)
        return Tensor.make_const(NDArray(values, device=weight.device, dtype=weight.dtype))
    data = ids.realize_cached_data()
    check_once(data, ("rows", rows, ids._version), lambda values: _row_indices(values, rows))
    return Tensor.make_const(data if data.dtype == weight.dtype else data.astype(weight.dtype))


def check_once(data, key, check):
    """``check(data.numpy())`` unless it passed for ``data`` with this ``key`` before (an
    index array reused across steps pays once; the key holds the tensor's version, so an
    in-place write checks again), and not while needle.compile traces (a check would read
    traced data on the host). The mark is on the array itself, not on a converted copy,
    which is new on every call."""
    if getattr(data, "_checked", None) != key and _trace_state.ACTIVE is None:
        check(data.numpy())
        data._checked = key


def one_hot(labels, num_classes, device=None, dtype=None):
    """Rows of the ``num_classes`` identity picked by integer ``labels`` (Tensor or array),
    shape ``labels.shape + (num_classes,)``; as ``torch.nn.functional.one_hot`` but in a
    float dtype (default: the labels tensor's, else float32) and without a gradient."""
    if isinstance(labels, Tensor):
        device, dtype = device or labels.device, dtype or labels.dtype
    return init.one_hot(num_classes, labels, device=device, dtype=dtype or "float32")
