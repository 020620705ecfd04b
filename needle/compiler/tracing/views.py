"""Strided views of flat buffers as IR movement ops, and writes into them.

NDArray hands a backend a view as ``(shape, strides, offset)`` over a flat buffer. The
tracer turns the view back into what made it: the buffer reshaped to a row-major *base*,
sliced, transposed, reversed and broadcast. A base exists when the view's non-broadcast
strides, sorted, each divide the next and the view does not wrap around a base row — true
of every view that reshape, permute, broadcast_to, flip and basic indexing make. Anything
else (``as_strided`` overlaps) becomes a ``gather`` of constant positions: always correct,
only slower.
"""
import math

import numpy as np

from ...backend_ndarray.ndarray import compact_strides
from ..passes.common import splat


def positions(shape, strides, offset):
    """The flat buffer position of every element of the view, row-major."""
    pos = np.full(shape, offset, dtype=np.int64)
    for axis, (n, s) in enumerate(zip(shape, strides)):
        pos += (np.arange(n, dtype=np.int64) * s).reshape((n,) + (1,) * (len(shape) - axis - 1))
    return pos


def _base(size, shape, strides, offset):
    """``(base shape, starts, steps, axes in base order, reversed axes, kept axes)``, or
    None: the row-major base the view slices (axis ``order[j]`` of the view is base axis
    ``j``, from ``starts[j]`` every ``steps[j]``; one more base axis for an inner stride)."""
    kept = [a for a in range(len(shape)) if shape[a] > 1 and strides[a] != 0]
    flipped, stride = [], {}
    for a in kept:
        s = strides[a]
        if s < 0:  # walk the axis forwards from its last element
            offset += (shape[a] - 1) * s
            s = -s
            flipped.append(a)
        stride[a] = s
    order = sorted(kept, key=lambda a: -stride[a])
    if not order:
        return ([size], [offset], [1], order, flipped, kept) if offset < size else None
    units = [stride[order[0]]]  # the base's stride of each of its axes
    for a in order[1:]:
        units.append(math.gcd(units[-1], stride[a]))
    base, starts, steps, rest = [], [], [], offset
    for j, a in enumerate(order):
        start, rest = divmod(rest, units[j])
        step = stride[a] // units[j]
        last = start + (shape[a] - 1) * step
        if j and last >= units[j - 1] // units[j]:
            return None  # the view wraps from one base row into the next (or overlaps)
        base.append(units[j - 1] // units[j] if j else last + 1)
        starts.append(start)
        steps.append(step)
    base.append(units[-1])  # the innermost stride's own axis (size 1 when it is 1)
    starts.append(rest)
    steps.append(1)
    return base, starts, steps, order, flipped, kept


def read_view(b, flat, size, shape, strides, offset):
    """The value of the view ``(shape, strides, offset)`` of ``flat`` (a value of ``size``
    elements, any shape), built with ``b`` (a :class:`~.builder.Builder`)."""
    shape, strides = tuple(shape), tuple(strides)
    if 0 in shape:
        return b.full(0.0, shape, flat.dtype)
    flat = b.reshape(flat, (size,))
    if offset == 0 and math.prod(shape) == size and strides == compact_strides(shape):
        return b.reshape(flat, shape)
    found = _base(size, shape, strides, offset)
    if found is None:
        pos = positions(shape, strides, offset).reshape(-1, 1)
        return b.reshape(b.take(flat, pos), shape)
    base, starts, steps, order, flipped, kept = found
    total = math.prod(base)
    if total < size:
        flat = b.emit("slice", [flat], start_indices=[0], limit_indices=[total], strides=[1])
    elif total > size:  # the last base row runs past the buffer: padding nobody reads
        flat = b.emit("pad", [flat, b.scalar(0.0, flat.dtype)], edge_padding_low=[0],
                      edge_padding_high=[total - size], interior_padding=[0])
    x = b.reshape(flat, base)
    sizes = [shape[a] for a in order] + [1]
    x = b.emit("slice", [x], start_indices=starts,
               limit_indices=[s + (n - 1) * k + 1 for s, n, k in zip(starts, sizes, steps)],
               strides=steps)
    x = b.reshape(x, sizes[:len(order)])
    # base order -> the view's own axis order among the kept axes
    rank = sorted(range(len(order)), key=lambda j: order[j])
    if rank != list(range(len(order))):
        x = b.emit("transpose", [x], permutation=rank)
    in_order = sorted(kept)
    flips = [in_order.index(a) for a in flipped]
    if flips:
        x = b.emit("reverse", [x], dimensions=sorted(flips))
    if tuple(x.shape) != shape:
        x = b.emit("broadcast_in_dim", [x], broadcast_dimensions=in_order, shape=list(shape))
    return x


def write_view(b, old, size, shape, strides, offset, update):
    """The new value of a buffer (``size`` elements, old value ``old``) after writing
    ``update`` (a value of ``shape``) into its view ``(shape, strides, offset)``."""
    shape, strides = tuple(shape), tuple(strides)
    if offset == 0 and math.prod(shape) == size and strides == compact_strides(shape):
        return b.reshape(update, (size,))
    padded = _as_pad(b, old, size, shape, strides, offset, update)
    if padded is not None:
        return padded
    pos = positions(shape, strides, offset).reshape(-1, 1)
    flat = b.reshape(old, (size,))
    return b.scatter(flat, pos, b.reshape(update, (pos.shape[0],)), "replace")


def _as_pad(b, old, size, shape, strides, offset, update):
    """A write of a block into a buffer that holds one value everywhere (``NDArray.pad``:
    zeros, then the input into the middle) as one ``pad``; None when it is not that."""
    fill = splat(old)
    found = _base(size, shape, strides, offset) if fill is not None else None
    if found is None:
        return None
    base, starts, steps, order, flipped, kept = found
    inner = math.prod(base[1:])
    if flipped or any(k != 1 for k in steps) or size % inner \
            or len(kept) != sum(d > 1 for d in shape):
        return None
    base[0] = size // inner  # the block sits somewhere in the whole buffer
    sizes = [shape[a] for a in order] + [1]
    x = b.reshape(update, [shape[a] for a in sorted(kept)])
    rank = [sorted(kept).index(a) for a in order]  # view axis order -> base order
    if rank != sorted(rank):
        x = b.emit("transpose", [x], permutation=rank)
    x = b.reshape(x, sizes)
    x = b.emit("pad", [x, b.scalar(fill, old.dtype)], edge_padding_low=list(starts),
               edge_padding_high=[n - s - k for n, s, k in zip(base, starts, sizes)],
               interior_padding=[0] * len(base))
    return b.reshape(x, (size,))
