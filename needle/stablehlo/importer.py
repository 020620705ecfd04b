"""StableHLO MLIR -> Needle IR: jaxlib's MLIR bindings parse the text (pretty or generic
form); each op of the entry function becomes the IR node of the same name (the IR is named
after StableHLO) through one converter per op in :data:`CONVERTERS`.

Regions: a body that is one binary op of its arguments (reduce, reduce_window, scatter) or
one comparison (sort, select_and_scatter) becomes the node's named computation; ``func.call``,
``composite`` and ``if`` / ``case`` on a constant selector are inlined; ``while`` and ``if`` /
``case`` on a computed selector become ``while`` / ``case`` nodes whose regions are graphs of
their own (a value a region reads from outside becomes an input of the node and of every
region). What does not convert raises :class:`UnsupportedError` naming the op, its location
and its types, never a guess: ops outside the table (``map``, ...), element types the IR has
no dtype for, shapes that are not static, other bodies.

Integers are exact, or the program does not run. The cpu device runs an imported graph
with NumPy in every dtype it declares (the IR's reference interpreter), integers included.
Other devices store integer values in a float dtype (float32, or float64 where the device
has it; see needle.compiler.executor), which holds them exactly only up to 2**24 (2**53) and
does not wrap as integers do. The importer therefore records, as ``Imported.hazards``, each
op whose integer results such storage could get wrong: integer arithmetic, bitwise ops on
integers, float-to-integer and narrowing integer conversion. It also records the largest
integer magnitude the constants and iotas hold (``Imported.int_bound``). A program bound to
such a device is refused when it has a hazard, or a bound beyond what the device stores
exactly.
"""
import numpy as np

from ..compiler.ir import Graph, TensorType, Value
from ..compiler.ops import add_node
from ..errors import NeedleError
from .mlir import (INT_BITS, attr, bools, constant_text, dense_array,
                   describe, enum_value, integer, ints, tensor_type, unsupported)


class Imported:
    """The result of :func:`import_module`: the IR ``graph`` of the entry function, its
    ``name``, ``int_bound`` (the largest integer magnitude its constants and iotas hold, 0
    without integers) and ``hazards`` (why float storage of integers could give a wrong
    answer: one message per op, naming it)."""

    def __init__(self, graph, name, int_bound, hazards):
        self.graph, self.name, self.int_bound, self.hazards = graph, name, int_bound, hazards


# -- the conversion ------------------------------------------------------------------------
class _Converter:
    """Builds one function's graph: MLIR values -> IR values, op by op."""

    def __init__(self, graph):
        # (jaxlib rebuilds its Value objects on each access; they hash and compare by the
        # value they stand for, so they key this dict)
        self.graph, self.values, self.int_bound, self.hazards = graph, {}, 0, []

    def value(self, mlir_value):
        return self.values[mlir_value]

    def emit(self, op, name, inputs, regions=None, **attrs):
        """Append IR node ``name`` (one of those ``op`` becomes); returns its outputs."""
        try:
            node = add_node(self.graph, name, inputs, attrs, regions=regions)
        except NeedleError as e:  # the IR refuses the attributes or types: say which op
            unsupported(op, f"Needle IR {name}: {e}")
        return node.outputs

    def hazard(self, op, why):
        """Note that ``op`` needs native integers (see the module docstring)."""
        self.hazards.append(f"{describe(op)}: {why}")

    def bound(self, array):
        if array.dtype.kind in "iu" and array.size:
            self.int_bound = max(self.int_bound, int(np.abs(array.astype(np.int64)).max()))


class _RegionConverter(_Converter):
    """Builds a region's graph: a value of an enclosing scope that the region reads becomes
    an input of the region's graph (``captured`` lists those outer values, in order)."""

    def __init__(self, parent, graph):
        super().__init__(graph)
        self.parent, self.captured = parent, []
        self.hazards = parent.hazards
        self.functions, self.calls = parent.functions, parent.calls

    def value(self, mlir_value):
        found = self.values.get(mlir_value)
        if found is None:
            outer = self.parent.value(mlir_value)
            if isinstance(outer, tuple):
                raise KeyError(mlir_value)
            found = self.values[mlir_value] = self.graph.add_input(outer.type)
            self.captured.append(outer)
        return found

    def bound(self, array):
        self.parent.bound(array)


