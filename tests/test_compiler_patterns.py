"""O3's pattern fusion (needle/compiler/passes/fuse_patterns.py) and the executor's fused
kernels for composites (``Executor(fused_kernels=True)``).

Each pattern is built by hand as the tracer records Needle's composition after O1 and
canonicalisation (splats as full constants, as constant folding leaves them): it must
become one composite, the graph must verify and give the reference interpreter's results
bit for bit on fresh random inputs (``check``); near misses (an intermediate read
elsewhere, another axis, another constant) must stay as they are. On every device a
composite with a backend op runs as that op, equal to its decomposition to float32
round-off. End to end: steps of small models, traced, through O1, canonicalisation,
fuse_patterns and elementwise fusion (the O3 pipeline)."""
import math

import numpy as np
import pytest

import needle
from needle import nn, optim
from needle.compiler import Executor, Graph, as_text, evaluate, parse
from needle.compiler.executor import FUSED, UPDATES
from needle.compiler.passes import run_passes
from needle.compiler.passes.fuse_patterns import fuse_patterns

from test_compiler_passes import T, check, const, op

BIG = float(np.finfo(np.float32).max)
MATMUL = dict(lhs_batching_dimensions=[], rhs_batching_dimensions=[],
              lhs_contracting_dimensions=[1], rhs_contracting_dimensions=[0])
BATCHED = dict(lhs_batching_dimensions=[0], rhs_batching_dimensions=[0],
               lhs_contracting_dimensions=[2], rhs_contracting_dimensions=[1])


# -- the compositions, as traced ----------------------------------------------------------

def full(g, number, shape):
    return const(g, np.full(shape, number, dtype=np.float32))


def per_row(g, v, shape):
    return op(g, "broadcast_in_dim", v, broadcast_dimensions=list(range(len(shape) - 1)),
              shape=list(shape))


def per_col(g, v, shape):
    return op(g, "broadcast_in_dim", v, broadcast_dimensions=[len(shape) - 1], shape=list(shape))


def reduce(g, x, computation, dims=None):
    init = const(g, -np.inf if computation == "max" else 0.0)
    return op(g, "reduce", x, init, dimensions=dims or [len(x.shape) - 1],
              computation=computation)


def logsumexp(g, x, big=BIG):
    """ops.logsumexp over the last axis (the max, clamped to finite numbers, subtracted);
    returns it and exp(x - max)."""
    rows = x.shape[:-1]
    c = op(g, "minimum", op(g, "maximum", reduce(g, x, "max"), full(g, -big, rows)),
           full(g, big, rows))
    e = op(g, "exponential", op(g, "subtract", x, per_row(g, c, x.shape)))
    return op(g, "add", op(g, "log", reduce(g, e, "add")), c), e


def softmax(g, x, **kw):
    """ops.softmax: exp(x - logsumexp(x)); returns it, the logsumexp and exp(x - max)."""
    lse, e = logsumexp(g, x, **kw)
    return op(g, "exponential", op(g, "subtract", x, per_row(g, lse, x.shape))), lse, e


def layer_norm(g, x, w, b, eps=1e-5, half=0.5, count=None):
    """ops.layer_norm's composition; returns it and the centred input."""
    rows, shape = x.shape[:-1], x.shape
    n = full(g, count or shape[-1], rows)
    centered = op(g, "subtract", x, per_row(g, op(g, "divide", reduce(g, x, "add"), n), shape))
    var = op(g, "divide", reduce(g, op(g, "multiply", centered, centered), "add"), n)
    std = op(g, "power", op(g, "add", per_row(g, var, shape), full(g, eps, shape)),
             full(g, half, shape))
    normed = op(g, "divide", centered, std)
    return op(g, "add", op(g, "multiply", normed, per_col(g, w, shape)),
              per_col(g, b, shape)), centered


def gelu(g, x, k=0.044715):
    """ops.gelu: x * (tanh((x + x ** 3 * k) * sqrt(2 / pi)) + 1) * 0.5; returns the tanh too."""
    s = x.shape
    a = op(g, "add", x, op(g, "multiply", op(g, "power", x, full(g, 3.0, s)), full(g, k, s)))
    t = op(g, "tanh", op(g, "multiply", a, full(g, math.sqrt(2 / math.pi), s)))
    return op(g, "multiply", op(g, "multiply", x, op(g, "add", t, full(g, 1.0, s))),
              full(g, 0.5, s)), t


