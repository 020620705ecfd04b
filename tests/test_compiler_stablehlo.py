"""StableHLO export checked by jaxlib: every IR op is exported in a small hand-built graph,
parsed and verified by jaxlib's MLIR bindings, and run by jaxlib's reference interpreter
(``stablehlo.eval_module``, in one subprocess for all cases) against NumPy float64
expectations written here; a few programs are also checked against ``jax.jit``."""
import zlib

import numpy as np
import pytest

pytest.importorskip("jaxlib.mlir.dialects.stablehlo",
                    reason="jaxlib (with its MLIR bindings) is needed to check StableHLO export")

from needle.compiler import stablehlo  # noqa: E402
from needle.compiler.ir import Graph, TensorType  # noqa: E402

F32, F64, I32, I64, BOOL = "float32", "float64", "int32", "int64", "bool"
RTOL, ATOL = {F32: 2e-5, F64: 1e-12}, {F32: 1e-6, F64: 1e-12}

#: the IR op set: every one must appear in some case below (test_every_op_is_covered)
ALL_OPS = {
    "negate", "exponential", "log", "tanh", "logistic", "sqrt", "rsqrt", "abs", "sine",
    "cosine", "sign", "floor", "add", "subtract", "multiply", "divide", "power", "maximum",
    "minimum", "remainder", "and", "or", "not", "compare", "select", "clamp", "convert",
    "constant", "iota", "broadcast_in_dim", "reshape", "transpose", "slice", "reverse", "pad",
    "concatenate", "reduce", "dot_general", "convolution", "gather", "scatter", "composite"}


# ------------------------------------------------------------------ building graphs by hand
def T(shape, dtype=F32):
    return TensorType(shape, dtype)


def op(g, name, inputs, shape, dt=F32, /, **attrs):
    """Adds one single-output node whose out type (shape, dt) the caller computed; returns
    its value."""
    return g.add(name, inputs, [T(shape, dt)], attrs).output


def const(g, value, dtype=F32):
    value = np.asarray(value).astype(dtype)
    return op(g, "constant", [], value.shape, dtype, value=value)


def new_graph(*types, name="main"):
    g = Graph(name=name)
    return g, [g.add_input(t) for t in types]


CASES = {}  # name -> builder(rng) -> (graph, inputs, expected outputs, composite modes)


def case(*modes):
    """Registers a case; ``modes`` are the ``composites=`` settings to export it with."""
    def register(fn):
        CASES[fn.__name__[5:]] = (fn, modes or ("decompose",))
        return fn
    return register


def rand(rng, shape, lo=-2.0, hi=2.0):
    return rng.uniform(lo, hi, shape)


# ------------------------------------------------------------------------------- the cases
UNARY_REF = {"negate": np.negative, "exponential": np.exp, "log": np.log, "tanh": np.tanh,
             "logistic": lambda x: 1 / (1 + np.exp(-x)), "sqrt": np.sqrt,
             "rsqrt": lambda x: 1 / np.sqrt(x), "abs": np.abs, "sine": np.sin,
             "cosine": np.cos, "sign": np.sign, "floor": np.floor}
BINARY_REF = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply,
              "divide": np.divide, "power": np.power, "maximum": np.maximum,
              "minimum": np.minimum, "remainder": np.fmod}  # remainder: C's fmod (sign of x)


def _unary(rng, dtype):
    g, (x, p) = new_graph(T((2, 3), dtype), T((2, 3), dtype))  # p > 0 for log, sqrt, rsqrt
    positive = {"log", "sqrt", "rsqrt"}
    g.outputs = [op(g, name, [p if name in positive else x], (2, 3), dtype) for name in UNARY_REF]
    xs, ps = rand(rng, (2, 3)), rand(rng, (2, 3), 0.5, 3.0)
    xs[0, 0] = 0.0  # sign(0) = 0
    return g, [xs.astype(dtype), ps.astype(dtype)], [
        UNARY_REF[n](ps if n in positive else xs) for n in UNARY_REF]


@case()
def case_unary_f32(rng):
    return _unary(rng, F32)


@case()
def case_unary_f64(rng):
    return _unary(rng, F64)


@case()
def case_binary_f32(rng):
    g, (x, y) = new_graph(T((2, 3)), T((2, 3)))
    g.outputs = [op(g, name, [x, y], (2, 3)) for name in BINARY_REF]
    xs, ys = rand(rng, (2, 3), 0.5, 3.0), rand(rng, (2, 3), 0.5, 2.0)  # power needs x > 0
    xs[1] *= -1  # remainder keeps the dividend's sign; power of a negative base is nan
    with np.errstate(invalid="ignore"):
        exp = [BINARY_REF[n](xs, ys) for n in BINARY_REF]
    return g, [xs.astype(F32), ys.astype(F32)], exp


