"""needle.compile: compiled steps equal eager ones (losses, parameters, optimizer state,
BatchNorm statistics) at every opt level on every device; guards; errors."""
import numpy as np
import pytest

import needle
from needle import nn, ops, optim

from helpers import training_step

STEPS = 5
LEVELS = [0, 1, 2, 3]


# -- models: each returns (model, optimizer, loss function, batches) on a device ----------------
def _batches(rng, device, x_shape, classes=None, target_shape=None):
    out = []
    for _ in range(STEPS):
        x = needle.Tensor(rng.standard_normal(x_shape).astype("float32"), device=device)
        if classes is not None:
            y = needle.Tensor(rng.integers(0, classes, x_shape[0]).astype("float32"),
                              device=device)
        else:
            y = needle.Tensor(rng.standard_normal(target_shape).astype("float32"), device=device)
        out.append((x, y))
    return out


def mlp_sgd(device, rng):
    model = nn.Sequential(nn.Linear(12, 32, device=device), nn.ReLU(),
                          nn.Linear(32, 5, device=device))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    return model, opt, nn.SoftmaxLoss(), _batches(rng, device, (8, 12), classes=5)


def mlp_adam(device, rng):
    model = nn.Sequential(nn.Linear(12, 32, device=device), nn.Tanh(),
                          nn.Linear(32, 5, device=device))
    opt = optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
    return model, opt, nn.SoftmaxLoss(), _batches(rng, device, (8, 12), classes=5)


def mlp_adamw(device, rng):
    model = nn.Sequential(nn.Linear(12, 32, device=device), nn.GELU(),
                          nn.Linear(32, 5, device=device))
    opt = optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    return model, opt, nn.SoftmaxLoss(), _batches(rng, device, (8, 12), classes=5)


def cnn_batchnorm(device, rng):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, device=device),
                          nn.BatchNorm2d(4, device=device), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3, device=device))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, opt, nn.SoftmaxLoss(), _batches(rng, device, (4, 3, 6, 6), classes=3)


def transformer_layer(device, rng):
    model = nn.TransformerLayer(16, 4, 32, device=device)
    # (not Adam: the key bias's gradient is zero up to round-off, which Adam would scale up
    # to full-size steps of random sign, in eager and compiled alike)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, opt, nn.MSELoss(), _batches(rng, device, (2, 5, 16), target_shape=(2, 5, 16))


def causal_transformer_layer(device, rng):
    """The fused attention ops with the causal mask (recorded as composites, and on a
    device with the ops run as its kernels at O2 and O3)."""
    model = nn.TransformerLayer(16, 4, 32, causal=True, device=device)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, opt, nn.MSELoss(), _batches(rng, device, (2, 5, 16), target_shape=(2, 5, 16))


class _LastStep(nn.Module):
    def __init__(self, device):
        super().__init__()
        self.lstm = nn.LSTM(4, 8, device=device)
        self.head = nn.Linear(8, 3, device=device)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[-1])


def lstm(device, rng):
    model = _LastStep(device)
    opt = optim.SGD(model.parameters(), lr=0.1)
    return model, opt, nn.SoftmaxLoss(), [
        (needle.Tensor(rng.standard_normal((5, 3, 4)).astype("float32"), device=device),
         needle.Tensor(rng.integers(0, 3, 3).astype("float32"), device=device))
        for _ in range(STEPS)]


class _TokenModel(nn.Module):
    def __init__(self, device):
        super().__init__()
        self.embed = nn.Embedding(9, 6, device=device)
        self.head = nn.Linear(6, 9, device=device)

    def forward(self, ids):  # (batch, seq) ids -> (batch * seq, vocab) logits
        return self.head(ops.reshape(self.embed(ids), (-1, 6)))


def embedding_lm(device, rng):
    model = _TokenModel(device)
    opt = optim.Adam(model.parameters(), lr=0.01)
    return model, opt, nn.SoftmaxLoss(), [
        (needle.Tensor(rng.integers(0, 9, (2, 4)).astype("float32"), device=device),
         needle.Tensor(rng.integers(0, 9, 8).astype("float32"), device=device))
        for _ in range(STEPS)]


