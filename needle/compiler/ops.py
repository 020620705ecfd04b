"""The op table of Needle's IR: for every op, how many inputs it takes, its attributes
(StableHLO's names and meanings) and its shape/dtype rule.

``OPS[name]`` is an :class:`OpDef`. :func:`infer_types` checks a node's arity and attributes
and returns its output types, or raises :class:`VerifyError` saying what is wrong; the
verifier, the tracer and every pass build on it. ``OpDef.group`` says what kind of op it is,
so passes can key on kinds: ``"elementwise"``, ``"source"`` (constant, iota), ``"movement"``,
``"reduce"``, ``"contract"`` (dot_general, convolution), ``"index"`` (gather, scatter) and
``"composite"``.

Attribute values are plain Python: ints, floats, bools, strings (dtype names too), lists or
tuples of ints (the parser gives tuples), a dict for ``convolution``'s ``dimension_numbers``
and a numpy array for ``constant``'s ``value``. Regions of StableHLO's ``reduce`` and
``scatter`` are summarised by a ``computation`` name. An optional attribute that a node
leaves out has the default in the table (:func:`with_defaults` fills them in); a default of
``None`` means StableHLO's own (``compare_type`` from the dtype, no ``window_reversal``, no
``precision_config``).

Example:
    >>> from needle.compiler.ir import TensorType
    >>> infer_types("dot_general", [TensorType((64, 784), "float32"),
    ...                             TensorType((784, 128), "float32")],
    ...             {"lhs_batching_dimensions": [], "rhs_batching_dimensions": [],
    ...              "lhs_contracting_dimensions": [1], "rhs_contracting_dimensions": [0]})
    [float32[64,128]]
"""
import math
import numbers

import numpy as np

from ..errors import NeedleError
from .ir import CORE_DTYPES, DTYPES, Graph, TensorType


class VerifyError(NeedleError, ValueError):
    """A node or graph breaks the IR's rules: an unknown op, a bad attribute, shapes or
    dtypes that do not fit, a use before definition, a bad alias."""


FLOATS = ("float32", "float64", "float16", "bfloat16") + tuple(
    d for d in DTYPES if d.startswith(("float8_", "float6_", "float4_")))
INTEGERS = ("int32", "int64", "int8", "int16", "uint8", "uint16", "uint32", "uint64", "int2",
            "int4", "uint2", "uint4")
COMPLEX = ("complex64", "complex128")
INEXACT = FLOATS + COMPLEX  # exp, log, tanh, ...: floats and complex
NUMERIC = FLOATS + INTEGERS + COMPLEX
LOGICAL = ("bool",) + INTEGERS  # and / or / not: logical on bool, bitwise on integers
VARIADIC = None  # the arity of ops that take any number of inputs


def _fail(message):
    raise VerifyError(message)


# ---------------------------------------------------------------------------------------
# attribute kinds: what a value must be (said in messages) and a test

class Attr:
    """The kind of an attribute value: ``what`` it must be, and a ``test`` of a value."""

    __slots__ = ("what", "test")

    def __init__(self, what, test):
        self.what, self.test = what, test


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_ints(v):
    return isinstance(v, (list, tuple)) and all(_is_int(x) for x in v)


