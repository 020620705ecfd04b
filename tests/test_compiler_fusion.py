"""The O2 passes (needle/compiler/passes/canonicalize.py, fuse_elementwise.py): for every
rewrite, a small hand-built graph it must change and one it must leave alone; after every
pass the graph verifies and the reference interpreter gives the results of the original
graph bit for bit on fresh random inputs (``check``, shared with test_compiler_passes).
Fused graphs also run on the executor (every device) as the unfused ones do, print and
parse back, and export to StableHLO."""
import numpy as np
import pytest

from needle.compiler import (PIPELINES, Executor, Graph, add_node, as_text, evaluate, parse,
                             run_passes, verify)
from needle.compiler.passes import (CANONICAL, FUSION, O1, PATTERN_PASSES, canonicalize, dce,
                                    fuse_elementwise, launched_work)

from test_compiler_passes import T, check, const, op, ops, random_inputs, scalar_splat

MATMUL = dict(lhs_batching_dimensions=[], rhs_batching_dimensions=[],
              lhs_contracting_dimensions=[1], rhs_contracting_dimensions=[0])


def dims(node):
    return {k: list(v) for k, v in node.attrs.items() if k.endswith("_dimensions")}


def composites(graph):
    return [n for n in graph.nodes if n.op == "composite"]


def fused(graph):
    """The ``(kind, decomposition ops)`` of each needle.fusion composite of ``graph``."""
    return [(n.attrs["kind"], ops(n.decomposition)) for n in composites(graph)
            if n.attrs["name"] == "needle.fusion"]


# -- canonicalize: transposes into dot_general --------------------------------------------

def test_transposed_lhs_folds_into_contracting_dimensions():
    g = Graph()
    a, w = g.add_input(T(5, 4)), g.add_input(T(5, 3))  # a^T @ w
    g.outputs = [op(g, "dot_general", op(g, "transpose", a, permutation=[1, 0]), w, **MATMUL)]
    out = check(g, [canonicalize, dce])
    (dot,) = out.nodes
    assert dot.inputs == [a, w] and dims(dot)["lhs_contracting_dimensions"] == [0]


def test_transposed_rhs_and_batched_operands_fold():
    g = Graph()
    q, k = g.add_input(T(2, 4, 8)), g.add_input(T(2, 6, 8))  # q @ k^T per batch
    kt = op(g, "transpose", k, permutation=[0, 2, 1])
    qt = op(g, "transpose", q, permutation=[1, 0, 2])  # (4, 2, 8): batch dimension 1
    g.outputs = [op(g, "dot_general", qt, kt, lhs_batching_dimensions=[1],
                    rhs_batching_dimensions=[0], lhs_contracting_dimensions=[2],
                    rhs_contracting_dimensions=[1])]
    out = check(g, [canonicalize, dce])
    (dot,) = out.nodes
    assert dot.inputs == [q, k]
    assert dims(dot) == {"lhs_batching_dimensions": [0], "rhs_batching_dimensions": [0],
                         "lhs_contracting_dimensions": [2], "rhs_contracting_dimensions": [2]}


def test_several_contracting_dimensions_keep_their_pairs():
    g = Graph()
    a, b = g.add_input(T(3, 5, 4)), g.add_input(T(5, 4, 2))
    at = op(g, "transpose", a, permutation=[1, 2, 0])  # (5, 4, 3)
    g.outputs = [op(g, "dot_general", at, b, lhs_batching_dimensions=[],
                    rhs_batching_dimensions=[], lhs_contracting_dimensions=[1, 0],
                    rhs_contracting_dimensions=[1, 0])]
    (dot,) = check(g, [canonicalize, dce]).nodes
    assert dot.inputs == [a, b] and dims(dot)["lhs_contracting_dimensions"] == [2, 1]


def test_transpose_that_reorders_free_dimensions_stays():
    g = Graph()
    a, w = g.add_input(T(2, 3, 4)), g.add_input(T(4, 5))
    at = op(g, "transpose", a, permutation=[1, 0, 2])  # free dimensions 0, 1 swapped
    g.outputs = [op(g, "dot_general", at, w, lhs_batching_dimensions=[],
                    rhs_batching_dimensions=[], lhs_contracting_dimensions=[2],
                    rhs_contracting_dimensions=[0])]
    before = ops(g)
    assert ops(check(g, [canonicalize, dce])) == before