def _regions(op, conv, indices, arguments, name):
    """Graphs of ``op``'s regions ``indices``, each taking ``arguments`` (IR values of the
    enclosing graph: a while's carried values) and then every value any of the regions reads
    from outside, and those outer values."""
    graphs, converters = [], []
    for index in indices:
        graph = Graph(name=f"{name}{index}")
        sub = _RegionConverter(conv, graph)
        own = [graph.add_input(v.type) for v in arguments]
        try:
            graph.outputs = _convert_block(sub, op.regions[index].blocks[0], own)
        except KeyError:  # (a tuple from outside: the IR has none to pass in)
            unsupported(op, "a region that reads a tuple from outside it")
        if any(isinstance(v, tuple) for v in graph.outputs):
            unsupported(op, "a region that returns a tuple")
        graphs.append(graph)
        converters.append(sub)
    captured = []
    for sub in converters:
        captured += [v for v in sub.captured if v not in captured]
    for graph, sub in zip(graphs, converters):  # every region takes the same inputs
        mine = dict(zip(sub.captured, graph.inputs[len(arguments):]))
        graph.inputs = graph.inputs[:len(arguments)] + [
            mine[v] if v in mine else Value(v.type) for v in captured]
    return graphs, captured


def _no_int_arithmetic(op, conv, inputs):
    for v in inputs:
        if v.dtype in INT_BITS or v.dtype == "bool":  # (i1 add is or: 1 + 1 = 1)
            conv.hazard(op, f"integer arithmetic on {v.dtype} (this device stores integers "
                            f"in a float dtype, which does not wrap as {v.dtype} does)")
            return


def _elementwise(name, ints=False):
    def convert(op, conv, inputs):
        if not ints:
            _no_int_arithmetic(op, conv, inputs)
        return conv.emit(op, name, inputs)
    return convert


def _remainder(op, conv, inputs):
    if inputs[0].dtype in ("float32", "float64"):
        conv.hazard(op, "a float remainder (the executor's a - trunc(a / b) * b loses the "
                        "low bits of large quotients)")
    return _elementwise("remainder")(op, conv, inputs)


def _logical(name):
    def convert(op, conv, inputs):
        if any(v.dtype != "bool" for v in inputs):
            conv.hazard(op, f"bitwise {name} of {inputs[0].dtype}")
        return conv.emit(op, name, inputs)
    return convert


def _xor(op, conv, inputs):
    """``(a or b) and not (a and b)``: logical on i1, bitwise on integers."""
    if any(v.dtype != "bool" for v in inputs):
        conv.hazard(op, f"bitwise xor of {inputs[0].dtype}")
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


def compare_kind(op, compare_type, dtype, total_order=False):
    """Refuse a ``compare_type`` that is not the comparison the dtype makes (the spec's C3:
    FLOAT for floats and complex, SIGNED for signed integers, UNSIGNED for unsigned ones
    and i1) or that Needle does not make (TOTALORDER, but where ``total_order``: a sort of
    real floats). Returns whether the comparison is TOTALORDER."""
    if compare_type is None:
        return False
    kind = enum_value(compare_type)
    natural = "FLOAT" if dtype.startswith(("float", "bfloat", "complex")) else \
        "SIGNED" if dtype.startswith("int") else "UNSIGNED"
    if kind == "TOTALORDER":
        if total_order and dtype.startswith(("float", "bfloat")):
            return True
        unsupported(op, "compare_type TOTALORDER (-0.0 below 0.0, NaNs ordered)")
    if kind != natural:
        unsupported(op, f"compare_type {kind} of {dtype} values ({natural} is what they take)")
    return False


def _compare(op, conv, inputs):
    compare_kind(op, attr(op, "compare_type"), inputs[0].dtype)
    return conv.emit(op, "compare", inputs,
                     comparison_direction=enum_value(attr(op, "comparison_direction")))


def _convert(op, conv, inputs):
    (x,) = inputs
    _, dtype = tensor_type(op, op.results[0].type)
    if dtype in INT_BITS and x.dtype in ("float32", "float64"):
        conv.hazard(op, f"{x.dtype} -> {dtype} conversion (its integers can exceed what "
                        f"float storage holds exactly)")
    if dtype in INT_BITS and x.dtype in INT_BITS and INT_BITS[dtype] < INT_BITS[x.dtype]:
        conv.hazard(op, f"narrowing {x.dtype} -> {dtype} conversion (wraps)")
    return conv.emit(op, "convert", inputs, dtype=dtype)