MODELS = [mlp_sgd, mlp_adam, mlp_adamw, cnn_batchnorm, transformer_layer,
          causal_transformer_layer, lstm, embedding_lm]


def _train(make, device, seed, opt_level=None):
    np.random.seed(seed)  # needle.init draws from NumPy's global generator
    model, opt, loss_fn, batches = make(device, np.random.default_rng(seed))
    step = training_step(model, opt, loss_fn)
    run = step if opt_level is None else needle.compile(step, opt_level=opt_level)
    losses = [run(x, y).numpy() for x, y in batches]
    return losses, model, opt, run


def _optimizer_state(opt):
    return {i: {k: np.asarray(v) for k, v in s.items()}
            for i, s in opt.state_dict()["state"].items()}


@pytest.mark.parametrize("opt_level", LEVELS)
@pytest.mark.parametrize("make", MODELS, ids=lambda m: m.__name__)
def test_compiled_equals_eager(make, opt_level, device, monkeypatch):
    monkeypatch.setenv("NEEDLE_DEBUG", "verify")  # the verifier after every pass, too
    tol = dict(rtol=2e-4, atol=2e-5)
    e_losses, e_model, e_opt, _ = _train(make, device, 7)
    c_losses, c_model, c_opt, step = _train(make, device, 7, opt_level)
    assert step.stats()["cache_hits"] >= 2  # the later steps were replays
    np.testing.assert_allclose(np.array(c_losses), np.array(e_losses), **tol)
    e_state, c_state = e_model.state_dict(), c_model.state_dict()  # BatchNorm stats too
    assert e_state.keys() == c_state.keys()
    for name in e_state:
        np.testing.assert_allclose(c_state[name], e_state[name], err_msg=name, **tol)
    e_opt_state, c_opt_state = _optimizer_state(e_opt), _optimizer_state(c_opt)
    assert e_opt_state.keys() == c_opt_state.keys()
    for i in e_opt_state:
        for k in e_opt_state[i]:
            np.testing.assert_allclose(c_opt_state[i][k], e_opt_state[i][k],
                                       err_msg=f"state {i} {k}", **tol)


# -- guards and runtime scalars ------------------------------------------------------------------
def _mlp_step(device, optimizer=optim.SGD, **hyper):
    np.random.seed(3)
    model = nn.Sequential(nn.Linear(6, 8, device=device), nn.ReLU(), nn.Linear(8, 3, device=device))
    opt = optimizer(model.parameters(), **hyper)
    return model, opt, training_step(model, opt)


def _data(rng, device, rows=4):
    return (needle.Tensor(rng.standard_normal((rows, 6)).astype("float32"), device=device),
            needle.Tensor(rng.integers(0, 3, rows).astype("float32"), device=device))


@pytest.mark.parametrize("optimizer", [optim.SGD, optim.Adam, optim.AdamW])
def test_changing_lr_takes_effect_without_recompiling(optimizer, device, rng):
    """A scheduler-style lr change every step: the compiled step follows it, as eager does."""
    results = []
    for compiled in (False, True):
        model, opt, step = _mlp_step(device, optimizer, lr=0.05)
        run = needle.compile(step) if compiled else step
        batches = [_data(np.random.default_rng(1), device) for _ in range(6)]
        for i, (x, y) in enumerate(batches):
            opt.lr = 0.05 / (i + 1)
            run(x, y)
        results.append([p.numpy() for p in model.parameters()])
        if compiled:
            stats = run.stats()
            assert stats["traces"] <= 3 and stats["cache_hits"] >= 3
            assert len(stats["graphs"]) == 1
    for e, c in zip(*results):
        np.testing.assert_allclose(c, e, rtol=1e-5, atol=1e-6)


def test_adam_step_counts_advance(device, rng):
    model, opt, step = _mlp_step(device, optim.Adam, lr=0.01)
    run = needle.compile(step)
    x, y = _data(rng, device)
    for _ in range(5):
        run(x, y)
    assert run.stats()["cache_hits"] >= 2
    assert {s["step"] for s in opt.state.values()} == {5}
    assert all(type(s["step"]) is int for s in opt.state.values())