def test_folded_transpose_read_elsewhere_stays_for_its_other_reader():
    g = Graph()
    a, w = g.add_input(T(4, 3)), g.add_input(T(4, 3))
    at = op(g, "transpose", a, permutation=[1, 0])
    g.outputs = [op(g, "dot_general", at, w, **MATMUL), at]
    out = check(g, [canonicalize, dce])
    assert ops(out) == ["transpose", "dot_general"]
    assert out.nodes[1].inputs == [a, w]


# -- canonicalize: layouts of broadcasts and splats ----------------------------------------

def test_transpose_of_broadcast_is_one_broadcast():
    g = Graph()
    x = g.add_input(T(3, 4))
    b = op(g, "broadcast_in_dim", x, broadcast_dimensions=[0, 2], shape=[3, 5, 4])
    g.outputs = [op(g, "transpose", b, permutation=[2, 0, 1])]
    (node,) = check(g, [canonicalize, dce]).nodes
    assert node.op == "broadcast_in_dim" and node.inputs == [x]
    assert list(node.attrs["broadcast_dimensions"]) == [1, 0]
    assert list(node.attrs["shape"]) == [4, 3, 5]


def test_broadcast_of_a_unit_reshape_is_one_broadcast():
    g = Graph()
    bias = g.add_input(T(4))
    r = op(g, "reshape", bias, shape=[1, 4, 1])
    g.outputs = [op(g, "broadcast_in_dim", r, broadcast_dimensions=[0, 2, 1], shape=[3, 1, 4])]
    (node,) = check(g, [canonicalize, dce]).nodes
    assert node.op == "broadcast_in_dim" and node.inputs == [bias]
    assert list(node.attrs["broadcast_dimensions"]) == [2]


@pytest.mark.parametrize("shape, new_shape", [((2, 6), [3, 4]), ((1, 4), [4, 1])])
def test_broadcast_of_other_reshapes_stays(shape, new_shape):
    g = Graph()
    x = g.add_input(T(*shape))  # a reshape that moves elements; an operand with a unit dimension
    r = op(g, "reshape", x, shape=new_shape)
    g.outputs = [op(g, "broadcast_in_dim", r, broadcast_dimensions=[1, 2],
                    shape=[2] + new_shape)]
    before = ops(g)
    assert ops(check(g, [canonicalize, dce])) == before


@pytest.mark.parametrize("movement", ["transpose", "reshape", "broadcast_in_dim"])
def test_movements_of_splats_broadcast_the_scalar(movement):
    g = Graph()
    x = g.add_input(T(3, 2))
    splat = const(g, np.full((2, 3), -2.5))
    attrs = {"transpose": dict(permutation=[1, 0]), "reshape": dict(shape=[3, 2]),
             "broadcast_in_dim": dict(broadcast_dimensions=[1, 2], shape=[3, 2, 3])}[movement]
    moved = op(g, movement, splat, **attrs)
    g.outputs = [op(g, "subtract", op(g, "broadcast_in_dim", x, broadcast_dimensions=[0, 1],
                                      shape=[3, 2, 3]) if movement == "broadcast_in_dim" else x,
                    moved)]
    out = check(g, [canonicalize, dce])
    b = out.outputs[0].producer.inputs[1].producer
    assert b.op == "broadcast_in_dim" and list(b.attrs["broadcast_dimensions"]) == []
    assert b.inputs[0].shape == () and b.inputs[0].producer.op == "constant"


def test_reshape_of_a_broadcast_scalar_reuses_the_scalar():
    g = Graph()
    x = g.add_input(T(6))
    two = scalar_splat(g, 2.0, (2, 3))
    scalar = two.producer.inputs[0]
    g.outputs = [op(g, "multiply", x, op(g, "reshape", two, shape=[6]))]
    out = check(g, [canonicalize, dce])
    assert ops(out) == ["constant", "broadcast_in_dim", "multiply"]
    assert out.nodes[1].inputs == [scalar]


def test_movements_of_non_splats_stay():
    g = Graph()
    x = g.add_input(T(2, 2))
    c = const(g, [[1.0, 2.0], [3.0, 4.0]])
    g.outputs = [op(g, "add", x, op(g, "transpose", c, permutation=[1, 0])),
                 op(g, "reshape", x, shape=[4])]
    before = ops(g)
    assert ops(check(g, [canonicalize, dce])) == before


# -- canonicalize: splat operands second -----------------------------------------------------