def relu(g, x):
    return op(g, "maximum", x, full(g, 0.0, x.shape))


def linear(g, x, w, b):
    y = op(g, "dot_general", x, w, **MATMUL)
    return op(g, "add", y, per_col(g, b, y.shape))


def batch_norm(g, x, mean, var, w, b, axis=1, power=-0.5, mean_axis=None):
    """ops.batch_norm's composition (eval-mode BatchNorm)."""
    channels = (x.shape[axis],)

    def pc(v, a=axis):
        return op(g, "broadcast_in_dim", v, broadcast_dimensions=[a], shape=list(x.shape))
    rstd = op(g, "power", op(g, "add", var, full(g, 1e-5, channels)), full(g, power, channels))
    centered = op(g, "subtract", x, pc(mean, axis if mean_axis is None else mean_axis))
    return op(g, "add", op(g, "multiply", centered, pc(op(g, "multiply", w, rstd))), pc(b))


def attention(g, q, kt, v, scale=0.5):
    scores = op(g, "multiply", op(g, "dot_general", q, kt, **BATCHED),
                full(g, scale, (q.shape[0], q.shape[1], kt.shape[2])))
    probs = softmax(g, scores)[0]
    return op(g, "dot_general", probs, v, **BATCHED), probs


def graph(*shapes):
    g = Graph()
    return g, [g.add_input(T(*s)) for s in shapes]


def composites(g):
    return [(n.attrs["name"], {k: v for k, v in n.attrs.items() if k != "name"})
            for n in g.nodes if n.op == "composite"]


def names(g):
    return [name for name, _ in composites(g)]


def fused(g):
    """check() after fuse_patterns; returns the graph."""
    return check(g, [fuse_patterns])


# -- softmax and logsumexp ---------------------------------------------------------------------

def test_softmax_becomes_one_composite():
    g, (x,) = graph((6, 5))
    g.outputs = [softmax(g, x)[0]]
    matched = [n.op for n in g.nodes]
    out = fused(g)
    assert composites(out) == [("needle.softmax", {"rows": 6, "cols": 5})]
    (node,) = out.nodes
    assert node.inputs == [x] and [n.op for n in node.decomposition.nodes] == matched


def test_softmax_through_reshapes_of_batched_rows():
    """Attention's softmax: (8, 5, 5) scores, reductions of a (40, 5) reshape, the row
    statistics reshaped to (2, 4, 5) and broadcast over (2, 4, 5, 5)."""
    g, (x,) = graph((8, 5, 5))
    flat = op(g, "reshape", x, shape=[40, 5])

    def rows_of(v):  # a (40,) row statistic back onto x's shape
        b = op(g, "broadcast_in_dim", op(g, "reshape", v, shape=[2, 4, 5]),
               broadcast_dimensions=[0, 1, 2], shape=[2, 4, 5, 5])
        return op(g, "reshape", b, shape=[8, 5, 5])
    c = op(g, "minimum", op(g, "maximum", reduce(g, flat, "max"), full(g, -BIG, (40,))),
           full(g, BIG, (40,)))
    e = op(g, "exponential", op(g, "subtract", x, rows_of(c)))
    lse = op(g, "add", op(g, "log", reduce(g, op(g, "reshape", e, shape=[40, 5]), "add")), c)
    g.outputs = [op(g, "exponential", op(g, "subtract", x, rows_of(lse)))]
    out = fused(g)
    assert composites(out) == [("needle.softmax", {"rows": 40, "cols": 5})]
    assert out.nodes[-1].inputs == [x]


def test_softmax_whose_logsumexp_is_read_elsewhere_leaves_a_logsumexp():
    g, (x,) = graph((6, 5))
    s, lse, _ = softmax(g, x)
    g.outputs = [s, lse]
    assert names(fused(g)) == ["needle.logsumexp"]