@case()
def case_integer_arithmetic(rng):
    g, (a, b) = new_graph(T((5,), I64), T((5,), I32))
    g.outputs = [op(g, "add", [a, a], (5,), I64), op(g, "multiply", [b, b], (5,), I32),
                 op(g, "remainder", [a, a], (5,), I64), op(g, "negate", [b], (5,), I32),
                 op(g, "maximum", [b, b], (5,), I32), op(g, "abs", [b], (5,), I32)]
    av, bv = rng.integers(1, 100, 5), rng.integers(-50, 50, 5)
    return g, [av.astype(np.int64), bv.astype(np.int32)], [
        2 * av, bv * bv, np.zeros(5), -bv, bv, np.abs(bv)]


@case()
def case_logic_compare_select_clamp(rng):
    g, (p, q, x, y, i, j) = new_graph(T((2, 3), BOOL), T((2, 3), BOOL), T((2, 3)), T((2, 3)),
                                      T((4,), I32), T((4,), I32))
    outs = [op(g, "and", [p, q], (2, 3), BOOL), op(g, "or", [p, q], (2, 3), BOOL),
            op(g, "not", [p], (2, 3), BOOL)]
    for d in ("EQ", "NE", "LT", "LE", "GT", "GE"):
        outs.append(op(g, "compare", [x, y], (2, 3), BOOL, comparison_direction=d))
        outs.append(op(g, "compare", [i, j], (4,), BOOL, comparison_direction=d))
    outs.append(op(g, "compare", [p, q], (2, 3), BOOL, comparison_direction="LT"))
    outs.append(op(g, "select", [p, x, y], (2, 3)))
    lo, hi = const(g, -0.5), const(g, np.full((2, 3), 0.5))  # a scalar and a full bound
    outs.append(op(g, "clamp", [lo, x, hi], (2, 3)))
    g.outputs = outs
    ps, qs = rng.random((2, 3)) < 0.5, rng.random((2, 3)) < 0.5
    xs, ys = rand(rng, (2, 3)).astype(F32), rand(rng, (2, 3)).astype(F32)
    ys[0, 0] = xs[0, 0]  # one tie
    iv, jv = rng.integers(0, 3, 4), rng.integers(0, 3, 4)
    cmp = {"EQ": np.equal, "NE": np.not_equal, "LT": np.less, "LE": np.less_equal,
           "GT": np.greater, "GE": np.greater_equal}
    exp = [ps & qs, ps | qs, ~ps]
    for d in cmp.values():
        exp += [d(xs, ys), d(iv, jv)]
    exp += [ps < qs, np.where(ps, xs, ys), np.clip(xs, -0.5, 0.5)]
    return g, [ps, qs, xs, ys, iv.astype(np.int32), jv.astype(np.int32)], exp


@case()
def case_convert(rng):
    g, (x, i, p) = new_graph(T((6,)), T((6,), I64), T((6,), BOOL))
    g.outputs = [op(g, "convert", [v], (6,), to, dtype=to)
                 for v, to in ((x, I32), (x, F64), (i, F32), (i, I32), (p, F32), (x, BOOL))]
    xs = np.array([-2.7, -0.5, 0.0, 0.4, 1.5, 3.9], F32)  # float -> int rounds toward zero
    iv, ps = rng.integers(-1000, 1000, 6), rng.random(6) < 0.5
    return g, [xs, iv.astype(np.int64), ps], [
        np.trunc(xs), xs.astype(np.float64), iv, iv, ps.astype(float), xs != 0]


@case()
def case_constant_iota(rng):
    g, _ = new_graph()
    w = rand(rng, (5, 7)).astype(F32)  # more than HEX_ABOVE elements: the hex form
    g.outputs = [const(g, np.array([1.5, -0.0, np.inf, -np.inf, np.nan, 1e-45], F32)),
                 const(g, np.array([0.1, 1e-310, -np.inf, 2.0 ** 70], F64), F64),
                 const(g, w), const(g, np.float32(3.25)), const(g, np.full((2, 2), 7), I32),
                 const(g, np.array([[True, False]]), BOOL), const(g, np.array([2 ** 40, -3]), I64),
                 op(g, "iota", [], (2, 3), I32, iota_dimension=1, shape=(2, 3), dtype=I32),
                 op(g, "iota", [], (3, 2), F32, iota_dimension=0, shape=(3, 2), dtype=F32)]
    return g, [], [None] * 7 + [np.broadcast_to(np.arange(3), (2, 3)),
                                np.broadcast_to(np.arange(3)[:, None], (3, 2))]


def constants_are_bit_exact(outs, graph):
    """Constants must come back bit for bit: -0.0, inf, nan, denormals, hex blobs."""
    for out, node in zip(outs, graph.nodes):
        if node.op == "constant":
            want = np.asarray(node.attrs["value"]).astype(out.dtype)
            assert out.shape == want.shape and out.tobytes() == want.tobytes(), node.attrs["value"]