def test_new_shape_compiles_a_second_graph(device, rng):
    _, _, step = _mlp_step(device, lr=0.1)
    run = needle.compile(step)
    for rows in (4, 4, 4, 7, 7, 7, 4):
        run(*_data(rng, device, rows))
    stats = run.stats()
    assert len(stats["graphs"]) == 2
    # 4 rows: the graph is fixed on the 3rd call (the 1st made the optimizer's state);
    # 7 rows: on the 2nd; then the 7-row call and the last 4-row call replay
    assert stats["cache_hits"] == 2
    assert stats["graphs"][1]["reason"] == "arguments changed"


def test_train_and_eval_graphs_are_kept_apart(device, rng):
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(6, 4, device=device), nn.BatchNorm1d(4, device=device))
    run = needle.compile(lambda x: model(x))
    x, _ = _data(rng, device)
    train = [run(x).numpy() for _ in range(3)]
    model.eval()
    evals = [run(x).numpy() for _ in range(3)]
    expected = model(x).numpy()
    np.testing.assert_allclose(evals[-1], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(train[-1], evals[-1])
    model.train()
    run(x)
    assert len(run.stats()["graphs"]) == 2 and run.stats()["cache_hits"] == 3


def test_returned_tensors_belong_to_the_caller(device, rng):
    _, _, step = _mlp_step(device, lr=0.1)
    run = needle.compile(step)
    x, y = _data(rng, device)
    losses = [run(x, y) for _ in range(5)]
    values = [float(l.numpy()) for l in losses]
    assert len(set(values)) == 5  # each call's loss kept its own value
    assert losses[-1].op is None and not losses[-1].requires_grad


def test_decorator_forms(device, rng):
    x, _ = _data(rng, device)

    @needle.compile
    def double(t):
        return t * 2.0

    @needle.compile(opt_level=0)
    def triple(t):
        return t * 3.0

    assert isinstance(double, needle.compiler.api.Compiled) and double.opt_level == 2
    assert triple.opt_level == 0
    for _ in range(3):
        np.testing.assert_allclose(double(x).numpy(), x.numpy() * 2, rtol=1e-6)
        np.testing.assert_allclose(triple(x).numpy(), x.numpy() * 3, rtol=1e-6)
    with pytest.raises(ValueError, match="opt_level"):
        needle.compile(lambda t: t, opt_level=4)


# -- errors ---------------------------------------------------------------------------------------
def test_host_read_raises_with_the_line(device, rng):
    model, _, _ = _mlp_step(device, lr=0.1)
    x, _ = _data(rng, device)

    @needle.compile
    def peek(t):
        h = model(t)
        if h.sum().numpy() > 0:  # the line the error names
            return h
        return -h

    with pytest.raises(needle.CompileError, match=r"numpy\(\) reads a traced value.*"
                                                  r"test_compile.py:\d+: if h.sum\(\).numpy\(\) > 0"):
        peek(x)
    with pytest.raises(needle.CompileError, match="item"):
        needle.compile(lambda t: model(t).sum().item())(x)


def test_random_draw_raises(device, rng):
    x, _ = _data(rng, device)
    drop = nn.Dropout(0.5)
    with pytest.raises(needle.CompileError, match="random draw.*Dropout"):
        needle.compile(lambda t: drop(t))(x)
    drop.eval()
    np.testing.assert_array_equal(needle.compile(lambda t: drop(t))(x).numpy(), x.numpy())


def test_numpy_arguments_are_refused(device):
    with pytest.raises(TypeError, match="numpy array; pass a needle Tensor"):
        needle.compile(lambda t: t)(np.ones(3, dtype="float32"))


def test_replaced_state_raises(device, rng):
    """State rebound to a new tensor (not updated in place) would be read stale by replays."""
    x, _ = _data(rng, device)
    holder = nn.Linear(6, 3, device=device)

    @needle.compile
    def rebind(t):
        holder.weight = nn.Parameter((holder.weight * 0.5).detach())
        return holder(t)

    with pytest.raises(needle.CompileError, match="replaced .*weight.* instead of updating it in place"):
        rebind(x)


def test_scheduler_inside_the_step_raises(device, rng):
    _, opt, step = _mlp_step(device, lr=0.1)
    x, y = _data(rng, device)

    @needle.compile
    def step_and_decay(x, y):
        loss = step(x, y)
        opt.lr = opt.lr * 0.5
        return loss

    with pytest.raises(needle.CompileError, match="assigned SGD.lr"):
        step_and_decay(x, y)


def test_graph_changing_every_call_raises(device, rng):
    x, _ = _data(rng, device)
    calls = []

    @needle.compile
    def counting(t):
        calls.append(1)
        return t * float(len(calls))  # a Python value that changes every call

    with pytest.raises(needle.CompileError, match="different graph on each of 4 calls"):
        for _ in range(5):
            counting(x)


# -- lowering, stats, debugging ----------------------------------------------------------------------
def test_lower_leaves_the_model_as_it_was(device, rng):
    model, opt, step = _mlp_step(device, lr=0.1, momentum=0.9)
    run = needle.compile(step)
    x, y = _data(rng, device)
    before = [p.numpy() for p in model.parameters()]
    low = run.lower(x, y)
    assert [p.grad for p in model.parameters()] == [None] * len(before)
    assert opt.state == {}
    for b, p in zip(before, model.parameters()):
        np.testing.assert_array_equal(p.numpy(), b)
    text = low.as_text()
    assert text.startswith("func @main(") and "dot_general" in text
    assert "needle.sgd_update" in text and "needle.cross_entropy" in text
    for _ in range(3):
        run(x, y)
    compiled = run.lower(x, y)  # now the graph the calls replay
    assert compiled.graph is run._entries[next(iter(run._entries))].graph


def test_stats_show_each_pass_and_the_fusion(device, rng):
    _, _, step = _mlp_step(device, lr=0.1, momentum=0.9)
    counts = {}
    for level in LEVELS:
        run = needle.compile(step, opt_level=level)
        x, y = _data(rng, device)
        for _ in range(4):
            run(x, y)
        stats = run.stats()
        names = [name for name, _ in stats["passes"]]
        assert names[0] == "initial"
        counts[level] = (stats["passes"][0][1], stats["launches_per_call"])
        assert stats["planned_peak_bytes"] > 0 and stats["compile_seconds"] > 0
        assert stats["replay_host_us"] > 0
    assert "fuse_elementwise" in names
    assert counts[1][1] < counts[0][1] and counts[3][1] <= counts[2][1] < counts[1][1]


def test_debug_ir_prints_every_pass(device, rng, monkeypatch, capsys):
    monkeypatch.setenv("NEEDLE_DEBUG", "ir")
    x, _ = _data(rng, device)
    run = needle.compile(lambda t: (t * 1.0 + 0.0).exp(), opt_level=1)
    for _ in range(2):
        run(x)
    out = capsys.readouterr().out
    assert "IR after pass 0 (dce, O1)" in out and "IR after pass 3 (simplify, O1)" in out


def test_data_dependent_indexing_raises(device):
    x = needle.Tensor(np.arange(12.0, dtype="float32").reshape(4, 3), device=device)
    rows = needle.Tensor(np.array([1, 2, 1], dtype="float32"), device=device)
    with pytest.raises(needle.CompileError, match=r"reads a traced value back to the host"):
        needle.compile(lambda t, i: t[i])(x, rows)


def test_embedding_compiles_and_replays_on_new_ids(device):
    """The lookup reads its ids on the device (a replay on new ids gives their rows)."""
    assert device.backend.supports("embedding")
    emb = nn.Embedding(10, 4, device=device)
    tokens = [needle.Tensor(np.array(t, dtype="float32"), device=device)
              for t in ([1, 2, 3], [4, 4, 0], [9, 5, 2])]
    run = needle.compile(lambda t: emb(t))
    for t in tokens:
        np.testing.assert_array_equal(run(t).numpy(), emb.weight.numpy()[t.numpy().astype(int)])
    assert run.stats()["cache_hits"] >= 1


@pytest.mark.parametrize("opt_level", [0, 3])
def test_training_batchnorm_is_one_composite_each_way(opt_level, device, rng):
    """Where the backend has the fused training BatchNorm (cpu, cuda, cudnn), a traced step
    keeps it and its gradient as composites (running statistics and the folded conv bias
    included): run as the backend's kernel at O3, as their decomposition at O0; both as
    eager computes them (test_compiled_equals_eager checks the whole step)."""
    if not device.backend.supports("batchnorm_train", "float32"):
        pytest.skip(f"{device} composes training BatchNorm from simple ops")
    model = nn.Sequential(nn.Conv(3, 4, 3, device=device), nn.BatchNorm2d(4, device=device),
                          nn.ReLU()).train()
    x = needle.Tensor(rng.standard_normal((2, 3, 5, 5)).astype("float32"), device=device)
    g = needle.Tensor(rng.standard_normal((2, 4, 5, 5)).astype("float32"), device=device)
    conv, bn = model.modules[0], model.modules[1]

    def step(x, g):
        for p in model.parameters():
            p.grad = None
        (model(x) * g).sum().backward()
        return conv.weight.grad, conv.bias.grad, bn.weight.grad

    eager = [t.numpy() for t in step(x, g)]
    run = needle.compile(step, opt_level=opt_level)
    for _ in range(3):
        got = run(x, g)
    for a, b in zip(got, eager):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-4, atol=1e-5)
    text = run.lower(x, g).as_text()
    assert 'name = "needle.batchnorm_train"' in text
    assert 'name = "needle.batchnorm_train_backward"' in text
    assert bn.running_mean._version > 0
    if opt_level == 3:
        assert run.stats()["graphs"][0]["fused_kernels"] >= 2