@pytest.mark.parametrize("miss", ["exp read elsewhere", "axis 0", "clamp constant"])
def test_softmax_near_misses_stay(miss):
    g, (x,) = graph((6, 5))
    if miss == "axis 0":  # the statistics of columns, broadcast along axis 0 (no pattern)
        m = reduce(g, x, "max", dims=[0])
        e = op(g, "exponential", op(g, "subtract", x, per_col(g, m, x.shape)))
        lse = op(g, "add", op(g, "log", reduce(g, e, "add", dims=[0])), m)
        g.outputs = [op(g, "exponential", op(g, "subtract", x, per_col(g, lse, x.shape)))]
    else:
        s, _, e = softmax(g, x, big=1e30 if miss == "clamp constant" else BIG)
        g.outputs = [s] + ([e] if miss == "exp read elsewhere" else [])
    before = as_text(g)
    assert as_text(fused(g)) == before


# -- layer_norm ----------------------------------------------------------------------------------

def test_layer_norm_becomes_one_composite():
    g, (x, w, b) = graph((6, 8), (8,), (8,))
    g.outputs = [layer_norm(g, x, w, b)[0]]
    out = fused(g)
    ((name, attrs),) = composites(out)
    assert name == "needle.layer_norm" and out.nodes[-1].inputs == [x, w, b]
    assert attrs == {"eps": float(np.float32(1e-5)), "rows": 6, "cols": 8}


@pytest.mark.parametrize("miss", ["centred input read elsewhere", "power 0.25", "unbiased"])
def test_layer_norm_near_misses_stay(miss):
    g, (x, w, b) = graph((6, 8), (8,), (8,))
    y, centered = layer_norm(g, x, w, b, half=0.25 if miss == "power 0.25" else 0.5,
                             count=7 if miss == "unbiased" else None)
    g.outputs = [y] + ([centered] if miss.startswith("centred") else [])
    before = as_text(g)
    assert as_text(fused(g)) == before


# -- gelu and linear ------------------------------------------------------------------------------

def test_gelu_becomes_one_composite():
    g, (x,) = graph((4, 6))
    g.outputs = [gelu(g, x)[0]]
    assert composites(fused(g)) == [("needle.gelu", {"approximate": "tanh"})]


@pytest.mark.parametrize("miss", ["tanh read elsewhere", "constant 0.0447"])
def test_gelu_near_misses_stay(miss):
    g, (x,) = graph((4, 6))
    y, t = gelu(g, x, k=0.0447 if miss == "constant 0.0447" else 0.044715)
    g.outputs = [y] + ([t] if miss == "tanh read elsewhere" else [])
    before = as_text(g)
    assert as_text(fused(g)) == before


@pytest.mark.parametrize("activation", ["identity", "relu", "relu zero first", "gelu"])
def test_linear_takes_its_activation(activation):
    g, (x, w, b) = graph((4, 6), (6, 3), (3,))
    y = linear(g, x, w, b)
    if activation == "relu zero first":
        y = op(g, "maximum", full(g, 0.0, y.shape), y)
    elif activation != "identity":
        y = relu(g, y) if activation == "relu" else gelu(g, y)[0]
    g.outputs = [y]
    out = fused(g)
    assert composites(out) == [("needle.linear", {"activation": activation.split()[0]})]
    assert out.nodes[-1].inputs == [x, w, b]


def test_linear_whose_pre_activation_is_read_elsewhere_leaves_its_relu():
    """A training step: the ReLU's gradient reads x @ w + b."""
    g, (x, w, b) = graph((4, 6), (6, 3), (3,))
    pre = linear(g, x, w, b)
    g.outputs = [relu(g, pre), op(g, "compare", pre, full(g, 0.0, pre.shape),
                                  comparison_direction="GT")]
    out = fused(g)
    assert composites(out) == [("needle.linear", {"activation": "identity"})]
    assert [n.op for n in out.nodes if n.op != "constant"] == ["composite", "maximum", "compare"]


@pytest.mark.parametrize("miss", ["transposed weight", "bias along rows"])
def test_linear_near_misses_stay(miss):
    if miss == "transposed weight":  # x @ w^T with the transpose folded in: not (k, n)
        g, (x, w, b) = graph((4, 6), (3, 6), (3,))
        y = op(g, "dot_general", x, w, **{**MATMUL, "rhs_contracting_dimensions": [1]})
        g.outputs = [op(g, "add", y, per_col(g, b, y.shape))]
    else:
        g, (x, w, b) = graph((4, 6), (6, 3), (4,))
        y = op(g, "dot_general", x, w, **MATMUL)
        g.outputs = [op(g, "add", y, op(g, "broadcast_in_dim", b, broadcast_dimensions=[0],
                                        shape=[4, 3]))]
    before = as_text(g)
    assert as_text(fused(g)) == before


