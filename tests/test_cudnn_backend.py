"""The `cudnn` backend (cuBLASLt and cuDNN) against the NumPy backend and the `cuda` device.

Every op the backend routes to a library runs on fresh random inputs, forward and backward,
at the backend level (against NumPy) and through the Tensor API (against needle.cuda() and
the cpu). These need a GPU with the `cudnn` extra and skip with the reason otherwise; the
tests at the end run anywhere.
"""
import sys
import types

import numpy as np
import pytest
from helpers import fresh_rng, upload

import needle
import needle.ops as ops
from needle.backend_ndarray.cuda.backend import CudaBackend
from needle.backend_ndarray.cudnn import CudnnBackend, cublaslt
from needle.backend_ndarray.numpy_backend import NumpyBackend

REF = NumpyBackend()
TOL = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-11, atol=1e-11)}
#: bf16 keeps 8 bits of mantissa: errors of a few 1e-3 relative per input, more after sums
BF16_TOL = dict(rtol=3e-2, atol=3e-2)


@pytest.fixture
def be():
    device = needle.cudnn()
    if not device.enabled():
        pytest.skip(f"needle.cudnn() is not available: {device.unavailable_reason()}")
    return device.backend


@pytest.fixture(params=["cudnn", "cuda"])
def linear_be(request):
    """The backends with the fused linear ops: cuBLASLt (cudnn) and our kernels (cuda)."""
    device = needle.device(request.param)
    if not device.enabled():
        pytest.skip(f"needle.{request.param}() is not available: {device.unavailable_reason()}")
    return device.backend


@pytest.fixture
def bf16(be, monkeypatch):
    """Run the test with the cudnn device in bf16 precision (restored afterwards)."""
    monkeypatch.setattr(CudnnBackend, "matmul_precision", "bf16")
    return be


@pytest.fixture
def rng(request):
    return fresh_rng(request)


def call_both(be, op, *args):
    """Run ``op`` on the cudnn and NumPy backends; (ours, reference) buffer arguments after.
    Output buffers start as NaN so an unwritten element shows."""
    ref = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    dev = [upload(be, a) if isinstance(a, np.ndarray) else a for a in args]
    getattr(REF, op)(*ref)
    getattr(be, op)(*dev)
    ours = [be.to_numpy(d, (d.size,), (1,), 0) for a, d in zip(args, dev)
            if isinstance(a, np.ndarray)]
    return ours, [r for r in ref if isinstance(r, np.ndarray)]


def nan(n, dtype):
    return np.full(n, np.nan, dtype=dtype)


def assert_close(ours, ref, tol):
    for got, want in zip(ours, ref):
        np.testing.assert_allclose(got, want, **tol)


# ---- cuBLASLt ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch,m,k,n", [(1, 1, 1, 1), (1, 3, 127, 5), (1, 64, 1025, 33),
                                         (1, 256, 512, 128), (4, 17, 9, 31), (12, 128, 64, 128)])
def test_matmul(be, rng, dtype, batch, m, k, n):
    a, b = rng.standard_normal(batch * m * k), rng.standard_normal(batch * k * n)
    ours, ref = call_both(be, "matmul", a.astype(dtype), b.astype(dtype),
                          nan(batch * m * n, dtype), batch, m, k, n)
    scale = np.sqrt(k)  # error grows with the reduction length
    assert_close(ours, ref, {t: v * scale for t, v in TOL[dtype].items()})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ["identity", "relu", "gelu"])
@pytest.mark.parametrize("m,k,n", [(64, 128, 256), (3, 5, 7), (1, 64, 10)])
def test_linear(linear_be, rng, dtype, act, m, k, n):
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (m * k, k * n, n))
    ours, ref = call_both(linear_be, "linear", x, w, b, nan(m * n, dtype), m, k, n, act)
    assert_close(ours, ref, {t: v * np.sqrt(k) for t, v in TOL[dtype].items()})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("with_dx", [True, False])
@pytest.mark.parametrize("m,k,n", [(64, 128, 256), (3, 5, 7), (1025, 33, 10)])
def test_linear_backward(linear_be, rng, dtype, with_dx, m, k, n):
    g, x, w = (rng.standard_normal(s).astype(dtype) for s in (m * n, m * k, k * n))
    dx = nan(m * k, dtype) if with_dx else None
    ours, ref = call_both(linear_be, "linear_backward", g, x, w, dx, nan(k * n, dtype), nan(n, dtype),
                          m, k, n)
    assert_close(ours, ref, {t: v * np.sqrt(m) for t, v in TOL[dtype].items()})