CONV_CASES = [(2, 7, 9, 3, 4, 3, 1, 1), (1, 8, 8, 2, 3, 3, 2, 1), (2, 9, 6, 3, 2, 5, 2, 2),
              (1, 6, 7, 2, 2, 1, 1, 0), (2, 10, 10, 3, 4, 3, 3, 0)]


@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_composites_decompose_into_the_backends_convolution(case, channels_first, device,
                                                                  rng):
    """The recorded conv and conv_backward composites: their decompositions (plain
    convolutions, on the reference interpreter in float64 and on the device's executor)
    compute what the NumPy backend's conv and conv_backward compute; odd sizes, strides
    that skip rows, both layouts."""
    from needle.backend_ndarray.numpy_backend import NumpyBackend
    from needle.compiler import reference
    from needle.compiler.executor import Executor
    from needle.compiler.ir import Graph, TensorType
    from needle.compiler.tracing import fused
    from needle.compiler.tracing.builder import Builder
    n, h, w, c, co, k, s, p = case
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    xs, gs = ((n, c, h, w), (n, co, ho, wo)) if channels_first else ((n, h, w, c), (n, ho, wo, co))
    x, wt, g = (rng.standard_normal(shape) for shape in (xs, (k, k, c, co), gs))
    want = [np.empty(n * ho * wo * co), np.empty(x.size), np.empty(wt.size)]
    NumpyBackend().conv(x.ravel(), wt.ravel(), want[0], (n, h, w, c), k, co, s, p,
                        channels_first)
    NumpyBackend().conv_backward(g.ravel(), x.ravel(), wt.ravel(), want[1], want[2],
                                 (n, h, w, c), k, co, s, p, channels_first)
    for dtype, tol in (("float64", 1e-12), ("float32", 1e-4)):
        graph = Graph()
        b = Builder(graph)
        ix, iw, ig = (graph.add_input(TensorType(shape, dtype)) for shape in (xs, wt.shape, gs))
        graph.outputs = [fused.conv(b, ix, iw, s, p, channels_first)] + list(
            fused.conv_backward(b, ig, ix, iw, s, p, channels_first, True, True))
        args = [a.astype(dtype) for a in (x, wt, g)]
        if dtype == "float64":
            got = reference.evaluate(graph, *args)
        elif "float32" in device.backend.dtypes:
            ex = Executor(graph, device)
            got = ex.numpy(ex(*args))
        for a, b_ in zip(got, want):
            np.testing.assert_allclose(a.ravel(), b_, rtol=tol, atol=tol)


