"""needle.compiler.reference (the NumPy interpreter of the IR) and needle.compiler.executor
(the IR on a Needle device).

Every case builds a small graph by hand and checks two things: the reference against a
float64 NumPy expectation written out here with independent code (np.einsum for
dot_general, explicit loops for convolution, gather and scatter, StableHLO's own
interpreter tests for a few cases), and the executor on each device against the
reference. Inputs are fresh random draws on every run (their seed is recorded on the test).
"""
import itertools

import numpy as np
import pytest

import needle
from needle.compiler import reference
from needle.compiler.executor import Executor, run
from needle.compiler.ir import Graph, TensorType
from needle.compiler.ops import infer_types  # cross-checks the types the tests write out

from helpers import fresh_rng

IR_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64",
             np.dtype(np.int32): "int32", np.dtype(np.int64): "int64", np.dtype(bool): "bool"}
#: reference vs the float64 expectations; the executor (float32 on a device) vs reference
REF_TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-12)}
EXEC_TOL = dict(rtol=2e-5, atol=2e-5)


@pytest.fixture
def rng(request):
    return fresh_rng(request)


class Builder:
    """A graph under construction. Out types are written by the test, and checked against
    the op table's shape rules (``needle.compiler.ops.infer_types``) unless ``check_types``
    is off (for forms the table does not list)."""

    def __init__(self, check_types=True):
        self.g, self.check_types = Graph(), check_types

    def input(self, shape, dtype="float32"):
        return self.g.add_input(TensorType(shape, dtype))

    def op(self, op, inputs, out_shape, out_dtype=None, /, **attrs):
        """Append a node; returns its output. ``decomposition=`` (a Graph) is not an attribute."""
        decomposition = attrs.pop("decomposition", None)
        out_dtype = out_dtype or inputs[1 if op in ("select", "clamp") else 0].dtype
        out = TensorType(out_shape, out_dtype)
        if self.check_types:
            assert infer_types(op, [v.type for v in inputs], attrs, decomposition) == [out], op
        return self.g.add(op, inputs, [out], attrs, decomposition).output

    def done(self, *outputs):
        self.g.outputs = list(outputs)
        return self.g


def single(op, args, out_shape, out_dtype=None, /, **attrs):
    """A graph of one node applied to inputs shaped and typed as ``args``."""
    b = Builder()
    ins = [b.input(np.shape(a), IR_DTYPES[np.asarray(a).dtype]) for a in args]
    return b.done(b.op(op, ins, out_shape, out_dtype, **attrs))


def check(device, graph, args, expected, tol=None, exec_tol=None):
    """reference.evaluate(graph) against ``expected`` (float64 NumPy), then the executor on
    ``device`` against the reference; ints and bools exactly."""
    got = reference.evaluate(graph, *args)
    assert len(got) == len(expected) == len(graph.outputs)
    for r, e, v in zip(got, expected, graph.outputs):
        assert r.shape == v.shape and r.dtype == reference.NP_DTYPES[v.dtype], (r.dtype, v.type)
        if v.dtype in ("float32", "float64"):
            np.testing.assert_allclose(r, e, equal_nan=True, **(tol or REF_TOL[v.dtype]))
        else:
            np.testing.assert_array_equal(r, e)
    holds = device.backend.dtypes
    values = graph.inputs + [o for n in graph.nodes for o in n.outputs]
    if any(v.dtype == "float64" for v in values) and "float64" not in holds:
        return  # the reference part ran; this device cannot hold the graph's float64 values
    ex = Executor(graph, device)
    outs = ex(*args)
    assert all(o.device == device for o in outs)
    for o, r, v in zip(ex.numpy(outs), got, graph.outputs):
        assert o.shape == r.shape and o.dtype == r.dtype
        if v.dtype in ("float32", "float64"):
            np.testing.assert_allclose(o, r, equal_nan=True, **(exec_tol or EXEC_TOL))
        else:
            np.testing.assert_array_equal(o, r)
    return ex


def f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def f64(x):
    return np.asarray(x, dtype=np.float64)


# -- elementwise ------------------------------------------------------------------------------
POSITIVE = ("log", "sqrt", "rsqrt")
UNARY = {
    "negate": lambda x: -x, "exponential": np.exp, "log": np.log, "tanh": np.tanh,
    "logistic": lambda x: 1 / (1 + np.exp(-x)), "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x),
    "abs": np.abs, "sine": np.sin, "cosine": np.cos,
    "sign": lambda x: np.select([x > 0, x < 0], [1.0, -1.0], 0.0), "floor": np.floor,
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op, device, rng):
    x = f32(rng, 3, 4, scale=3.0)
    if op in POSITIVE:
        x = np.abs(x) + 0.1
    if op in ("sign", "floor"):
        x[0, :3] = [0.0, -2.0, 3.0]  # zeros and integers
    check(device, single(op, [x], x.shape), [x], [UNARY[op](f64(x))])


def test_floor_edges(device):
    # halves, integers, around 2**22 / 2**23 (where float32 loses its fraction bits), huge
    x = np.array([2.5, -2.5, 0.5, -0.5, -0.0, 3.0, -3.0, 4194303.5, -4194303.5, 8388607.0,
                  8388609.0, 1e10, -1e10, 0.99999994, -0.99999994], dtype=np.float32)
    check(device, single("floor", [x], x.shape), [x], [np.floor(f64(x))])