# -- batch_norm ------------------------------------------------------------------------------------

def batch_norm_flat(g, x, mean, var, w, b, shape):
    """BatchNorm2d of a flat input, as traced: the elementwise ops on (N * C * H * W,)."""
    def pc(v):
        return op(g, "reshape", op(g, "broadcast_in_dim", v, broadcast_dimensions=[1],
                                   shape=list(shape)), shape=[math.prod(shape)])
    rstd = op(g, "power", op(g, "add", var, full(g, 1e-5, mean.shape)), full(g, -0.5, mean.shape))
    return op(g, "add", op(g, "multiply", op(g, "subtract", x, pc(mean)),
                        pc(op(g, "multiply", w, rstd))), pc(b))


@pytest.mark.parametrize("form", ["rows", "nchw relu", "nchw flat", "conv bias"])
def test_batch_norm_becomes_one_composite(form):
    shape = (8, 5) if form == "rows" else (2, 5, 3, 4)
    g, (x, mean, var, w, b, cb) = graph((120,) if form == "nchw flat" else shape, *[(5,)] * 5)
    if form == "nchw flat":
        y = batch_norm_flat(g, x, mean, var, w, b, shape)
    elif form == "conv bias":  # a convolution's bias added first (Sequential's conv + BN)
        y = batch_norm(g, op(g, "add", x, op(g, "broadcast_in_dim", cb, broadcast_dimensions=[1],
                                             shape=list(shape))), mean, var, w, b)
    else:
        y = batch_norm(g, x, mean, var, w, b)
    g.outputs = [relu(g, y) if "relu" in form else y]
    out = fused(g)
    assert composites(out) == [("needle.batch_norm", {
        "eps": float(np.float32(1e-5)), "activation": "relu" if "relu" in form else "identity",
        "channels": 5, "inner": math.prod(shape[2:])})]
    assert out.nodes[-1].inputs == [x, mean, var, w, b] + ([cb] if form == "conv bias" else [])


@pytest.mark.parametrize("miss", ["mean along axis 0", "power -0.25"])
def test_batch_norm_near_misses_stay(miss):
    g, (x, mean, var, w, b) = graph((5, 5), *[(5,)] * 4)
    g.outputs = [batch_norm(g, x, mean, var, w, b, power=-0.25 if miss == "power -0.25" else -0.5,
                            mean_axis=0 if miss == "mean along axis 0" else None)]
    before = as_text(g)
    assert as_text(fused(g)) == before


# -- attention -------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["transposed", "folded"])
def test_attention_becomes_one_composite(key):
    g, (q, k, v) = graph((6, 5, 4), (6, 4, 5) if key == "transposed" else (6, 5, 4), (6, 5, 4))
    if key == "folded":  # canonicalize folded k's transpose into the contraction
        scores = op(g, "dot_general", q, k, **{**BATCHED, "rhs_contracting_dimensions": [2]})
        probs = softmax(g, op(g, "multiply", scores, full(g, 0.5, scores.shape)))[0]
        g.outputs = [op(g, "dot_general", probs, v, **BATCHED)]
    else:
        g.outputs = [attention(g, q, k, v)[0]]
    out = fused(g)
    assert composites(out) == [("needle.attention", {"scale": 0.5, "causal": False,
                                                     "key_transposed": key == "transposed"})]
    assert out.nodes[-1].inputs == [q, k, v]


@pytest.mark.parametrize("miss", ["probabilities read elsewhere", "masked scores"])
def test_attention_near_misses_keep_their_softmax(miss):
    g, (q, kt, v, mask) = graph((6, 5, 4), (6, 4, 5), (6, 5, 4), (6, 5, 5))
    if miss == "masked scores":
        scores = op(g, "multiply", op(g, "dot_general", q, kt, **BATCHED), full(g, 0.5, (6, 5, 5)))
        probs = softmax(g, op(g, "add", scores, mask))[0]
        g.outputs = [op(g, "dot_general", probs, v, **BATCHED)]
    else:
        out, probs = attention(g, q, kt, v)
        g.outputs = [out, probs, mask]
    assert names(fused(g)) == ["needle.softmax"]