def test_state_guards(device, rng):
    """load_state_dict writes in place (the graph stays); rebinding .data rebuilds it."""
    model, _, step = _mlp_step(device, lr=0.1)
    run = needle.compile(step)
    x, y = _data(rng, device)
    for _ in range(3):
        run(x, y)
    saved = model.state_dict()
    run(x, y)
    model.load_state_dict(saved)
    run(x, y)
    assert len(run.stats()["graphs"]) == 1 and run.stats()["cache_hits"] == 2
    w = model.parameters()[0]
    w.data = needle.Tensor(w.numpy() * 0.5, device=device)  # a new buffer
    for _ in range(2):
        run(x, y)
    graphs = run.stats()["graphs"]
    assert len(graphs) == 2 and "holds a new tensor" in graphs[1]["reason"]
    # the replays after the rebuild update the new buffer
    before = w.numpy()
    run(x, y)
    assert not np.allclose(w.numpy(), before)


def test_deep_mlp_o3_launches_at_most_a_third_of_the_traced_nodes(device, rng):
    """needle-bench's deep-6L MLP step (six Linear layers, ReLU between, SGD), narrower: the
    node counts do not depend on the width."""
    sizes = [32] * 6 + [10]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b, device=device)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    model = nn.Sequential(*layers)
    opt = optim.SGD(model.parameters(), lr=0.01)
    x = needle.Tensor(rng.standard_normal((8, 32)).astype("float32"), device=device)
    y = needle.Tensor(rng.integers(0, 10, 8).astype("float32"), device=device)
    step = training_step(model, opt)
    counts = {}
    for level in (0, 3):
        run = needle.compile(step, opt_level=level)
        for _ in range(3):
            run(x, y)
        stats = run.stats()
        counts[level] = (stats["passes"][0][1], stats["launches_per_call"])
    traced, launched = counts[0][0], counts[3][1]
    assert counts[3][0] == traced  # the same trace at both levels
    assert launched * 3 <= traced, counts


