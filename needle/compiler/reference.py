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

from .ir import DTYPES, Graph, TensorType  # noqa: F401 - TensorType for the docstring example

NP_DTYPES = {"float32": np.float32, "float64": np.float64, "int32": np.int32,
             "int64": np.int64, "bool": np.bool_, "float16": np.float16, "int8": np.int8,
             "int16": np.int16, "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32,
             "uint64": np.uint64, "complex64": np.complex64, "complex128": np.complex128}
try:  # bfloat16 and the sub-byte integers come from ml_dtypes (installed with jaxlib)
    import ml_dtypes as _ml_dtypes
except ImportError:  # (without it, programs with those dtypes are refused by name)
    pass
else:
    NP_DTYPES.update({name: getattr(_ml_dtypes, name) for name in DTYPES
                      if name not in NP_DTYPES and hasattr(_ml_dtypes, name)})


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


#: ml_dtypes' sub-byte integers -> their widths in bits
_SUB_BYTE = {"int2": 2, "int4": 4, "uint2": 2, "uint4": 4}


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
        if v.dtype in _SUB_BYTE and r.dtype != NP_DTYPES[v.dtype]:
            r = r.astype(NP_DTYPES[v.dtype])  # NumPy computes ml_dtypes' int4 etc. in int8
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
    return value.dtype.startswith(("int", "uint"))


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
    if x.dtype.kind == "c":
        return (1 / (1 + np.exp(-x))).astype(x.dtype)
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


def _unsigned(x):
    """``x``'s two's-complement bits as an unsigned array of its width, and the width."""
    bits = _SUB_BYTE.get(x.dtype.name, 8 * x.dtype.itemsize)
    if bits < 8:  # (ml_dtypes' sub-byte integers: work in uint8, masked)
        return x.astype(np.int8).view(np.uint8) & np.uint8((1 << bits) - 1), bits
    return x.view(f"u{x.dtype.itemsize}"), bits


def _popcnt(x):
    u, _ = _unsigned(x)
    return np.bitwise_count(u).astype(x.dtype)


def _count_leading_zeros(x):
    u, bits = _unsigned(x)
    powers = np.left_shift(np.ones(bits, dtype=u.dtype), np.arange(bits, dtype=u.dtype))
    length = (u[..., None] >= powers).sum(axis=-1)  # the bit length
    return (bits - length).astype(x.dtype)


def _shift(kind):
    """StableHLO's shifts: a count outside [0, width) gives 0 (and the sign, shifting
    right arithmetically)."""
    def fn(a, b):
        u, bits = _unsigned(a)
        count, big = b.astype(np.int64), (b.astype(np.int64) < 0) | (b.astype(np.int64) >= bits)
        safe = np.where(big, 0, count).astype(u.dtype)
        if kind == "left":
            out = np.left_shift(u, safe)
        elif kind == "logical":
            out = np.right_shift(u, safe)
        else:  # the bits read as the signed integer of the width, shifted with its sign
            signed = u.astype(np.int64)
            signed = np.where(signed >= 1 << (bits - 1), signed - (1 << bits), signed) \
                if bits < 64 else u.view(np.int64)
            out = np.right_shift(signed, np.where(big, 63, count)).astype(np.int64)
            mask = (1 << bits) - 1
            return _from_unsigned((out & mask).astype(np.uint64).astype(u.dtype)
                                  if bits < 64 else out.view(np.uint64), a.dtype, bits)
        mask = u.dtype.type((1 << bits) - 1) if bits < 8 * u.dtype.itemsize else None
        out = np.where(big, 0, out & mask if mask is not None else out)
        return _from_unsigned(out.astype(u.dtype), a.dtype, bits)
    return fn


def _from_unsigned(u, dtype, bits):
    if bits < 8:
        signed = dtype.name.startswith("int")
        value = u.astype(np.int16)
        if signed:
            value = np.where(value >= 1 << (bits - 1), value - (1 << bits), value)
        return value.astype(dtype)
    return u.view(dtype)


def _cbrt(x):
    if x.dtype.kind == "c":  # the principal cube root
        return np.exp(np.log(x) / 3).astype(x.dtype)
    return np.cbrt(x)


