"""The NumPy interpreter of Needle's IR: the executable specification of every op.

Each op is one small function of NumPy arrays in :data:`OPS`, computing in the dtypes of
its values and following StableHLO's semantics (the spec's formulas, written out with
NumPy). Every other way of running a graph (:mod:`needle.compiler.executor` on a Needle
device, an exported StableHLO module in jaxlib's interpreter) is tested against it, as the
backends are tested against ``numpy_backend.py``.

Example:
    >>> g = Graph()
    >>> x = g.add_input(TensorType((2,), "float32"))
    >>> y = g.add("exponential", [x], [x.type]).output
    >>> g.outputs = [y]
    >>> evaluate(g, np.zeros(2))
    [array([1., 1.], dtype=float32)]

Choices where StableHLO leaves the behaviour to the implementation:

* ``scatter`` updates whose index is out of bounds are skipped (per element, as the spec's
  ``exec`` does); repeated indices with ``computation="replace"`` keep the last update.
* ``reduce`` combines ``init_value`` once with the reduction of the slice (``init`` should be
  the identity of the computation for a portable result).
* An integer division (or remainder) by zero gives what NumPy gives (0).
"""
import itertools

import numpy as np

from .ir import Graph, TensorType  # noqa: F401 - TensorType for the docstring example

NP_DTYPES = {"float32": np.float32, "float64": np.float64, "int32": np.int32,
             "int64": np.int64, "bool": np.bool_}


def evaluate(graph, *arrays):
    """Run ``graph`` on NumPy arrays; returns the list of its output arrays.

    Args:
        graph: a :class:`~needle.compiler.ir.Graph`.
        *arrays: one array (anything ``np.asarray`` takes) per graph input, converted to
            the input's dtype; its shape must match. The arguments are never modified
            (``graph.aliases`` says what an in-place executor would update; here every
            output is a new array).

    Returns:
        A list of NumPy arrays, one per graph output, with the outputs' shapes and dtypes.
    """
    if len(arrays) != len(graph.inputs):
        raise ValueError(f"{graph.name} takes {len(graph.inputs)} inputs, got {len(arrays)}")
    env = {}
    for i, (v, a) in enumerate(zip(graph.inputs, arrays)):
        a = np.asarray(a, dtype=NP_DTYPES[v.dtype])
        if a.shape != v.shape:
            raise ValueError(f"input {i} of {graph.name}: expected shape {v.shape}, got {a.shape}")
        env[v] = a
    for node in graph.nodes:
        env.update(zip(node.outputs, run_node(node, [env[v] for v in node.inputs])))
    return [np.array(env[v]) for v in graph.outputs]  # copies: inputs and constants stay ours


def run_node(node, args):
    """The output arrays of one node given its input arrays, checked against its types."""
    fn = OPS.get(node.op)
    if fn is None:
        raise NotImplementedError(f"the reference interpreter has no op {node.op!r}")
    with np.errstate(all="ignore"):  # log(-1) is NaN, 1 / 0 is inf: values, not errors
        out = fn(node, *args)
    outs = out if isinstance(out, list) else [out]
    results = []
    for v, r in zip(node.outputs, outs):
        r = np.asarray(r)
        if r.shape != v.shape or r.dtype != NP_DTYPES[v.dtype]:
            raise TypeError(f"{node.op}: computed {r.dtype}{list(r.shape)}, but the node "
                            f"declares {v.type}")
        results.append(r)
    if len(results) != len(node.outputs):
        raise TypeError(f"{node.op}: computed {len(results)} outputs, declares {len(node.outputs)}")
    return results


def _np(value):
    """The NumPy scalar type of a value's dtype."""
    return NP_DTYPES[value.dtype]


def _out(node):
    return node.outputs[0].type


def _is_int(value):
    return value.dtype in ("int32", "int64")