def test_a_function_that_changes_a_module_raises(device, rng):
    x, _ = _data(rng, device)
    layer = nn.Linear(6, 3, device=device)

    def forward(t):
        layer.calls = getattr(layer, "calls", 0) + 1
        return layer(t)

    layer.calls = 0
    with pytest.raises(needle.CompileError, match=r"changes a module \(Linear.calls changed\)"):
        needle.compile(forward)(x)


def test_a_webgpu_replay_is_one_submission(device, rng):
    if device.name != "webgpu":
        pytest.skip("webgpu batches a call's dispatches into one queue submission")
    _, _, step = _mlp_step(device, optim.Adam, lr=0.01)
    run = needle.compile(step, opt_level=2)
    x, y = _data(rng, device)
    for _ in range(3):
        run(x, y)
    device.synchronize()
    before = device.backend.stats()["submissions"]
    loss = run(x, y)
    assert device.backend.stats()["submissions"] == before + 1
    assert np.isfinite(loss.numpy())


# -- state the replays must respect (each was a silent wrong answer once) ----------------------
def test_keyword_arguments_bind_by_name(device, rng):
    run = needle.compile(lambda x, y: x - y)
    a, b = _data(rng, device)[0], _data(rng, device)[0]
    for _ in range(3):
        run(x=a, y=b)
    np.testing.assert_allclose(run(y=b, x=a).numpy(), a.numpy() - b.numpy(), rtol=1e-6)