def _constant(op, conv, inputs):
    shape, dtype = tensor_type(op, op.results[0].type)
    if "dense<" not in str(op):
        unsupported(op, "a constant that is not a dense literal (dense_resource, sparse)")
    array = dense_array(constant_text(op)).reshape(shape)
    conv.bound(array)
    return conv.emit(op, "constant", [], value=array)


def _iota(op, conv, inputs):
    shape, dtype = tensor_type(op, op.results[0].type)
    dim = integer(attr(op, "iota_dimension"))
    if dtype in INT_BITS:
        conv.int_bound = max(conv.int_bound, max(shape[dim] - 1, 0))
    return conv.emit(op, "iota", [], iota_dimension=dim, shape=list(shape), dtype=dtype)


def _shape_of_result(op):
    return list(tensor_type(op, op.results[0].type)[0])


def _broadcast_in_dim(op, conv, inputs):
    return conv.emit(op, "broadcast_in_dim", inputs,
                     broadcast_dimensions=ints(attr(op, "broadcast_dimensions")),
                     shape=_shape_of_result(op))


def _reshape(op, conv, inputs):
    return conv.emit(op, "reshape", inputs, shape=_shape_of_result(op))


def _copying(name, lists=(), scalars=()):
    """The converter of an op whose attributes are the IR node's: int lists and ints."""
    def convert(op, conv, inputs):
        return conv.emit(op, name, inputs, **{k: ints(attr(op, k)) for k in lists},
                         **{k: integer(attr(op, k)) for k in scalars})
    return convert


#: a body op of reduce or scatter -> the IR's named computation
_COMPUTATIONS = {"stablehlo.add": "add", "stablehlo.multiply": "multiply",
                 "stablehlo.maximum": "max", "stablehlo.minimum": "min",
                 "stablehlo.and": "and", "stablehlo.or": "or"}


def _body_computation(op, what, region=0):
    """The named computation of a one-op body ``return op(arg0, arg1)`` (either order),
    ``"replace"`` for ``return arg1``, else refuse."""
    block = op.regions[region].blocks[0]
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


def _reduction(op, inputs, what):
    """The named computation of a one-operand reduction's body (reduce, reduce_window)."""
    if len(inputs) != 2:
        unsupported(op, f"{what} over several operands")
    computation = _body_computation(op, what)
    if computation == "replace":
        unsupported(op, f"{what} whose body returns an argument")
    return computation


def _reduce(op, conv, inputs):
    computation = _reduction(op, inputs, "reduce")
    if computation in ("add", "multiply"):
        _no_int_arithmetic(op, conv, inputs)
    if computation in ("and", "or") and inputs[0].dtype != "bool":
        conv.hazard(op, f"a bitwise {computation} reduction of {inputs[0].dtype}")
    return conv.emit(op, "reduce", inputs, dimensions=ints(attr(op, "dimensions")),
                     computation=computation)


def _dot_general(op, conv, inputs):
    from jaxlib.mlir.dialects import stablehlo  # noqa: PLC0415
    _no_int_arithmetic(op, conv, inputs)
    inputs = _in_result_dtype(op, conv, inputs)
    d = stablehlo.DotDimensionNumbers(attr(op, "dot_dimension_numbers"))
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


def _convolution(op, conv, inputs, padding=None):
    from jaxlib.mlir.dialects import stablehlo  # noqa: PLC0415
    _no_int_arithmetic(op, conv, inputs)
    inputs = _in_result_dtype(op, conv, inputs)
    d = stablehlo.ConvDimensionNumbers(attr(op, "dimension_numbers"))
    spatial = len(d.input_spatial_dimensions)
    if padding is None:
        padding = ints(attr(op, "padding"))
    padding = padding or [0] * (2 * spatial)
    attrs = dict(
        window_strides=ints(attr(op, "window_strides")) or [1] * spatial,
        padding=_pairs(padding, spatial),
        lhs_dilation=ints(attr(op, "lhs_dilation")) or [1] * spatial,
        rhs_dilation=ints(attr(op, "rhs_dilation")) or [1] * spatial,
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
        feature_group_count=integer(attr(op, "feature_group_count"), 1),
        batch_group_count=integer(attr(op, "batch_group_count"), 1))
    reversal = bools(attr(op, "window_reversal"))
    if reversal and any(reversal):
        unsupported(op, "window_reversal")
    return conv.emit(op, "convolution", inputs, **attrs)