def test_special_values(device):
    """inf and NaN through floor and sign (the executor composes them) and select (a NaN in
    the branch not taken stays out)."""
    x = np.array([np.inf, -np.inf, np.nan, 1.5, -1.5], dtype=np.float32)
    for op, want in (("floor", np.floor(f64(x))), ("sign", np.sign(f64(x)))):
        check(device, single(op, [x], x.shape), [x], [want])
    pred = np.array([True, False, True, False, True])
    masked = np.array([-np.inf, np.inf, np.nan, -np.inf, np.nan], dtype=np.float32)  # not taken
    check(device, single("select", [pred, x[[3, 4, 3, 4, 3]], masked], x.shape),
          [pred, x[[3, 4, 3, 4, 3]], masked], [np.where(pred, f64(x[[3, 4, 3, 4, 3]]), masked)])


def test_not(device, rng):
    a = rng.random((3, 5)) < 0.5
    check(device, single("not", [a], a.shape), [a], [~a])


BINARY = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
    "power": np.power, "maximum": np.maximum, "minimum": np.minimum,
    "remainder": lambda a, b: a - np.trunc(a / b) * b,
}


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary(op, device, rng):
    a, b = f32(rng, 4, 3, scale=3.0), f32(rng, 4, 3)
    if op == "power":
        a = np.abs(a) + 0.1
    if op in ("divide", "remainder"):
        b = np.where(np.abs(b) < 0.3, 0.7, b).astype(np.float32)
    check(device, single(op, [a, b], a.shape), [a, b], [BINARY[op](f64(a), f64(b))],
          exec_tol=dict(rtol=1e-4, atol=1e-4) if op == "remainder" else None)


INT_BINARY = {
    "add": lambda a, b: a + b, "subtract": lambda a, b: a - b, "multiply": lambda a, b: a * b,
    "divide": lambda a, b: np.trunc(a / b),  # toward zero, not NumPy's floor
    "remainder": lambda a, b: a - np.trunc(a / b) * b,  # the dividend's sign
    "maximum": np.maximum, "minimum": np.minimum,
}


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("op", sorted(INT_BINARY))
def test_integer_binary(op, dtype, device, rng):
    a = rng.integers(-50, 50, (3, 6)).astype(dtype)
    b = rng.integers(1, 9, (3, 6)).astype(dtype) * rng.choice([-1, 1], (3, 6)).astype(dtype)
    check(device, single(op, [a, b], a.shape), [a, b], [INT_BINARY[op](f64(a), f64(b))])


def test_integer_power(device, rng):
    a = rng.integers(-4, 5, (12,)).astype(np.int32)
    a[:3] = [1, -1, -1]
    b = rng.integers(0, 5, (12,)).astype(np.int32)
    b[:3] = [-3, -3, -2]  # 1 / a^n: 0 unless |a| = 1
    def power(x, y):
        if y >= 0:
            return float(x) ** float(y)
        return 1.0 if x == 1 else (-1.0) ** -y if x == -1 else 0.0

    want = np.array([power(x, y) for x, y in zip(a, b)])
    check(device, single("power", [a, b], a.shape), [a, b], [want])


@pytest.mark.parametrize("op, fn", [("and", np.logical_and), ("or", np.logical_or)])
def test_logical(op, fn, device, rng):
    a, b = rng.random((4, 4)) < 0.5, rng.random((4, 4)) < 0.5
    check(device, single(op, [a, b], a.shape), [a, b], [fn(a, b)])


def test_bitwise_integers_unsupported_on_executor(device):
    a = np.array([3, 5], dtype=np.int32)
    g = single("and", [a, a], (2,))
    np.testing.assert_array_equal(reference.evaluate(g, a, a)[0], [3, 5])
    with pytest.raises(NotImplementedError, match="bitwise"):
        run(g, a, a, device=device)


@pytest.mark.parametrize("direction, fn", [("EQ", np.equal), ("NE", np.not_equal), ("LT", np.less),
                                           ("LE", np.less_equal), ("GT", np.greater),
                                           ("GE", np.greater_equal)])
def test_compare(direction, fn, device, rng):
    a = rng.integers(-2, 3, (3, 5)).astype(np.float32)
    b = rng.integers(-2, 3, (3, 5)).astype(np.float32)  # many equal pairs
    check(device, single("compare", [a, b], a.shape, "bool", comparison_direction=direction),
          [a, b], [fn(a, b)])


def test_select(device, rng):
    pred, t, f = rng.random((3, 4)) < 0.5, f32(rng, 3, 4), f32(rng, 3, 4)
    check(device, single("select", [pred, t, f], t.shape), [pred, t, f], [np.where(pred, t, f)])
    scalar = np.array(False)  # a rank-0 predicate picks a whole operand
    check(device, single("select", [scalar, t, f], t.shape), [scalar, t, f], [f64(f)])


def test_clamp(device, rng):
    x, lo, hi = f32(rng, 4, 5, scale=2), np.float32(-0.5), np.float32(0.7)
    lo_arr, hi_arr = np.array(lo), np.array(hi)
    check(device, single("clamp", [lo_arr, x, hi_arr], x.shape), [lo_arr, x, hi_arr],
          [np.array([[min(max(float(v), -0.5), 0.7) for v in row] for row in x])])
    los, his = f32(rng, 4, 5) - 1, f32(rng, 4, 5) + 1
    check(device, single("clamp", [los, x, his], x.shape), [los, x, his],
          [np.minimum(np.maximum(f64(x), los), his)])


@pytest.mark.parametrize("src, dst", [
    ("float32", "int32"), ("float32", "int64"), ("int32", "float32"), ("float32", "bool"),
    ("bool", "float32"), ("int32", "int64"), ("int64", "bool"), ("float32", "float64"),
    ("float64", "float32")])
def test_convert(src, dst, device, rng):
    x = (rng.standard_normal((3, 5)) * 5).astype(src)
    if src == "float32":
        x[0, :4] = [0.0, -2.7, 2.7, -0.2]  # toward zero: 0, -2, 2, 0
    want = [[(v != 0) if dst == "bool" else (int(v) if dst.startswith("int") else float(v))
             for v in row.tolist()] for row in x]
    check(device, single("convert", [x], x.shape, dst, dtype=dst), [x], [np.array(want)])