@pytest.mark.parametrize("name, dtype, number", [
    ("add", "float32", 1.5), ("multiply", "float32", -2.0), ("maximum", "float32", 0.25),
    ("minimum", "float32", -1.0), ("maximum", "int32", 0), ("add", "int64", 3),
    ("and", "bool", True), ("or", "bool", False)])
def test_commutative_ops_take_the_splat_second(name, dtype, number):
    g = Graph()
    x = g.add_input(T(2, 3, dtype=dtype))
    s = scalar_splat(g, number, x.shape, dtype)
    g.outputs = [op(g, name, s, x)]
    out = check(g, [canonicalize, dce])
    assert out.outputs[0].producer.op == name and out.outputs[0].producer.inputs == [x, s]


@pytest.mark.parametrize("direction, mirrored", [
    ("EQ", "EQ"), ("NE", "NE"), ("LT", "GT"), ("LE", "GE"), ("GT", "LT"), ("GE", "LE")])
def test_compare_takes_the_splat_second(direction, mirrored):
    g = Graph()
    x = g.add_input(T(5))
    s = scalar_splat(g, 0.0, x.shape)
    g.outputs = [op(g, "compare", s, x, comparison_direction=direction)]
    node = check(g, [canonicalize, dce]).outputs[0].producer
    assert node.inputs == [x, s] and node.attrs["comparison_direction"] == mirrored


@pytest.mark.parametrize("name, number", [
    ("add", np.nan), ("multiply", np.nan), ("maximum", 0.0), ("minimum", -0.0),
    ("subtract", 1.0), ("divide", 2.0)])
def test_operands_stay_where_order_can_change_bits(name, number):
    """NaN + NaN keeps the first NaN's payload; max(-0.0, 0.0) the second zero; subtract
    and divide do not commute."""
    g = Graph()
    x = g.add_input(T(4))
    g.outputs = [op(g, name, scalar_splat(g, number, x.shape), x)]
    before = ops(g)
    out = check(g, [canonicalize, dce])
    assert ops(out) == before and out.outputs[0].producer.inputs[1] is g.inputs[0]


def test_two_splats_stay_in_order():
    g = Graph()
    a, b = scalar_splat(g, 1.0, (3,)), scalar_splat(g, 2.0, (3,))
    g.outputs = [op(g, "add", a, b)]
    assert check(g, canonicalize).outputs[0].producer.inputs == [a, b]


# -- fuse_elementwise: loops -------------------------------------------------------------------

def test_a_chain_becomes_one_loop():
    g = Graph()
    x, y = g.add_input(T(4, 3)), g.add_input(T(4, 3))
    g.outputs = [op(g, "add", op(g, "tanh", op(g, "exponential", x)), y)]
    out = check(g, [fuse_elementwise, dce])
    assert fused(out) == [("loop", ["exponential", "tanh", "add"])]
    (node,) = out.nodes
    assert node.inputs == [x, y] and node.decomposition.name == "needle.fusion"


def test_values_used_outside_are_outputs_of_the_group():
    g = Graph()
    x = g.add_input(T(5))
    e = op(g, "exponential", x)
    n = op(g, "negate", e)
    g.outputs = [op(g, "multiply", n, e), e, op(g, "reshape", n, shape=[5, 1])]
    out = check(g, [fuse_elementwise, dce])
    (node, reshape) = out.nodes
    assert node.op == "composite" and len(node.outputs) == 3  # in node order: e, n, product
    assert out.outputs[:2] == [node.outputs[2], node.outputs[0]]
    assert reshape.inputs == [node.outputs[1]]


def test_a_value_read_by_several_members_is_read_once():
    g = Graph()
    x = g.add_input(T(3))
    g.outputs = [op(g, "add", op(g, "exponential", x), op(g, "tanh", x))]
    (node,) = check(g, [fuse_elementwise, dce]).nodes
    assert node.inputs == [g.inputs[0]] and len(node.decomposition.inputs) == 1


def test_broadcasts_that_feed_a_group_alone_join_it():
    g = Graph()
    x, bias = g.add_input(T(4, 3)), g.add_input(T(3))
    b = op(g, "broadcast_in_dim", op(g, "reshape", bias, shape=[1, 3]),
           broadcast_dimensions=[0, 1], shape=[4, 3])
    g.outputs = [op(g, "add", x, b)]  # one elementwise op and its broadcast: one launch
    out = check(g, [fuse_elementwise, dce])
    assert fused(out) == [("loop", ["reshape", "broadcast_in_dim", "add"])]
    assert out.nodes[0].inputs == [bias, x]