# -- the pass as a whole ---------------------------------------------------------------------------

def chain():
    """linear -> layer_norm -> linear + relu -> softmax."""
    g, (x, w1, b1, lw, lb, w2, b2) = graph((4, 6), (6, 8), (8,), (8,), (8,), (8, 5), (5,))
    h, _ = layer_norm(g, linear(g, x, w1, b1), lw, lb)
    g.outputs = [softmax(g, relu(g, linear(g, h, w2, b2)))[0]]
    return g


def test_patterns_chain_and_print():
    """Four composites reading each other; the text form reads back."""
    out = fused(chain())
    assert names(out) == ["needle.linear", "needle.layer_norm", "needle.linear", "needle.softmax"]
    assert as_text(parse(as_text(out))) == as_text(out)


@pytest.mark.parametrize("composites_mode", ["decompose", "keep"])
def test_fused_patterns_export_to_stablehlo(composites_mode, rng):
    pytest.importorskip("jaxlib.mlir.dialects.stablehlo")
    from needle.compiler import stablehlo
    out = fuse_patterns(chain())
    text = stablehlo.export(out, composites=composites_mode)
    stablehlo.parse_and_verify(text)
    if composites_mode == "keep":
        assert '"needle.layer_norm"' in text
    args = [rng.standard_normal(v.shape).astype(np.float32) for v in out.inputs]
    for a, r in zip(stablehlo.evaluate(text, *args), evaluate(out, *args)):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)


def test_nothing_to_match_leaves_the_graph():
    g, (x, y) = graph((4, 4), (4, 4))
    g.outputs = [op(g, "tanh", op(g, "add", x, y))]
    before = as_text(g)
    assert as_text(fused(g)) == before


# -- the executor: fused kernels -------------------------------------------------------------------

def run_both(g, device, args):
    """Outputs of ``g`` with fused kernels equal the decomposition's to float32 round-off;
    returns the number of composites that ran as a kernel."""
    plain, kernels = Executor(g, device), Executor(g, device, fused_kernels=True)
    expected, got = plain.numpy(plain(*args)), kernels.numpy(kernels(*args))
    scale = max(float(np.abs(e).max()) for e in expected if e.size)
    for a, e in zip(got, expected):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5 * scale)
    return kernels.info["fused_kernels"]


def _bn(g, x, mean, var, w, b):
    return relu(g, batch_norm(g, x, mean, var, w, b))


#: (name, input shapes, composition, the backend op its composite runs as)
KERNELS = [
    ("softmax", [(6, 5)], lambda g, x: softmax(g, x)[0], "softmax"),
    ("logsumexp", [(6, 5)], lambda g, x: logsumexp(g, x)[0], "logsumexp"),
    ("layer_norm", [(2, 3, 8), (8,), (8,)], lambda g, *a: layer_norm(g, *a)[0], "layernorm"),
    ("linear_gelu", [(4, 6), (6, 3), (3,)], lambda g, *a: gelu(g, linear(g, *a))[0], "linear"),
    ("batch_norm", [(2, 5, 3, 4)] + [(5,)] * 4, _bn, "batchnorm"),
    ("attention", [(6, 5, 4), (6, 4, 5), (6, 5, 4)], lambda g, *a: attention(g, *a)[0],
     "attention"),
]


@pytest.mark.parametrize("case", KERNELS, ids=[c[0] for c in KERNELS])
def test_composites_run_as_fused_kernels(case, device, rng):
    name, shapes, build, backend_op = case
    g, inputs = graph(*shapes)
    g.outputs = [build(g, *inputs)]
    out = fuse_patterns(g)
    assert names(out) == [f"needle.{name.split('_gelu')[0]}"]
    args = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    if name == "batch_norm":
        args[2] = np.abs(args[2]) + 0.1  # a variance
    assert run_both(out, device, args) == int(device.backend.supports(backend_op))


def test_composites_without_a_kernel_run_their_decomposition(device):
    g, (x,) = graph((4, 6))
    g.outputs = [gelu(g, x)[0]]
    assert Executor(fuse_patterns(g), device, fused_kernels=True).info["fused_kernels"] == 0


# -- end to end: traced steps through the O3 pipeline ----------------------------------------------

def o3(graph):
    return run_passes(graph, 3, verify_each=True)[0]