def dimension_numbers(node):
    """A convolution's ``dimension_numbers`` as a dict (a dict or an object with those
    attributes is accepted)."""
    dn = node.attrs["dimension_numbers"]
    if isinstance(dn, dict):
        return dn
    return {k: getattr(dn, k) for k in CONV_DIMENSION_KEYS}


CONV_DIMENSION_KEYS = ("input_batch_dimension", "input_feature_dimension",
                       "input_spatial_dimensions", "kernel_input_feature_dimension",
                       "kernel_output_feature_dimension", "kernel_spatial_dimensions",
                       "output_batch_dimension", "output_feature_dimension",
                       "output_spatial_dimensions")


# -- elementwise ------------------------------------------------------------------------
def _sign(x):
    # np.sign gives +0.0 for -0.0; StableHLO keeps the zero's sign (and NaN stays NaN)
    return np.where(x == 0, x, np.sign(x)) if x.dtype.kind == "f" else np.sign(x)


def _logistic(x):
    # exp(-log(1 + e^-x)) never overflows, unlike 1 / (1 + e^-x)
    return np.exp(-np.logaddexp(0, -x)).astype(x.dtype)


_UNARY = {
    "negate": np.negative, "exponential": np.exp, "log": np.log, "tanh": np.tanh,
    "logistic": _logistic, "sqrt": np.sqrt, "rsqrt": lambda x: np.reciprocal(np.sqrt(x)),
    "abs": np.abs, "sine": np.sin, "cosine": np.cos, "sign": _sign, "floor": np.floor,
    "not": np.invert,  # logical not of bool, bitwise not of integers
}


def _int_divide(a, b):
    """Integer division truncating toward zero (NumPy's // floors)."""
    q = np.floor_divide(a, b)
    return q + ((np.remainder(a, b) != 0) & ((a < 0) != (b < 0))).astype(q.dtype)


def _divide(node, a, b):
    return _int_divide(a, b) if _is_int(node.inputs[0]) else np.divide(a, b)


def _power(node, a, b):
    if not _is_int(node.inputs[0]):
        return np.power(a, b)
    # integer exponentiation; a negative exponent gives 1 / a^|b| truncated: 0 unless |a| = 1
    positive = np.power(a, np.maximum(b, 0))
    negative = np.where(a == 1, 1, np.where(a == -1, np.where(b % 2 == 0, 1, -1), 0))
    return np.where(b < 0, negative, positive).astype(a.dtype)


_BINARY = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply,
    "maximum": np.maximum, "minimum": np.minimum,
    "remainder": np.fmod,  # the sign of the dividend, for integers and floats
    "and": np.bitwise_and, "or": np.bitwise_or,  # logical for bool, bitwise for integers
}

_COMPARE = {"EQ": np.equal, "NE": np.not_equal, "LT": np.less, "LE": np.less_equal,
            "GT": np.greater, "GE": np.greater_equal}


def _compare(node, a, b):
    kind = node.attrs.get("compare_type")
    if kind == "TOTALORDER":
        raise NotImplementedError("compare with compare_type TOTALORDER")
    return _COMPARE[node.attrs["comparison_direction"]](a, b)


def _convert(node, x):
    dtype = _np(node.outputs[0])
    if dtype is np.bool_:
        return x != 0
    return x.astype(dtype)  # float -> int truncates toward zero (NaN, overflow: TBD in the spec)


def _constant(node):
    return np.asarray(node.attrs["value"], dtype=_np(node.outputs[0]))


def _iota(node):
    t, dim = _out(node), node.attrs["iota_dimension"]
    shape = [1] * len(t.shape)
    shape[dim] = t.shape[dim]
    values = np.broadcast_to(np.arange(t.shape[dim]).reshape(shape), t.shape)
    return values.astype(NP_DTYPES[t.dtype])


# -- movement ---------------------------------------------------------------------------
def _broadcast_in_dim(node, x):
    dims, shape = list(node.attrs["broadcast_dimensions"]), _out(node).shape
    order = sorted(range(len(dims)), key=lambda i: dims[i])  # operand axes by target axis
    expanded = [1] * len(shape)
    for i in order:
        expanded[dims[i]] = x.shape[i]
    return np.broadcast_to(np.transpose(x, order).reshape(expanded), shape)