def _round_afz(x):
    whole = np.trunc(x)
    return np.where(np.abs(x - whole) >= 0.5, whole + np.sign(x), whole).astype(x.dtype)


def _real_part(x):
    return np.real(x).copy() if x.dtype.kind == "c" else x


_UNARY.update({
    "tan": np.tan, "exponential_minus_one": np.expm1, "log_plus_one": np.log1p, "cbrt": _cbrt,
    "round_nearest_even": np.rint, "round_nearest_afz": _round_afz, "popcnt": _popcnt,
    "count_leading_zeros": _count_leading_zeros, "real": _real_part,
    "imag": lambda x: np.imag(x).copy() if x.dtype.kind == "c" else np.zeros_like(x),
})

_BINARY = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply,
    "maximum": np.maximum, "minimum": np.minimum,
    "remainder": np.fmod,  # the sign of the dividend, for integers and floats
    "and": np.bitwise_and, "or": np.bitwise_or,  # logical for bool, bitwise for integers
    "atan2": lambda y, x: np.arctan2(y, x) if y.dtype.kind != "c" else
    (-1j * np.log((x + 1j * y) / np.sqrt(x * x + y * y))).astype(y.dtype),
    "shift_left": _shift("left"),
    "shift_right_arithmetic": _shift("arithmetic"), "shift_right_logical": _shift("logical"),
    "complex": lambda a, b: (a + 1j * b.astype(np.complex128)).astype(
        np.complex64 if a.dtype == np.float32 else np.complex128),
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
    if x.dtype.kind == "c" and np.dtype(dtype).kind != "c":
        x = x.real  # complex -> real types convert the real part
    if dtype is np.bool_:
        return x != 0
    if x.dtype.kind == "f" and np.dtype(dtype).kind in "iu":  # (the spec leaves NaN and
        # overflow open: they saturate, NaN to 0, as XLA does)
        info = np.iinfo(dtype)
        return np.nan_to_num(np.clip(np.trunc(x.astype(np.float64)), info.min, info.max),
                             nan=0.0).astype(dtype)
    return x.astype(dtype)  # float -> int truncates toward zero


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
             "min": np.minimum, "minimum": np.minimum,
             "and": np.bitwise_and, "or": np.bitwise_or}  # (logical on bool, bitwise on ints)


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
    # (NumPy multiplies ml_dtypes' small floats in float32: the result rounds back)
    return np.matmul(left, right).reshape(t.shape).astype(NP_DTYPES[t.dtype])


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


def _while(node, *args):
    cond, body = node.regions
    carried, captured = list(args[:len(body.outputs)]), list(args[len(body.outputs):])
    while bool(evaluate(cond, *carried, *captured)[0]):
        carried = evaluate(body, *carried, *captured)
    return carried


def _case(node, index, *captured):
    branches = node.regions
    i = int(index)
    return evaluate(branches[i if 0 <= i < len(branches) else -1], *captured)


#: op -> function(node, *input arrays) -> output array (or list of arrays)
def _triangular_solve(node, a, b):
    """Solve op(a) x = b (``left_side``) or x op(a) = b, with a's other triangle ignored and
    its diagonal taken as ones when ``unit_diagonal``."""
    at = node.attrs
    n = a.shape[-1]
    keep = np.tril(np.ones((n, n), bool)) if at["lower"] else np.triu(np.ones((n, n), bool))
    a = np.where(keep, a, 0)
    if at["unit_diagonal"]:
        a = np.where(np.eye(n, dtype=bool), np.ones_like(a), a)
    if at["transpose_a"] != "NO_TRANSPOSE":
        a = np.swapaxes(a, -1, -2)
        if at["transpose_a"] == "ADJOINT":
            a = np.conj(a)
    wide = np.complex128 if a.dtype.kind == "c" else np.float64
    a, rhs = a.astype(wide), b.astype(wide)
    if not at["left_side"]:  # x a = b  <=>  a^T x^T = b^T
        a, rhs = np.swapaxes(a, -1, -2), np.swapaxes(rhs, -1, -2)
    # the solved matrix is lower triangular unless a transpose or the right side flipped it
    lower = bool(at["lower"]) ^ (at["transpose_a"] != "NO_TRANSPOSE") ^ (not at["left_side"])
    x = np.zeros_like(rhs)
    with np.errstate(all="ignore"):  # (a zero on the diagonal: inf and NaN, as XLA gives)
        for i in (range(n) if lower else reversed(range(n))):
            x[..., i, :] = (rhs[..., i, :] - np.einsum("...j,...jk->...k", a[..., i, :], x)) \
                / a[..., i, i, None]
    if not at["left_side"]:
        x = np.swapaxes(x, -1, -2)
    return x.astype(b.dtype)


