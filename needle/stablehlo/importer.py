"""StableHLO MLIR -> Needle IR: jaxlib's MLIR bindings parse the text (pretty or generic
form); each op of the entry function becomes the IR node of the same name (the IR is named
after StableHLO) through one converter per op in :data:`CONVERTERS`.

What does not convert raises :class:`UnsupportedError` naming the op, its location and its
types, never a guess: ops outside the table, element types the IR has no dtype for, shapes
that are not static, and reduction or scatter bodies other than one binary op.

Integers are exact on every device: Needle devices store integer values in a float dtype
(float32, or float64 where the device has it; see needle.compiler.executor), so an
imported program may use integers only in ways that cannot leave the range that dtype
holds exactly: constants and iota (their largest magnitude is recorded in
``Imported.int_bound`` and checked against the device when the program is bound), movement,
comparison, select, clamp, maximum and minimum, conversion to a float or a wider integer,
and boolean logic. Integer arithmetic (add, multiply, divide, shifts, ...), float-to-integer
conversion and narrowing integer conversion wrap or round in ways float storage does not
reproduce, so they are refused.
"""
import re

import numpy as np

from ..compiler.ir import Graph, TensorType
from ..compiler.ops import add_node
from ..errors import NeedleError

#: MLIR element type -> IR dtype
DTYPES = {"f32": "float32", "f64": "float64", "i32": "int32", "i64": "int64", "i1": "bool"}
_INT_BITS = {"int32": 32, "int64": 64}


class UnsupportedError(NeedleError, NotImplementedError):
    """A StableHLO op, type or attribute Needle cannot run (yet); the message names the op,
    its location and its operand and result types."""


class Imported:
    """The result of :func:`import_module`: the IR ``graph`` of the entry function, its
    ``name``, and ``int_bound``, the largest integer magnitude its constants and iotas hold
    (0 without integers)."""

    def __init__(self, graph, name, int_bound):
        self.graph, self.name, self.int_bound = graph, name, int_bound


def _location(op):
    text = str(op.location)
    match = re.match(r'loc\((.*)\)$', text, re.S)
    return match.group(1) if match else text


def _describe(op):
    operands = ", ".join(str(v.type) for v in op.operands)
    results = ", ".join(str(v.type) for v in op.results)
    return f"{op.name} at {_location(op)} ({operands}) -> ({results})"


def unsupported(op, why):
    raise UnsupportedError(f"{_describe(op)}: {why}")


def tensor_type(op, mlir_type):
    """``(shape, dtype)`` of a ranked, static tensor type (or refuse it)."""
    from jaxlib.mlir import ir  # noqa: PLC0415 - jaxlib is optional
    try:
        t = ir.RankedTensorType(mlir_type)
    except (ValueError, TypeError):
        unsupported(op, f"type {mlir_type} is not a ranked tensor")
    if not t.has_static_shape:
        unsupported(op, f"type {mlir_type} has a dynamic shape")
    element = str(t.element_type)
    if element not in DTYPES:
        unsupported(op, f"element type {element} (Needle devices hold "
                        f"{', '.join(DTYPES)} here)")
    return tuple(t.shape), DTYPES[element]


# -- attributes --------------------------------------------------------------------------
def _attr(op, name, default=None):
    attrs = op.attributes
    return attrs[name] if name in attrs else default


def _ints(attr):
    """A list of ints from a dense array or dense elements attribute."""
    from jaxlib.mlir import ir  # noqa: PLC0415
    if attr is None:
        return []
    for cls in (ir.DenseI64ArrayAttr, ir.DenseI32ArrayAttr):
        try:
            return [int(x) for x in cls(attr)]
        except (ValueError, TypeError):  # (not that kind of attribute)
            continue
    return [int(x) for x in np.array(ir.DenseElementsAttr(attr)).reshape(-1)]


def _int(attr, default=0):
    from jaxlib.mlir import ir  # noqa: PLC0415
    return default if attr is None else int(ir.IntegerAttr(attr).value)


def _bools(attr):
    from jaxlib.mlir import ir  # noqa: PLC0415
    return None if attr is None else [bool(x) for x in ir.DenseBoolArrayAttr(attr)]


def _enum(attr):
    """``#stablehlo<comparison_direction GT>`` -> ``"GT"``."""
    match = re.match(r"#stablehlo<\w+ (\w+)>", str(attr))
    return match.group(1) if match else str(attr)


