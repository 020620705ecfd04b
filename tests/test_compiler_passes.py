"""The compiler's passes (needle/compiler/passes/): for each pass and each rewrite, a small
hand-built graph it must change and one it must leave alone; after every pass the graph
verifies and the reference interpreter gives the same results as before on fresh random
inputs (bit for bit: every pass here is exact but ``x + 0`` on ``-0.0``, tested apart).
No device: graphs and NumPy only."""
import numpy as np
import pytest

from needle.compiler import (PIPELINES, Graph, TensorType, VerifyError, add_node, as_text,
                             evaluate, run_passes, verify)
from needle.compiler.passes import cse, dce, fold_constants, simplify
from needle.compiler.passes.fold import MAX_ELEMENTS

RNG = np.random.default_rng(0)


def T(*shape, dtype="float32"):
    return TensorType(shape, dtype)


def const(g, value, dtype="float32"):
    return add_node(g, "constant", [], {"value": np.asarray(value, dtype=dtype)}).output


def scalar_splat(g, number, shape, dtype="float32"):
    """A broadcast_in_dim of a scalar constant."""
    return add_node(g, "broadcast_in_dim", [const(g, number, dtype)],
                    {"broadcast_dimensions": [], "shape": list(shape)}).output


def op(g, name, *inputs, **attrs):
    return add_node(g, name, list(inputs), attrs).output


def random_inputs(graph, rng=RNG):
    out = []
    for v in graph.inputs:
        if v.dtype == "bool":
            out.append(rng.random(v.shape) < 0.5)
        elif v.dtype.startswith("int"):
            out.append(rng.integers(-50, 50, v.shape).astype(v.dtype))
        else:
            out.append(rng.standard_normal(v.shape).astype(v.dtype))
    return out


def bits(a):
    return (a.dtype.name, a.shape, np.ascontiguousarray(a).tobytes())


def check(graph, passes, trials=3):
    """Run ``passes`` (a pass or a list) on ``graph``: it must verify and give the reference's
    results bit for bit on fresh random inputs; returns the graph."""
    verify(graph)
    inputs = [random_inputs(graph) for _ in range(trials)]
    before = [evaluate(graph, *args) for args in inputs]
    n_outputs, aliases, graph_inputs = len(graph.outputs), dict(graph.aliases), list(graph.inputs)
    for p in passes if isinstance(passes, list) else [passes]:
        graph = p(graph)
        verify(graph)
    assert len(graph.outputs) == n_outputs and graph.aliases == aliases
    assert graph.inputs == graph_inputs
    for args, expected in zip(inputs, before):
        assert [bits(a) for a in evaluate(graph, *args)] == [bits(a) for a in expected]
    return graph


def ops(graph):
    return [n.op for n in graph.nodes]


def two_outputs(g, x):
    """A composite of x with two outputs (exp x, -x)."""
    d = Graph(name="needle.two")
    dx = d.add_input(x.type)
    d.outputs = [op(d, "exponential", dx), op(d, "negate", dx)]
    return add_node(g, "composite", [x], {"name": "needle.two"}, decomposition=d).outputs


# -- dce ---------------------------------------------------------------------------------

def test_dce_drops_dead_chains():
    g = Graph()
    x = g.add_input(T(4))
    dead = op(g, "tanh", op(g, "exponential", x))
    op(g, "add", dead, dead)
    const(g, 3.0)
    g.outputs = [op(g, "negate", x)]
    assert ops(check(g, dce)) == ["negate"]


def test_dce_drops_an_unused_two_output_node():
    g = Graph()
    x = g.add_input(T(3))
    two_outputs(g, x)
    g.outputs = [x]
    assert ops(check(g, dce)) == []


def test_dce_keeps_what_outputs_need():
    g = Graph()
    x, y = g.add_input(T(3)), g.add_input(T(3))
    e, n = two_outputs(g, x)  # only the second output is used: the node stays whole
    s = op(g, "add", n, y)
    g.outputs = [s, x, s]
    g.aliases = {0: 1}
    before = ops(g)
    out = check(g, dce)
    assert ops(out) == before and out.nodes[0].decomposition.count() == 2