def test_constant_and_iota(device, rng):
    value = f32(rng, 2, 3)
    b = Builder()
    x = b.input((2, 3))
    c = b.op("constant", [], (2, 3), "float32", value=value)
    i = b.op("iota", [], (2, 3), "int32", iota_dimension=1, shape=(2, 3), dtype="int32")
    fi = b.op("convert", [i], (2, 3), "float32", dtype="float32")
    j = b.op("iota", [], (4, 2), "float32", iota_dimension=0, shape=(4, 2), dtype="float32")
    g = b.done(b.op("add", [x, c], (2, 3)), i, b.op("multiply", [fi, c], (2, 3)), c, j)
    xs = f32(rng, 2, 3)
    cols = np.array([[0, 1, 2], [0, 1, 2]])
    ex = check(device, g, [xs], [f64(xs) + value, cols, cols * f64(value), f64(value),
                                 np.array([[0, 0], [1, 1], [2, 2], [3, 3]])])
    out = ex(xs)  # a returned constant is the caller's: writing it leaves the next call alone
    out[3][...] = 0.0
    np.testing.assert_allclose(ex(xs)[3].numpy(), value)


def test_float64_graph(device, rng):
    """A float64 graph stores its ints and bools as float64 (exact to 2**53)."""
    x = rng.standard_normal((3, 4))
    big = np.array([2**40 + 1, -(2**40) - 3], dtype=np.int64)
    b = Builder()
    xi, bi = b.input((3, 4), "float64"), b.input((2,), "int64")
    pos = b.op("compare", [xi, b.op("constant", [], (3, 4), "float64", value=np.zeros((3, 4)))],
               (3, 4), "bool", comparison_direction="GT")
    g = b.done(b.op("select", [pos, xi, b.op("negate", [xi], (3, 4))], (3, 4)),
               b.op("convert", [pos], (3, 4), "int64", dtype="int64"),
               b.op("add", [bi, bi], (2,)))
    ex = check(device, g, [x, big], [np.abs(x), (x > 0).astype(int), 2 * big])
    if ex is not None:
        assert ex.index_dtype == "float64"


# -- movement -----------------------------------------------------------------------------------
def test_broadcast_in_dim(device, rng):
    v = f32(rng, 3)
    check(device, single("broadcast_in_dim", [v], (2, 3, 4), broadcast_dimensions=[1],
                         shape=(2, 3, 4)), [v], [np.tile(f64(v)[None, :, None], (2, 1, 4))])
    col = f32(rng, 3, 1)
    check(device, single("broadcast_in_dim", [col], (3, 4), broadcast_dimensions=[0, 1],
                         shape=(3, 4)), [col], [np.repeat(f64(col), 4, axis=1)])
    m = f32(rng, 4, 2)  # operand axis 0 -> result axis 2, axis 1 -> result axis 0
    want = np.empty((2, 3, 4))
    for i, j, k in itertools.product(range(2), range(3), range(4)):
        want[i, j, k] = m[k, i]
    check(device, single("broadcast_in_dim", [m], (2, 3, 4), broadcast_dimensions=[2, 0],
                         shape=(2, 3, 4)), [m], [want])
    s = np.array(1.5, dtype=np.float32)
    check(device, single("broadcast_in_dim", [s], (2, 3), broadcast_dimensions=[], shape=(2, 3)),
          [s], [np.full((2, 3), 1.5)])


def test_reshape_transpose(device, rng):
    x = f32(rng, 2, 3, 4)
    check(device, single("reshape", [x], (6, 4), shape=(6, 4)), [x], [f64(x).reshape(6, 4)])
    want = np.empty((4, 2, 3))
    for i, j, k in itertools.product(range(2), range(3), range(4)):
        want[k, i, j] = x[i, j, k]  # result axis d is operand axis permutation[d]
    check(device, single("transpose", [x], (4, 2, 3), permutation=[2, 0, 1]), [x], [want])
    # a reshape of a transpose (a non-compact view) copies first
    b = Builder()
    t = b.op("transpose", [b.input((2, 3, 4))], (4, 2, 3), permutation=[2, 0, 1])
    check(device, b.done(b.op("reshape", [t], (4, 6), shape=(4, 6))), [x], [want.reshape(4, 6)])


def test_slice_reverse(device, rng):
    x = f32(rng, 5, 7)
    check(device, single("slice", [x], (2, 3), start_indices=[1, 0], limit_indices=[5, 7],
                         strides=[2, 3]), [x], [f64(x)[[1, 3]][:, [0, 3, 6]]])
    check(device, single("slice", [x], (3, 2), start_indices=[2, 4], limit_indices=[5, 6],
                         strides=[1, 1]), [x],
          [f64(x)[2:5, 4:6]])
    check(device, single("reverse", [x], x.shape, dimensions=[1]), [x], [f64(x)[:, ::-1]])
    check(device, single("reverse", [x], x.shape, dimensions=[0, 1]), [x], [f64(x)[::-1, ::-1]])