def traced(model, shape, train, classes=None):
    """The O3 graph of a training step (SGD with momentum; cross-entropy when ``classes``,
    else the sum of squares) or, without ``train``, of the eval-mode forward."""
    rng = np.random.default_rng(0)
    x = needle.Tensor(rng.standard_normal(shape).astype(np.float32))
    y = needle.Tensor(rng.integers(0, classes or 1, shape[0]).astype(np.float32))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(x, y):
        opt.reset_grad()
        out = model(x)
        loss = nn.SoftmaxLoss()(out, y) if classes else (out * out).sum()
        loss.backward()
        opt.step()
        return loss
    if not train:
        model.eval()
    f = needle.compile(step if train else (lambda x, y: model(x)), opt_level=0)
    return o3(f.lower(x, y).graph)


def pattern_names(g):
    return sorted(set(names(g)) - {"needle.fusion"})


MODELS = {
    "mlp": (lambda: nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5)), (8, 12),
            True, ["needle.cross_entropy", "needle.linear", "needle.linear_backward",
                   "needle.sgd_update"]),
    "softmax": (lambda: nn.Sequential(nn.Linear(12, 5), nn.Softmax()), (8, 12), True,
                ["needle.linear", "needle.linear_backward", "needle.sgd_update",
                 "needle.softmax"]),
    "mlp_eval": (lambda: nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.GELU(),
                                       nn.Linear(8, 5)), (8, 12), False, ["needle.linear"]),
    "gelu_eval": (lambda: nn.GELU(), (8, 12), False, ["needle.gelu"]),
    "layer_norm_eval": (lambda: nn.LayerNorm1d(12), (8, 12), False, ["needle.layer_norm"]),
    "batch_norm1d_eval": (lambda: nn.Sequential(nn.BatchNorm1d(12), nn.ReLU()), (8, 12), False,
                          ["needle.batch_norm"]),
    "batch_norm2d_eval": (lambda: nn.BatchNorm2d(3), (2, 3, 4, 4), False, ["needle.batch_norm"]),
    "conv_bn_relu_eval": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4),
                                                nn.ReLU()), (2, 3, 6, 6), False,
                          ["needle.batch_norm", "needle.conv"]),  # (the cpu's conv layer op)
    "transformer": (lambda: nn.TransformerLayer(16, 4, 32), (2, 5, 16), True,
                    ["needle.attention", "needle.attention_backward", "needle.linear",
                     "needle.linear_backward", "needle.sgd_update"]),
    "transformer_eval": (lambda: nn.TransformerLayer(16, 4, 32), (2, 5, 16), False,
                         ["needle.attention", "needle.layer_norm", "needle.linear"]),
}


@pytest.mark.parametrize("name", MODELS)
def test_traced_models_fuse_their_patterns(name, device):
    make, shape, train, expected = MODELS[name]
    np.random.seed(0)
    model = make()
    g = traced(model, shape, train, classes=5 if "needle.cross_entropy" in expected else None)
    assert pattern_names(g) == expected
    if name == "mlp_eval":
        assert [a["activation"] for n, a in composites(g) if n == "needle.linear"] == \
            ["relu", "gelu", "identity"]
    if name == "conv_bn_relu_eval":  # the convolution's bias and the ReLU in the one kernel
        (bn,) = [n for n in g.nodes if n.attrs.get("name") == "needle.batch_norm"]
        assert len(bn.inputs) == 6 and bn.attrs["activation"] == "relu"
    rng = np.random.default_rng(1)
    args = [(0.3 * rng.standard_normal(v.shape)).astype(np.float32) for v in g.inputs]
    for node in g.nodes:  # class labels and variances where the composites read them
        if node.attrs.get("name") == "needle.cross_entropy":
            i = g.inputs.index(node.inputs[1])
            args[i] = rng.integers(0, node.inputs[0].shape[1], args[i].shape).astype(np.float32)
        if node.attrs.get("name") == "needle.batch_norm" and node.inputs[2] in g.inputs:
            i = g.inputs.index(node.inputs[2])
            args[i] = np.abs(args[i]) + 0.1
    kernels = sum(device.backend.supports({**FUSED, **UPDATES}[n.attrs["name"]][0])
                  for n in g.nodes if n.attrs.get("name") in {**FUSED, **UPDATES})
    assert run_both(g, device, args) == kernels