# -- cse ---------------------------------------------------------------------------------

def test_cse_merges_equal_nodes_and_renames_outputs():
    g = Graph()
    x = g.add_input(T(2, 3))
    a, b = op(g, "exponential", x), op(g, "exponential", x)
    ta, tb = op(g, "tanh", a), op(g, "tanh", b)  # equal once a and b are merged
    c1, c2 = const(g, [1.0, 2.0, 3.0]), const(g, [1.0, 2.0, 3.0])
    p1 = op(g, "compare", a, b, comparison_direction="LT")
    p2 = op(g, "compare", a, b, comparison_direction="LT")
    g.outputs = [ta, tb, c1, c2, p1, p2]
    out = check(g, [cse, dce])
    assert ops(out) == ["exponential", "tanh", "constant", "compare"]
    assert out.outputs[0] is out.outputs[1] and out.outputs[2] is out.outputs[3]


def test_cse_merges_equal_composites():
    g = Graph()
    x = g.add_input(T(3))
    (a, _), (b, _) = two_outputs(g, x), two_outputs(g, x)
    g.outputs = [op(g, "add", a, b)]
    assert ops(check(g, [cse, dce])) == ["composite", "add"]


@pytest.mark.parametrize("first, second", [
    (0.0, -0.0),
    (np.float32(np.nan), np.array(0x7FC00001, np.uint32).view(np.float32)),  # NaN payloads
    (1.0, 2.0),
])
def test_cse_keeps_different_constants(first, second):
    g = Graph()
    a, b = const(g, [first, 1.0]), const(g, [second, 1.0])
    g.outputs = [a, b]
    assert ops(check(g, cse)) == ["constant", "constant"]


def test_cse_keeps_same_bytes_of_different_dtypes():
    g = Graph()
    g.outputs = [const(g, [0, 0], "int32"), const(g, [0.0, 0.0], "float32")]
    assert len(check(g, cse).nodes) == 2


def test_cse_keeps_different_attrs_inputs_and_decompositions():
    g = Graph()
    x, y = g.add_input(T(3, 3)), g.add_input(T(3, 3))
    outs = [op(g, "compare", x, y, comparison_direction="LT"),
            op(g, "compare", x, y, comparison_direction="GT"),
            op(g, "transpose", x, permutation=[1, 0]), op(g, "transpose", x, permutation=[0, 1]),
            op(g, "subtract", x, y), op(g, "subtract", y, x)]
    for attr in (1, 1.0, True):  # an int, a float and a bool attribute are different
        d = Graph(name="needle.id")
        d.outputs = [d.add_input(x.type)]
        outs += add_node(g, "composite", [x], {"name": "needle.id", "k": attr},
                         decomposition=d).outputs
    d = Graph(name="needle.id")
    d.outputs = [op(d, "negate", d.add_input(x.type))]
    outs += add_node(g, "composite", [x], {"name": "needle.id", "k": 1}, decomposition=d).outputs
    g.outputs = outs
    assert len(check(g, cse).nodes) == len(outs)


# -- fold_constants ----------------------------------------------------------------------

def test_fold_chains_of_constants():
    g = Graph()
    x = g.add_input(T(3))
    c = op(g, "add", const(g, [1.0, 2.0, 3.0]), const(g, [0.5, 0.5, 0.5]))
    c = op(g, "log", op(g, "negate", c))  # NaN, computed as the reference computes it
    g.outputs = [op(g, "add", x, c), c]
    out = check(g, [fold_constants, dce])
    assert ops(out) == ["constant", "add"]
    assert out.outputs[1].producer.op == "constant"