def _slice(node, x):
    a = node.attrs
    strides = a.get("strides") or [1] * x.ndim
    return x[tuple(slice(s, e, st) for s, e, st in zip(a["start_indices"], a["limit_indices"],
                                                        strides))]


def _reverse(node, x):
    dims = tuple(node.attrs["dimensions"])
    return np.flip(x, dims) if dims else x


def pad(x, value, low, high, interior):
    """StableHLO pad: ``interior`` values between elements first, then edges (a negative
    edge removes elements)."""
    dilated = [d + (d - 1) * i if d else 0 for d, i in zip(x.shape, interior)]
    grown = [max(lo, 0) + d + max(hi, 0) for d, lo, hi in zip(dilated, low, high)]
    out = np.full(grown, value, dtype=x.dtype)
    out[tuple(slice(max(lo, 0), max(lo, 0) + d, i + 1)
              for d, lo, i in zip(dilated, low, interior))] = x
    return out[tuple(slice(-min(lo, 0), g + min(hi, 0)) for g, lo, hi in zip(grown, low, high))]


def _pad(node, x, value):
    a, zeros = node.attrs, [0] * x.ndim
    return pad(x, value, a.get("edge_padding_low", zeros), a.get("edge_padding_high", zeros),
               a.get("interior_padding", zeros))


# -- reductions and contractions ----------------------------------------------------------
#: a reduce's or scatter's ``computation`` -> the NumPy ufunc applying it
COMBINERS = {"add": np.add, "multiply": np.multiply, "max": np.maximum, "maximum": np.maximum,
             "min": np.minimum, "minimum": np.minimum, "and": np.logical_and,
             "or": np.logical_or}


def _reduce(node, x, init):
    computation = node.attrs.get("computation", "add")
    if computation not in COMBINERS:
        raise NotImplementedError(f"reduce with computation {computation!r}")
    return COMBINERS[computation].reduce(x, axis=tuple(node.attrs["dimensions"]),
                                         dtype=x.dtype, initial=init.item())


def dot_dimensions(node, lhs_rank, rhs_rank):
    """``(lhs batch, lhs free, lhs contracting, rhs batch, rhs contracting, rhs free)``
    axis lists of a dot_general."""
    a = node.attrs
    lb, lc = list(a.get("lhs_batching_dimensions", ())), list(a["lhs_contracting_dimensions"])
    rb, rc = list(a.get("rhs_batching_dimensions", ())), list(a["rhs_contracting_dimensions"])
    lf = [d for d in range(lhs_rank) if d not in lb and d not in lc]
    rf = [d for d in range(rhs_rank) if d not in rb and d not in rc]
    return lb, lf, lc, rb, rc, rf


def _dot_general(node, lhs, rhs):
    """(batch, lhs free, rhs free) = sum over the contracting axes, as one batched matmul."""
    t = _out(node)
    lb, lf, lc, rb, rc, rf = dot_dimensions(node, lhs.ndim, rhs.ndim)
    size = lambda x, axes: int(np.prod([x.shape[d] for d in axes], dtype=np.int64))  # noqa: E731
    b, m, k, n = size(lhs, lb), size(lhs, lf), size(lhs, lc), size(rhs, rf)
    left = np.transpose(lhs, lb + lf + lc).reshape(b, m, k).astype(NP_DTYPES[t.dtype])
    right = np.transpose(rhs, rb + rc + rf).reshape(b, k, n).astype(NP_DTYPES[t.dtype])
    return np.matmul(left, right).reshape(t.shape)