@pytest.mark.parametrize("opt_level", LEVELS)
def test_a_view_of_the_old_weights_survives_the_update(opt_level, device, rng):
    model, opt, _ = _mlp_step(device, lr=0.1)
    x, y = _data(rng, device)

    def step(x, y):
        opt.reset_grad()
        before = model[0].weight * 1.0  # simplified into a view of the weight's buffer
        loss = nn.SoftmaxLoss()(model(x), y)
        loss.backward()
        opt.step()
        return before

    run = needle.compile(step, opt_level=opt_level)
    for _ in range(4):
        weights = model[0].weight.numpy()
        np.testing.assert_array_equal(run(x, y).numpy(), weights)


def test_python_values_the_step_reads_are_guarded(device, rng):
    x, _ = _data(rng, device)
    config = type("Config", (), {})()
    config.scale = 2.0
    run = needle.compile(lambda t: t * config.scale)
    for _ in range(3):
        run(x)
    config.scale = 5.0
    np.testing.assert_allclose(run(x).numpy(), x.numpy() * 5.0, rtol=1e-6)
    assert "config.scale changed" in run.stats()["graphs"][-1]["reason"] or \
        run.stats()["recompiles"] == 1


def test_replacing_a_layer_or_the_optimizer_state_is_seen(device, rng):
    results = []
    for compiled in (False, True):
        model, opt, step = _mlp_step(device, optim.SGD, lr=0.1, momentum=0.9)
        run = needle.compile(step) if compiled else step
        x, y = _data(np.random.default_rng(5), device)
        for _ in range(3):
            run(x, y)
        saved = opt.state_dict()
        np.random.seed(9)
        model.modules[2] = nn.Linear(8, 3, device=device)  # a new layer
        opt.params = model.parameters()
        opt.state = {}
        run(x, y)
        opt.load_state_dict({"state": {}, "param_groups": saved["param_groups"]})
        for _ in range(2):
            run(x, y)
        results.append(([p.numpy() for p in model.parameters()], _optimizer_state(opt)))
    (e_params, e_state), (c_params, c_state) = results
    for e, c in zip(e_params, c_params):
        np.testing.assert_allclose(c, e, rtol=1e-5, atol=1e-6)
    assert e_state.keys() == c_state.keys()


def test_numpy_learning_rates_are_runtime_inputs(device, rng):
    results = []
    for compiled in (False, True):
        _, opt, step = _mlp_step(device, optim.SGD, lr=np.float64(0.1))
        run = needle.compile(step) if compiled else step
        x, y = _data(np.random.default_rng(2), device)
        losses = []
        for i in range(5):
            opt.lr = np.float64(0.1 / (i + 1))
            losses.append(run(x, y).numpy())
        results.append(losses)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5)


@pytest.mark.parametrize("level", [0, 2, 3])
def test_a_replayed_label_out_of_range_gives_a_nan_loss(device, rng, level):
    """Replays do not check labels as eager calls do: the decomposition and the fused
    kernels alike make the loss NaN instead of finding no target (a finite, wrong loss)."""
    model, opt, step = _mlp_step(device, lr=0.1)
    run = needle.compile(step, opt_level=level)
    for _ in range(4):
        x, y = _data(rng, device)
        assert np.isfinite(run(x, y).numpy())
    hits = run.stats()["cache_hits"]
    for bad in (-1.0, 3.0, -0.5, np.nan):
        labels = y.numpy()
        labels[1] = bad
        loss = run(x, needle.Tensor(labels, device=device)).numpy()
        assert np.isnan(loss), (bad, loss)
    assert run.stats()["cache_hits"] == hits + 4  # (the bad labels were replays)
    assert all(np.isfinite(p.numpy()).all() for p in model.parameters())


def test_partial_functions_are_searched(device, rng):
    import functools
    model, opt, _ = _mlp_step(device, lr=0.1)
    x, y = _data(rng, device)

    def step(model, opt, x, y):
        opt.reset_grad()
        loss = nn.SoftmaxLoss()(model(x), y)
        loss.backward()
        opt.step()
        return loss

    run = needle.compile(functools.partial(step, model, opt))
    for _ in range(4):
        run(x, y)
    opt.lr = 0.0  # must take effect: lr is a runtime input found through the partial
    weights = model[0].weight.numpy()
    run(x, y)
    np.testing.assert_array_equal(model[0].weight.numpy(), weights)