def test_fold_uses_iota_values_and_folds_composites():
    g = Graph()
    x = g.add_input(T(4))
    i = add_node(g, "iota", [], {"iota_dimension": 0, "shape": [4], "dtype": "float32"}).output
    e, n = two_outputs(g, op(g, "multiply", i, i))
    g.outputs = [op(g, "add", x, e), n, i]
    out = check(g, [fold_constants, dce])
    assert ops(out) == ["iota", "constant", "constant", "add"]  # iota stays a generator
    squares = np.arange(4, dtype=np.float32) ** 2
    assert bits(evaluate(out, np.zeros(4))[1]) == bits(-squares)


def test_fold_leaves_inputs_sources_and_big_results():
    g = Graph()
    x = g.add_input(T(3))
    c = const(g, 2.0)
    i = add_node(g, "iota", [], {"iota_dimension": 0, "shape": [3], "dtype": "float32"}).output
    big = op(g, "broadcast_in_dim", c, broadcast_dimensions=[], shape=[MAX_ELEMENTS + 1])
    small = op(g, "broadcast_in_dim", c, broadcast_dimensions=[], shape=[MAX_ELEMENTS])
    g.outputs = [op(g, "add", x, i), big, small, c]
    out = check(g, fold_constants, trials=1)
    assert ops(out) == ["constant", "iota", "broadcast_in_dim", "constant", "add"]
    assert out.outputs[1].producer.op == "broadcast_in_dim"
    assert out.outputs[2].producer.op == "constant"


# -- simplify ----------------------------------------------------------------------------

def _unit(g, x, number, how):
    """``number`` as a splat of x's type: an array constant, or a broadcast scalar."""
    if how == "array":
        return const(g, np.full(x.shape, number), x.dtype)
    return scalar_splat(g, number, x.shape, x.dtype)


@pytest.mark.parametrize("how", ["array", "broadcast"])
@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("name, number, unit_first", [
    ("multiply", 1, False), ("multiply", 1, True), ("add", 0, False), ("add", 0, True),
    ("subtract", 0, False), ("divide", 1, False), ("add", -0.0, False)])
def test_simplify_removes_identities(name, number, unit_first, dtype, how):
    g = Graph()
    x = g.add_input(T(2, 3, dtype=dtype))
    u = _unit(g, x, number, how)
    y = op(g, name, *((u, x) if unit_first else (x, u)))
    g.outputs = [op(g, "tanh", y) if dtype == "float32" else op(g, "negate", y)]
    out = check(g, [simplify, dce])
    assert out.outputs[0].producer.inputs == [x]


@pytest.mark.parametrize("name, number, unit_first", [
    ("multiply", 0, False), ("multiply", 0, True), ("add", 1, False), ("subtract", 0, True),
    ("divide", 1, True), ("divide", 0, False), ("multiply", np.nan, False),
    ("multiply", -1, False), ("maximum", 0, False)])
def test_simplify_leaves_non_identities(name, number, unit_first):
    g = Graph()
    x = g.add_input(T(2, 3))
    u = scalar_splat(g, number, x.shape)
    g.outputs = [op(g, name, *((u, x) if unit_first else (x, u)))]
    before = ops(g)
    assert ops(check(g, simplify)) == before


def test_simplify_leaves_non_splat_constants():
    g = Graph()
    x = g.add_input(T(2))
    g.outputs = [op(g, "multiply", x, const(g, [1.0, 2.0])),
                 op(g, "add", x, const(g, [0.0, 1.0]))]
    assert ops(check(g, simplify)) == ["constant", "multiply", "constant", "add"]


def test_simplify_add_zero_changes_only_the_sign_of_a_zero():
    g = Graph()
    x = g.add_input(T(3))
    g.outputs = [op(g, "add", x, const(g, [0.0, 0.0, 0.0]))]
    args = [np.array([-0.0, 1.0, np.nan], np.float32)]
    before = evaluate(g, *args)[0]
    out = dce(simplify(g))
    assert out.outputs == [x]
    after = evaluate(out, *args)[0]
    np.testing.assert_array_equal(after, before)  # -0.0 == +0.0, NaN == NaN
    assert np.signbit(after[0]) and not np.signbit(before[0])  # as documented