def conv_attributes(node, lhs_rank):
    """A convolution's attributes with StableHLO's defaults filled in."""
    a, k = node.attrs, lhs_rank - 2
    return {"window_strides": list(a.get("window_strides") or [1] * k),
            "padding": [tuple(p) for p in (a.get("padding") or [(0, 0)] * k)],
            "lhs_dilation": list(a.get("lhs_dilation") or [1] * k),
            "rhs_dilation": list(a.get("rhs_dilation") or [1] * k),
            "feature_group_count": int(a.get("feature_group_count", 1)),
            "batch_group_count": int(a.get("batch_group_count", 1)),
            "dn": dimension_numbers(node)}


def grouped_convolution(conv, split, concatenate, lhs, rhs, a):
    """StableHLO's group rule, shared by the reference and the executor: with
    ``feature_group_count`` (``batch_group_count``) G > 1, split lhs's feature (batch) axis
    and rhs's output-feature axis into G parts, convolve the pairs with a count of 1 and
    concatenate the results along the output feature axis. ``conv(lhs, rhs, a)`` is the
    ungrouped convolution; ``split(x, parts, axis)`` and ``concatenate(xs, axis)`` work on
    the caller's arrays."""
    dn = a["dn"]
    groups, axis = a["feature_group_count"], dn["input_feature_dimension"]
    if a["batch_group_count"] > 1:
        groups, axis = a["batch_group_count"], dn["input_batch_dimension"]
    if groups == 1:
        return conv(lhs, rhs, a)
    single = dict(a, feature_group_count=1, batch_group_count=1)
    parts = zip(split(lhs, groups, axis), split(rhs, groups, dn["kernel_output_feature_dimension"]))
    return concatenate([conv(x, w, single) for x, w in parts], dn["output_feature_dimension"])


def conv_output_sizes(padded, kernel, rhs_dilation, strides):
    """The number of windows along each spatial axis (the spec's C25) given the padded,
    dilated input sizes."""
    sizes = []
    for h, k, d, s in zip(padded, kernel, rhs_dilation, strides):
        window = (k - 1) * d + 1 if k else 0
        sizes.append(0 if h == 0 or window > h else (h - window) // s + 1)
    return sizes


def _conv_ungrouped(lhs, rhs, a, dtype):
    dn = a["dn"]
    spatial = list(dn["input_spatial_dimensions"])
    # canonical layouts: x (N, *spatial, C), w (*kernel, C_in, C_out)
    x = np.transpose(lhs, [dn["input_batch_dimension"]] + spatial + [dn["input_feature_dimension"]])
    w = np.transpose(rhs, list(dn["kernel_spatial_dimensions"])
                     + [dn["kernel_input_feature_dimension"],
                        dn["kernel_output_feature_dimension"]])
    x, w = x.astype(dtype), w.astype(dtype)
    low = [0] + [lo for lo, _ in a["padding"]] + [0]
    high = [0] + [hi for _, hi in a["padding"]] + [0]
    x = pad(x, 0, low, high, [0] + [d - 1 for d in a["lhs_dilation"]] + [0])
    kernel, rd, st = w.shape[:-2], a["rhs_dilation"], a["window_strides"]
    out_sizes = conv_output_sizes(x.shape[1:-1], kernel, rd, st)
    out = np.zeros((x.shape[0], *out_sizes, w.shape[-1]), dtype=dtype)
    if all(out_sizes):
        for tap in itertools.product(*map(range, kernel)):  # one matmul per kernel position
            window = x[(slice(None),) + tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                                              for t, d, o, s in zip(tap, rd, out_sizes, st))]
            out += window @ w[tap]
    # canonical (N, *spatial, F) -> the output layout
    perm = [0] * out.ndim
    perm[dn["output_batch_dimension"]] = 0
    for i, d in enumerate(dn["output_spatial_dimensions"]):
        perm[d] = 1 + i
    perm[dn["output_feature_dimension"]] = out.ndim - 1
    return np.transpose(out, perm)


def _convolution(node, lhs, rhs):
    if any(node.attrs.get("window_reversal") or ()):
        raise NotImplementedError("convolution with window_reversal")
    dtype = _np(node.outputs[0])
    return grouped_convolution(lambda x, w, a: _conv_ungrouped(x, w, a, dtype),
                               lambda x, n, axis: np.split(x, n, axis), np.concatenate,
                               lhs, rhs, conv_attributes(node, lhs.ndim))