def constant_array(attr, dtype):
    """A dense elements attribute as a NumPy array of the IR dtype."""
    from jaxlib.mlir import ir  # noqa: PLC0415
    return np.array(ir.DenseElementsAttr(attr)).astype(
        {"bool": np.bool_, "int32": np.int32, "int64": np.int64, "float32": np.float32,
         "float64": np.float64}[dtype])


# -- the conversion ------------------------------------------------------------------------
class _Converter:
    """Builds one function's graph: MLIR values -> IR values, op by op."""

    def __init__(self, graph):
        # (jaxlib rebuilds its Value objects on each access; they hash and compare by the
        # value they stand for, so they key this dict)
        self.graph, self.values, self.int_bound = graph, {}, 0

    def value(self, mlir_value):
        return self.values[mlir_value]

    def emit(self, op, name, inputs, **attrs):
        """Append IR node ``name`` (one of those ``op`` becomes); returns its outputs."""
        try:
            node = add_node(self.graph, name, inputs, attrs)
        except NeedleError as e:  # the IR refuses the attributes or types: say which op
            unsupported(op, f"Needle IR {name}: {e}")
        return node.outputs

    def bound(self, array):
        if array.dtype.kind in "iu" and array.size:
            self.int_bound = max(self.int_bound, int(np.abs(array.astype(np.int64)).max()))


def _no_int_arithmetic(op, conv, inputs):
    for v in inputs:
        if v.dtype in _INT_BITS:
            unsupported(op, f"integer arithmetic on {v.dtype} (Needle devices store integers "
                            f"in a float dtype, which does not wrap as {v.dtype} does)")


def _elementwise(name, ints=False):
    def convert(op, conv, inputs):
        if not ints:
            _no_int_arithmetic(op, conv, inputs)
        return conv.emit(op, name, inputs)
    return convert


def _logical(name):
    def convert(op, conv, inputs):
        if any(v.dtype != "bool" for v in inputs):  # bitwise on integers
            unsupported(op, f"{name} on integers (bitwise); on i1 it is supported")
        return conv.emit(op, name, inputs)
    return convert


def _xor(op, conv, inputs):
    if any(v.dtype != "bool" for v in inputs):
        unsupported(op, "xor on integers (bitwise); on i1 it is supported")
    a, b = inputs
    either = conv.emit(op, "or", [a, b])[0]
    both = conv.emit(op, "and", [a, b])[0]
    return conv.emit(op, "and", [either, conv.emit(op, "not", [both])[0]])


def _ceil(op, conv, inputs):
    _no_int_arithmetic(op, conv, inputs)  # ceil(x) = -floor(-x), exactly
    neg = conv.emit(op, "negate", inputs)[0]
    return conv.emit(op, "negate", [conv.emit(op, "floor", [neg])[0]])


def _is_finite(op, conv, inputs):
    (x,) = inputs  # |x| < inf is false for inf and NaN
    if x.dtype not in ("float32", "float64"):
        unsupported(op, f"is_finite of {x.dtype}")
    inf = conv.emit(op, "constant", [], value=np.array(np.inf, dtype=x.dtype))[0]
    inf = conv.emit(op, "broadcast_in_dim", [inf], broadcast_dimensions=[], shape=list(x.shape))[0]
    return conv.emit(op, "compare", [conv.emit(op, "abs", [x])[0], inf],
                     comparison_direction="LT")


def _compare(op, conv, inputs):
    attrs = {"comparison_direction": _enum(_attr(op, "comparison_direction"))}
    kind = _attr(op, "compare_type")
    if kind is not None:
        attrs["compare_type"] = _enum(kind)
    if attrs.get("compare_type") == "TOTALORDER":
        unsupported(op, "compare_type TOTALORDER (-0.0 below 0.0, NaNs ordered)")
    return conv.emit(op, "compare", inputs, **attrs)


def _convert(op, conv, inputs):
    (x,) = inputs
    _, dtype = tensor_type(op, op.results[0].type)
    if dtype in _INT_BITS and x.dtype in ("float32", "float64"):
        unsupported(op, f"{x.dtype} -> {dtype} conversion (rounds toward zero and saturates "
                        f"as integer storage would; Needle stores integers as floats)")
    if dtype in _INT_BITS and x.dtype in _INT_BITS and _INT_BITS[dtype] < _INT_BITS[x.dtype]:
        unsupported(op, f"narrowing {x.dtype} -> {dtype} conversion (wraps)")
    return conv.emit(op, "convert", inputs, dtype=dtype)


def _constant(op, conv, inputs):
    shape, dtype = tensor_type(op, op.results[0].type)
    array = constant_array(_attr(op, "value"), dtype).reshape(shape)
    conv.bound(array)
    return conv.emit(op, "constant", [], value=array)