def _fft(node, x):
    kind, length = node.attrs["fft_type"], list(node.attrs["fft_length"])
    axes = list(range(x.ndim - len(length), x.ndim))
    out = NP_DTYPES[node.outputs[0].dtype]
    fn = {"FFT": np.fft.fftn, "IFFT": np.fft.ifftn, "RFFT": np.fft.rfftn,
          "IRFFT": np.fft.irfftn}[kind]
    return fn(x, s=length, axes=axes).astype(out)


def _bitcast_convert(node, x):
    """The same bits as another type: little-endian, an i1 one bit (the lowest first)."""
    out = node.outputs[0].type
    dtype = NP_DTYPES[out.dtype]
    data = np.packbits(x.reshape(-1), bitorder="little").tobytes() if x.dtype == np.bool_ \
        else np.ascontiguousarray(x).tobytes()
    if out.dtype == "bool":
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        return bits.astype(bool).reshape(out.shape)
    return np.frombuffer(data, dtype=dtype).reshape(out.shape).copy()


_FLOAT_BITS = {"float16": (5, 10), "bfloat16": (8, 7), "float32": (8, 23), "float64": (11, 52)}


def _reduce_precision(node, x):
    """Round to ``exponent_bits`` / ``mantissa_bits`` on the bits, as XLA does: the mantissa
    to nearest even, then exponents beyond the format's range to infinity or (below its
    normals) to zero; a NaN stays NaN unless no mantissa bit is left."""
    e_bits, m_bits = node.attrs["exponent_bits"], node.attrs["mantissa_bits"]
    if x.dtype.name not in _FLOAT_BITS:
        raise NotImplementedError(f"reduce_precision of {x.dtype.name}")
    src_e, src_m = _FLOAT_BITS[x.dtype.name]
    unsigned = np.dtype(f"u{x.dtype.itemsize}")
    bits = x.view(unsigned).astype(np.uint64)
    one = np.uint64(1)
    if m_bits < src_m:
        shift = np.uint64(src_m - m_bits)
        last = one << shift
        bias = ((bits & last) >> shift) + (last >> one) - one
        bits = (bits + bias) & ~(last - one)
    if e_bits < src_e:
        sign = one << np.uint64(src_e + src_m)
        exp_mask = ((one << np.uint64(src_e)) - one) << np.uint64(src_m)
        bias, reduced = (1 << (src_e - 1)) - 1, (1 << (e_bits - 1)) - 1
        exponent = bits & exp_mask
        over = exponent > np.uint64(bias + reduced) << np.uint64(src_m)
        under = exponent <= np.uint64(bias - reduced) << np.uint64(src_m)
        bits = np.where(over, (bits & sign) | exp_mask, np.where(under, bits & sign, bits))
    width = 8 * x.dtype.itemsize
    bits = bits & np.uint64((1 << width) - 1) if width < 64 else bits
    out = bits.astype(unsigned).view(x.dtype)
    keep = x if m_bits > 0 else np.copysign(np.array(np.inf, x.dtype), x)  # (no payload left)
    return np.where(np.isnan(x), keep, out)


def _clamped_starts(starts, sizes, shape):
    return [int(min(max(int(s), 0), d - n)) for s, n, d in zip(starts, sizes, shape)]


def _dynamic_slice(node, x, *starts):
    sizes = list(node.attrs["slice_sizes"])
    begin = _clamped_starts(starts, sizes, x.shape)
    return x[tuple(slice(b, b + n) for b, n in zip(begin, sizes))].copy()