# -- gather and scatter -------------------------------------------------------------------
def _index_vectors(indices, index_vector_dim):
    """Start indices as ``(batch..., index vector)``: the index vector axis moved last (or
    added when ``index_vector_dim`` is the rank)."""
    indices = np.asarray(indices, dtype=np.int64)
    if index_vector_dim == indices.ndim:
        return indices[..., None]
    return np.moveaxis(indices, index_vector_dim, -1)


def _batch_axis(d_start, index_vector_dim):
    """The axis of a start-indices batching dimension among the batch axes."""
    return d_start - (0 if d_start < index_vector_dim else 1)


def _flat(operand_shape, index_axes):
    """Flat row-major positions of the operand elements whose per-axis indices are
    ``index_axes`` (broadcastable arrays, one per operand axis)."""
    strides = np.cumprod((1,) + tuple(operand_shape[:0:-1]))[::-1]
    return sum(ix * int(s) for ix, s in zip(index_axes, strides))


def gather_positions(operand_shape, start_indices, attrs):
    """For every element of a gather's result, the flat position of the operand element
    it reads (StableHLO's ``operand_index``, start indices clamped so each slice fits).

    Returns an int64 array of the result's shape. Shared by the reference (``operand.flat``
    at these positions) and the executor (one backend ``take``).
    """
    a = attrs
    ivd, offset_dims = a["index_vector_dim"], list(a["offset_dims"])
    collapsed, start_map = list(a.get("collapsed_slice_dims", ())), list(a["start_index_map"])
    op_batch = list(a.get("operand_batching_dims", ()))
    idx_batch = list(a.get("start_indices_batching_dims", ()))
    sizes = list(a["slice_sizes"])
    idx = _index_vectors(start_indices, ivd)
    batch_shape, rank = idx.shape[:-1], len(operand_shape)
    window = [d for d in range(rank) if d not in collapsed and d not in op_batch]
    nb, nw = len(batch_shape), len(window)
    # per operand axis: start (batch-shaped) + offset (window-shaped), broadcast together
    axes = []
    for d in range(rank):
        start = np.zeros(batch_shape, dtype=np.int64)
        if d in start_map:
            start = np.clip(idx[..., start_map.index(d)], 0, operand_shape[d] - sizes[d])
        if d in op_batch:
            b = _batch_axis(idx_batch[op_batch.index(d)], ivd)
            start = start + np.arange(batch_shape[b]).reshape(
                [-1 if i == b else 1 for i in range(nb)])
        start = start.reshape(batch_shape + (1,) * nw)
        offset = np.zeros((1,) * (nb + nw), dtype=np.int64)
        if d in window:
            w = window.index(d)
            offset = np.arange(sizes[d]).reshape([-1 if i == nb + w else 1 for i in range(nb + nw)])
        axes.append(start + offset)
    positions = np.broadcast_to(_flat(operand_shape, axes),
                                batch_shape + tuple(sizes[d] for d in window))
    # (batch..., window...) -> the result's axis order: window axes at offset_dims
    result_rank = nb + nw
    batch_dims = [d for d in range(result_rank) if d not in offset_dims]
    perm = [0] * result_rank
    for i, d in enumerate(batch_dims):
        perm[d] = i
    for i, d in enumerate(offset_dims):
        perm[d] = nb + i
    return np.ascontiguousarray(np.transpose(positions, perm))