def test_a_broadcast_read_elsewhere_stays_an_input():
    g = Graph()
    x, bias = g.add_input(T(4, 3)), g.add_input(T(3))
    b = op(g, "broadcast_in_dim", bias, broadcast_dimensions=[1], shape=[4, 3])
    g.outputs = [op(g, "tanh", op(g, "add", x, b)), b]
    out = check(g, [fuse_elementwise, dce])
    assert ops(out) == ["broadcast_in_dim", "composite"]
    assert fused(out) == [("loop", ["add", "tanh"])]


def test_splats_are_rebuilt_in_every_group_that_reads_them():
    g = Graph()
    x, w = g.add_input(T(4, 4)), g.add_input(T(4, 4))
    zero = scalar_splat(g, 0.0, (4, 4))  # one splat, two groups (a dot_general between)
    h = op(g, "maximum", x, zero)
    d = op(g, "dot_general", h, w, **MATMUL)
    g.outputs = [op(g, "maximum", d, zero), op(g, "add", d, const(g, np.full((4, 4), 2.0)))]
    out = check(g, [fuse_elementwise, dce])  # the splat's broadcast is one launch in each
    assert ops(out) == ["composite", "dot_general", "composite", "composite"]
    relu = ("loop", ["constant", "broadcast_in_dim", "maximum"])
    assert fused(out) == [relu, relu, ("loop", ["constant", "broadcast_in_dim", "add"])]
    assert all(len(n.inputs) == 1 for n in composites(out))


def test_single_ops_stay():
    g = Graph()
    x, y = g.add_input(T(3)), g.add_input(T(3))
    g.outputs = [op(g, "add", x, y), op(g, "multiply", x, const(g, [1.0, 2.0, 3.0])),
                 op(g, "negate", op(g, "reshape", y, shape=[3]))]  # a reshape launches nothing
    before = ops(g)
    assert ops(check(g, fuse_elementwise)) == before


def test_shapes_of_a_loop_agree():
    g = Graph()
    x, y, s = g.add_input(T(3)), g.add_input(T(3)), g.add_input(T())
    pred = op(g, "compare", op(g, "negate", s), s, comparison_direction="LT")  # scalars
    lo = op(g, "exponential", s)
    v = op(g, "select", pred, x, y)
    g.outputs = [op(g, "clamp", lo, op(g, "tanh", v), op(g, "abs", lo))]
    out = check(g, [fuse_elementwise, dce])
    assert sorted(fused(out)) == [("loop", ["exponential", "abs"]),
                                  ("loop", ["negate", "compare"]),
                                  ("loop", ["select", "tanh", "clamp"])]


# -- fuse_elementwise: reductions ----------------------------------------------------------

def test_a_reduce_closes_its_producers_group():
    g = Graph()
    x, y = g.add_input(T(4, 5)), g.add_input(T(4, 5))
    p = op(g, "multiply", op(g, "exponential", x), y)
    s = op(g, "reduce", p, const(g, 0.0), dimensions=[1], computation="add")
    g.outputs = [s, op(g, "negate", p)]  # negate: p's reader after the reduce, its own node
    out = check(g, [fuse_elementwise, dce])
    assert ops(out) == ["composite", "negate"]
    assert fused(out) == [("reduction", ["exponential", "multiply", "constant", "reduce"])]
    assert out.outputs[0] is out.nodes[0].outputs[1]


def test_one_reduce_per_group_and_none_of_inputs():
    g = Graph()
    x = g.add_input(T(4, 5))
    e = op(g, "exponential", x)
    zero = const(g, 0.0)
    s1 = op(g, "reduce", e, zero, dimensions=[1], computation="add")
    s2 = op(g, "reduce", e, const(g, -np.inf), dimensions=[0], computation="max")
    s3 = op(g, "reduce", x, zero, dimensions=[0, 1], computation="add")
    g.outputs = [s1, s2, s3]
    out = check(g, [fuse_elementwise, dce])
    assert fused(out) == [("reduction", ["exponential", "constant", "reduce"])]
    assert [n.op for n in out.nodes if n.op == "reduce"] == ["reduce", "reduce"]