@pytest.fixture
def replay(be, monkeypatch):
    """The cudnn backend with graph replay on for every new cuBLASLt plan (the tuner keeps
    it only where it measured faster); plans made before stay as they were."""
    monkeypatch.setattr(cublaslt, "REPLAY_GAIN", float("inf"))
    saved = dict(be.lt.plans)
    be.lt.plans.clear()  # new plans for the shapes below, made under the setting
    yield be
    for plan in be.lt.plans.values():
        plan.close()
    be.lt.plans.clear()
    be.lt.plans.update(saved)


def test_gemms_inside_a_graph_use_the_algorithm_timed_for_graphs(replay, rng):
    """On a device graph's priming run a plan is tuned by GPU time over every proposal
    (graph_algo); the recording and the eager calls after it give NumPy's product, and
    an eager call still tunes the eager choice."""
    from needle.backend_ndarray.cuda import capture
    m, k, n = 64, 1024, 256
    a_np, b_np = (rng.standard_normal(s).astype(np.float32) for s in (m * k, k * n))
    a, b, out = (upload(replay, x) for x in (a_np, b_np, nan(m * n, "float32")))
    expected = (a_np.reshape(m, k).astype(np.float64) @ b_np.reshape(k, n)).ravel()
    graph = replay.device_graph()
    with graph.priming():
        replay.matmul(a, b, out, 1, m, k, n)
    graph.stream.synchronize()
    (plan,) = replay.lt.plans.values()
    assert plan.graph_algo in plan.candidates and not plan.tuned
    np.testing.assert_allclose(replay.to_numpy(out, (m, n), (n, 1), 0).ravel(), expected,
                               rtol=1e-4, atol=1e-4 * np.sqrt(k))
    replay.from_numpy(nan(m * n, "float32"), out)
    graph.record(lambda: replay.matmul(a, b, out, 1, m, k, n))
    assert not capture.for_graph()
    graph.launch()
    np.testing.assert_allclose(replay.to_numpy(out, (m, n), (n, 1), 0).ravel(), expected,
                               rtol=1e-4, atol=1e-4 * np.sqrt(k))
    replay.from_numpy(nan(m * n, "float32"), out)
    replay.matmul(a, b, out, 1, m, k, n)
    assert plan.tuned and plan.algo in plan.candidates[:cublaslt.CANDIDATES]
    np.testing.assert_allclose(replay.to_numpy(out, (m, n), (n, 1), 0).ravel(), expected,
                               rtol=1e-4, atol=1e-4 * np.sqrt(k))


def test_replayed_matmul_reads_the_buffers_at_each_call(replay, rng):
    """The same addresses with new contents, calls after calls: the graph replays the GEMM
    on what the buffers hold now, and other addresses get their own graph."""
    m, k, n = 32, 512, 96
    a, b, out = (upload(replay, nan(size, "float32")) for size in (m * k, k * n, m * n))
    other = upload(replay, nan(m * n, "float32"))
    for step in range(5):
        a_np, b_np = (rng.standard_normal(s).astype(np.float32) for s in (m * k, k * n))
        replay.from_numpy(a_np, a)
        replay.from_numpy(b_np, b)
        target = out if step % 2 == 0 else other
        replay.matmul(a, b, target, 1, m, k, n)
        got = replay.to_numpy(target, (m, n), (n, 1), 0)
        np.testing.assert_allclose(got, a_np.reshape(m, k) @ b_np.reshape(k, n),
                                   rtol=1e-4, atol=1e-4 * np.sqrt(k))
    plan = next(p for key, p in replay.lt.plans.items() if key[4:7] == (n, m, k))
    assert plan.replays is not None and len(plan.replays.graphs) == 2  # out, then other