def _dynamic_update_slice(node, x, update, *starts):
    begin = _clamped_starts(starts, update.shape, x.shape)
    out = x.copy()
    out[tuple(slice(b, b + n) for b, n in zip(begin, update.shape))] = update
    return out


def _total_order_key(x):
    """Signed integers ordered as IEEE's totalOrder orders the floats ``x``: -NaN < -inf <
    ... < -0.0 < 0.0 < ... < inf < NaN (a negative float's other bits flipped)."""
    bits = x.view(np.dtype(f"int{x.dtype.itemsize * 8}"))
    return np.where(bits < 0, bits ^ np.iinfo(bits.dtype).max, bits)


def _sort(node, *xs):
    a = node.attrs
    dim, key = a["dimension"], xs[a["key"]]
    if a.get("total_order"):
        key = _total_order_key(key)
    if a["direction"] == "LT":
        order = np.argsort(key, axis=dim, kind="stable")
    else:  # descending and stable: the ascending order of the reversed key, mirrored
        last = key.shape[dim] - 1
        order = np.flip(last - np.argsort(np.flip(key, dim), axis=dim, kind="stable"), dim)
    return [np.take_along_axis(x, order, axis=dim) for x in xs]


def _windows(node, x, init):
    """The windows of ``x`` dilated and padded (holes and padding hold ``init``), as a view
    ``(*output shape, *window shape)``."""
    a = node.attrs
    base = a.get("base_dilations") or [1] * x.ndim
    win = a.get("window_dilations") or [1] * x.ndim
    shape = [(d - 1) * b + 1 + lo + hi if d else lo + hi
             for d, b, (lo, hi) in zip(x.shape, base, a["padding"])]
    padded = np.full(shape, init, dtype=x.dtype)
    inner = tuple(slice(lo, lo + (d - 1) * b + 1, b) if d else slice(lo, lo)
                  for d, b, (lo, _) in zip(x.shape, base, a["padding"]))
    padded[inner] = x
    strides = [st * padded.strides[i] for i, st in enumerate(a["window_strides"])]
    wstrides = [wd * padded.strides[i] for i, wd in enumerate(win)]
    return np.lib.stride_tricks.as_strided(
        padded, list(node.outputs[0].shape) + list(a["window_dimensions"]), strides + wstrides,
        writeable=False)


def _reduce_window(node, x, init):
    view = _windows(node, x, init[()])
    fn = COMBINERS[node.attrs["computation"]]
    return fn.reduce(view.reshape(view.shape[:x.ndim] + (-1,)), axis=-1, initial=init[()]) \
        .astype(x.dtype) if view.size else np.full(view.shape[:x.ndim], init, x.dtype)


def _select_and_scatter(node, x, source, init):
    """For each window (over the padded operand), the first in-bounds element its
    ``select`` comparison keeps (GE: the first largest), and the source value combined into
    the result there; the rest is ``init``. Padding is never selected."""
    a = node.attrs
    better = {"GE": np.greater_equal, "GT": np.greater, "LE": np.less_equal,
              "LT": np.less}[a["select"]]
    combine = COMBINERS[a["computation"]]
    lows = [lo for lo, _ in a["padding"]]
    out = np.full(x.shape, init, dtype=x.dtype)
    offsets = list(np.ndindex(*a["window_dimensions"]))
    for pos in np.ndindex(*source.shape):
        best = None
        for offset in offsets:
            target = tuple(p * s + o - lo for p, s, o, lo in
                           zip(pos, a["window_strides"], offset, lows))
            if all(0 <= t < d for t, d in zip(target, x.shape)) and \
                    (best is None or not better(x[best], x[target])):
                best = target
        if best is not None:
            out[best] = combine(out[best], source[pos])
    return out


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
    "while": _while,
    "case": _case,
    "triangular_solve": _triangular_solve,
    "bitcast_convert": _bitcast_convert,
    "reduce_precision": _reduce_precision,
    "dynamic_slice": _dynamic_slice,
    "dynamic_update_slice": _dynamic_update_slice,
    "sort": _sort,
    "reduce_window": _reduce_window,
    "select_and_scatter": _select_and_scatter,
    "fft": _fft,
}