EXTRA_CHECKS = {"constant_iota": constants_are_bit_exact}


@case()
def case_movement(rng):
    g, (x, v, s, a, b) = new_graph(T((2, 3, 4)), T((3,)), T(()), T((2, 3)), T((2, 1)))
    g.outputs = [
        op(g, "broadcast_in_dim", [v], (2, 3, 4), broadcast_dimensions=[1], shape=(2, 3, 4)),
        op(g, "broadcast_in_dim", [s], (2, 2), broadcast_dimensions=[], shape=(2, 2)),
        op(g, "broadcast_in_dim", [b], (2, 4), broadcast_dimensions=[0, 1], shape=(2, 4)),
        op(g, "reshape", [x], (4, 6), shape=(4, 6)),
        op(g, "reshape", [s], (1, 1), shape=(1, 1)),
        op(g, "transpose", [x], (4, 2, 3), permutation=[2, 0, 1]),
        op(g, "slice", [x], (1, 2, 2), start_indices=[1, 0, 1], limit_indices=[2, 3, 4],
           strides=[1, 2, 2]),
        op(g, "reverse", [x], (2, 3, 4), dimensions=[0, 2]),
        op(g, "pad", [a, s], (4, 8), edge_padding_low=[1, 0], edge_padding_high=[1, 1],
           interior_padding=[0, 2]),
        op(g, "pad", [a, s], (2, 2), edge_padding_low=[0, -1], edge_padding_high=[0, 0],
           interior_padding=[0, 0]),  # negative padding crops
        op(g, "concatenate", [a, b, a], (2, 7), dimension=1),
    ]
    xs, vs, ss = rand(rng, (2, 3, 4)), rand(rng, (3,)), rand(rng, ())
    av, bv = rand(rng, (2, 3)), rand(rng, (2, 1))
    padded = np.full((4, 8), ss)
    padded[1:3, 0:7:3] = av
    return g, [t.astype(F32) for t in (xs, vs, ss, av, bv)], [
        np.broadcast_to(vs[None, :, None], (2, 3, 4)), np.full((2, 2), ss),
        np.broadcast_to(bv, (2, 4)), xs.reshape(4, 6), ss.reshape(1, 1),
        xs.transpose(2, 0, 1), xs[1:2, 0:3:2, 1:4:2], xs[::-1, :, ::-1], padded, av[:, 1:],
        np.concatenate([av, bv, av], 1)]


@case()
def case_reduce(rng):
    g, (x, k) = new_graph(T((2, 3, 4)), T((3, 4), I32))
    zero, one = const(g, 0.0), const(g, 1.0)
    ninf, inf = const(g, -np.inf), const(g, np.inf)
    g.outputs = [op(g, "reduce", [x, zero], (2, 4), dimensions=[1], computation="add"),
                 op(g, "reduce", [x, ninf], (3,), dimensions=[0, 2], computation="max"),
                 op(g, "reduce", [x, inf], (), dimensions=[0, 1, 2], computation="min"),
                 op(g, "reduce", [x, one], (2, 3), dimensions=[2], computation="multiply"),
                 op(g, "reduce", [k, const(g, 0, I32)], (4,), I32, dimensions=[0],
                    computation="add")]
    xs, ks = rand(rng, (2, 3, 4)), rng.integers(-9, 9, (3, 4))
    return g, [xs.astype(F32), ks.astype(np.int32)], [
        xs.sum(1), xs.max((0, 2)), xs.min(), xs.prod(2), ks.sum(0)]


@case()
def case_dot_general(rng):
    g, (a, b, c, d, u, w) = new_graph(T((2, 3)), T((3, 4)), T((2, 3, 4)), T((2, 5, 3)),
                                      T((3,), F64), T((3,), F64))
    g.outputs = [
        op(g, "dot_general", [a, b], (2, 4), lhs_batching_dimensions=[], rhs_batching_dimensions=[],
           lhs_contracting_dimensions=[1], rhs_contracting_dimensions=[0]),
        op(g, "dot_general", [c, d], (2, 4, 5), lhs_batching_dimensions=[0],  # batched, lhs^T
           rhs_batching_dimensions=[0], lhs_contracting_dimensions=[1],
           rhs_contracting_dimensions=[2]),
        op(g, "dot_general", [u, w], (), F64, lhs_batching_dimensions=[],
           rhs_batching_dimensions=[], lhs_contracting_dimensions=[0],
           rhs_contracting_dimensions=[0]),
        op(g, "dot_general", [a, b], (2, 3, 3, 4), lhs_batching_dimensions=[],  # outer product
           rhs_batching_dimensions=[], lhs_contracting_dimensions=[],
           rhs_contracting_dimensions=[]),
    ]
    av, bv, cv, dv = (rand(rng, s) for s in ((2, 3), (3, 4), (2, 3, 4), (2, 5, 3)))
    uv, wv = rand(rng, 3), rand(rng, 3)
    return g, [t.astype(F32) for t in (av, bv, cv, dv)] + [uv, wv], [
        np.einsum("ij,jk->ik", av, bv), np.einsum("bji,bkj->bik", cv, dv), np.dot(uv, wv),
        np.einsum("ij,kl->ijkl", av, bv)]