def _gather(op, conv, inputs, slice_sizes=None):
    from jaxlib.mlir.dialects import stablehlo  # noqa: PLC0415
    d = stablehlo.GatherDimensionNumbers(attr(op, "dimension_numbers"))
    if slice_sizes is None:
        slice_sizes = ints(attr(op, "slice_sizes"))
    return conv.emit(op, "gather", inputs, offset_dims=list(d.offset_dims),
                     collapsed_slice_dims=list(d.collapsed_slice_dims),
                     start_index_map=list(d.start_index_map),
                     index_vector_dim=d.index_vector_dim,
                     slice_sizes=slice_sizes,
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
    d = stablehlo.ScatterDimensionNumbers(attr(op, "scatter_dimension_numbers"))
    return conv.emit(op, "scatter", inputs, update_window_dims=list(d.update_window_dims),
                     inserted_window_dims=list(d.inserted_window_dims),
                     scatter_dims_to_operand_dims=list(d.scattered_dims_to_operand_dims),
                     index_vector_dim=d.index_vector_dim, computation=computation,
                     input_batching_dims=list(d.input_batching_dims),
                     scatter_indices_batching_dims=list(d.scatter_indices_batching_dims))


def _bool_attr(op, name):
    from jaxlib.mlir import ir  # noqa: PLC0415
    return bool(ir.BoolAttr(attr(op, name)).value)


def _triangular_solve(op, conv, inputs):
    return conv.emit(op, "triangular_solve", inputs, left_side=_bool_attr(op, "left_side"),
                     lower=_bool_attr(op, "lower"),
                     unit_diagonal=_bool_attr(op, "unit_diagonal"),
                     transpose_a=enum_value(attr(op, "transpose_a")))


def _fft(op, conv, inputs):
    return conv.emit(op, "fft", inputs, fft_type=enum_value(attr(op, "fft_type")),
                     fft_length=ints(attr(op, "fft_length")))


def _comparison(op, region, what, total_order=False):
    """``(direction, k, total)`` of a body ``return compare(arg 2k, arg 2k+1)`` (a
    comparator of operand k; arguments swapped flip the direction; ``total``: a
    TOTALORDER comparison, accepted where ``total_order``), else refuse."""
    block = op.regions[region].blocks[0]
    args, body = list(block.arguments), [o.operation for o in block.operations]
    if len(body) == 2 and body[0].name == "stablehlo.compare" and \
            body[1].operands[0] == body[0].results[0]:
        direction = enum_value(attr(body[0], "comparison_direction"))
        a, b = list(body[0].operands)
        total = compare_kind(op, attr(body[0], "compare_type"), tensor_type(op, a.type)[1],
                             total_order)
        if a in args and b in args:
            i, j = args.index(a), args.index(b)
            if {i, j} == {i - i % 2, i - i % 2 + 1}:
                flipped = {"GT": "LT", "LT": "GT", "GE": "LE", "LE": "GE"}
                return (direction if i < j else flipped.get(direction, direction)), i // 2, \
                    total
    unsupported(op, f"a {what} other than one compare (GT, LT, GE or LE) of an operand's "
                    f"two arguments")


def _sort(op, conv, inputs):
    direction, key, total = _comparison(op, 0, "comparator", total_order=True)
    if direction not in ("GT", "LT"):
        unsupported(op, f"a sort comparator {direction} (GT and LT sort)")
    return conv.emit(op, "sort", inputs, dimension=integer(attr(op, "dimension")), key=key,
                     direction=direction, total_order=total)


def _pairs(flat, rank):
    """``[lo0, hi0, lo1, hi1, ...]`` -> ``[[lo0, hi0], [lo1, hi1], ...]``."""
    return [flat[2 * i:2 * i + 2] for i in range(rank)]


def _window_attrs(op, rank):
    padding = ints(attr(op, "padding")) or [0] * (2 * rank)
    return dict(window_dimensions=ints(attr(op, "window_dimensions")),
                window_strides=ints(attr(op, "window_strides")) or [1] * rank,
                padding=_pairs(padding, rank))


def _reduce_window(op, conv, inputs):
    computation = _reduction(op, inputs, "reduce_window")
    rank = len(inputs[0].shape)
    window = _window_attrs(op, rank)
    if any(p < 0 for pair in window["padding"] for p in pair):
        unsupported(op, "negative padding")
    return conv.emit(op, "reduce_window", inputs, **window,
                     base_dilations=ints(attr(op, "base_dilations")) or [1] * rank,
                     window_dilations=ints(attr(op, "window_dilations")) or [1] * rank,
                     computation=computation)


def _select_and_scatter(op, conv, inputs):
    select, _, _ = _comparison(op, 0, "select")
    computation = _body_computation(op, "scatter", region=1)
    if computation not in ("add", "max", "min"):
        unsupported(op, f"a scatter body {computation}")
    window = _window_attrs(op, len(inputs[0].shape))
    return conv.emit(op, "select_and_scatter", inputs, **window, select=select,
                     computation=computation)


def _branch(op, conv, index):
    """The outputs of region ``index`` inlined (its selector is a constant)."""
    return _convert_block(conv, op.regions[index].blocks[0], [])


def _if(op, conv, inputs):
    pred = inputs[0]
    if _is_constant(pred):
        return _branch(op, conv, 0 if bool(pred.producer.attrs["value"]) else 1)
    # a computed predicate: case on 0 (true: the first region) or 1
    index = conv.emit(op, "select", [pred] + [
        conv.emit(op, "constant", [], value=np.array(i, np.int32))[0] for i in (0, 1)])[0]
    return _computed_case(op, conv, index)


def _case(op, conv, inputs):
    if not _is_constant(inputs[0]):
        return _computed_case(op, conv, inputs[0])
    index = int(inputs[0].producer.attrs["value"])
    count = len(op.regions)
    return _branch(op, conv, index if 0 <= index < count else count - 1)  # (as the spec says)


def _is_constant(value):
    producer = getattr(value, "producer", None)
    return producer is not None and producer.op == "constant"


def _computed_case(op, conv, index):
    branches, captured = _regions(op, conv, range(len(op.regions)), [], "branch")
    return conv.emit(op, "case", [index] + captured, regions=branches)


def _while(op, conv, inputs):
    (cond, body), captured = _regions(op, conv, (0, 1), inputs, "while")
    return conv.emit(op, "while", list(inputs) + captured, regions=(cond, body))


def _composite(op, conv, inputs):
    callee = str(op.attributes["decomposition"]).lstrip("@").strip('"')
    return _inline(op, conv, callee, inputs)


def _constant_operand(op, conv, value, what):
    """The NumPy value of an operand a constant made (a dynamic op's shape or padding)."""
    producer = getattr(value, "producer", None)
    if producer is None or producer.op != "constant":
        unsupported(op, f"its {what} is computed at run time")
    return np.asarray(producer.attrs["value"])


def _tuple(op, conv, inputs):
    return [tuple(inputs)]  # (kept in the importer: the IR has no tuples)


def _get_tuple_element(op, conv, inputs):
    return [inputs[0][integer(attr(op, "index"))]]


def _identity(op, conv, inputs):  # optimization_barrier: the operands themselves
    return list(inputs)


def _get_dimension_size(op, conv, inputs):
    size = inputs[0].shape[integer(attr(op, "dimension"))]
    return conv.emit(op, "constant", [], value=np.array(size, dtype=np.int32))


def _bitcast_convert(op, conv, inputs):
    shape, dtype = tensor_type(op, op.results[0].type)
    return conv.emit(op, "bitcast_convert", inputs, shape=list(shape), dtype=dtype)


def _dynamic_update_slice(op, conv, inputs):
    return conv.emit(op, "dynamic_update_slice", inputs)


def _dynamic_iota(op, conv, inputs):
    _constant_operand(op, conv, inputs[0], "output shape")
    return _iota(op, conv, [])


def _dynamic_broadcast_in_dim(op, conv, inputs):
    _constant_operand(op, conv, inputs[1], "output shape")
    return _broadcast_in_dim(op, conv, inputs[:1])


def _dynamic_reshape(op, conv, inputs):
    _constant_operand(op, conv, inputs[1], "output shape")
    return _reshape(op, conv, inputs[:1])


def _dynamic_pad(op, conv, inputs):
    low, high, interior = (_constant_operand(op, conv, v, "padding").reshape(-1).tolist()
                           for v in inputs[2:])
    return conv.emit(op, "pad", inputs[:2], edge_padding_low=low, edge_padding_high=high,
                     interior_padding=interior)


def _dynamic_gather(op, conv, inputs):
    sizes = _constant_operand(op, conv, inputs[2], "slice sizes").reshape(-1).tolist()
    return _gather(op, conv, inputs[:2], sizes)


def _dynamic_conv(op, conv, inputs):
    padding = _constant_operand(op, conv, inputs[2], "padding").reshape(-1).tolist()
    return _convolution(op, conv, inputs[:2], padding)


def _in_result_dtype(op, conv, inputs):
    """``inputs`` converted to the result's element type (StableHLO lets a product or a
    convolution accumulate and return a wider type than its operands)."""
    _, dtype = tensor_type(op, op.results[0].type)
    return [v if v.dtype == dtype else conv.emit(op, "convert", [v], dtype=dtype)[0]
            for v in inputs]


#: StableHLO op -> ``convert(op, converter, input values) -> output values``
CONVERTERS = {
    **{f"stablehlo.{n}": _elementwise(n) for n in (
        "exponential", "log", "tanh", "logistic", "sqrt", "rsqrt", "sine", "cosine", "floor",
        "negate", "abs", "sign", "add", "multiply", "subtract", "divide", "power")},
    **{f"stablehlo.{n}": _elementwise(n, ints=True) for n in (
        "maximum", "minimum", "select", "clamp")},
    **{f"stablehlo.{n}": _logical(n) for n in ("and", "or", "not")},
    # (IMPORTED_OPS: the cpu device runs these)
    **{f"stablehlo.{n}": _elementwise(n) for n in (
        "tan", "exponential_minus_one", "log_plus_one", "cbrt", "round_nearest_even",
        "round_nearest_afz", "atan2", "real", "imag", "complex")},
    **{f"stablehlo.{n}": _elementwise(n, ints=True) for n in (
        "popcnt", "count_leading_zeros", "shift_left", "shift_right_arithmetic",
        "shift_right_logical")},
    "stablehlo.remainder": _remainder,
    "stablehlo.xor": _xor,
    "stablehlo.ceil": _ceil,
    "stablehlo.is_finite": _is_finite,
    "stablehlo.compare": _compare,
    "stablehlo.convert": _convert,
    "stablehlo.bitcast_convert": _bitcast_convert,
    "stablehlo.reduce_precision": _copying("reduce_precision",
                                           scalars=["exponent_bits", "mantissa_bits"]),
    "stablehlo.constant": _constant,
    "stablehlo.iota": _iota,
    "stablehlo.get_dimension_size": _get_dimension_size,
    "stablehlo.broadcast_in_dim": _broadcast_in_dim,
    "stablehlo.reshape": _reshape,
    "stablehlo.transpose": _copying("transpose", ["permutation"]),
    "stablehlo.slice": _copying("slice", ["start_indices", "limit_indices", "strides"]),
    "stablehlo.reverse": _copying("reverse", ["dimensions"]),
    "stablehlo.pad": _copying("pad", ["edge_padding_low", "edge_padding_high",
                                      "interior_padding"]),
    "stablehlo.concatenate": _copying("concatenate", scalars=["dimension"]),
    "stablehlo.dynamic_slice": _copying("dynamic_slice", ["slice_sizes"]),
    "stablehlo.dynamic_update_slice": _dynamic_update_slice,
    "stablehlo.dynamic_iota": _dynamic_iota,
    "stablehlo.dynamic_broadcast_in_dim": _dynamic_broadcast_in_dim,
    "stablehlo.dynamic_reshape": _dynamic_reshape,
    "stablehlo.dynamic_pad": _dynamic_pad,
    "stablehlo.dynamic_gather": _dynamic_gather,
    "stablehlo.dynamic_conv": _dynamic_conv,
    "stablehlo.reduce": _reduce,
    "stablehlo.reduce_window": _reduce_window,
    "stablehlo.select_and_scatter": _select_and_scatter,
    "stablehlo.sort": _sort,
    "stablehlo.dot_general": _dot_general,
    "stablehlo.dot": _dot,
    "stablehlo.convolution": _convolution,
    "stablehlo.fft": _fft,
    "stablehlo.triangular_solve": _triangular_solve,
    "stablehlo.gather": _gather,
    "stablehlo.scatter": _scatter,
    "stablehlo.tuple": _tuple,
    "stablehlo.get_tuple_element": _get_tuple_element,
    "stablehlo.optimization_barrier": _identity,
    "stablehlo.if": _if,
    "stablehlo.case": _case,
    "stablehlo.composite": _composite,
    "stablehlo.while": _while,
}
#: ops whose regions their converter reads
_WITH_REGIONS = ("stablehlo.reduce", "stablehlo.scatter", "stablehlo.sort",
                 "stablehlo.reduce_window", "stablehlo.select_and_scatter", "stablehlo.if",
                 "stablehlo.case", "stablehlo.while")
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


def _inline(op, conv, callee, inputs):
    """The outputs of function ``callee`` of the module, converted on ``inputs``."""
    if callee not in conv.functions or callee in conv.calls:
        unsupported(op, f"a call of @{callee}, which is "
                        f"{'recursive' if callee in conv.calls else 'not in the module'}")
    conv.calls.append(callee)
    try:
        return _convert_block(conv, conv.functions[callee].regions[0].blocks[0], inputs)
    finally:
        conv.calls.pop()


def _convert_block(conv, block, arguments):
    """Convert the ops of ``block`` whose arguments are the IR values ``arguments``;
    returns the IR values it returns. A ``func.call`` is inlined."""
    for arg, value in zip(block.arguments, arguments):
        conv.values[arg] = value
    for item in block.operations:
        op = item.operation
        if op.name in ("func.return", "stablehlo.return"):
            return [conv.value(v) for v in op.operands]
        inputs = [conv.value(v) for v in op.operands]
        if op.name == "func.call":
            outputs = _inline(op, conv, str(op.attributes["callee"]).lstrip("@").strip('"'),
                              inputs)
        else:
            converter = CONVERTERS.get(op.name)
            if converter is None:
                short = op.name.split(".", 1)[-1]
                why = ("collectives, host transfer and quantization do not run on a Needle "
                       "device" if short in _NOT_PLANNED else "not supported by Needle yet")
                unsupported(op, why)
            if op.regions and op.name not in _WITH_REGIONS:
                unsupported(op, "ops with regions")
            outputs = converter(op, conv, inputs)
        if len(outputs) != len(op.results):
            unsupported(op, f"{len(op.results)} results, Needle's node has {len(outputs)}")
        for result, value in zip(op.results, outputs):
            if isinstance(value, tuple):  # (a tuple: checked where its elements are taken)
                conv.values[result] = value
                continue
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
    conv.functions, conv.calls = _functions(module), [fname]
    outputs = _convert_block(conv, block, inputs)
    if any(isinstance(v, tuple) for v in outputs):
        unsupported(func.operation, "a function that returns a tuple")
    graph.outputs = outputs
    graph.aliases = _donated(func, graph)
    return Imported(graph, fname, conv.int_bound, conv.hazards)


def _donated(func, graph):
    """``{output: input}`` of the arguments JAX donated to an output of their type
    (``tf.aliasing_output``); a donation without one (``jax.buffer_donor``) updates nothing."""
    from jaxlib.mlir import ir  # noqa: PLC0415
    aliases = {}
    if "arg_attrs" not in func.attributes:
        return aliases
    for i, entry in enumerate(ir.ArrayAttr(func.attributes["arg_attrs"])):
        entry = ir.DictAttr(entry)
        if "tf.aliasing_output" in entry:
            out = ir.IntegerAttr(entry["tf.aliasing_output"]).value
            if not 0 <= out < len(graph.outputs) or out in aliases or \
                    graph.outputs[out].type != graph.inputs[i].type:
                unsupported(func.operation, f"argument {i} donated to output {out}, which "
                                            f"does not exist or has another type")
            aliases[out] = i
    return aliases