def test_pad(device, rng):
    x, value = f32(rng, 3, 4), np.array(-7.0, dtype=np.float32)
    low, high, interior = [1, -1], [2, 1], [1, 2]
    # the spec's rule: operand[i] lands at low + i * (interior + 1); the rest is the value
    full = np.full((1 + 5 + 2, -1 + 10 + 1), -7.0)
    for i, j in itertools.product(range(3), range(4)):
        r, c = 1 + 2 * i, -1 + 3 * j
        if 0 <= r < full.shape[0] and 0 <= c < full.shape[1]:
            full[r, c] = x[i, j]
    g = single("pad", [x, value], full.shape, edge_padding_low=low, edge_padding_high=high,
               interior_padding=interior)
    check(device, g, [x, value], [full])
    b = Builder()  # a constant padding value, and edges only
    c = b.op("constant", [], (), "float32", value=np.array(0.0, np.float32))
    g = b.done(b.op("pad", [b.input((3, 4)), c], (3, 7), edge_padding_low=[0, 2],
                    edge_padding_high=[0, 1], interior_padding=[0, 0]))
    check(device, g, [x], [np.pad(f64(x), ((0, 0), (2, 1)))])


def test_concatenate(device, rng):
    a, b_, c = f32(rng, 2, 3), f32(rng, 2, 1), f32(rng, 2, 4)
    check(device, single("concatenate", [a, b_, c], (2, 8), dimension=1), [a, b_, c],
          [np.hstack([a, b_, c]).astype(np.float64)])


# -- reductions and contractions ----------------------------------------------------------------
@pytest.mark.parametrize("computation, fn, init", [("add", np.sum, 0.0), ("max", np.max, -np.inf),
                                                   ("min", np.min, np.inf),
                                                   ("multiply", np.prod, 1.0)])
def test_reduce(computation, fn, init, device, rng):
    x = f32(rng, 3, 5, 4)
    if computation == "multiply":
        x = (1 + 0.1 * x).astype(np.float32)
    for dims in ([1], [0, 2], [0, 1, 2], []):
        shape = tuple(d for i, d in enumerate(x.shape) if i not in dims)
        b = Builder()
        c = b.op("constant", [], (), "float32", value=np.array(init, np.float32))
        g = b.done(b.op("reduce", [b.input(x.shape), c], shape, dimensions=dims,
                        computation=computation))
        check(device, g, [x], [fn(f64(x), axis=tuple(dims)) if dims else f64(x)],
              exec_tol=dict(rtol=1e-5, atol=1e-5))
    # an init value that is not the identity, given as an input, combines once
    start = np.array(2.5, dtype=np.float32)
    g = single("reduce", [x, start], (3,), dimensions=[1, 2], computation=computation)
    combine = {"add": np.add, "max": np.maximum, "min": np.minimum,
               "multiply": np.multiply}[computation]
    check(device, g, [x, start], [combine(fn(f64(x), axis=(1, 2)), 2.5)])


def test_reduce_booleans(device, rng):
    p = rng.random((4, 6)) < 0.7
    for computation, fn, init in (("and", np.all, True), ("or", np.any, False)):
        b = Builder(check_types=False)  # (the op table lists add, max, min and multiply)
        c = b.op("constant", [], (), "bool", value=np.array(init))
        g = b.done(b.op("reduce", [b.input((4, 6), "bool"), c], (4,), dimensions=[1],
                        computation=computation))
        check(device, g, [p], [fn(p, axis=1)])


DOTS = {  # lhs shape, rhs shape, (lhs batch, rhs batch, lhs contracting, rhs contracting), einsum
    "matmul": ((3, 4), (4, 5), ([], [], [1], [0]), "mk,kn->mn"),
    "transposed": ((4, 3), (5, 4), ([], [], [0], [1]), "km,nk->mn"),
    "batched": ((2, 3, 4), (2, 4, 5), ([0], [0], [2], [1]), "bmk,bkn->bmn"),
    "batch_inside": ((4, 2, 3), (2, 5, 4), ([1], [0], [0], [2]), "kbm,bnk->bmn"),
    "two_contracting": ((3, 2, 4), (4, 5, 2), ([], [], [2, 1], [0, 2]), "mjk,knj->mn"),
    "outer": ((3,), (4,), ([], [], [], []), "m,n->mn"),
    "vector": ((6,), (6,), ([], [], [0], [0]), "k,k->"),
    "two_batch": ((2, 3, 4, 5), (3, 2, 5, 6), ([0, 1], [1, 0], [3], [2]), "abmk,bakn->abmn"),
}


@pytest.mark.parametrize("name", sorted(DOTS))
def test_dot_general(name, device, rng):
    ls, rs, (lb, rb, lc, rc), spec = DOTS[name]
    lhs, rhs = f32(rng, *ls), f32(rng, *rs)
    want = np.einsum(spec, f64(lhs), f64(rhs))
    g = single("dot_general", [lhs, rhs], want.shape, lhs_batching_dimensions=lb,
               rhs_batching_dimensions=rb, lhs_contracting_dimensions=lc,
               rhs_contracting_dimensions=rc)
    check(device, g, [lhs, rhs], [want], exec_tol=dict(rtol=1e-4, atol=1e-4))


def test_dot_general_integers(device, rng):
    lhs = rng.integers(-5, 5, (3, 4)).astype(np.int32)
    rhs = rng.integers(-5, 5, (4, 2)).astype(np.int32)
    g = single("dot_general", [lhs, rhs], (3, 2), lhs_batching_dimensions=[],
               rhs_batching_dimensions=[], lhs_contracting_dimensions=[1],
               rhs_contracting_dimensions=[0])
    check(device, g, [lhs, rhs], [f64(lhs) @ f64(rhs)])