def conv_reference(x, w, strides, padding, lhs_dilation, rhs_dilation, fgc=1, bgc=1):
    """StableHLO convolution by explicit loops; x is N,C,spatial..., w is O,I,spatial..."""
    def dilate(a, d):
        out = np.zeros(a.shape[:2] + tuple((s - 1) * k + 1 for s, k in zip(a.shape[2:], d)))
        out[(slice(None),) * 2 + tuple(slice(None, None, k) for k in d)] = a
        return out
    xp = np.pad(dilate(x, lhs_dilation), [(0, 0), (0, 0)] + [tuple(p) for p in padding])
    wd = dilate(w, rhs_dilation)
    n, o, i = x.shape[0] // bgc, w.shape[0], w.shape[1]
    spatial = [(xs - ks) // s + 1 for xs, ks, s in zip(xp.shape[2:], wd.shape[2:], strides)]
    out = np.zeros([n, o] + spatial)
    for b in range(n):
        for f in range(o):
            gf, gb = f // (o // fgc), f // (o // bgc)  # feature group, batch group
            image = xp[gb * n + b, gf * i:(gf + 1) * i]
            for pos in np.ndindex(*spatial):
                window = tuple(slice(p * s, p * s + k)
                               for p, s, k in zip(pos, strides, wd.shape[2:]))
                out[(b, f) + pos] = np.sum(image[(slice(None),) + window] * wd[f])
    return out


NCHW = dict(input_batch_dimension=0, input_feature_dimension=1, input_spatial_dimensions=[2, 3],
            kernel_output_feature_dimension=0, kernel_input_feature_dimension=1,
            kernel_spatial_dimensions=[2, 3], output_batch_dimension=0,
            output_feature_dimension=1, output_spatial_dimensions=[2, 3])
NHWC = dict(input_batch_dimension=0, input_feature_dimension=3, input_spatial_dimensions=[1, 2],
            kernel_output_feature_dimension=3, kernel_input_feature_dimension=2,
            kernel_spatial_dimensions=[0, 1], output_batch_dimension=0,
            output_feature_dimension=3, output_spatial_dimensions=[1, 2])


def conv(g, x, w, shape, **attrs):
    attrs = dict(dict(window_strides=[1, 1], padding=[(0, 0), (0, 0)], lhs_dilation=[1, 1],
                      rhs_dilation=[1, 1], dimension_numbers=NCHW, feature_group_count=1,
                      batch_group_count=1), **attrs)
    return op(g, "convolution", [x, w], shape, **attrs)


@case()
def case_convolution(rng):
    g, (x, w, wg, xb, wb, xh, wh, x1, w1) = new_graph(
        T((2, 4, 5, 5)), T((3, 4, 3, 3)), T((4, 2, 2, 2)), T((4, 2, 3, 3)), T((4, 2, 2, 2)),
        T((1, 5, 4, 2)), T((3, 2, 2, 3)), T((1, 2, 6)), T((2, 2, 3)))
    g.outputs = [
        conv(g, x, w, (2, 3, 3, 1), window_strides=[2, 1], padding=[(1, 1), (0, 0)],
             rhs_dilation=[1, 2]),
        conv(g, x, wg, (2, 4, 9, 10), padding=[(0, 1), (1, 1)], lhs_dilation=[2, 2],
             feature_group_count=2),
        conv(g, xb, wb, (2, 4, 2, 2), batch_group_count=2),
        conv(g, xh, wh, (1, 3, 4, 3), padding=[(0, 0), (1, 0)], dimension_numbers=NHWC),
        op(g, "convolution", [x1, w1], (1, 2, 3), window_strides=[2], padding=[(1, 0)],
           lhs_dilation=[1], rhs_dilation=[1], feature_group_count=1, batch_group_count=1,
           dimension_numbers=dict(
               input_batch_dimension=0, input_feature_dimension=1, input_spatial_dimensions=[2],
               kernel_output_feature_dimension=0, kernel_input_feature_dimension=1,
               kernel_spatial_dimensions=[2], output_batch_dimension=0,
               output_feature_dimension=1, output_spatial_dimensions=[2])),
    ]
    ins = [rand(rng, t.shape) for t in (v.type for v in g.inputs)]
    xv, wv, wgv, xbv, wbv, xhv, whv, x1v, w1v = ins
    nhwc = conv_reference(xhv.transpose(0, 3, 1, 2), whv.transpose(3, 2, 0, 1), [1, 1],
                          [(0, 0), (1, 0)], [1, 1], [1, 1]).transpose(0, 2, 3, 1)
    return g, [t.astype(F32) for t in ins], [
        conv_reference(xv, wv, [2, 1], [(1, 1), (0, 0)], [1, 1], [1, 2]),
        conv_reference(xv, wgv, [1, 1], [(0, 1), (1, 1)], [2, 2], [1, 1], fgc=2),
        conv_reference(xbv, wbv, [1, 1], [(0, 0), (0, 0)], [1, 1], [1, 1], bgc=2), nhwc,
        conv_reference(x1v, w1v, [2], [(1, 0)], [1], [1])]


@case()
def case_gather(rng):
    g, (table, rows, m, points, starts) = new_graph(T((5, 3)), T((4,), I32), T((3, 4)),
                                                    T((2, 2), I64), T((2, 2), I32))
    g.outputs = [
        op(g, "gather", [table, rows], (4, 3), offset_dims=[1],  # an embedding lookup
           collapsed_slice_dims=[0], start_index_map=[0], index_vector_dim=1, slice_sizes=[1, 3]),
        op(g, "gather", [m, points], (2,), offset_dims=[], collapsed_slice_dims=[0, 1],  # m[i, j]
           start_index_map=[0, 1], index_vector_dim=1, slice_sizes=[1, 1]),
        op(g, "gather", [m, starts], (2, 2), offset_dims=[1], collapsed_slice_dims=[0],  # windows
           start_index_map=[0, 1], index_vector_dim=1, slice_sizes=[1, 2]),
    ]
    tv, mv = rand(rng, (5, 3)), rand(rng, (3, 4))
    rv = rng.integers(0, 5, 4)
    pv = np.stack([rng.integers(0, 3, 2), rng.integers(0, 4, 2)], 1)
    sv = np.stack([rng.integers(0, 3, 2), rng.integers(0, 3, 2)], 1)
    return g, [tv.astype(F32), rv.astype(np.int32), mv.astype(F32), pv.astype(np.int64),
               sv.astype(np.int32)], [
        tv[rv], mv[pv[:, 0], pv[:, 1]], np.stack([mv[r, c:c + 2] for r, c in sv])]


@case()
def case_scatter(rng):
    # each scatter gets an operand of its own: jaxlib 0.10.2's interpreter writes a scatter's
    # result into its operand's buffer, so any other reader of the operand sees the update
    g, (base, base2, idx, upd, uidx) = new_graph(T((4, 3)), T((4, 3)), T((5, 1), I32), T((5, 3)),
                                                 T((2, 1), I32))
    dims = dict(update_window_dims=[1], inserted_window_dims=[0], scatter_dims_to_operand_dims=[0],
                index_vector_dim=1)
    two = op(g, "slice", [upd], (2, 3), start_indices=[0, 0], limit_indices=[2, 3], strides=[1, 1])
    g.outputs = [op(g, "scatter", [base, idx, upd], (4, 3), computation="add", **dims),
                 op(g, "scatter", [base2, uidx, two], (4, 3), computation="replace", **dims)]
    bv, b2v, uv = rand(rng, (4, 3)), rand(rng, (4, 3)), rand(rng, (5, 3))
    iv = np.array([[1], [3], [1], [0], [1]])  # duplicates accumulate
    uiv = rng.choice(4, 2, replace=False)[:, None]
    added, replaced = bv.copy(), b2v.copy()
    np.add.at(added, iv[:, 0], uv)
    replaced[uiv[:, 0]] = uv[:2]
    return g, [bv.astype(F32), b2v.astype(F32), iv.astype(np.int32), uv.astype(F32),
               uiv.astype(np.int32)], [added, replaced]


def softmax_decomposition(shape, axis):
    d, (x,) = new_graph(T(shape), name="softmax")
    keep = [i for i in range(len(shape)) if i != axis]
    rshape = tuple(shape[i] for i in keep)
    m = op(d, "reduce", [x, const(d, -np.inf)], rshape, dimensions=[axis], computation="max")
    e = op(d, "exponential", [op(d, "subtract", [x, op(d, "broadcast_in_dim", [m], shape,
           broadcast_dimensions=keep, shape=shape)], shape)], shape)
    s = op(d, "reduce", [e, const(d, 0.0)], rshape, dimensions=[axis], computation="add")
    d.outputs = [op(d, "divide", [e, op(d, "broadcast_in_dim", [s], shape,
                                         broadcast_dimensions=keep, shape=shape)], shape)]
    return d


def softmax_ref(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


@case("decompose", "keep")
def case_composite_softmax(rng):
    g, (x,) = new_graph(T((2, 3)))
    y = g.add("composite", [x], [T((2, 3))], dict(name="needle.softmax", axis=1),
              decomposition=softmax_decomposition((2, 3), 1)).output
    g.outputs = [op(g, "multiply", [y, y], (2, 3)), y]
    xs = rand(rng, (2, 3))
    return g, [xs.astype(F32)], [softmax_ref(xs, 1) ** 2, softmax_ref(xs, 1)]


@case("decompose", "keep")
def case_composite_shared_decomposition(rng):
    """Two composite nodes holding one decomposition Graph: inlined twice, or one function."""
    g, (x, y) = new_graph(T((2, 3)), T((2, 3)))
    d = softmax_decomposition((2, 3), 1)
    g.outputs = [g.add("composite", [v], [T((2, 3))], dict(name="needle.softmax", axis=1),
                       decomposition=d).output for v in (x, y)]
    xs, ys = rand(rng, (2, 3)), rand(rng, (2, 3))
    return g, [xs.astype(F32), ys.astype(F32)], [softmax_ref(xs, 1), softmax_ref(ys, 1)]


def axpy_decomposition():
    """needle.axpy: a * x + y with a scalar a."""
    d, (a, x, y) = new_graph(T(()), T((3,)), T((3,)), name="axpy")
    ax = op(d, "multiply", [op(d, "broadcast_in_dim", [a], (3,), broadcast_dimensions=[],
                                shape=(3,)), x], (3,))
    d.outputs = [op(d, "add", [ax, y], (3,))]
    return d


@case("decompose", "keep")
def case_composite_sgd_aliases(rng):
    """A two-output composite whose decomposition holds another composite; the parameter
    and the velocity are updated in place (aliases), the learning rate is an input."""
    g, (p, grad, v, lr) = new_graph(T((3,)), T((3,)), T((3,)), T(()))
    d, (dp, dg, dv, dlr) = new_graph(T((3,)), T((3,)), T((3,)), T(()), name="sgd")
    mu = const(d, 0.9)
    v2 = d.add("composite", [mu, dv, dg], [T((3,))], dict(name="needle.axpy"),
               decomposition=axpy_decomposition()).output
    neg = op(d, "negate", [dlr], ())
    p2 = d.add("composite", [neg, v2, dp], [T((3,))], dict(name="needle.axpy"),
               decomposition=axpy_decomposition()).output
    d.outputs = [p2, v2]
    node = g.add("composite", [p, grad, v, lr], [T((3,)), T((3,))],
                 dict(name="needle.sgd", momentum=0.9, nesterov=False, dims=[0], mode="step",
                      version=1), decomposition=d)
    loss = op(g, "reduce", [op(g, "multiply", [p, p], (3,)), const(g, 0.0)], (), dimensions=[0],
              computation="add")
    g.outputs = [node.outputs[0], loss, node.outputs[1]]
    g.aliases = {0: 0, 2: 2}
    pv, gv, vv = rand(rng, 3), rand(rng, 3), rand(rng, 3)
    lrv = np.float64(0.1)
    v2v = 0.9 * vv + gv
    return g, [t.astype(F32) for t in (pv, gv, vv, lrv)], [pv - lrv * v2v, (pv ** 2).sum(), v2v]


def covered_ops(graph):
    ops = set()
    for n in graph.nodes:
        ops.add(n.op)
        if n.decomposition is not None:
            ops |= covered_ops(n.decomposition)
    return ops


# ---------------------------------------------------------------------------------- running
@pytest.fixture(scope="module")
def built():
    """name -> (graph, inputs, expected); inputs fresh per case, seeded by the case name."""
    return {name: fn(np.random.default_rng(zlib.crc32(name.encode())))
            for name, (fn, _) in CASES.items()}


@pytest.fixture(scope="module")
def results(built):
    """(name, composites) -> (text, outputs): every case exported and run in one subprocess."""
    keys = [(name, mode) for name, (_, modes) in CASES.items() for mode in modes]
    texts = {k: stablehlo.export(built[k[0]][0], composites=k[1]) for k in keys}
    outs = stablehlo.evaluate_many([(texts[k], built[k[0]][1]) for k in keys], errors="return")
    return {k: (texts[k], o) for k, o in zip(keys, outs)}


PARAMS = [(name, mode) for name, (_, modes) in CASES.items() for mode in modes]


@pytest.mark.parametrize("name,mode", PARAMS, ids=[f"{n}-{m}" for n, m in PARAMS])
def test_export_parses_verifies_and_evaluates(name, mode, built, results):
    graph, inputs, expected = built[name]
    text, outs = results[(name, mode)]
    stablehlo.parse_and_verify(text)
    if isinstance(outs, Exception):
        raise outs
    assert len(outs) == len(graph.outputs)
    for k, (out, value, want) in enumerate(zip(outs, graph.outputs, expected)):
        assert out.shape == value.shape, f"output {k}"
        assert out.dtype == np.dtype(value.dtype), f"output {k}"
        if want is None:
            continue
        if value.dtype.startswith("float"):
            np.testing.assert_allclose(out, want, rtol=RTOL[value.dtype], atol=ATOL[value.dtype],
                                       err_msg=f"output {k}")
        else:
            np.testing.assert_array_equal(out, want, err_msg=f"output {k}")
    if name in EXTRA_CHECKS:
        EXTRA_CHECKS[name](outs, graph)


def test_every_op_is_covered(built):
    covered = set().union(*(covered_ops(g) for g, _, _ in built.values()))
    assert ALL_OPS <= covered, f"ops without a case: {sorted(ALL_OPS - covered)}"
    exported = set(stablehlo.PROPERTIES) | {"composite"}
    assert ALL_OPS <= exported
    from needle.compiler.ops import OPS
    assert set(OPS) <= exported, f"ops of the op table without export: {set(OPS) - exported}"
    assert set(OPS) <= covered, f"ops of the op table without a case: {set(OPS) - covered}"


def test_composites_keep_and_decompose(results):
    kept, _ = results[("composite_sgd_aliases", "keep")]
    inlined, _ = results[("composite_sgd_aliases", "decompose")]
    assert "stablehlo.composite" not in inlined and "func.func private" not in inlined
    assert kept.count('"stablehlo.composite"') == 3  # sgd in @main, two axpy inside it
    assert 'name = "needle.sgd"' in kept and "decomposition = @needle.sgd_0" in kept
    assert "func.func private @needle.sgd_0" in kept and "func.func private @needle.axpy_1" in kept
    assert ('composite_attributes = {momentum = 0.9 : f64, nesterov = false, '
            'dims = array<i64: 0>, mode = "step"}') in kept
    assert "version = 1 : i32" in kept
    assert 'decomposition = @needle.axpy_1, name = "needle.axpy"}>' in kept  # no attributes
    soft, _ = results[("composite_softmax", "keep")]
    assert "composite_attributes = {axis = 1 : i64}" in soft
    shared, _ = results[("composite_shared_decomposition", "keep")]
    assert shared.count("decomposition = @needle.softmax_0") == 2
    assert shared.count("func.func private") == 1


def test_reference_interpreter_agrees(built, results):
    """Needle's NumPy interpreter gives what jaxlib's gives on every case."""
    from needle.compiler import reference
    for (name, mode), (_, outs) in results.items():
        graph, inputs, _ = built[name]
        if isinstance(outs, Exception):
            continue  # reported by test_export_parses_verifies_and_evaluates
        ours = reference.evaluate(graph, *inputs)
        assert len(ours) == len(outs), name
        for k, (a, b) in enumerate(zip(outs, ours)):
            b = np.asarray(b)
            assert (b.shape, b.dtype) == (a.shape, a.dtype), f"{name} output {k}"
            if a.dtype.kind == "f":
                np.testing.assert_allclose(b, a, rtol=RTOL[a.dtype.name], atol=ATOL[a.dtype.name],
                                           err_msg=f"{name} output {k}")
            else:
                np.testing.assert_array_equal(b, a, err_msg=f"{name} output {k}")


def test_aliases_are_jax_donations(results):
    text, _ = results[("composite_sgd_aliases", "decompose")]
    assert "%arg0: tensor<3xf32> {tf.aliasing_output = 0 : i32}" in text
    assert "%arg2: tensor<3xf32> {tf.aliasing_output = 2 : i32}" in text
    assert "%arg1: tensor<3xf32>," in text  # the gradient is not donated
    g, (x,) = new_graph(T((2,)))
    g.outputs, g.aliases = [op(g, "convert", [x], (2,), F64, dtype=F64)], {0: 0}
    with pytest.raises(ValueError, match="types"):
        stablehlo.export(g)


def test_pretty_form_round_trips():
    g, (x, y) = new_graph(T((2, 3)), T((3, 2)))
    g.outputs = [op(g, "dot_general", [x, y], (2, 2), lhs_batching_dimensions=[],
                    rhs_batching_dimensions=[], lhs_contracting_dimensions=[1],
                    rhs_contracting_dimensions=[0])]
    pretty = str(stablehlo.parse_and_verify(stablehlo.export(g)))
    assert "stablehlo.dot_general %arg0, %arg1, contracting_dims = [1] x [0]" in pretty
    assert str(stablehlo.parse_and_verify(pretty)) == pretty


def test_errors():
    g, (x,) = new_graph(T((2,)))
    g.outputs = [op(g, "frobnicate", [x], (2,))]
    with pytest.raises(NotImplementedError, match="frobnicate"):
        stablehlo.export(g)
    g.nodes[0].op = "negate"
    with pytest.raises(ValueError, match="composites"):
        stablehlo.export(g, composites="inline")
    g2, _ = new_graph(T((2,)))
    g2.outputs = [x]  # a value of another graph
    with pytest.raises(ValueError, match="before any node"):
        stablehlo.export(g2)
    from jaxlib.mlir import ir
    with pytest.raises(ir.MLIRError):
        stablehlo.parse_and_verify(
            'func.func @main() -> () { %0 = "stablehlo.nope"() : () -> tensor<f32> }')


def test_interpreter_errors_are_reported():
    g, (x,) = new_graph(T((2,)))
    g.outputs = [op(g, "negate", [x], (2,))]
    text = stablehlo.export(g)
    ok, = stablehlo.evaluate_many([(text, [np.ones(2, F32)])])
    np.testing.assert_array_equal(ok[0], -np.ones(2))
    with pytest.raises(RuntimeError, match="case 1"):
        stablehlo.evaluate_many([(text, [np.ones(2, F32)]), (text, [])])


def test_interpreter_aborts_are_survived():
    """An op the interpreter does not support kills its process (LLVM ERROR, SIGABRT): the
    case is reported and the cases after it still run in a new worker."""
    custom = """func.func public @main(%a: tensor<2xf32>) -> tensor<2xf32> {
      %0 = "stablehlo.custom_call"(%a) <{call_target_name = "needle_nope"}>
        : (tensor<2xf32>) -> tensor<2xf32>
      return %0 : tensor<2xf32>
    }"""
    g, (x,) = new_graph(T((2,)))
    g.outputs = [op(g, "exponential", [x], (2,))]
    ok = stablehlo.export(g)
    x0 = np.zeros(2, F32)
    died, after, wrong = stablehlo.evaluate_many(
        [(custom, [x0]), (ok, [x0]), (ok, [x0.astype(F64)])], errors="return")
    assert isinstance(died, RuntimeError) and "died on case 0" in str(died)
    assert "custom_call" in str(died)
    np.testing.assert_array_equal(after[0], np.ones(2))
    assert isinstance(wrong, RuntimeError) and "tensor<2xf64>" in str(wrong)  # the diagnostic


def test_hand_types_agree_with_infer_types(built):
    """The out types written by hand here are what the op table infers."""
    from needle.compiler import ops

    def check(graph):
        for n in graph.nodes:
            if n.decomposition is not None:
                check(n.decomposition)
            inferred = ops.infer_types(n.op, [v.type for v in n.inputs], n.attrs, n.decomposition)
            assert inferred == [v.type for v in n.outputs], (n.op, n.attrs)

    for graph, _, _ in built.values():
        check(graph)


# ------------------------------------------------------------------------- against jax.jit
def test_against_jax_jit(built, results):
    """The interpreter on our export agrees with XLA on jax's own lowering of the same program."""
    jax = pytest.importorskip("jax")
    from jax import lax
    cpu = jax.devices("cpu")[0]
    programs = {
        "convolution": lambda x, w, wg, xb, wb, xh, wh, x1, w1: (
            lax.conv_general_dilated(x, w, (2, 1), [(1, 1), (0, 0)], rhs_dilation=(1, 2)),
            lax.conv_general_dilated(x, wg, (1, 1), [(0, 1), (1, 1)], lhs_dilation=(2, 2),
                                     feature_group_count=2),
            lax.conv_general_dilated(xb, wb, (1, 1), "VALID", batch_group_count=2),
            lax.conv_general_dilated(xh, wh, (1, 1), [(0, 0), (1, 0)],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")),
            lax.conv_general_dilated(x1, w1, (2,), [(1, 0)])),
        "dot_general": lambda a, b, c, d, u, w: (
            a @ b, jax.numpy.einsum("bji,bkj->bik", c, d), u @ w,
            jax.numpy.einsum("ij,kl->ijkl", a, b)),
        "composite_softmax": lambda x: (jax.nn.softmax(x, axis=1) ** 2, jax.nn.softmax(x, axis=1)),
        "scatter": lambda b, b2, i, u, ui: (b.at[i[:, 0]].add(u), b2.at[ui[:, 0]].set(u[:2])),
    }
    for name, fn in programs.items():
        graph, inputs, _ = built[name]
        _, outs = results[(name, "decompose")]
        with jax.default_device(cpu), jax.enable_x64(True):  # the f64 inputs stay f64
            want = jax.jit(fn)(*inputs)
        for k, (out, w) in enumerate(zip(outs, want)):
            np.testing.assert_allclose(out, np.asarray(w), rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name} output {k}")


def test_jax_text_runs_in_our_evaluate():
    jax = pytest.importorskip("jax")
    x = np.arange(6, dtype=F32).reshape(2, 3)
    text = jax.jit(lambda a: (a.sum(0), a.T * 2)).lower(x).as_text()
    s, t = stablehlo.evaluate(text, x)
    np.testing.assert_allclose(s, x.sum(0))
    np.testing.assert_allclose(t, x.T * 2)