def scatter_positions(operand_shape, scatter_indices, updates_shape, attrs):
    """For every element of a scatter's ``updates``, the flat position of the operand
    element it updates, or -1 where StableHLO's ``result_index`` is out of bounds (the
    update is skipped). Returns an int64 array of ``updates_shape``."""
    a = attrs
    ivd, window_dims = a["index_vector_dim"], list(a["update_window_dims"])
    inserted = list(a.get("inserted_window_dims", ()))
    to_operand = list(a["scatter_dims_to_operand_dims"])
    op_batch = list(a.get("input_batching_dims", ()))
    idx_batch = list(a.get("scatter_indices_batching_dims", ()))
    idx = _index_vectors(scatter_indices, ivd)
    rank, urank = len(operand_shape), len(updates_shape)
    scatter_dims = [d for d in range(urank) if d not in window_dims]
    window = [d for d in range(rank) if d not in inserted and d not in op_batch]
    # work in the updates' own axis order: per operand axis, an index array broadcastable
    # to updates_shape
    shape_of = lambda d: [updates_shape[d] if i == d else 1 for i in range(urank)]  # noqa: E731
    scatter_shape = [1] * urank
    for d in scatter_dims:
        scatter_shape[d] = updates_shape[d]
    in_bounds = np.ones((1,) * urank, dtype=bool)
    axes = []
    for d in range(rank):
        ix = np.zeros((1,) * urank, dtype=np.int64)
        if d in to_operand:
            ix = idx[..., to_operand.index(d)].reshape(scatter_shape)
        if d in op_batch:
            b = _batch_axis(idx_batch[op_batch.index(d)], ivd)
            ix = ix + np.arange(updates_shape[scatter_dims[b]]).reshape(shape_of(scatter_dims[b]))
        if d in window:
            u = window_dims[window.index(d)]
            ix = ix + np.arange(updates_shape[u]).reshape(shape_of(u))
        in_bounds = in_bounds & (ix >= 0) & (ix < operand_shape[d])
        axes.append(ix)
    flat = np.broadcast_to(_flat(operand_shape, axes), updates_shape)
    return np.where(np.broadcast_to(in_bounds, updates_shape), flat, -1).astype(np.int64)


def _gather(node, operand, start_indices):
    return operand.reshape(-1)[gather_positions(operand.shape, start_indices, node.attrs)]


def _scatter(node, operand, indices, updates):
    computation = node.attrs.get("computation", "add")
    targets = scatter_positions(operand.shape, indices, updates.shape, node.attrs).reshape(-1)
    keep = targets >= 0
    targets, values = targets[keep], updates.reshape(-1)[keep]
    out = operand.copy().reshape(-1)
    if computation == "replace":
        out[targets] = values  # NumPy writes repeated targets in order: the last one stays
    elif computation in COMBINERS:
        COMBINERS[computation].at(out, targets, values)
    else:
        raise NotImplementedError(f"scatter with computation {computation!r}")
    return out.reshape(operand.shape)


def _composite(node, *args):
    if node.decomposition is None:
        raise NotImplementedError(f"composite {node.attrs.get('name')!r} without a decomposition")
    return evaluate(node.decomposition, *args)


#: op -> function(node, *input arrays) -> output array (or list of arrays)
OPS = {
    **{op: (lambda f: lambda node, x: f(x))(f) for op, f in _UNARY.items()},
    **{op: (lambda f: lambda node, a, b: f(a, b))(f) for op, f in _BINARY.items()},
    "divide": _divide,
    "power": _power,
    "compare": _compare,
    "select": lambda node, pred, on_true, on_false: np.where(pred, on_true, on_false),
    "clamp": lambda node, lo, x, hi: np.minimum(np.maximum(x, lo), hi),
    "convert": _convert,
    "constant": _constant,
    "iota": _iota,
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": lambda node, x: x.reshape(_out(node).shape),
    "transpose": lambda node, x: np.transpose(x, node.attrs["permutation"]),
    "slice": _slice,
    "reverse": _reverse,
    "pad": _pad,
    "concatenate": lambda node, *xs: np.concatenate(xs, axis=node.attrs["dimension"]),
    "reduce": _reduce,
    "dot_general": _dot_general,
    "convolution": _convolution,
    "gather": _gather,
    "scatter": _scatter,
    "composite": _composite,
}