def _printable(v):
    """A value the printer can write and the parser read back (composite attributes)."""
    if isinstance(v, (bool, np.bool_, str, numbers.Real)):
        return True
    if isinstance(v, np.ndarray):
        return v.dtype.name in DTYPES
    if isinstance(v, (list, tuple)):
        return all(_printable(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _printable(x) for k, x in v.items())
    return False


def one_of(*choices):
    return Attr("one of " + ", ".join(map(repr, choices)),
                lambda v: isinstance(v, str) and v in choices)


INT = Attr("an int", _is_int)
INTS = Attr("a list of ints", _is_ints)
SHAPE = Attr("a list of non-negative ints", lambda v: _is_ints(v) and all(d >= 0 for d in v))
STR = Attr("a string", lambda v: isinstance(v, str))
BOOL = Attr("a bool", lambda v: isinstance(v, (bool, np.bool_)))
BOOLS = Attr("a list of bools", lambda v: isinstance(v, (list, tuple))
             and all(isinstance(x, (bool, np.bool_)) for x in v))
PRECISION = Attr("a list of two of 'DEFAULT', 'HIGH', 'HIGHEST'",
                 lambda v: isinstance(v, (list, tuple)) and len(v) == 2
                 and all(isinstance(x, str) and x in ("DEFAULT", "HIGH", "HIGHEST") for x in v))
DTYPE = Attr("a dtype name (" + ", ".join(DTYPES) + ")",
             lambda v: isinstance(v, str) and v in DTYPES)
ARRAY = Attr("a numpy array of dtype " + ", ".join(DTYPES),
             lambda v: isinstance(v, np.ndarray) and v.dtype.name in DTYPES)
PADDING = Attr("a list of (low, high) int pairs",
               lambda v: isinstance(v, (list, tuple))
               and all(_is_ints(p) and len(p) == 2 for p in v))
ANY = Attr("an int, float, bool, string, numpy array, list or dict of those", _printable)

#: convolution's ``dimension_numbers``: each key and whether it holds one dimension or a list
CONV_DIMENSION_NUMBERS = {
    "input_batch_dimension": INT, "input_feature_dimension": INT,
    "input_spatial_dimensions": INTS,
    "kernel_input_feature_dimension": INT, "kernel_output_feature_dimension": INT,
    "kernel_spatial_dimensions": INTS,
    "output_batch_dimension": INT, "output_feature_dimension": INT,
    "output_spatial_dimensions": INTS,
}
CONV_DIMS = Attr("a dict of " + ", ".join(CONV_DIMENSION_NUMBERS),
                 lambda v: isinstance(v, dict) and set(v) == set(CONV_DIMENSION_NUMBERS)
                 and all(CONV_DIMENSION_NUMBERS[k].test(x) for k, x in v.items()))


# ---------------------------------------------------------------------------------------
# shape rules, by group: each takes the input types and the attributes (defaults filled
# in) and returns the output types

def _check_dims(dims, rank, what, sort=False):
    dims = list(dims)
    if any(not 0 <= d < rank for d in dims):
        _fail(f"{what} {dims} out of range for rank {rank}")
    if len(set(dims)) != len(dims):
        _fail(f"{what} {dims} has a repeated dimension")
    if sort and dims != sorted(dims):
        _fail(f"{what} {dims} must be sorted")


def _check_dtype(t, dtypes, what="operand"):
    if t.dtype not in dtypes:
        core = [d for d in dtypes if d in CORE_DTYPES]
        extra = [d for d in dtypes if d not in CORE_DTYPES]
        _fail(f"{what} has dtype {t.dtype}; expected {' or '.join(core)}"
              + (f" (or {', '.join(extra)})" if extra else ""))


def _check_scalar(t, dtype, what):
    if t.shape != () or t.dtype != dtype:
        _fail(f"{what} must be a {dtype} scalar ({dtype}[]), got {t}")


def _unary(dtypes):
    def infer(types, attrs):
        _check_dtype(types[0], dtypes)
        return [types[0]]
    return infer


def _abs(types, attrs):
    (x,) = types
    _check_dtype(x, NUMERIC)
    return [TensorType(x.shape, _REAL.get(x.dtype, x.dtype))]


_REAL = {"complex64": "float32", "complex128": "float64"}


def _binary(dtypes):
    def infer(types, attrs):
        x, y = types
        if x != y:
            _fail(f"operands must have the same type, got {x} and {y}")
        _check_dtype(x, dtypes, "operands")
        return [x]
    return infer


def _compare(types, attrs):
    x, y = types
    if x != y:
        _fail(f"operands must have the same type, got {x} and {y}")
    return [TensorType(x.shape, "bool")]


def _select(types, attrs):
    pred, on_true, on_false = types
    if pred.dtype != "bool" or pred.shape not in ((), on_true.shape):
        _fail(f"pred must be bool, a scalar or of on_true's shape {list(on_true.shape)}; "
              f"got {pred}")
    if on_true != on_false:
        _fail(f"on_true and on_false must have the same type, got {on_true} and {on_false}")
    return [on_true]


def _clamp(types, attrs):
    lo, x, hi = types
    for what, bound in (("min", lo), ("max", hi)):
        if bound.dtype != x.dtype or bound.shape not in ((), x.shape):
            _fail(f"{what} must be a {x.dtype} scalar or have the operand's type {x}, "
                  f"got {bound}")
    _check_dtype(x, NUMERIC)
    return [x]


def _convert(types, attrs):
    return [TensorType(types[0].shape, attrs["dtype"])]


def _constant(types, attrs):
    value = attrs["value"]
    return [TensorType(value.shape, value.dtype.name)]


def _iota(types, attrs):
    shape, dim = attrs["shape"], attrs["iota_dimension"]
    if not 0 <= dim < len(shape):
        _fail(f"iota_dimension {dim} out of range for shape {list(shape)}")
    if attrs["dtype"] == "bool":
        _fail("iota needs a numeric dtype, got bool")
    return [TensorType(shape, attrs["dtype"])]


def _broadcast_in_dim(types, attrs):
    (x,), dims, shape = types, list(attrs["broadcast_dimensions"]), tuple(attrs["shape"])
    if len(dims) != len(x.shape):
        _fail(f"broadcast_dimensions {dims} needs one entry per dimension of the operand {x}")
    _check_dims(dims, len(shape), "broadcast_dimensions")
    for i, d in enumerate(dims):
        if x.shape[i] not in (1, shape[d]):
            _fail(f"operand dimension {i} (size {x.shape[i]}) cannot broadcast to dimension "
                  f"{d} (size {shape[d]}) of shape {list(shape)}")
    return [TensorType(shape, x.dtype)]


def _reshape(types, attrs):
    (x,), shape = types, attrs["shape"]
    if math.prod(shape) != math.prod(x.shape):
        _fail(f"cannot reshape {x} ({math.prod(x.shape)} elements) to shape {list(shape)} "
              f"({math.prod(shape)} elements)")
    return [TensorType(shape, x.dtype)]


def _transpose(types, attrs):
    (x,), perm = types, list(attrs["permutation"])
    if sorted(perm) != list(range(len(x.shape))):
        _fail(f"permutation {perm} is not a permutation of the {len(x.shape)} dimensions of {x}")
    return [TensorType([x.shape[p] for p in perm], x.dtype)]


def _slice(types, attrs):
    (x,) = types
    start, limit, strides = (list(attrs[k]) for k in ("start_indices", "limit_indices", "strides"))
    if not len(start) == len(limit) == len(strides) == len(x.shape):
        _fail(f"start_indices, limit_indices and strides need one entry per dimension of {x}")
    for d, (s, l, st, n) in enumerate(zip(start, limit, strides, x.shape)):
        if not 0 <= s <= l <= n:
            _fail(f"dimension {d}: need 0 <= start ({s}) <= limit ({l}) <= size ({n})")
        if st <= 0:
            _fail(f"dimension {d}: stride {st} must be positive")
    return [TensorType([-(-(l - s) // st) for s, l, st in zip(start, limit, strides)], x.dtype)]


def _reverse(types, attrs):
    _check_dims(attrs["dimensions"], len(types[0].shape), "dimensions")
    return [types[0]]


def _pad(types, attrs):
    x, value = types
    _check_scalar(value, x.dtype, "padding_value")
    lo, hi, inner = (list(attrs[k]) for k in ("edge_padding_low", "edge_padding_high",
                                                "interior_padding"))
    if not len(lo) == len(hi) == len(inner) == len(x.shape):
        _fail(f"edge_padding_low, edge_padding_high and interior_padding need one entry per "
              f"dimension of {x}")
    if any(i < 0 for i in inner):
        _fail(f"interior_padding {inner} must be non-negative")
    shape = [l + n + max(n - 1, 0) * i + h for l, n, i, h in zip(lo, x.shape, inner, hi)]
    if any(n < 0 for n in shape):
        _fail(f"padding {x} gives a negative size {shape}")
    return [TensorType(shape, x.dtype)]


def _concatenate(types, attrs):
    if not types:
        _fail("needs at least one input")
    first, dim = types[0], attrs["dimension"]
    if not 0 <= dim < len(first.shape):
        _fail(f"dimension {dim} out of range for {first}")
    for i, t in enumerate(types[1:], 1):
        if t.dtype != first.dtype or len(t.shape) != len(first.shape) or any(
                a != b for d, (a, b) in enumerate(zip(t.shape, first.shape)) if d != dim):
            _fail(f"input {i} ({t}) does not match input 0 ({first}) outside dimension {dim}")
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in types)
    return [TensorType(shape, first.dtype)]


def _reduce(types, attrs):
    x, init = types
    _check_scalar(init, x.dtype, "init_value")
    dims = attrs["dimensions"]
    _check_dims(dims, len(x.shape), "dimensions")
    return [TensorType([n for d, n in enumerate(x.shape) if d not in dims], x.dtype)]


def _dot_general(types, attrs):
    lhs, rhs = types
    if lhs.dtype != rhs.dtype:
        _fail(f"lhs and rhs must have the same dtype, got {lhs} and {rhs}")
    lb, rb, lc, rc = (list(attrs[f"{side}_{kind}_dimensions"])
                      for kind in ("batching", "contracting") for side in ("lhs", "rhs"))
    if len(lb) != len(rb):
        _fail(f"lhs_batching_dimensions {lb} and rhs_batching_dimensions {rb} differ in length")
    if len(lc) != len(rc):
        _fail(f"lhs_contracting_dimensions {lc} and rhs_contracting_dimensions {rc} differ "
              f"in length")
    _check_dims(lb + lc, len(lhs.shape), "lhs batching + contracting dimensions")
    _check_dims(rb + rc, len(rhs.shape), "rhs batching + contracting dimensions")
    for kind, ls, rs in (("batching", lb, rb), ("contracting", lc, rc)):
        for l, r in zip(ls, rs):
            if lhs.shape[l] != rhs.shape[r]:
                _fail(f"{kind} dimension {l} of lhs {lhs} (size {lhs.shape[l]}) does not match "
                      f"dimension {r} of rhs {rhs} (size {rhs.shape[r]})")
    lfree = [n for d, n in enumerate(lhs.shape) if d not in lb + lc]
    rfree = [n for d, n in enumerate(rhs.shape) if d not in rb + rc]
    return [TensorType([lhs.shape[d] for d in lb] + lfree + rfree, lhs.dtype)]


def _convolution(types, attrs):
    lhs, rhs = types
    rank, dn = len(lhs.shape), attrs["dimension_numbers"]
    if len(rhs.shape) != rank or rank < 2:
        _fail(f"lhs {lhs} and rhs {rhs} must have the same rank, at least 2")
    if lhs.dtype != rhs.dtype:
        _fail(f"lhs and rhs must have the same dtype, got {lhs} and {rhs}")
    spatial = rank - 2
    for key in ("window_strides", "padding", "lhs_dilation", "rhs_dilation", "window_reversal",
                "input_spatial_dimensions", "kernel_spatial_dimensions",
                "output_spatial_dimensions"):
        entries = attrs[key] if key in attrs else dn[key]
        if entries is not None and len(entries) != spatial:
            _fail(f"{key} needs {spatial} entries (one per spatial dimension), got {len(entries)}")
    for key in ("window_strides", "lhs_dilation", "rhs_dilation"):
        if any(s <= 0 for s in attrs[key]):
            _fail(f"{key} {list(attrs[key])} must be positive")
    groups, batch_groups = attrs["feature_group_count"], attrs["batch_group_count"]
    if groups <= 0 or batch_groups <= 0 or (groups > 1 and batch_groups > 1):
        _fail(f"feature_group_count ({groups}) and batch_group_count ({batch_groups}) must be "
              f"positive, and one of them 1")
    ib, if_, isp = dn["input_batch_dimension"], dn["input_feature_dimension"], \
        list(dn["input_spatial_dimensions"])
    ki, ko, ksp = dn["kernel_input_feature_dimension"], dn["kernel_output_feature_dimension"], \
        list(dn["kernel_spatial_dimensions"])
    ob, of, osp = dn["output_batch_dimension"], dn["output_feature_dimension"], \
        list(dn["output_spatial_dimensions"])
    _check_dims([ib, if_] + isp, rank, "input dimension numbers")
    _check_dims([ki, ko] + ksp, rank, "kernel dimension numbers")
    _check_dims([ob, of] + osp, rank, "output dimension numbers")
    batch, features, out_features = lhs.shape[ib], lhs.shape[if_], rhs.shape[ko]
    if batch % batch_groups:
        _fail(f"input batch size {batch} is not divisible by batch_group_count {batch_groups}")
    if features % groups or features // groups != rhs.shape[ki]:
        _fail(f"input features ({features}) / feature_group_count ({groups}) must equal the "
              f"kernel's input features ({rhs.shape[ki]})")
    if out_features % groups or out_features % batch_groups:
        _fail(f"kernel output features ({out_features}) must be divisible by "
              f"feature_group_count ({groups}) and batch_group_count ({batch_groups})")
    shape = [0] * rank
    shape[ob], shape[of] = batch // batch_groups, out_features
    for i in range(spatial):
        n, k = lhs.shape[isp[i]], rhs.shape[ksp[i]]
        (lo, hi), stride = attrs["padding"][i], attrs["window_strides"][i]
        padded = lo + (0 if n == 0 else (n - 1) * attrs["lhs_dilation"][i] + 1) + hi
        window = 0 if k == 0 else (k - 1) * attrs["rhs_dilation"][i] + 1
        shape[osp[i]] = 0 if padded <= 0 or window > padded else (padded - window) // stride + 1
    return [TensorType(shape, lhs.dtype)]


def _index_vector(indices, index_vector_dim, what):
    """The batch sizes of an index tensor, and the size of one index vector."""
    rank = len(indices.shape)
    if not 0 <= index_vector_dim <= rank:
        _fail(f"index_vector_dim {index_vector_dim} out of range for {what} {indices}")
    sizes = [n for d, n in enumerate(indices.shape) if d != index_vector_dim]
    return sizes, indices.shape[index_vector_dim] if index_vector_dim < rank else 1


def _check_index_dims(operand, indices, window, inserted, operand_batching, indices_batching,
                      index_map, index_vector_dim, names):
    """The checks gather and scatter share (StableHLO's C1-C3, C6-C8, C10-C11, C13-C19)."""
    rank = len(operand.shape)
    _check_dtype(indices, INTEGERS, names[1])
    if rank != len(window) + len(inserted) + len(operand_batching):
        _fail(f"the operand's rank {rank} must equal len({names[2]}) + len({names[3]}) + "
              f"len({names[4]}) = {len(window) + len(inserted) + len(operand_batching)}")
    batch_sizes, vector = _index_vector(indices, index_vector_dim, names[1])
    if len(index_map) != vector:
        _fail(f"{names[6]} {list(index_map)} needs {vector} entries (the index vector's size)")
    _check_dims(list(inserted) + list(operand_batching), rank, f"{names[3]} + {names[4]}")
    _check_dims(inserted, rank, names[3], sort=True)
    _check_dims(operand_batching, rank, names[4], sort=True)
    _check_dims(indices_batching, len(indices.shape), names[5])
    if index_vector_dim in indices_batching:
        _fail(f"index_vector_dim {index_vector_dim} cannot be one of {names[5]}")
    if [operand.shape[d] for d in operand_batching] != \
            [indices.shape[d] for d in indices_batching]:
        _fail(f"{names[4]} {list(operand_batching)} and {names[5]} {list(indices_batching)} "
              f"must name dimensions of equal sizes")
    _check_dims(list(index_map) + list(operand_batching), rank, f"{names[6]} + {names[4]}")
    return batch_sizes


_GATHER_NAMES = ("operand", "start_indices", "offset_dims", "collapsed_slice_dims",
                 "operand_batching_dims", "start_indices_batching_dims", "start_index_map")
_SCATTER_NAMES = ("operand", "scatter_indices", "update_window_dims", "inserted_window_dims",
                  "input_batching_dims", "scatter_indices_batching_dims",
                  "scatter_dims_to_operand_dims")


def _gather(types, attrs):
    operand, indices = types
    offset_dims, collapsed, batching, sizes = (
        list(attrs[k]) for k in ("offset_dims", "collapsed_slice_dims", "operand_batching_dims",
                                 "slice_sizes"))
    batch_sizes = _check_index_dims(operand, indices, *(attrs[k] for k in _GATHER_NAMES[2:]),
                                    attrs["index_vector_dim"], _GATHER_NAMES)
    if len(sizes) != len(operand.shape) or any(
            not 0 <= s <= n for s, n in zip(sizes, operand.shape)):
        _fail(f"slice_sizes {sizes} needs one entry per dimension of {operand}, each between 0 "
              f"and that dimension's size")
    if any(sizes[d] > 1 for d in collapsed + batching):
        _fail(f"slice_sizes {sizes} must be 0 or 1 in collapsed_slice_dims and "
              f"operand_batching_dims")
    offset_sizes = [s for d, s in enumerate(sizes) if d not in collapsed + batching]
    rank = len(batch_sizes) + len(offset_sizes)
    _check_dims(offset_dims, rank, "offset_dims", sort=True)
    offsets, batches = iter(offset_sizes), iter(batch_sizes)
    return [TensorType([next(offsets) if d in offset_dims else next(batches)
                        for d in range(rank)], operand.dtype)]


def _scatter(types, attrs):
    operand, indices, updates = types
    if updates.dtype != operand.dtype:
        _fail(f"updates {updates} must have the operand's dtype {operand.dtype}")
    window, inserted, batching = (list(attrs[k]) for k in _SCATTER_NAMES[2:5])
    scatter_sizes = _check_index_dims(operand, indices, *(attrs[k] for k in _SCATTER_NAMES[2:]),
                                      attrs["index_vector_dim"], _SCATTER_NAMES)
    _check_dims(window, len(updates.shape), "update_window_dims", sort=True)
    if [n for d, n in enumerate(updates.shape) if d not in window] != scatter_sizes:
        _fail(f"updates {updates} outside update_window_dims {window} must have the sizes "
              f"{scatter_sizes} of scatter_indices without index_vector_dim")
    windowed = [d for d in range(len(operand.shape)) if d not in inserted + batching]
    for w, d in zip(window, windowed):
        if updates.shape[w] > operand.shape[d]:
            _fail(f"update window dimension {w} (size {updates.shape[w]}) is larger than "
                  f"operand dimension {d} (size {operand.shape[d]})")
    return [operand]


def _composite(types, attrs, decomposition):
    if not attrs["name"] or "." not in attrs["name"]:
        _fail(f"name {attrs['name']!r} must be namespaced, as 'needle.softmax'")
    if not isinstance(decomposition, Graph):
        _fail("a composite needs its decomposition (a Graph)")
    takes = [v.type for v in decomposition.inputs]
    if takes != list(types):
        _fail(f"the decomposition takes ({', '.join(map(repr, takes))}) but the node's inputs "
              f"are ({', '.join(map(repr, types))})")
    return [v.type for v in decomposition.outputs]


# ---------------------------------------------------------------------------------------
# the table

class OpDef:
    """One op: ``name``, ``arity`` (an int, or :data:`VARIADIC`), ``group``, required
    ``attrs`` (``{name: Attr}``), ``optional`` attributes (``{name: (Attr, default)}``),
    ``extra`` (other attributes allowed: composite's) and its shape rule ``infer(input_types,
    attrs) -> [TensorType]`` (attrs with the defaults filled in)."""

    __slots__ = ("name", "arity", "group", "infer", "attrs", "optional", "extra")

    def __init__(self, name, arity, group, infer, attrs=None, optional=None, extra=False):
        self.name, self.arity, self.group, self.infer = name, arity, group, infer
        self.attrs, self.optional, self.extra = dict(attrs or {}), dict(optional or {}), extra

    def attr_names(self):
        """Attribute names in the order the printer writes them."""
        return list(self.attrs) + list(self.optional)

    def __repr__(self):
        return f"OpDef({self.name}, arity={self.arity}, {self.group})"


OPS = {}
#: the other StableHLO ops an imported program (needle.stablehlo) may hold: the reference
#: interpreter runs them (the cpu device); the executor, the fusion passes and the exporter
#: do not know them yet, so the compiler's op table above stays what every device runs.
#: Registered by :mod:`.imported_ops` (imported with the package).
IMPORTED_OPS = {}


#: control flow with regions (imported programs): the reference interpreter and the
#: executor run them; the passes leave them and their regions as they are, and the exporter
#: does not write them yet. Node ``regions``:
#:
#: * ``while``: ``(cond, body)``. The node's inputs are the loop-carried values followed by
#:   the values the regions read from outside; both regions take all of them, ``cond``
#:   returns one ``bool[]`` and ``body`` the next carried values (the node's outputs).
#: * ``case``: the branches. Input 0 is the ``int32[]`` branch index (one out of range runs
#:   the last branch, as StableHLO says), the others the values the branches read; every
#:   branch takes those and returns the node's outputs.
CONTROL_OPS = {}


def _while(types, regions):
    if regions is None or len(regions) != 2:
        _fail("a while needs two regions, (cond, body)")
    cond, body = regions
    carried = [v.type for v in body.outputs]
    for name, region in (("cond", cond), ("body", body)):
        takes = [v.type for v in region.inputs]
        if takes != list(types):
            _fail(f"its {name} takes ({', '.join(map(repr, takes))}) but the node's inputs are "
                  f"({', '.join(map(repr, types))})")
    if list(types[:len(carried)]) != carried:
        _fail(f"its body returns ({', '.join(map(repr, carried))}), not the carried values' "
              f"types ({', '.join(map(repr, types[:len(carried)]))})")
    if [v.type for v in cond.outputs] != [TensorType((), "bool")]:
        _fail(f"its cond must return one bool[], not "
              f"({', '.join(repr(v.type) for v in cond.outputs)})")
    return carried


def _case(types, regions):
    if not regions:
        _fail("a case needs at least one branch")
    if not types or types[0] != TensorType((), "int32"):
        _fail(f"input 0 must be the int32[] branch index, got {types[0] if types else 'none'}")
    returns = [v.type for v in regions[0].outputs]
    for i, branch in enumerate(regions):
        takes = [v.type for v in branch.inputs]
        if takes != list(types[1:]):
            _fail(f"branch {i} takes ({', '.join(map(repr, takes))}) but the node passes "
                  f"({', '.join(map(repr, types[1:]))})")
        if [v.type for v in branch.outputs] != returns:
            _fail(f"branch {i} returns ({', '.join(repr(v.type) for v in branch.outputs)}), "
                  f"branch 0 ({', '.join(map(repr, returns))})")
    return returns


def _op(name, arity, group, infer, attrs=None, optional=None, extra=False):
    OPS[name] = OpDef(name, arity, group, infer, attrs, optional, extra)


def _imported(name, arity, infer, attrs=None):
    IMPORTED_OPS[name] = OpDef(name, arity, "imported", infer, attrs)


CONTROL_OPS["while"] = OpDef("while", VARIADIC, "control", _while)
CONTROL_OPS["case"] = OpDef("case", VARIADIC, "control", _case)


def opdef(name):
    """The :class:`OpDef` of ``name`` (of :data:`OPS`, :data:`IMPORTED_OPS` or
    :data:`CONTROL_OPS`), or None."""
    found = OPS.get(name)
    if found is None:
        found = IMPORTED_OPS.get(name)
    return found if found is not None else CONTROL_OPS.get(name)


for _name in ("exponential", "log", "tanh", "logistic", "sqrt", "rsqrt", "sine", "cosine"):
    _op(_name, 1, "elementwise", _unary(INEXACT))
_op("floor", 1, "elementwise", _unary(FLOATS))
for _name in ("negate", "sign"):
    _op(_name, 1, "elementwise", _unary(NUMERIC))
_op("abs", 1, "elementwise", _abs)
_op("not", 1, "elementwise", _unary(LOGICAL))
for _name in ("add", "multiply", "maximum", "minimum"):
    _op(_name, 2, "elementwise", _binary(DTYPES))
for _name in ("subtract", "divide", "power", "remainder"):
    _op(_name, 2, "elementwise", _binary(NUMERIC))
for _name in ("and", "or"):
    _op(_name, 2, "elementwise", _binary(LOGICAL))
_op("compare", 2, "elementwise", _compare,
    {"comparison_direction": one_of("EQ", "NE", "LT", "LE", "GT", "GE")},
    {"compare_type": (one_of("SIGNED", "UNSIGNED", "FLOAT", "TOTALORDER"), None)})  # by dtype
_op("select", 3, "elementwise", _select)                        # (pred, on_true, on_false)
_op("clamp", 3, "elementwise", _clamp)                          # (min, operand, max)
_op("convert", 1, "elementwise", _convert, {"dtype": DTYPE})

_op("constant", 0, "source", _constant, {"value": ARRAY})
_op("iota", 0, "source", _iota, {"iota_dimension": INT, "shape": SHAPE, "dtype": DTYPE})

_op("broadcast_in_dim", 1, "movement", _broadcast_in_dim,
    {"broadcast_dimensions": INTS, "shape": SHAPE})
_op("reshape", 1, "movement", _reshape, {"shape": SHAPE})
_op("transpose", 1, "movement", _transpose, {"permutation": INTS})
_op("slice", 1, "movement", _slice,
    {"start_indices": INTS, "limit_indices": INTS, "strides": INTS})
_op("reverse", 1, "movement", _reverse, {"dimensions": INTS})
_op("pad", 2, "movement", _pad,                                 # (operand, padding_value)
    {"edge_padding_low": INTS, "edge_padding_high": INTS, "interior_padding": INTS})
_op("concatenate", VARIADIC, "movement", _concatenate, {"dimension": INT})

_op("reduce", 2, "reduce", _reduce,                             # (operand, init_value)
    {"dimensions": INTS, "computation": one_of("add", "max", "min", "multiply", "and", "or")})

_op("dot_general", 2, "contract", _dot_general,
    {"lhs_batching_dimensions": INTS, "rhs_batching_dimensions": INTS,
     "lhs_contracting_dimensions": INTS, "rhs_contracting_dimensions": INTS},
    {"precision_config": (PRECISION, None)})
_op("convolution", 2, "contract", _convolution,
    {"window_strides": INTS, "padding": PADDING, "lhs_dilation": INTS, "rhs_dilation": INTS,
     "dimension_numbers": CONV_DIMS},
    {"feature_group_count": (INT, 1), "batch_group_count": (INT, 1),
     "window_reversal": (BOOLS, None), "precision_config": (PRECISION, None)})  # None: none

_op("gather", 2, "index", _gather,                              # (operand, start_indices)
    {"offset_dims": INTS, "collapsed_slice_dims": INTS, "start_index_map": INTS,
     "index_vector_dim": INT, "slice_sizes": INTS},
    {"operand_batching_dims": (INTS, ()), "start_indices_batching_dims": (INTS, ()),
     "indices_are_sorted": (BOOL, False)})
_op("scatter", 3, "index", _scatter,                    # (operand, scatter_indices, updates)
    {"update_window_dims": INTS, "inserted_window_dims": INTS,
     "scatter_dims_to_operand_dims": INTS, "index_vector_dim": INT,
     "computation": one_of("add", "replace")},
    {"input_batching_dims": (INTS, ()), "scatter_indices_batching_dims": (INTS, ()),
     "indices_are_sorted": (BOOL, False), "unique_indices": (BOOL, False)})

_op("composite", VARIADIC, "composite", None, {"name": STR}, extra=True)
del _name

ELEMENTWISE = frozenset(n for n, d in OPS.items() if d.group == "elementwise")


# ---------------------------------------------------------------------------------------

def with_defaults(op, attrs):
    """``attrs`` with ``op``'s optional attributes that are missing set to their defaults
    (what an exporter or an interpreter reads)."""
    return {**{k: default for k, (_, default) in opdef(op).optional.items()}, **attrs}


def _check_attrs(opdef, attrs):
    for key, kind in opdef.attrs.items():
        if key not in attrs:
            _fail(f"missing attribute {key!r} ({kind.what})")
    for key, value in attrs.items():
        kind = opdef.attrs.get(key) or opdef.optional.get(key, (None,))[0]
        if kind is None and opdef.extra and isinstance(key, str):
            kind = ANY
        if kind is None:
            _fail(f"unknown attribute {key!r}; {opdef.name} takes "
                  f"{', '.join(opdef.attr_names()) or 'none'}")
        if not kind.test(value):
            text = repr(value)
            _fail(f"attribute {key!r} must be {kind.what}, got "
                  f"{text if len(text) <= 60 else text[:57] + '...'}")


def check_node(op, input_types, attrs, decomposition=None, regions=None):
    """:func:`infer_types` whose messages do not name the op (the verifier names it)."""
    definition = opdef(op)
    if definition is None:
        _fail(f"unknown op {op!r}")
    input_types = list(input_types)
    for i, t in enumerate(input_types):
        if not isinstance(t, TensorType):
            _fail(f"input {i} must be a TensorType, got {t!r}")
    arity = definition.arity
    if arity is not VARIADIC and len(input_types) != arity:
        _fail(f"takes {arity} input{'s' * (arity != 1)}, got {len(input_types)}")
    _check_attrs(definition, attrs)
    attrs = with_defaults(op, attrs)
    if op == "composite":
        return _composite(input_types, attrs, decomposition)
    if decomposition is not None:
        _fail("only a composite carries a decomposition")
    if op in CONTROL_OPS:
        return definition.infer(input_types, regions)
    if regions is not None:
        _fail("only while and case carry regions")
    return definition.infer(input_types, attrs)


def infer_types(op, input_types, attrs=None, decomposition=None, regions=None):
    """The output types of an ``op`` node, after checking its arity and attributes.

    Args:
        op: the op's name, a key of :data:`OPS`.
        input_types: the :class:`TensorType` of each input, in order.
        attrs: the node's attributes (``{}`` when none).
        decomposition: a composite's Graph; ``None`` for every other op.
        regions: a ``while``'s or ``case``'s Graphs (see :data:`CONTROL_OPS`).

    Returns:
        A list of :class:`TensorType`, one per output.

    Raises:
        VerifyError: naming the op and what is wrong.

    Example:
        >>> infer_types("reduce", [TensorType((4, 5), "float32"), TensorType((), "float32")],
        ...             {"dimensions": [1], "computation": "add"})
        [float32[4]]
    """
    try:
        return check_node(op, input_types, dict(attrs or {}), decomposition, regions)
    except VerifyError as e:
        raise VerifyError(f"{op}: {e}") from None


def add_node(graph, op, inputs, attrs=None, decomposition=None, regions=None):
    """Append an ``op`` node to ``graph`` with its output types inferred; returns the Node.

    Example:
        >>> g = Graph()
        >>> x = g.add_input(TensorType((3,), "float32"))
        >>> add_node(g, "exponential", [x]).output.type
        float32[3]
    """
    types = infer_types(op, [v.type for v in inputs], attrs, decomposition, regions)
    return graph.add(op, inputs, types, attrs, decomposition, regions)