def test_gradients_are_left_on_the_parameters(device, rng):
    model, opt, _ = _mlp_step(device, lr=0.1)
    x, y = _data(rng, device)

    def step(x, y):
        loss = nn.SoftmaxLoss()(model(x), y)
        loss.backward()
        opt.step()
        return loss

    run = needle.compile(step)
    for _ in range(4):
        opt.reset_grad()  # outside the step: each call makes the gradients again
        run(x, y)
    assert all(p.grad is not None for p in model.parameters())
    grads = [p.grad.numpy() for p in model.parameters()]
    opt.reset_grad()
    step(x, y)  # eager, from the same weights: the gradients the step computes
    for g, p in zip(grads, model.parameters()):
        assert g.shape == p.grad.shape and np.all(np.isfinite(g))


def test_the_number_of_graphs_is_bounded(device, rng, monkeypatch):
    monkeypatch.setattr(needle.compiler.api, "MAX_GRAPHS", 2)
    run = needle.compile(lambda t: t * 2.0)
    with pytest.warns(UserWarning, match="more than 2 graphs"):
        for rows in (2, 3, 4):
            x = needle.Tensor(rng.standard_normal((rows, 3)).astype("float32"), device=device)
            for _ in range(2):
                np.testing.assert_allclose(run(x).numpy(), x.numpy() * 2.0, rtol=1e-6)
    assert len(run._entries) == 2


@pytest.mark.parametrize("opt_level", [2, 3])
def test_gradients_left_on_the_parameters_equal_eager(device, opt_level):
    """After each call the parameters hold the step's gradients, as after an eager step
    (at O3 the Linear backward kernels write them straight into the p.grad buffers)."""
    runs = []
    for compiled in (False, True):
        model, opt, step = _mlp_step(device, lr=0.1, momentum=0.9)
        run = needle.compile(step, opt_level=opt_level) if compiled else step
        data, grads = np.random.default_rng(2), []
        for _ in range(5):
            x, y = _data(data, device)
            run(x, y)
            grads.append([p.grad.numpy() for p in model.parameters()])
        runs.append((grads, run))
    (eager, _), (got, run) = runs
    for e_step, c_step in zip(eager, got):
        for e, c in zip(e_step, c_step):
            np.testing.assert_allclose(c, e, rtol=2e-4, atol=2e-5)
    if opt_level == 3 and device.backend.supports("linear_backward", "float32"):
        assert run.stats()["graphs"][-1]["outputs_in_place"] == len(eager[0])  # 2 W, 2 b


def test_attributes_named_like_keywords_are_guarded(device, rng):
    import types
    cfg = types.SimpleNamespace(**{"lambda": 0.5, "scale": 2.0})
    run = needle.compile(lambda x: x * cfg.scale)
    x = needle.Tensor(rng.standard_normal(3).astype("float32"), device=device)
    for _ in range(3):
        run(x)
    setattr(cfg, "lambda", 0.25)  # a watched value: the next call traces again
    np.testing.assert_allclose(run(x).numpy(), x.numpy() * 2.0, rtol=1e-6)
    assert run.stats()["recompiles"] == 1


@pytest.mark.parametrize("expr", [
    ("pow", ("const", -2.0), ("slot", 0)), ("neg", ("pow", ("slot", 0), ("const", 2))),
    ("sub", ("const", 1), ("pow", ("slot", 1), ("slot", 0))),
    ("truediv", ("const", float("inf")), ("add", ("slot", 0), ("const", 10 ** 30))),
    ("mul", ("const", np.int64(3)), ("abs", ("const", -0.5))), ("lt", ("slot", 1), ("const", 1))])
def test_generated_scalar_source_equals_evaluate(expr):
    from needle.compiler.tracing.scalars import evaluate, source
    slots = [2, 0.9]
    assert eval(source(expr), {"s": slots}) == evaluate(expr, slots)  # noqa: S307