def conv_loop(x, w, strides, padding, lhs_dilation, rhs_dilation, feature_groups=1, batch_groups=1):
    """Convolution of x (N, C, *spatial) with w (F, C // feature_groups, *kernel), by
    definition: each output element sums input * kernel over the taps and the group's input
    channels; an input position exists where the padded, dilated coordinate falls on an
    original element."""
    n, c = x.shape[:2]
    f, cg = w.shape[:2]
    kernel = w.shape[2:]
    ext = [(s - 1) * ld + 1 + lo + hi
           for s, ld, (lo, hi) in zip(x.shape[2:], lhs_dilation, padding)]
    out_sp = [max(0, (e - ((k - 1) * rd + 1)) // st + 1)
              for e, k, rd, st in zip(ext, kernel, rhs_dilation, strides)]
    nb, fpg, fpb = n // batch_groups, f // feature_groups, f // batch_groups
    out = np.zeros((nb, f) + tuple(out_sp))
    for b, o in itertools.product(range(nb), range(f)):
        g, bg = o // fpg, o // fpb
        for pos in itertools.product(*map(range, out_sp)):
            total = 0.0
            for ci in range(cg):
                for tap in itertools.product(*map(range, kernel)):
                    src = []
                    for p, t, st, rd, ld, (lo, _), size in zip(pos, tap, strides, rhs_dilation,
                                                               lhs_dilation, padding, x.shape[2:]):
                        q = p * st + t * rd - lo
                        if q < 0 or q % ld or q // ld >= size:
                            break
                        src.append(q // ld)
                    else:
                        total += x[(bg * nb + b, g * cg + ci) + tuple(src)] * w[(o, ci) + tap]
            out[(b, o) + pos] = total
    return out


def layout(spec):
    """Dimension numbers from layout strings like ("NHWC", "HWIO", "NHWC")."""
    lhs, rhs, out = spec
    sp = [c for c in lhs if c not in "NC"]
    return dict(input_batch_dimension=lhs.index("N"), input_feature_dimension=lhs.index("C"),
                input_spatial_dimensions=[lhs.index(c) for c in sp],
                kernel_input_feature_dimension=rhs.index("I"),
                kernel_output_feature_dimension=rhs.index("O"),
                kernel_spatial_dimensions=[rhs.index(c) for c in sp],
                output_batch_dimension=out.index("N"), output_feature_dimension=out.index("C"),
                output_spatial_dimensions=[out.index(c) for c in sp])


def canonical_to(spec, array, canonical):
    """``array`` laid out as ``canonical`` (e.g. "NCHW") transposed to layout ``spec``."""
    return np.transpose(array, [canonical.index(c) for c in spec])


CONVS = {  # N, C, spatial, F, kernel, strides, padding, lhs / rhs dilation, groups, layout
    "nhwc_same": (2, 3, (5, 5), 4, (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), (1, 1), 1, 1,
                  ("NHWC", "HWIO", "NHWC")),
    "nchw_stride2": (2, 3, (7, 6), 4, (3, 3), (2, 2), [(1, 0), (0, 2)], (1, 1), (1, 1), 1, 1,
                     ("NCHW", "OIHW", "NCHW")),
    "rect_kernel_strides": (1, 2, (7, 8), 3, (3, 2), (2, 1), [(0, 1), (1, 1)], (1, 1), (1, 1), 1, 1,
                            ("NHWC", "HWIO", "NHWC")),
    "dilations": (1, 2, (5, 4), 2, (2, 3), (1, 2), [(1, 1), (2, 0)], (1, 2), (2, 1), 1, 1,
                  ("NCHW", "OIHW", "NHWC")),
    "negative_padding": (2, 2, (6, 6), 3, (2, 2), (1, 1), [(-1, 0), (1, -2)], (1, 1), (1, 1), 1, 1,
                         ("NHWC", "OIHW", "NCHW")),
    "feature_groups": (2, 4, (5, 5), 6, (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), (1, 1), 2, 1,
                       ("NHWC", "HWIO", "NHWC")),
    "depthwise": (1, 3, (4, 4), 3, (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), (1, 1), 3, 1,
                  ("NCHW", "OIHW", "NCHW")),
    "batch_groups": (4, 2, (4, 4), 4, (2, 2), (1, 1), [(0, 0), (0, 0)], (1, 1), (1, 1), 1, 2,
                     ("NHWC", "HWIO", "NHWC")),
    "odd_layout": (2, 3, (4, 5), 2, (2, 3), (1, 1), [(0, 0), (1, 1)], (1, 1), (1, 1), 1, 1,
                   ("HNWC", "IHOW", "WCNH")),
    "conv1d": (2, 3, (9,), 4, (3,), (2,), [(1, 2)], (1,), (2,), 1, 1, ("NWC", "WIO", "NWC")),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_convolution(name, device, rng):
    n, c, sp, f, k, st, pad, ld, rd, fg, bg, spec = CONVS[name]
    spatial = "HW"[:len(sp)] if len(sp) == 2 else "W"
    x, w = f32(rng, n, c, *sp), f32(rng, f, c // fg, *k)
    want = conv_loop(f64(x), f64(w), st, pad, ld, rd, fg, bg)
    xl = canonical_to(spec[0], x, "NC" + spatial)
    wl = canonical_to(spec[1], w, "OI" + spatial)
    g = single("convolution", [xl, wl], canonical_to(spec[2], want, "NC" + spatial).shape,
               window_strides=list(st), padding=pad, lhs_dilation=list(ld), rhs_dilation=list(rd),
               dimension_numbers=layout(spec), feature_group_count=fg, batch_group_count=bg)
    check(device, g, [xl, wl], [canonical_to(spec[2], want, "NC" + spatial)],
          exec_tol=dict(rtol=1e-4, atol=1e-4))


# StableHLO's own interpreter tests (stablehlo/tests/interpret/convolution.mlir): the lhs
# and its expected results, 1x4x4x1 int64
_CONV_LHS = np.array([[1, 2, 5, 6], [3, 4, 7, 8], [10, 11, 14, 15], [12, 13, 16, 17]])
STABLEHLO_CONVS = {  # layout, kernel shape, attributes beyond strides 4 and lhs dilation 2, result
    "lhs_dilation": (("NHWC", "HWIO", "NHWC"), (3, 3, 1, 1), {}, [[[[10], [26]], [[46], [62]]]]),
    "padding": (("NHWC", "HWIO", "NHWC"), (3, 3, 1, 1), dict(padding=[(1, 1), (1, 1)]),
                [[[[1], [5]], [[10], [14]]]]),
    "batch_group_count_4": (("HNWC", "HWIO", "NHWC"), (1, 2, 1, 4), dict(batch_group_count=4),
                            [[[[1, 3, 10, 12], [5, 7, 14, 16]]]]),
    "feature_group_count_2": (("NHCW", "HIWO", "NHWC"), (1, 2, 1, 4), dict(feature_group_count=2),
                              [[[[3, 3, 11, 11]], [[21, 21, 29, 29]]]]),
}


@pytest.mark.parametrize("name", sorted(STABLEHLO_CONVS))
def test_convolution_stablehlo_cases(name, device):
    spec, kernel, extra, expected = STABLEHLO_CONVS[name]
    lhs, rhs = _CONV_LHS.reshape(1, 4, 4, 1).astype(np.int64), np.ones(kernel, dtype=np.int64)
    want = np.array(expected)
    attrs = dict(window_strides=[4, 4], lhs_dilation=[2, 2], rhs_dilation=[1, 1],
                 padding=[(0, 0), (0, 0)], feature_group_count=1, batch_group_count=1)
    attrs.update(extra)
    g = single("convolution", [lhs, rhs], want.shape, dimension_numbers=layout(spec), **attrs)
    check(device, g, [lhs, rhs], [want])


# -- gather and scatter ----------------------------------------------------------------------------
def test_gather_embedding(device, rng):
    table, ids = f32(rng, 7, 4), rng.integers(0, 7, (5,)).astype(np.int32)
    g = single("gather", [table, ids], (5, 4), offset_dims=[1], collapsed_slice_dims=[0],
               start_index_map=[0], index_vector_dim=1, slice_sizes=[1, 4])
    check(device, g, [table, ids], [np.stack([f64(table[i]) for i in ids])])


def test_gather_pairs(device, rng):
    """``logits[i, labels[i]]``, as a cross-entropy picks its targets."""
    logits = f32(rng, 6, 5)
    pairs = np.stack([np.arange(6), rng.integers(0, 5, 6)], axis=1).astype(np.int64)
    g = single("gather", [logits, pairs], (6,), offset_dims=[], collapsed_slice_dims=[0, 1],
               start_index_map=[0, 1], index_vector_dim=1, slice_sizes=[1, 1])
    check(device, g, [logits, pairs], [np.array([logits[i, j] for i, j in pairs], np.float64)])


def test_gather_windows_clamped(device, rng):
    """Windows of 2 x 3 starting at (row, col) pairs, start indices clamped into range."""
    x = f32(rng, 5, 6)
    starts = np.array([[0, 0], [4, 5], [-3, 2], [1, 9]], dtype=np.int32)
    want = np.stack([f64(x)[min(max(r, 0), 3):min(max(r, 0), 3) + 2,
                            min(max(c, 0), 3):min(max(c, 0), 3) + 3] for r, c in starts])
    g = single("gather", [x, starts], (4, 2, 3), offset_dims=[1, 2], collapsed_slice_dims=[],
               start_index_map=[0, 1], index_vector_dim=1, slice_sizes=[2, 3])
    check(device, g, [x, starts], [want])


def test_gather_scatter_batching_dims(device, rng):
    """Per-batch row picks (take_along_axis) and their scatter-add, with batching dims."""
    x, idx = f32(rng, 2, 5, 3), rng.integers(0, 5, (2, 4)).astype(np.int32)
    want = np.zeros((2, 4, 3))
    for bi, k in itertools.product(range(2), range(4)):
        want[bi, k] = x[bi, idx[bi, k]]
    g = single("gather", [x, idx], (2, 4, 3), offset_dims=[2], collapsed_slice_dims=[1],
               start_index_map=[1], index_vector_dim=2, slice_sizes=[1, 1, 3],
               operand_batching_dims=[0], start_indices_batching_dims=[0])
    check(device, g, [x, idx], [want])
    updates = f32(rng, 2, 4, 3)
    added = f64(x).copy()
    for bi, k in itertools.product(range(2), range(4)):
        added[bi, idx[bi, k]] += updates[bi, k]
    g = single("scatter", [x, idx, updates], (2, 5, 3), update_window_dims=[2],
               inserted_window_dims=[1], scatter_dims_to_operand_dims=[1], index_vector_dim=2,
               input_batching_dims=[0], scatter_indices_batching_dims=[0], computation="add")
    check(device, g, [x, idx, updates], [added])


_OPERAND = np.arange(1, 25).reshape(3, 4, 2)  # StableHLO's interpreter tests' operand


def test_gather_stablehlo_case(device):
    # stablehlo/tests/interpret/gather.mlir, gather_op_test
    indices = np.array([[[0, 0], [1, 0], [2, 1]], [[0, 1], [1, 1], [0, 9]]], dtype=np.int64)
    want = [[[[1, 2], [3, 4]], [[3, 4], [5, 6]], [[13, 14], [15, 16]]],
            [[[9, 10], [11, 12]], [[11, 12], [13, 14]], [[17, 18], [19, 20]]]]
    g = single("gather", [_OPERAND, indices], (2, 3, 2, 2), offset_dims=[2, 3],
               collapsed_slice_dims=[0], start_index_map=[1, 0], index_vector_dim=2,
               slice_sizes=[1, 2, 2])
    check(device, g, [_OPERAND, indices], [np.array(want)])


def test_scatter_stablehlo_case(device):
    # stablehlo/tests/interpret/scatter.mlir, scatter_op_test: [0, 9] is out of bounds
    indices = np.array([[[0, 2], [1, 0], [2, 1]], [[0, 1], [1, 0], [0, 9]]], dtype=np.int64)
    updates = np.ones((2, 3, 2, 2), dtype=np.int64)
    want = [[[1, 2], [5, 6], [7, 8], [7, 8]], [[10, 11], [12, 13], [14, 15], [16, 17]],
            [[18, 19], [20, 21], [21, 22], [23, 24]]]
    g = single("scatter", [_OPERAND, indices, updates], (3, 4, 2), update_window_dims=[2, 3],
               inserted_window_dims=[0], scatter_dims_to_operand_dims=[1, 0], index_vector_dim=2,
               computation="add")
    check(device, g, [_OPERAND, indices, updates], [np.array(want)])


def test_scatter_add_rows(device, rng):
    """The gradient of an embedding: rows added, repeated ids summed, an id out of range
    dropped."""
    base, ids, rows = f32(rng, 6, 3), np.array([1, 4, 1, 6, 0], dtype=np.int32), f32(rng, 5, 3)
    want = f64(base).copy()
    for i, r in zip(ids, rows):
        if 0 <= i < 6:
            want[i] += r
    g = single("scatter", [base, ids, rows], (6, 3), update_window_dims=[1],
               inserted_window_dims=[0], scatter_dims_to_operand_dims=[0], index_vector_dim=1,
               computation="add")
    check(device, g, [base, ids, rows], [want])
    operand = needle.backend_ndarray.NDArray(base, device=device)
    Executor(g, device)(operand, ids, rows)
    np.testing.assert_array_equal(operand.numpy(), base)  # the operand is not written


def test_scatter_replace(device, rng):
    base, pairs = f32(rng, 4, 5), np.array([[0, 1], [3, 4], [0, 1], [2, 0], [5, 0]], dtype=np.int64)
    values = f32(rng, 5)
    want = f64(base).copy()
    for (i, j), v in zip(pairs, values):  # in order: a repeated target keeps the last value
        if i < 4 and j < 5:
            want[i, j] = v
    g = single("scatter", [base, pairs, values], (4, 5), update_window_dims=[],
               inserted_window_dims=[0, 1], scatter_dims_to_operand_dims=[0, 1], index_vector_dim=1,
               computation="replace")
    check(device, g, [base, pairs, values], [want])
    base[0, 1] = np.inf  # a replaced inf (or NaN) is gone, not multiplied by zero
    want[0, 1] = values[2]
    check(device, g, [base, pairs, values], [want])


def test_static_indices_computed_once(device, rng, monkeypatch):
    table = f32(rng, 5, 2)
    b = Builder()
    ids = b.op("constant", [], (3,), "int32", value=np.array([4, 0, 2], dtype=np.int32))
    g = b.done(b.op("gather", [b.input((5, 2)), ids], (3, 2), offset_dims=[1],
                    collapsed_slice_dims=[0], start_index_map=[0], index_vector_dim=1,
                    slice_sizes=[1, 2]))
    ex = check(device, g, [table], [f64(table)[[4, 0, 2]]])
    calls = []
    monkeypatch.setattr(reference, "gather_positions", lambda *a: calls.append(a))
    np.testing.assert_allclose(ex.numpy(ex(table))[0], table[[4, 0, 2]])
    assert not calls


# -- composites ---------------------------------------------------------------------------------
def softmax_graph(shape):
    """Softmax over the last axis in plain ops (the decomposition of ``needle.softmax``)."""
    b = Builder()
    x = b.input(shape)
    rows, axis = shape[:-1], len(shape) - 1
    keep = list(range(axis))
    ninf = b.op("constant", [], (), "float32", value=np.array(-np.inf, np.float32))
    zero = b.op("constant", [], (), "float32", value=np.array(0, np.float32))
    m = b.op("reduce", [x, ninf], rows, dimensions=[axis], computation="max")
    spread = lambda v: b.op("broadcast_in_dim", [v], shape, shape=shape,  # noqa: E731
                            broadcast_dimensions=keep)
    e = b.op("exponential", [b.op("subtract", [x, spread(m)], shape)], shape)
    s = b.op("reduce", [e, zero], rows, dimensions=[axis], computation="add")
    return b.done(b.op("divide", [e, spread(s)], shape))


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_composite(device, rng):
    x, w = f32(rng, 3, 6), f32(rng, 6, 6)
    b = Builder()
    xi, wi = b.input((3, 6)), b.input((6, 6))
    y = b.op("dot_general", [xi, wi], (3, 6), lhs_batching_dimensions=[],
             rhs_batching_dimensions=[], lhs_contracting_dimensions=[1],
             rhs_contracting_dimensions=[0])
    p = b.op("composite", [y], (3, 6), decomposition=softmax_graph((3, 6)), name="needle.softmax")
    # a composite inside a composite's decomposition
    outer = Builder()
    inner_in = outer.input((3, 6))
    inner = outer.op("composite", [inner_in], (3, 6), decomposition=softmax_graph((3, 6)),
                     name="needle.softmax")
    twice = outer.done(outer.op("multiply", [inner, inner_in], (3, 6)))
    q = b.op("composite", [p], (3, 6), decomposition=twice, name="test.softmax_times_x")
    g = b.done(p, q)
    want = numpy_softmax(f64(x) @ f64(w))
    ex = check(device, g, [x, w], [want, numpy_softmax(want) * want],
               exec_tol=dict(rtol=1e-4, atol=1e-5))
    assert ex.info["planned_peak_bytes"] > 0


# -- the memory plan -----------------------------------------------------------------------------
CHAIN_OPS = ["negate", "exponential", "tanh", "abs", "sqrt", "logistic", "sine", "cosine", "negate",
             "tanh"]


def chain(shape, reuse_input=False):
    b = Builder()
    x = v = b.input(shape)
    for op in CHAIN_OPS:
        v = b.op(op, [v], shape)
    if reuse_input:  # x is read again at the end: it stays alive all along
        v = b.op("add", [v, x], shape)
    return b.done(v)


def test_liveness_chain(device, rng):
    shape = (64, 64)
    nbytes = 64 * 64 * 4
    x = f32(rng, *shape)
    want = f64(x)
    for op in CHAIN_OPS:
        want = UNARY[op](want)
    ex = check(device, chain(shape), [x], [want])
    assert ex.info["max_live_values"] == 2  # an op's input and its output, nothing else
    assert ex.info["max_live_values_run"] <= 2
    assert ex.info["planned_peak_bytes"] == 2 * nbytes
    assert ex.info["last_use"][ex.graph.inputs[0]] == 0
    again = Executor(chain(shape, reuse_input=True), device)
    again(x)
    assert again.info["max_live_values"] == 3 and again.info["max_live_values_run"] <= 3
    assert again.info["planned_peak_bytes"] == 3 * nbytes


def test_liveness_frees_device_memory(device, rng):
    """On devices that count their bytes, a call's peak stays within the plan (ten buffers
    without liveness)."""
    try:
        device.memory_stats()
    except NotImplementedError:
        pytest.skip(f"{device} does not report memory")
    x = needle.backend_ndarray.NDArray(f32(rng, 256, 256), device=device)
    ex = Executor(chain((256, 256)), device)
    ex(x)  # warm the pool
    device.synchronize()
    before = device.memory_stats()["bytes_in_use"]
    device.reset_peak_memory()
    out = ex(x)
    device.synchronize()
    grown = device.memory_stats()["peak_bytes"] - before
    assert grown <= ex.info["planned_peak_bytes"], (grown, ex.info["planned_peak_bytes"])
    del out


def test_planned_peak_counts_overlaps(device):
    """A diamond: both branches are alive together before the add; outputs stay to the end."""
    b = Builder()
    x = b.input((8,))
    left, right = b.op("exponential", [x], (8,)), b.op("negate", [x], (8,))
    s = b.op("add", [left, right], (8,))
    g = b.done(s, b.op("tanh", [s], (8,)))
    ex = Executor(g, device)
    ex(np.ones(8, np.float32))
    # x, left, right alive at the negate; left, right and s at the add; s, tanh(s) at the end
    assert ex.info["max_live_values"] == 3
    assert ex.info["planned_peak_bytes"] == 3 * 8 * 4


def test_aliases_update_inputs_in_place(device, rng):
    """An optimizer-style update: param -= lr * grad, written into the param's buffer."""
    b = Builder()
    p, gr, lr = b.input((4, 3)), b.input((4, 3)), b.input(())
    lrs = b.op("broadcast_in_dim", [lr], (4, 3), broadcast_dimensions=[], shape=(4, 3))
    step = b.op("multiply", [lrs, gr], (4, 3))
    g = b.done(b.op("subtract", [p, step], (4, 3)), gr)
    g.aliases = {0: 0}
    NDArray = needle.backend_ndarray.NDArray
    param, grad = f32(rng, 4, 3), f32(rng, 4, 3)
    pa, ga = NDArray(param, device=device), NDArray(grad, device=device)
    want = f64(param) - 0.1 * f64(grad)
    np.testing.assert_allclose(reference.evaluate(g, param, grad, np.float32(0.1))[0], want,
                               **REF_TOL["float32"])
    outs = Executor(g, device)(pa, ga, np.float32(0.1))
    assert outs[0] is pa
    np.testing.assert_allclose(pa.numpy(), want, rtol=1e-5, atol=1e-6)
    assert outs[1] is not ga  # an input returned as an output is a copy the caller owns
    np.testing.assert_array_equal(outs[1].numpy(), grad)


def test_errors(device, rng):
    g = single("exponential", [np.zeros(3, np.float32)], (3,))
    with pytest.raises(ValueError, match="takes 1 inputs"):
        reference.evaluate(g)
    with pytest.raises(ValueError, match="shape"):
        reference.evaluate(g, np.zeros(4))
    with pytest.raises(needle.errors.ShapeError, match="shape"):
        run(g, np.zeros(4, np.float32), device=device)
    b = Builder(check_types=False)
    bad = b.done(b.op("infeed", [b.input((3,))], (3,)))
    with pytest.raises(NotImplementedError, match="infeed"):
        reference.evaluate(bad, np.zeros(3))
    with pytest.raises(NotImplementedError, match="infeed"):
        Executor(bad, device)
    b = Builder(check_types=False)  # a declared type the op does not produce
    wrong = b.done(b.op("exponential", [b.input((3,))], (3,), "float64"))
    with pytest.raises(TypeError, match="declares"):
        reference.evaluate(wrong, np.zeros(3, np.float32))
    b = Builder()
    conv3d = b.done(b.op("convolution", [b.input((1, 4, 4, 4, 1)), b.input((2, 2, 2, 1, 1))],
                         (1, 3, 3, 3, 1), dimension_numbers=layout(("NDHWC", "DHWIO", "NDHWC")),
                         window_strides=[1] * 3, padding=[(0, 0)] * 3, lhs_dilation=[1] * 3,
                         rhs_dilation=[1] * 3))
    x, w = f32(rng, 1, 4, 4, 4, 1), f32(rng, 2, 2, 2, 1, 1)
    assert reference.evaluate(conv3d, x, w)[0].shape == (1, 3, 3, 3, 1)
    with pytest.raises(NotImplementedError, match="3 spatial dimensions"):
        run(conv3d, x, w, device=device)
