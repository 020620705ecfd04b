"""Host-side helpers for strided views: pure Python, testable without a GPU."""

MAX_DIMS = 8  # rank limit of the movement kernels (kernels/movement.cu)


def coalesce(shape, strides):
    """The same view with size-1 dims dropped and contiguous neighbours merged.

    A compact (4, 5, 6) array becomes one dim of 120; a transpose stays 2-D. Fewer dims
    mean fewer divisions per element in the kernels.

    Example:
        >>> coalesce((4, 1, 5, 6), (30, 99, 6, 1))
        ((120,), (1,))
    """
    dims = [(d, s) for d, s in zip(shape, strides) if d != 1]
    if not dims:
        return (1,), (0,)
    merged = [dims[0]]
    for d, s in dims[1:]:
        prev_d, prev_s = merged[-1]
        if prev_s == s * d:
            merged[-1] = (prev_d * d, s)
        else:
            merged.append((d, s))
    return tuple(d for d, _ in merged), tuple(s for _, s in merged)


def is_contiguous(shape, strides):
    """Whether a coalesced view is one dense run of elements (a plain memcpy)."""
    return len(shape) == 1 and (strides[0] == 1 or shape[0] == 1)


def kernel_args(shape, strides, offset):
    """(ndim, offset, d0..d7, s0..s7) for the movement kernels: dims right-aligned."""
    pad = MAX_DIMS - len(shape)
    return (len(shape), offset, *((1,) * pad + tuple(shape)), *((0,) * pad + tuple(strides)))


def launch_blocks(n, threads, cap):
    """Blocks for a grid-stride loop over n items: enough to fill the GPU, at most cap."""
    return max(1, min((n + threads - 1) // threads, cap))