def _iota(op, conv, inputs):
    shape, dtype = tensor_type(op, op.results[0].type)
    dim = _int(_attr(op, "iota_dimension"))
    if dtype in _INT_BITS:
        conv.int_bound = max(conv.int_bound, max(shape[dim] - 1, 0))
    return conv.emit(op, "iota", [], iota_dimension=dim, shape=list(shape), dtype=dtype)


def _shape_of_result(op):
    return list(tensor_type(op, op.results[0].type)[0])


def _broadcast_in_dim(op, conv, inputs):
    return conv.emit(op, "broadcast_in_dim", inputs,
                     broadcast_dimensions=_ints(_attr(op, "broadcast_dimensions")),
                     shape=_shape_of_result(op))


def _reshape(op, conv, inputs):
    return conv.emit(op, "reshape", inputs, shape=_shape_of_result(op))


def _transpose(op, conv, inputs):
    return conv.emit(op, "transpose", inputs, permutation=_ints(_attr(op, "permutation")))


def _slice(op, conv, inputs):
    return conv.emit(op, "slice", inputs, start_indices=_ints(_attr(op, "start_indices")),
                     limit_indices=_ints(_attr(op, "limit_indices")),
                     strides=_ints(_attr(op, "strides")))


def _reverse(op, conv, inputs):
    return conv.emit(op, "reverse", inputs, dimensions=_ints(_attr(op, "dimensions")))


def _pad(op, conv, inputs):
    return conv.emit(op, "pad", inputs, edge_padding_low=_ints(_attr(op, "edge_padding_low")),
                     edge_padding_high=_ints(_attr(op, "edge_padding_high")),
                     interior_padding=_ints(_attr(op, "interior_padding")))


def _concatenate(op, conv, inputs):
    return conv.emit(op, "concatenate", inputs, dimension=_int(_attr(op, "dimension")))


#: a body op of reduce or scatter -> the IR's named computation
_COMPUTATIONS = {"stablehlo.add": "add", "stablehlo.multiply": "multiply",
                 "stablehlo.maximum": "max", "stablehlo.minimum": "min",
                 "stablehlo.and": "and", "stablehlo.or": "or"}


def _body_computation(op, what):
    """The named computation of a one-op body ``return op(arg0, arg1)`` (either order),
    ``"replace"`` for ``return arg1``, else refuse."""
    block = op.regions[0].blocks[0]
    args = list(block.arguments)
    body = [o.operation for o in block.operations]
    if len(args) != 2:
        unsupported(op, f"{what} over several operands")
    ret = body[-1]
    if len(body) == 1 and len(ret.operands) == 1 and ret.operands[0] == args[1]:
        return "replace"
    if len(body) == 2 and body[0].name in _COMPUTATIONS and ret.operands[0] == body[0].results[0]:
        operands = list(body[0].operands)
        if operands == args or operands == args[::-1]:
            return _COMPUTATIONS[body[0].name]
    unsupported(op, f"{what} whose body is not one of {sorted(_COMPUTATIONS)} of its "
                    f"arguments")


def _reduce(op, conv, inputs):
    if len(inputs) != 2:
        unsupported(op, "reduce over several operands")
    computation = _body_computation(op, "reduce")
    if computation == "replace":
        unsupported(op, "reduce whose body returns an argument")
    if computation in ("add", "multiply"):
        _no_int_arithmetic(op, conv, inputs)
    if computation in ("and", "or") and inputs[0].dtype != "bool":
        unsupported(op, f"a bitwise {computation} reduction of {inputs[0].dtype}")
    return conv.emit(op, "reduce", inputs, dimensions=_ints(_attr(op, "dimensions")),
                     computation=computation)


def _dot_general(op, conv, inputs):
    from jaxlib.mlir.dialects import stablehlo  # noqa: PLC0415
    _no_int_arithmetic(op, conv, inputs)
    d = stablehlo.DotDimensionNumbers(_attr(op, "dot_dimension_numbers"))
    return conv.emit(op, "dot_general", inputs,
                     lhs_batching_dimensions=list(d.lhs_batching_dimensions),
                     rhs_batching_dimensions=list(d.rhs_batching_dimensions),
                     lhs_contracting_dimensions=list(d.lhs_contracting_dimensions),
                     rhs_contracting_dimensions=list(d.rhs_contracting_dimensions))