def test_simplify_negate_negate():
    g = Graph()
    x = g.add_input(T(3, dtype="int32"))
    n = op(g, "negate", x)
    g.outputs = [op(g, "negate", n), n, op(g, "negate", op(g, "negate", op(g, "negate", x)))]
    out = check(g, [simplify, dce])
    assert out.outputs[0] is x and out.outputs[1].producer.op == "negate"
    assert out.outputs[2].producer.op == "negate" and out.outputs[2].producer.inputs == [x]


def test_simplify_transposes():
    g = Graph()
    x = g.add_input(T(2, 3, 4))
    back = op(g, "transpose", op(g, "transpose", x, permutation=[1, 2, 0]),
              permutation=[2, 0, 1])
    same = op(g, "transpose", x, permutation=[0, 1, 2])
    two = op(g, "transpose", op(g, "transpose", x, permutation=[1, 0, 2]), permutation=[0, 2, 1])
    g.outputs = [back, same, two]
    out = check(g, [simplify, dce])
    assert out.outputs[:2] == [x, x]
    (t,) = out.nodes
    assert t.op == "transpose" and t.inputs == [x] and list(t.attrs["permutation"]) == [1, 2, 0]


def test_simplify_leaves_transposes_whose_inner_is_used_elsewhere():
    g = Graph()
    x = g.add_input(T(2, 3, 4))
    inner = op(g, "transpose", x, permutation=[1, 0, 2])
    g.outputs = [op(g, "transpose", inner, permutation=[0, 2, 1]), inner]
    before = ops(g)
    assert ops(check(g, [simplify, dce])) == before


def test_simplify_reshapes():
    g = Graph()
    x, y = g.add_input(T(2, 6)), g.add_input(T(2, 6))
    r = op(g, "reshape", op(g, "reshape", x, shape=[3, 4]), shape=[12])
    back = op(g, "reshape", op(g, "reshape", y, shape=[12]), shape=[2, 6])
    same = op(g, "reshape", x, shape=[2, 6])
    g.outputs = [r, back, same]
    out = check(g, [simplify, dce])
    assert out.outputs[1:] == [y, x]
    (n,) = out.nodes
    assert n.op == "reshape" and n.inputs == [x] and list(n.attrs["shape"]) == [12]


def test_simplify_leaves_a_reshape_of_a_reshape_used_elsewhere():
    g = Graph()
    x = g.add_input(T(2, 6))
    inner = op(g, "reshape", x, shape=[3, 4])
    g.outputs = [op(g, "reshape", inner, shape=[12]), op(g, "tanh", inner)]
    before = ops(g)
    assert ops(check(g, [simplify, dce])) == before


def test_simplify_broadcasts():
    g = Graph()
    x = g.add_input(T(3))
    same = op(g, "broadcast_in_dim", x, broadcast_dimensions=[0], shape=[3])
    inner = op(g, "broadcast_in_dim", x, broadcast_dimensions=[1], shape=[2, 3])
    two = op(g, "broadcast_in_dim", inner, broadcast_dimensions=[0, 2], shape=[2, 5, 3])
    g.outputs = [same, two]
    out = check(g, [simplify, dce])
    assert out.outputs[0] is x
    (b,) = out.nodes
    assert b.inputs == [x] and list(b.attrs["broadcast_dimensions"]) == [2]
    assert list(b.attrs["shape"]) == [2, 5, 3]


def test_simplify_leaves_real_broadcasts():
    g = Graph()
    x, s = g.add_input(T(3, 3)), g.add_input(T(1, 3))
    g.outputs = [op(g, "broadcast_in_dim", x, broadcast_dimensions=[1, 0], shape=[3, 3]),
                 op(g, "broadcast_in_dim", s, broadcast_dimensions=[0, 1], shape=[4, 3])]
    assert ops(check(g, simplify)) == ["broadcast_in_dim"] * 2