def softmax(g, x):
    m = op(g, "reduce", x, const(g, -np.inf), dimensions=[1], computation="max")
    xm = op(g, "subtract", x, op(g, "broadcast_in_dim", m, broadcast_dimensions=[0],
                                 shape=list(x.shape)))
    e = op(g, "exponential", xm)
    s = op(g, "reduce", e, const(g, 0.0), dimensions=[1], computation="add")
    return op(g, "divide", e, op(g, "broadcast_in_dim", s, broadcast_dimensions=[0],
                                 shape=list(x.shape)))


def test_softmax_is_a_reduction_and_a_loop():
    g = Graph()
    g.outputs = [softmax(g, g.add_input(T(4, 5)))]
    out = check(g, [fuse_elementwise, dce])
    assert ops(out) == ["constant", "reduce", "composite", "composite"]
    assert fused(out) == [
        ("reduction", ["broadcast_in_dim", "subtract", "exponential", "constant", "reduce"]),
        ("loop", ["broadcast_in_dim", "divide"])]


# -- fuse_elementwise: what groups must not cross -------------------------------------------

def test_no_group_around_a_dot_general():
    g = Graph()
    x, w = g.add_input(T(4, 4)), g.add_input(T(4, 4))
    a = op(g, "tanh", op(g, "exponential", x))
    d = op(g, "dot_general", a, w, **MATMUL)
    g.outputs = [op(g, "negate", op(g, "add", a, d))]  # a -> dot -> add: a cycle if joined
    out = check(g, [fuse_elementwise, dce])
    assert ops(out) == ["composite", "dot_general", "composite"]
    assert fused(out) == [("loop", ["exponential", "tanh"]), ("loop", ["add", "negate"])]


def test_no_cycle_through_another_group():
    """{p, n} would run both before and after the group {h1, h2, h3}: p feeds h1 (through a
    broadcast) and h2 feeds n (through a reshape), though no path of nodes leads from p to
    n."""
    g = Graph()
    x, y = g.add_input(T(4)), g.add_input(T(1, 4))
    p = op(g, "exponential", x)
    h1 = op(g, "tanh", op(g, "broadcast_in_dim", p, broadcast_dimensions=[1], shape=[1, 4]))
    h2 = op(g, "exponential", y)
    h3 = op(g, "add", h1, h2)
    n = op(g, "add", p, op(g, "reshape", h2, shape=[4]))
    g.outputs = [h3, n]
    out = check(g, [fuse_elementwise, dce])
    assert fused(out) == [("loop", ["broadcast_in_dim", "tanh", "exponential", "add"])]
    assert ops(out) == ["exponential", "composite", "reshape", "add"]


def test_no_group_across_a_composite():
    g = Graph()
    x = g.add_input(T(3))
    d = Graph(name="needle.two")
    dx = d.add_input(x.type)
    d.outputs = [op(d, "exponential", dx), op(d, "negate", dx)]
    a = op(g, "tanh", op(g, "abs", x))
    c0, c1 = add_node(g, "composite", [a], {"name": "needle.two"}, decomposition=d).outputs
    g.outputs = [op(g, "sqrt", op(g, "add", c0, c1)), op(g, "add", a, c0)]
    out = check(g, [fuse_elementwise, dce])  # the last add would need a cycle: alone
    assert [n.attrs["name"] for n in composites(out)] == [
        "needle.fusion", "needle.two", "needle.fusion"]
    assert ops(out)[-1] == "add" and fused(out) == [("loop", ["abs", "tanh"]),
                                                    ("loop", ["add", "sqrt"])]
    assert ops(out.nodes[1].decomposition) == ["exponential", "negate"]  # left as it was


def test_fusion_is_deterministic_and_idempotent():
    def build():
        g = Graph()
        g.outputs = [softmax(g, g.add_input(T(3, 6)))]
        return g
    once = fuse_elementwise(build())
    assert as_text(once) == as_text(fuse_elementwise(build()))
    assert as_text(fuse_elementwise(once)) == as_text(fuse_elementwise(build()))


def test_fused_graphs_print_and_parse_back():
    g = Graph()
    g.outputs = [softmax(g, g.add_input(T(2, 3)))]
    out = fuse_elementwise(g)
    assert as_text(verify(parse(as_text(out)))) == as_text(out)