def _dot(op, conv, inputs):
    _no_int_arithmetic(op, conv, inputs)
    lhs, rhs = inputs  # (m, k) or (k,) times (k, n) or (k,)
    return conv.emit(op, "dot_general", inputs, lhs_batching_dimensions=[],
                     rhs_batching_dimensions=[], lhs_contracting_dimensions=[len(lhs.shape) - 1],
                     rhs_contracting_dimensions=[0])


def _convolution(op, conv, inputs):
    from jaxlib.mlir.dialects import stablehlo  # noqa: PLC0415
    _no_int_arithmetic(op, conv, inputs)
    d = stablehlo.ConvDimensionNumbers(_attr(op, "dimension_numbers"))
    spatial = len(d.input_spatial_dimensions)
    padding = _ints(_attr(op, "padding")) or [0] * (2 * spatial)
    attrs = dict(
        window_strides=_ints(_attr(op, "window_strides")) or [1] * spatial,
        padding=[padding[2 * i:2 * i + 2] for i in range(spatial)],
        lhs_dilation=_ints(_attr(op, "lhs_dilation")) or [1] * spatial,
        rhs_dilation=_ints(_attr(op, "rhs_dilation")) or [1] * spatial,
        dimension_numbers={
            "input_batch_dimension": d.input_batch_dimension,
            "input_feature_dimension": d.input_feature_dimension,
            "input_spatial_dimensions": list(d.input_spatial_dimensions),
            "kernel_input_feature_dimension": d.kernel_input_feature_dimension,
            "kernel_output_feature_dimension": d.kernel_output_feature_dimension,
            "kernel_spatial_dimensions": list(d.kernel_spatial_dimensions),
            "output_batch_dimension": d.output_batch_dimension,
            "output_feature_dimension": d.output_feature_dimension,
            "output_spatial_dimensions": list(d.output_spatial_dimensions)},
        feature_group_count=_int(_attr(op, "feature_group_count"), 1),
        batch_group_count=_int(_attr(op, "batch_group_count"), 1))
    reversal = _bools(_attr(op, "window_reversal"))
    if reversal and any(reversal):
        unsupported(op, "window_reversal")
    return conv.emit(op, "convolution", inputs, **attrs)


def _gather(op, conv, inputs):
    from jaxlib.mlir.dialects import stablehlo  # noqa: PLC0415
    d = stablehlo.GatherDimensionNumbers(_attr(op, "dimension_numbers"))
    return conv.emit(op, "gather", inputs, offset_dims=list(d.offset_dims),
                     collapsed_slice_dims=list(d.collapsed_slice_dims),
                     start_index_map=list(d.start_index_map),
                     index_vector_dim=d.index_vector_dim,
                     slice_sizes=_ints(_attr(op, "slice_sizes")),
                     operand_batching_dims=list(d.operand_batching_dims),
                     start_indices_batching_dims=list(d.start_indices_batching_dims))


def _scatter(op, conv, inputs):
    from jaxlib.mlir.dialects import stablehlo  # noqa: PLC0415
    if len(inputs) != 3:
        unsupported(op, "scatter of several operands")
    computation = _body_computation(op, "scatter")
    if computation not in ("add", "replace"):
        unsupported(op, f"scatter with computation {computation} (add and replace run)")
    if computation == "add":
        _no_int_arithmetic(op, conv, inputs[:1])
    d = stablehlo.ScatterDimensionNumbers(_attr(op, "scatter_dimension_numbers"))
    return conv.emit(op, "scatter", inputs, update_window_dims=list(d.update_window_dims),
                     inserted_window_dims=list(d.inserted_window_dims),
                     scatter_dims_to_operand_dims=list(d.scattered_dims_to_operand_dims),
                     index_vector_dim=d.index_vector_dim, computation=computation,
                     input_batching_dims=list(d.input_batching_dims),
                     scatter_indices_batching_dims=list(d.scatter_indices_batching_dims))