def test_simplify_converts_and_slices():
    g = Graph()
    x = g.add_input(T(4, 6))
    g.outputs = [op(g, "convert", x, dtype="float32"),
                 op(g, "slice", x, start_indices=[0, 0], limit_indices=[4, 6], strides=[1, 1]),
                 op(g, "convert", x, dtype="float64"),
                 op(g, "slice", x, start_indices=[0, 0], limit_indices=[4, 6], strides=[1, 2]),
                 op(g, "slice", x, start_indices=[1, 0], limit_indices=[4, 6], strides=[1, 1])]
    out = check(g, [simplify, dce])
    assert out.outputs[:2] == [x, x] and ops(out) == ["convert", "slice", "slice"]


def test_simplify_leaves_two_output_nodes_and_keeps_aliases():
    g = Graph()
    x, w = g.add_input(T(3)), g.add_input(T(3))
    e, n = two_outputs(g, x)
    new_w = op(g, "multiply", op(g, "add", w, scalar_splat(g, 0.0, (3,))), const(g, [1.0] * 3))
    g.outputs = [e, new_w, n]
    g.aliases = {1: 1}
    out = check(g, [simplify, dce])
    assert out.outputs[1] is w and ops(out) == ["composite"]


# -- run_passes --------------------------------------------------------------------------

def redundant_graph():
    g = Graph()
    x = g.add_input(T(4, 3))
    a, b = op(g, "exponential", x), op(g, "exponential", x)
    one = op(g, "add", scalar_splat(g, 0.5, (4, 3)), scalar_splat(g, 0.5, (4, 3)))
    y = op(g, "multiply", op(g, "add", a, b), one)
    y = op(g, "transpose", op(g, "transpose", y, permutation=[1, 0]), permutation=[1, 0])
    op(g, "tanh", x)  # dead
    g.outputs = [op(g, "negate", op(g, "negate", y))]
    return g


@pytest.mark.parametrize("level", sorted(PIPELINES))
def test_run_passes_levels(level):
    g = redundant_graph()
    n = g.count()
    out = check(g, [lambda graph: run_passes(graph, level, verify_each=True)[0]])
    stats = run_passes(redundant_graph(), level)[1]
    assert stats[0] == ("initial", n)
    assert [name for name, _ in stats[1:]] == [p.__name__ for p in PIPELINES[level]]
    if level == 0:
        assert out.count() == n and len(stats) == 1
    else:
        counts = [c for _, c in stats]
        assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]
        unfused = ["exponential", "add"]  # (e + e) * 1, transposes, negates gone
        assert ops(out) == (unfused if level == 1 else ["composite"])  # O2 fuses the two


def test_run_passes_rejects_an_unknown_level():
    with pytest.raises(ValueError, match="opt level"):
        run_passes(redundant_graph(), 9)


def test_run_passes_names_the_pass_that_breaks_the_graph(monkeypatch):
    def breaks(graph):
        graph.nodes = graph.nodes[1:]
        return graph
    monkeypatch.setitem(PIPELINES, 1, [breaks])
    with pytest.raises(VerifyError, match=r"after pass 0 \(breaks\)"):
        run_passes(redundant_graph(), 1, verify_each=True)


def test_needle_debug_ir_prints_after_every_pass(monkeypatch, capsys):
    monkeypatch.setenv("NEEDLE_DEBUG", "src, ir")
    out, _ = run_passes(redundant_graph(), 1)
    printed = capsys.readouterr().out
    for i, p in enumerate(PIPELINES[1]):
        assert f"IR after pass {i} ({p.__name__}, O1)" in printed
    assert printed.rstrip().endswith(as_text(out).rstrip())


@pytest.mark.parametrize("flags", [None, "src", "1"])
def test_needle_debug_without_ir_prints_nothing(monkeypatch, capsys, flags):
    if flags is None:
        monkeypatch.delenv("NEEDLE_DEBUG", raising=False)
    else:
        monkeypatch.setenv("NEEDLE_DEBUG", flags)
    run_passes(redundant_graph(), 1)
    assert capsys.readouterr().out == ""