def test_replayed_linear_follows_its_bias(replay, rng):
    """The bias is part of what a graph stands for: a moved bias gets its own graph."""
    m, k, n = 16, 64, 48
    x_np, w_np = rng.standard_normal(m * k), rng.standard_normal(k * n)
    x, w = upload(replay, x_np.astype(np.float32)), upload(replay, w_np.astype(np.float32))
    out = upload(replay, nan(m * n, "float32"))
    biases = [rng.standard_normal(n).astype(np.float32) for _ in range(2)]
    buffers = [upload(replay, b) for b in biases]
    for step in range(6):
        replay.linear(x, w, buffers[step % 2], out, m, k, n, "relu")
        want = np.maximum(x_np.reshape(m, k) @ w_np.reshape(k, n) + biases[step % 2], 0)
        np.testing.assert_allclose(replay.to_numpy(out, (m, n), (n, 1), 0), want,
                                   rtol=1e-4, atol=1e-4 * np.sqrt(k))


def test_replayed_training_matches_cuda(replay, rng):
    """A few SGD steps of a small MLP, where each step reuses last step's addresses."""
    results = {}
    for name in ("cudnn", "cuda"):
        device = needle.device(name)
        weights = np.random.default_rng(7)
        model = needle.nn.Sequential(needle.nn.Linear(20, 32, device=device),
                                     needle.nn.ReLU(), needle.nn.Linear(32, 5, device=device))
        for p in model.parameters():
            p.data = needle.Tensor(weights.standard_normal(p.shape) * 0.2, device=device)
        opt = needle.optim.SGD(model.parameters(), lr=0.1)
        x = needle.Tensor(np.random.default_rng(8).standard_normal((16, 20)), device=device)
        y = np.random.default_rng(9).integers(0, 5, 16)
        losses = []
        for _ in range(6):
            opt.reset_grad()
            loss = needle.nn.SoftmaxLoss()(model(x), needle.Tensor(y, device=device))
            loss.backward()
            opt.step()
            losses.append(loss.numpy())
        results[name] = np.array(losses)
    np.testing.assert_allclose(results["cudnn"], results["cuda"], rtol=1e-4, atol=1e-5)
    assert results["cudnn"][-1] < results["cudnn"][0]


@pytest.mark.parametrize("precision,bound", [("tf32", 5e-3), ("bf16", 3e-2)])
def test_reduced_precision_matmul(be, rng, monkeypatch, precision, bound):
    monkeypatch.setattr(CudnnBackend, "matmul_precision", precision)
    m = k = n = 256
    a, b = rng.standard_normal(m * k).astype("float32"), rng.standard_normal(k * n).astype("float32")
    (got, *_), (want, *_) = call_both(be, "matmul", a, b, nan(m * n, "float32"), 1, m, k, n)
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err < bound


def test_set_matmul_precision_checks_its_argument(be):
    with pytest.raises(ValueError, match="bf16"):
        be.set_matmul_precision("fp8")


# ---- cuDNN convolution -----------------------------------------------------------------
CONVS = [((2, 8, 8, 3), 3, 16, 1, 1), ((4, 9, 7, 16), 3, 8, 2, 1), ((2, 6, 6, 8), 1, 4, 1, 0),
         ((1, 16, 16, 32), 3, 64, 1, 1), ((3, 10, 10, 4), 5, 6, 3, 2)]