#: StableHLO op -> ``convert(op, converter, input values) -> output values``
CONVERTERS = {
    **{f"stablehlo.{n}": _elementwise(n) for n in (
        "exponential", "log", "tanh", "logistic", "sqrt", "rsqrt", "sine", "cosine", "floor",
        "negate", "abs", "sign", "add", "multiply", "subtract", "divide", "power",
        "remainder")},
    **{f"stablehlo.{n}": _elementwise(n, ints=True) for n in ("maximum", "minimum", "select",
                                                             "clamp")},
    **{f"stablehlo.{n}": _logical(n) for n in ("and", "or", "not")},
    "stablehlo.xor": _xor, "stablehlo.ceil": _ceil, "stablehlo.is_finite": _is_finite,
    "stablehlo.compare": _compare, "stablehlo.convert": _convert,
    "stablehlo.constant": _constant, "stablehlo.iota": _iota,
    "stablehlo.broadcast_in_dim": _broadcast_in_dim, "stablehlo.reshape": _reshape,
    "stablehlo.transpose": _transpose, "stablehlo.slice": _slice,
    "stablehlo.reverse": _reverse, "stablehlo.pad": _pad,
    "stablehlo.concatenate": _concatenate, "stablehlo.reduce": _reduce,
    "stablehlo.dot_general": _dot_general, "stablehlo.dot": _dot,
    "stablehlo.convolution": _convolution, "stablehlo.gather": _gather,
    "stablehlo.scatter": _scatter,
}
#: ops that never run on an accelerator here: named so their refusal says why
_NOT_PLANNED = ("all_gather", "all_reduce", "all_to_all", "collective_broadcast",
                "collective_permute", "reduce_scatter", "partition_id", "replica_id", "send",
                "recv", "infeed", "outfeed", "after_all", "uniform_quantize",
                "uniform_dequantize")


def _functions(module):
    funcs = [op for op in module.body.operations if op.operation.name == "func.func"]
    return {str(f.attributes["sym_name"]).strip('"'): f for f in funcs}


def entry_function(module, name=None):
    """The ``func.func`` to run: ``name``, else ``main``, else the only public function."""
    named = _functions(module)
    if name is not None:
        if name not in named:
            raise ValueError(f"no function @{name} in the module (it has "
                             f"{', '.join('@' + n for n in named)})")
        return named[name], name
    if "main" in named:
        return named["main"], "main"
    public = [n for n, f in named.items() if "sym_visibility" not in f.attributes
              or str(f.attributes["sym_visibility"]).strip('"') == "public"]
    if len(public) != 1:
        raise ValueError(f"the module has {len(public)} public functions "
                         f"({', '.join('@' + n for n in public)}); name the one to run")
    return named[public[0]], public[0]


def _convert_block(conv, block, arguments, functions, calls=()):
    """Convert the ops of ``block`` whose arguments are the IR values ``arguments``;
    returns the IR values it returns. A ``func.call`` is inlined (``calls``: the functions
    being inlined, to refuse recursion)."""
    for arg, value in zip(block.arguments, arguments):
        conv.values[arg] = value
    for item in block.operations:
        op = item.operation
        if op.name in ("func.return", "stablehlo.return"):
            return [conv.value(v) for v in op.operands]
        inputs = [conv.value(v) for v in op.operands]
        if op.name == "func.call":
            callee = str(op.attributes["callee"]).lstrip("@").strip('"')
            if callee not in functions or callee in calls:
                unsupported(op, f"a call of @{callee}, which is "
                                f"{'recursive' if callee in calls else 'not in the module'}")
            body = functions[callee].regions[0].blocks[0]
            outputs = _convert_block(conv, body, inputs, functions, calls + (callee,))
        else:
            converter = CONVERTERS.get(op.name)
            if converter is None:
                short = op.name.split(".", 1)[-1]
                why = ("collectives, host transfer and quantization do not run on a Needle "
                       "device" if short in _NOT_PLANNED else "not supported by Needle yet")
                unsupported(op, why)
            if op.regions and op.name not in ("stablehlo.reduce", "stablehlo.scatter"):
                unsupported(op, "ops with regions")
            outputs = converter(op, conv, inputs)
        if len(outputs) != len(op.results):
            unsupported(op, f"{len(op.results)} results, Needle's node has {len(outputs)}")
        for result, value in zip(op.results, outputs):
            shape, dtype = tensor_type(op, result.type)
            if (value.shape, value.dtype) != (shape, dtype):  # (the IR's rules disagree)
                unsupported(op, f"Needle's IR infers {value.type}, the program says "
                                f"{dtype}{list(shape)}")
            conv.values[result] = value
    raise ValueError("a block without a return")


def import_module(module, name=None):
    """Convert the entry function of a parsed jaxlib MLIR ``module`` into an
    :class:`Imported` graph (call inside the module's context); calls are inlined."""
    func, fname = entry_function(module, name)
    block = func.regions[0].blocks[0]
    graph = Graph(name=fname)
    conv = _Converter(graph)
    inputs = []
    for arg in block.arguments:
        shape, dtype = tensor_type(func.operation, arg.type)
        inputs.append(graph.add_input(TensorType(shape, dtype)))
    graph.outputs = _convert_block(conv, block, inputs, _functions(module))
    return Imported(graph, fname, conv.int_bound)