def test_aliases_and_outputs_survive_fusion():
    g = Graph()
    w, grad = g.add_input(T(5)), g.add_input(T(5))
    new_w = op(g, "subtract", w, op(g, "multiply", grad, scalar_splat(g, 0.1, (5,))))
    g.outputs = [new_w, op(g, "negate", grad)]
    g.aliases = {0: 0}
    out = check(g, [fuse_elementwise, dce])
    assert out.aliases == {0: 0} and ops(out) == ["composite", "negate"]


# -- launched_work -------------------------------------------------------------------------

def test_launched_work_counts_nodes_that_launch_device_work():
    g = Graph()
    x = g.add_input(T(2, 3))
    i = add_node(g, "iota", [], {"iota_dimension": 1, "shape": [2, 3],
                                 "dtype": "float32"}).output
    r = op(g, "reshape", op(g, "add", x, i), shape=[6])  # add: 1, iota and reshape: 0
    s = op(g, "multiply", op(g, "exponential", r), scalar_splat(g, 2.0, (6,)))  # 3
    g.outputs = [op(g, "transpose", op(g, "reshape", s, shape=[3, 2]), permutation=[1, 0])]
    assert launched_work(g) == 5
    out = check(g, [fuse_elementwise, dce])  # add alone, then {reshape, exp, splat, multiply}
    assert ops(out) == ["iota", "add", "composite", "reshape", "transpose"]
    assert launched_work(out) == 3


# -- pipelines, executor, export -----------------------------------------------------------

def mlp(batch=8, features=6, hidden=5):
    """softmax(relu(x @ w1^T + b1)), the relu written 0-first, and the relu."""
    g = Graph()
    x, w1, b1 = g.add_input(T(batch, features)), g.add_input(T(hidden, features)), \
        g.add_input(T(hidden))
    w1t = op(g, "transpose", w1, permutation=[1, 0])
    h = op(g, "dot_general", x, w1t, **MATMUL)
    h = op(g, "add", h, op(g, "broadcast_in_dim", b1, broadcast_dimensions=[1],
                           shape=[batch, hidden]))
    h = op(g, "maximum", scalar_splat(g, 0.0, (batch, hidden)), h)
    g.outputs = [softmax(g, h), h]
    return g


def test_pipeline_levels_2_and_3():
    assert PIPELINES[2] == O1 + CANONICAL + FUSION
    assert PIPELINES[3] == O1 + CANONICAL + PATTERN_PASSES + FUSION
    g = mlp()
    work = launched_work(g)
    out = check(g, [lambda graph: run_passes(graph, 2, verify_each=True)[0]])
    assert ops(out) == ["dot_general", "composite", "composite", "composite"]
    assert out.nodes[0].inputs == list(g.inputs[:2])  # the transpose folded away
    assert fused(out) == [
        ("reduction", ["broadcast_in_dim", "add", "constant", "broadcast_in_dim", "maximum",
                       "constant", "reduce"]),
        ("reduction", ["broadcast_in_dim", "subtract", "exponential", "constant", "reduce"]),
        ("loop", ["broadcast_in_dim", "divide"])]
    relu = out.nodes[1].decomposition.nodes[4]
    assert relu.inputs[0].producer.op == "broadcast_in_dim"  # max(0, h): zero stays first
    assert (launched_work(out), work) == (4, 13)


def test_o1_does_not_fuse():
    assert not composites(run_passes(mlp(), 1)[0])


def test_fused_graph_runs_on_the_executor(device, rng):
    g = mlp()
    args = [rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs]
    plain = Executor(g, device)
    expected = plain.numpy(plain(*args))
    out, _ = run_passes(mlp(), 2)
    assert composites(out)
    ex = Executor(out, device)
    got = ex.numpy(ex(*args))
    for a, b, r in zip(got, expected, evaluate(g, *args)):
        np.testing.assert_array_equal(a, b)  # the same device ops, one by one
        np.testing.assert_allclose(a, r, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("composites_mode", ["decompose", "keep"])
def test_fused_graph_exports_to_stablehlo(composites_mode):
    pytest.importorskip("jaxlib.mlir.dialects.stablehlo")
    from needle.compiler import stablehlo
    out, _ = run_passes(mlp(), 2)
    text = stablehlo.export(out, composites=composites_mode)
    stablehlo.parse_and_verify(text)
    if composites_mode == "keep":
        assert 'composite_attributes = {kind = "reduction"}' in text
    args = random_inputs(out)
    for a, r in zip(stablehlo.evaluate(text, *args), evaluate(out, *args)):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)
