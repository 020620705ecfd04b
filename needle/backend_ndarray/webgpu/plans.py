"""Fitting launches into the adapter's limits: 2-D grids for more than 65535 workgroups,
and storage-binding windows (with aligned offsets) for tensors larger than one binding.
Pure Python on shapes and numbers; nothing here touches the GPU."""
from math import prod

from .context import DeviceLimitError

MAX_DIMS = 8  # strided.wgsl's Params hold this many dimensions


def grid(groups, max_groups):
    """An ``(x, y, 1)`` grid of at least ``groups`` workgroups, each side within the limit;
    kernels linearise it as ``y * x_count + x`` and skip the surplus."""
    if groups <= max_groups:
        return (max(groups, 1), 1, 1)
    y = -(-groups // max_groups)
    if y > max_groups:
        raise DeviceLimitError(f"a launch of {groups} workgroups exceeds this adapter's "
                               f"{max_groups} x {max_groups} grid")
    return (-(-groups // y), y, 1)


def chunks(n, max_elems, align):
    """``(start, count)`` pieces of ``range(n)`` that each fit one binding and start at a
    multiple of ``align`` elements."""
    step = max_elems - max_elems % align
    return [(start, min(step, n - start)) for start in range(0, n, step)] or [(0, 0)]


def window(start, count, align):
    """The aligned binding window holding elements ``[start, start + count)``:
    ``(window start, window length, start within the window)``."""
    first = start - start % align
    return first, start + count - first, start - first


def simplify(shape, strides):
    """Drop size-1 axes and merge axes that step through memory as one."""
    dims = [(d, s) for d, s in zip(shape, strides) if d != 1]
    merged = []
    for d, s in dims:
        if merged and merged[-1][1] == s * d:
            merged[-1] = (merged[-1][0] * d, s)
        else:
            merged.append((d, s))
    return tuple(d for d, _ in merged), tuple(s for _, s in merged)


def span(shape, strides, offset):
    """Lowest and highest element position a view touches."""
    lo = offset + sum((d - 1) * s for d, s in zip(shape, strides) if s < 0)
    hi = offset + sum((d - 1) * s for d, s in zip(shape, strides) if s > 0)
    return lo, hi


def strided_pieces(shape, strides, offset, max_elems, align):
    """Split a view into pieces of at most MAX_DIMS axes whose strided side and compact
    side each fit one binding window. Yields ``(shape, strides, offset, base)`` with
    ``base`` the piece's first element in row-major order of the whole view."""
    shape, strides = simplify(shape, strides)

    def fits(shape, strides, offset, base):
        lo, hi = span(shape, strides, offset)
        return (len(shape) <= MAX_DIMS
                and window(lo, hi - lo + 1, align)[1] <= max_elems
                and window(base, prod(shape), align)[1] <= max_elems)

    def pieces(shape, strides, offset, base):
        if fits(shape, strides, offset, base):
            yield shape, strides, offset, base
            return
        if not shape:
            raise DeviceLimitError("a single element does not fit a storage binding")
        half = shape[0] // 2
        inner = prod(shape[1:])
        for start, length in ((0, half), (half, shape[0] - half)):
            sub_shape, sub_strides = simplify((length,) + shape[1:], strides)
            yield from pieces(sub_shape, sub_strides, offset + start * strides[0],
                              base + start * inner)

    yield from pieces(shape, strides, offset, 0)