@pytest.mark.parametrize("channels_first", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("in_shape,kernel,c_out,stride,padding", CONVS)
def test_conv(be, rng, in_shape, kernel, c_out, stride, padding, channels_first):
    n, h, w, c = in_shape
    ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    x = rng.standard_normal(n * h * w * c).astype("float32")
    wt = rng.standard_normal(kernel * kernel * c * c_out).astype("float32")
    ours, ref = call_both(be, "conv", x, wt, nan(n * ho * wo * c_out, "float32"), in_shape,
                          kernel, c_out, stride, padding, channels_first)
    assert_close(ours, ref, dict(rtol=1e-4, atol=1e-4 * kernel * np.sqrt(c)))


@pytest.mark.parametrize("channels_first", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("need", ["both", "dx", "dw"])
@pytest.mark.parametrize("in_shape,kernel,c_out,stride,padding", CONVS)
def test_conv_backward(be, rng, in_shape, kernel, c_out, stride, padding, need, channels_first):
    n, h, w, c = in_shape
    ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    g = rng.standard_normal(n * ho * wo * c_out).astype("float32")
    x = rng.standard_normal(n * h * w * c).astype("float32")
    wt = rng.standard_normal(kernel * kernel * c * c_out).astype("float32")
    dx = nan(x.size, "float32") if need != "dw" else None
    dw = nan(wt.size, "float32") if need != "dx" else None
    ours, ref = call_both(be, "conv_backward", g, x, wt, dx, dw, in_shape, kernel, c_out,
                          stride, padding, channels_first)
    assert_close(ours, ref, dict(rtol=1e-4, atol=1e-4 * np.sqrt(n * ho * wo * c_out)))


def test_graph_raw_execute_matches_the_public_execute(be, rng, monkeypatch):
    """graphs._RawExecute (the frontend's C++ call under its public execute) runs a graph
    from its second execution on; it must give the public path's result bit for bit."""
    in_shape, kernel, c_out = (2, 9, 9, 8), 3, 16
    x = upload(be, rng.standard_normal(2 * 9 * 9 * 8).astype("float32"))
    wt = upload(be, rng.standard_normal(3 * 3 * 8 * 16).astype("float32"))
    g = be._conv_graph("fprop", np.dtype("float32"), in_shape, kernel, c_out, 1, 1, True)
    results = {}
    for form in ("ordered", "raw", "ordered", "raw"):
        monkeypatch.setattr(be.graphs, "form", form)
        y = upload(be, nan(2 * 9 * 9 * 16, "float32"))
        be.conv(x, wt, y, in_shape, kernel, c_out, 1, 1, channels_first=True)
        results.setdefault(form, []).append(be.to_numpy(y, (y.size,), (1,), 0))
    if g.raw is False:
        pytest.skip("this nvidia-cudnn-frontend has no raw execute entry: the public one runs")
    assert g.raw, "the graph never ran"
    for a, b in zip(results["ordered"], results["raw"]):
        np.testing.assert_array_equal(a, b)


def test_packed_conv_weight_follows_in_place_writes(be, rng):
    """cuDNN gets each conv weight packed once and cached with the weight's buffer; an
    optimizer step, a setitem and a fill write the weight in place and must drop that copy."""
    device = needle.cudnn()
    x_np = rng.standard_normal((2, 4, 7, 7))
    w = needle.nn.Parameter(rng.standard_normal((3, 3, 4, 5)), device=device)
    x = needle.Tensor(x_np, device=device)

    def check():
        want = ops.conv(needle.Tensor(x_np), needle.Tensor(w.numpy()), 1, 1, channels_first=True)
        got = ops.conv(x, w, 1, 1, channels_first=True)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)

    check()
    check()  # from the cache
    assert w.realize_cached_data()._handle.derived, "the packed weight was not kept"
    w.grad = needle.Tensor(rng.standard_normal(w.shape), device=device)
    needle.optim.SGD([w], lr=0.5).step()
    check()
    w.realize_cached_data()[1] = needle.Tensor(rng.standard_normal((3, 4, 5)),
                                               device=device).realize_cached_data()
    check()
    w.realize_cached_data()[2, 0] = 3.0
    check()
    w.realize_cached_data().fill(0.25)
    check()


@pytest.mark.parametrize("channels_first", (False, True))
def test_float64_conv_runs_on_our_kernels(be, rng, channels_first):
    """cuDNN has no float64 convolution: the cuda device's im2col + GEMM, exact."""
    x, w = rng.standard_normal(2 * 7 * 7 * 3), rng.standard_normal(3 * 3 * 3 * 4)
    geometry = ((2, 7, 7, 3), 3, 4, 1, 1, channels_first)
    ours, ref = call_both(be, "conv", x, w, nan(2 * 7 * 7 * 4, "float64"), *geometry)
    np.testing.assert_allclose(ours[2], ref[2], rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(2 * 7 * 7 * 4)
    ours, ref = call_both(be, "conv_backward", g, x, w, nan(x.size, "float64"),
                          nan(w.size, "float64"), *geometry)
    for got, want in zip(ours[3:], ref[3:]):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


# ---- cuDNN attention (bf16) --------------------------------------------------------------
@pytest.mark.parametrize("batch,seq_q,seq_k,dim,causal", [(6, 128, 128, 64, False),
                                                          (4, 64, 64, 32, True),
                                                          (2, 17, 40, 64, False)])
def test_attention_forward_backward(bf16, rng, batch, seq_q, seq_k, dim, causal):
    be, scale = bf16, dim ** -0.5
    q = rng.standard_normal(batch * seq_q * dim).astype("float32")
    k, v = (rng.standard_normal(batch * seq_k * dim).astype("float32") for _ in range(2))
    (*_, out, stats), (*_, ref_out, ref_stats) = call_both(
        be, "attention", q, k, v, nan(q.size, "float32"), nan(batch * seq_q, "float32"), batch,
        seq_q, seq_k, dim, scale, causal)
    assert_close([out, stats], [ref_out, ref_stats], BF16_TOL)
    g = rng.standard_normal(q.size).astype("float32")
    ours, ref = call_both(be, "attention_backward", q, k, v, ref_out, ref_stats, g,
                          nan(q.size, "float32"), nan(k.size, "float32"), nan(v.size, "float32"),
                          batch, seq_q, seq_k, dim, scale, causal)
    for got, want in zip(ours[5:], ref[5:]):  # dq, dk, dv: relative to their own size
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-2


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_attention_is_exact_without_bf16_opt_in(be, rng, monkeypatch, dtype):
    """Without the bf16 opt-in (and for float64) attention runs the cuda device's exact
    kernels: float32 rounding, not bf16's."""
    monkeypatch.setattr(CudnnBackend, "matmul_precision", "highest")
    batch, seq, dim = 3, 50, 64
    q, k, v = (rng.standard_normal(batch * seq * dim).astype(dtype) for _ in range(3))
    ours, ref = call_both(be, "attention", q, k, v, nan(q.size, dtype), nan(batch * seq, dtype),
                          batch, seq, seq, dim, dim ** -0.5, True)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for got, want in zip(ours[3:], ref[3:]):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# ---- LayerNorm: ours or cuDNN's, per shape --------------------------------------------------
@pytest.fixture
def choose(be):
    """Force the cudnn backend's choice for an op and shape; forgotten afterwards."""
    from needle.backend_ndarray.cudnn import graphs
    forced = []

    def force(key, choice, *graph_key):
        be._choices[key] = "ours" if choice == "ours" else be.graphs.get(graphs.LayerNormGraph,
                                                                          *graph_key)
        forced.append(key)
    yield force
    for key in forced:
        be._choices.pop(key, None)


@pytest.mark.parametrize("choice", ["ours", "cudnn"])
@pytest.mark.parametrize("rows,cols", [(64, 768), (7, 33), (256, 4096), (1, 5)])
def test_layernorm_either_way(be, rng, choose, rows, cols, choice):
    """Both candidates of the per-shape choice give NumPy's results, forward and backward."""
    eps, n = 1e-5, rows * cols
    choose(("layernorm", rows, cols, eps), choice, "forward", rows, cols, eps)
    choose(("layernorm_backward", rows, cols), choice, "backward", rows, cols, 0.0)
    x = (rng.standard_normal(n) * 3 - 0.5).astype("float32")
    w, b = (rng.standard_normal(cols).astype("float32") for _ in range(2))
    ours, ref = call_both(be, "layernorm", x, w, b, nan(n, "float32"), nan(rows, "float32"),
                          nan(rows, "float32"), rows, cols, eps)
    assert_close(ours, ref, dict(rtol=1e-5, atol=1e-5))
    g = rng.standard_normal(n).astype("float32")
    mean, rstd = ref[4], ref[5]
    ours, ref = call_both(be, "layernorm_backward", g, x, w, mean, rstd, nan(n, "float32"),
                          nan(cols, "float32"), nan(cols, "float32"), rows, cols)
    assert_close(ours, ref, dict(rtol=1e-4, atol=1e-5 * np.sqrt(rows)))


def test_layernorm_choice_is_measured_once_per_shape(be, rng, monkeypatch):
    from needle.backend_ndarray.cudnn import backend as cudnn_backend
    tuned = []
    real = cublaslt.fastest
    monkeypatch.setattr(cudnn_backend.cublaslt, "fastest",
                        lambda candidates, run: tuned.append(candidates) or real(candidates, run))
    layer = needle.nn.LayerNorm1d(48, device=needle.cudnn())
    for _ in range(3):
        x = needle.Tensor(rng.standard_normal((37, 48)), device=needle.cudnn(), requires_grad=True)
        layer(x).sum().backward()
    assert len(tuned) == 2 and all(c[0] == "ours" for c in tuned)  # forward, backward
    assert be._choices.pop(("layernorm", 37, 48, layer.eps)) in tuned[0]
    assert be._choices.pop(("layernorm_backward", 37, 48)) in tuned[1]


# ---- through the Tensor API: cudnn against cuda and the cpu ---------------------------------
def _run(device, build, inputs, weights):
    tensors = [needle.Tensor(x, device=device) for x in inputs]
    out = build(*tensors)
    out.backward(needle.Tensor(weights, device=device))
    return [out.numpy()] + [t.grad.numpy() for t in tensors]


LAYERS = {
    "linear": (lambda x, w, b: ops.linear(x, w, b), [(64, 96), (96, 48), (48,)]),
    "linear_relu": (lambda x, w, b: ops.linear(x, w, b, "relu"), [(64, 96), (96, 48), (48,)]),
    "linear_gelu": (lambda x, w, b: ops.linear(x, w, b, "gelu"), [(33, 20), (20, 7), (7,)]),
    "conv": (lambda x, w: ops.conv(x, w, 1, 1), [(4, 12, 12, 8), (3, 3, 8, 16)]),
    "conv_stride2": (lambda x, w: ops.conv(x, w, 2, 1), [(4, 13, 13, 8), (3, 3, 8, 16)]),
    "mlp_block": (lambda x, w1, w2: ops.relu(x @ w1) @ w2, [(32, 64), (64, 64), (64, 10)]),
    "batchnorm_train": (lambda x, w, b: ops.batch_norm_train(x, w, b, act="relu")[0],
                        [(8, 16, 6, 6), (16,), (16,)]),
    "batchnorm1d_train": (lambda x, w, b: ops.batch_norm_train(x, w, b)[0],
                          [(32, 24), (24,), (24,)]),
    "layernorm": (lambda x, w, b: ops.layer_norm(x, w, b), [(64, 768), (768,), (768,)]),
    "layernorm_small": (lambda x, w, b: ops.layer_norm(x, w, b), [(6, 10), (10,), (10,)]),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_matches_cuda_and_cpu(be, rng, name):
    build, shapes = LAYERS[name]
    inputs = [rng.standard_normal(s) for s in shapes]
    with needle.no_grad():
        out_shape = build(*[needle.Tensor(x) for x in inputs]).shape
    weights = rng.standard_normal(out_shape)
    ours = _run(needle.cudnn(), build, inputs, weights)
    for other in (needle.cuda(), needle.cpu()):
        for got, want in zip(ours, _run(other, build, inputs, weights)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1, np.abs(want).max()))


@pytest.mark.parametrize("causal", [False, True])
def test_attention_tensor_api_matches_cuda(bf16, rng, causal):
    def build(q, k, v):
        return ops.scaled_dot_product_attention(q, k, v, causal)
    inputs = [rng.standard_normal((2, 4, 32, 64)) for _ in range(3)]
    weights = rng.standard_normal((2, 4, 32, 64))
    ours = _run(needle.cudnn(), build, inputs, weights)
    for got, want in zip(ours, _run(needle.cuda(), build, inputs, weights)):
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-2


# ---- anywhere ------------------------------------------------------------------------------
def test_alignment():
    assert cublaslt._alignment(0, 256, 1024) == 256
    assert cublaslt._alignment(4096 + 16) == 16
    assert cublaslt._alignment(4096, 4) == 4


def test_autotuner_keeps_the_candidate_fastest_in_an_eager_loop():
    """Windows of calls sized to ~TUNING_WINDOW_MS from a one-call estimate; a candidate
    scores its best window's max(GPU time, issue time + EAGER_HOST_MS) per call."""
    eager = cublaslt.EAGER_HOST_MS
    one_call = {"split_k": 0.010, "plain": 0.012, "slow": 0.030}  # ms, GPU
    back_to_back = {"split_k": 0.023, "plain": 0.020, "slow": 0.030}
    issue = {"split_k": 0.009, "plain": 0.009, "slow": 0.008}
    ran, windows = [], []

    def per_call_ms(call, calls):
        before = len(ran)
        call()
        algo = ran[before]
        windows.append((algo, calls))
        if calls == 1:
            return one_call[algo], issue[algo]
        noise = 0.001 * sum(a == algo for a, _ in windows)  # the first window is the best
        return back_to_back[algo] + noise, issue[algo]

    # GPU-bound: the back-to-back time decides, not the one-call time
    assert cublaslt.fastest(list(one_call), ran.append, per_call_ms) == "plain"
    expected = {a: min(cublaslt.TUNING_MAX_CALLS, int(cublaslt.TUNING_WINDOW_MS / t))
                for a, t in one_call.items()}
    for algo in one_call:
        timed = [calls for a, calls in windows if a == algo]
        assert timed == [1] + [expected[algo]] * cublaslt.TUNING_SAMPLES
        assert ran.count(algo) == 2 + cublaslt.TUNING_SAMPLES  # warm-up, estimate, windows
    # host-bound: the cheapest call to issue wins although its GEMM is the slowest
    windows.clear()
    back_to_back.update(split_k=0.004, plain=0.005, slow=0.006)
    issue.update(split_k=0.012, plain=0.011, slow=0.008)
    assert max(back_to_back.values()) + 0.005 < 0.008 + eager  # (host-bound, noise and all)
    assert cublaslt.fastest(list(one_call), ran.append, per_call_ms) == "slow"


class _Graph:
    def __init__(self, log, args):
        self.log, self.args = log, args

    def launch(self):
        self.log.append(("replay", self.args))


def test_replays_capture_on_second_use_and_fall_back_when_capture_fails(monkeypatch):
    monkeypatch.setattr(cublaslt, "REPLAY_GRAPHS", 3)
    log, refuse = [], set()

    def capture(args):
        if args in refuse:
            raise RuntimeError("capture refused")
        log.append(("capture", args))
        return _Graph(log, args)

    replays = cublaslt._Replays(capture, lambda args: log.append(("direct", args)))
    for args in ("A", "A", "A", "B"):
        replays.run(args)
    assert log == [("direct", "A"), ("capture", "A"), ("replay", "A"), ("replay", "A"),
                   ("direct", "B")]
    log.clear()
    for args in ("C", "D"):  # a fourth tuple seen: the record of seen tuples starts over
        replays.run(args)
    replays.run("A")  # its graph stays
    replays.run("B")  # forgotten: a first use again
    assert log == [("direct", "C"), ("direct", "D"), ("replay", "A"), ("direct", "B")]
    refuse.add("B")
    log.clear()
    replays.run("B")  # the capture fails: the GEMM runs directly, and captures stop
    replays.run("D")
    replays.run("D")
    replays.run("A")
    assert log == [("direct", "B"), ("direct", "D"), ("direct", "D"), ("replay", "A")]
    assert replays.failed


@pytest.mark.parametrize("graph_ms,capture_fails,kept", [(0.010, False, True),
                                                          (0.0199, False, False),
                                                          (0.010, True, False)])
def test_replay_is_kept_only_where_it_measured_faster(monkeypatch, graph_ms, capture_fails,
                                                      kept):
    """A plan replays graphs when the graph's eager loop took at most REPLAY_GAIN of the
    direct call's (0.020 ms here), and never when its capture failed."""
    log, graph = [], _Graph([], "args")
    lt = cublaslt.CublasLt.__new__(cublaslt.CublasLt)  # no GPU: the calls below are stubs

    def capture(plan, args):
        if capture_fails:
            raise RuntimeError("capture refused")
        return graph

    monkeypatch.setattr(lt, "_capture", capture, raising=False)
    monkeypatch.setattr(lt, "_run", lambda plan, *args: log.append(args), raising=False)
    monkeypatch.setattr(cublaslt, "eager_ms",
                        lambda call: graph_ms if call == graph.launch else (call(), 0.020)[1])
    replays = lt._replays_if_faster(types.SimpleNamespace(algo="algo"), ("a", "b", "d", 0))
    assert (replays is not None) == kept
    if kept:
        assert replays.graphs == {("a", "b", "d", 0): graph}  # the tuning capture is reused
        assert ("a", "b", "d", 0) in replays.seen


@pytest.mark.parametrize("module,package", [("nvmath", "nvmath-python"),
                                            ("cudnn", "nvidia-cudnn-frontend")])
def test_unavailable_reason_names_the_package(monkeypatch, module, package):
    monkeypatch.setattr(CudaBackend, "unavailable_reason", lambda self: None)
    for name in ("nvmath", "nvmath.bindings", "nvmath.bindings.cublasLt", "cudnn"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))  # importable stand-ins
    monkeypatch.setitem(sys.modules, module, None)  # except this one: its import fails
    reason = CudnnBackend().unavailable_reason()
    assert package in reason
