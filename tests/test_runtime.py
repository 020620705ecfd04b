"""needle.runtime: the NumPy-level ops against float64 NumPy (and PyTorch's convolution) on
every device, their *_into forms and errors; the autotune cache's file handling (corrupt,
truncated and foreign files, two processes writing at once)."""
import json
import multiprocessing
import warnings

import numpy as np
import pytest

import needle
import needle.runtime as rt
from needle.errors import DTypeError, ShapeError
from needle.runtime import tune_cache as tc

torch = pytest.importorskip("torch")


def _attention_ref(q, k, v, causal):
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    s = q @ k.T / np.sqrt(q.shape[1])
    if causal:  # keys after each query masked, aligned to the last key
        offset = k.shape[0] - q.shape[0]
        s = np.where(np.arange(k.shape[0])[None, :] <= np.arange(q.shape[0])[:, None] + offset,
                     s, -np.inf)
    p = np.exp(s - s.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)) @ v


def _conv_ref(x, w, b, stride, padding, relu):
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    y = torch.nn.functional.conv2d(t(x), t(w), None if b is None else t(b), stride=stride,
                                   padding=padding)
    return (torch.relu(y) if relu else y).numpy()


@pytest.mark.parametrize("m,k,n", [(7, 13, 5), (64, 32, 48), (1, 1, 1)])
def test_matmul2d(device, rng, m, k, n):
    a, b = rng.standard_normal((m, k)).astype("float32"), rng.standard_normal((k, n)).astype("float32")
    got = rt.matmul2d(a, b, device=device)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seq_q,seq_k,dim", [(8, 8, 16), (5, 9, 12), (12, 12, 32)])
def test_attention2d(device, rng, seq_q, seq_k, dim, causal):
    q = rng.standard_normal((seq_q, dim)).astype("float32")
    k, v = (rng.standard_normal((seq_k, dim)).astype("float32") for _ in range(2))
    np.testing.assert_allclose(rt.attention2d(q, k, v, causal=causal, device=device),
                               _attention_ref(q, k, v, causal), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("n,c,h,co,k,stride,padding,bias", [
    (1, 3, 16, 16, 3, 1, 1, True), (2, 3, 28, 16, 3, 2, 1, False), (2, 4, 9, 5, 5, 1, 2, True)])
def test_conv2d(device, rng, n, c, h, co, k, stride, padding, bias, relu):
    x = rng.standard_normal((n, c, h, h + 1)).astype("float32")
    w = rng.standard_normal((co, c, k, k)).astype("float32")
    b = rng.standard_normal(co).astype("float32") if bias else None
    fn = rt.conv2d_relu if relu else rt.conv2d
    np.testing.assert_allclose(fn(x, w, b, stride=stride, padding=padding, device=device),
                               _conv_ref(x, w, b, stride, padding, relu), rtol=1e-4, atol=1e-4)


def test_tensors_in_give_tensors_on_their_device(device, rng):
    a, b = (rng.standard_normal((4, 4)).astype("float32") for _ in range(2))
    ta, tb = needle.Tensor(a, device=device), needle.Tensor(b, device=device)
    got = rt.matmul2d(ta, tb)
    assert isinstance(got, needle.Tensor) and got.device == device
    np.testing.assert_allclose(got.numpy(), a @ b, rtol=1e-5, atol=1e-5)


def test_into_writes_the_callers_array_and_checks_it(device, rng):
    a, b = (rng.standard_normal((6, 6)).astype("float32") for _ in range(2))
    out = np.full((6, 6), np.nan, np.float32)
    assert rt.matmul2d_into(a, b, out, device=device) is out
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeError, match=r"out has shape \(6, 5\), the result has shape \(6, 6\)"):
        rt.matmul2d_into(a, b, np.empty((6, 5), np.float32), device=device)
    with pytest.raises(DTypeError, match="out is float64, the result is float32"):
        rt.matmul2d_into(a, b, np.empty((6, 6)), device=device)
    q = rng.standard_normal((4, 8)).astype("float32")
    att = np.empty((4, 8), np.float32)
    rt.attention2d_into(q, q, q, att, device=device)
    np.testing.assert_allclose(att, _attention_ref(q, q, q, False), rtol=1e-5, atol=1e-5)
    x, w = rng.standard_normal((1, 2, 5, 5)).astype("float32"), \
        rng.standard_normal((3, 2, 3, 3)).astype("float32")
    conv = needle.Tensor(np.zeros((1, 3, 5, 5), np.float32), device=device)
    rt.conv2d_into(x, w, conv, relu=True, device=device)
    np.testing.assert_allclose(conv.numpy(), _conv_ref(x, w, None, 1, 1, True), rtol=1e-4,
                               atol=1e-4)


def test_bad_inputs_get_clear_errors(device):
    a = np.ones((3, 4), np.float32)
    with pytest.raises(DTypeError, match="input 0 is int64; NumPy-level ops take float32"):
        rt.matmul2d(np.ones((3, 4), np.int64), a.T, device=device)
    with pytest.raises(DTypeError, match="several dtypes"):
        rt.matmul2d(a, np.ones((4, 2)), device=device)
    with pytest.raises(ShapeError, match="inner sizes differ"):
        rt.matmul2d(a, a, device=device)
    with pytest.raises(ShapeError, match="must share the head dim"):
        rt.attention2d(a, np.ones((3, 5), np.float32), a, device=device)
    with pytest.raises(ShapeError, match="w's in-channels must be x's channels"):
        rt.conv2d(np.ones((1, 3, 5, 5), np.float32), np.ones((2, 4, 3, 3), np.float32),
                  device=device)
    view = np.ones((8, 8), np.float32)[::2, ::2]  # not contiguous: copied, not refused
    np.testing.assert_allclose(rt.matmul2d(view, view, device=device), view @ view)


# -- the autotune cache -------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEEDLE_CACHE_DIR", str(tmp_path))
    return tmp_path / "tune.json"


def test_choices_persist_under_keys_naming_what_they_depend_on(cache):
    k = tc.key("matmul", "NVIDIA H200", [(64, 64), (64, 64)], ["float32"],
               {"driver": "580.159.04", "cublas": "13.0"})
    assert "device=NVIDIA H200" in k and "driver=580.159.04" in k and "op=matmul" in k
    assert k != tc.key("matmul", "NVIDIA H100", [(64, 64), (64, 64)], ["float32"],
                       {"driver": "580.159.04", "cublas": "13.0"})
    assert tc.lookup(k) is None
    tc.store(k, {"engine": "vendor", "algo": 3}, {"vendor": 7.5, "needle": 9.1})
    entry = tc.lookup(k)
    assert entry["choice"] == {"engine": "vendor", "algo": 3}
    assert entry["times_us"] == {"vendor": 7.5, "needle": 9.1}
    assert json.loads(cache.read_text())["format"] == tc.FORMAT
    assert set(tc.tune_cache()) == {k}
    tc.clear_tune_cache()
    assert tc.tune_cache() == {} and not cache.exists()


@pytest.mark.parametrize("contents", [
    "not json at all", '{"format": 1, "needle": "0.1.0", "entr',  # garbage, truncated
    json.dumps({"format": 99, "needle": "0.1.0", "entries": {}}),  # another format
    json.dumps({"format": 1, "needle": "0.0.1", "entries": {"k": {"choice": 1}}}),  # version
    json.dumps({"format": 1, "needle": needle.__version__, "entries": {"k": 3}}),
])
def test_a_file_that_is_not_ours_is_set_aside_never_used(cache, contents):
    cache.write_text(contents)
    with pytest.warns(RuntimeWarning, match="could not be used"):
        assert tc.lookup("k") is None
    assert not cache.exists() and len(list(cache.parent.glob("tune.json.bad-*"))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: no more warnings
        tc.store("k", "fresh")
        assert tc.lookup("k")["choice"] == "fresh"


def _writer(root, name, count):
    import os
    os.environ["NEEDLE_CACHE_DIR"] = root
    from needle.runtime import tune_cache
    for i in range(count):
        tune_cache.store(f"{name}-{i}", i)


def test_two_processes_writing_at_once_keep_every_entry(cache):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(cache.parent), name, 40))
             for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    entries = tc.tune_cache()
    assert set(entries) == {f"{n}-{i}" for n in "ab" for i in range(40)}
    assert not list(cache.parent.glob("*.tmp"))


# -- the capability matrix -------------------------------------------------------------------
def test_capabilities_describe_every_device_and_why_one_is_missing():
    caps = rt.capabilities()
    assert set(caps) == {d.name for d in needle.all_devices()}
    for dev in needle.all_devices():
        c = caps[dev.name]
        assert c["built"] and c["available"] == dev.enabled()
        if not c["available"]:
            assert "pip install" in c["reason"]
            continue
        assert c["dtypes"] == list(dev.backend.dtypes) and "float32" in c["dtypes"]
        assert all(dev.backend.supports(op) for op in c["fused_ops"] + c["layer_ops"])
        assert c["graph_replay"] and c["compute"]
    cpu = caps["cpu"]
    assert cpu["memory"] is None and "batchnorm_train" in cpu["layer_ops"]
    assert rt.capabilities("cpu").keys() == {"cpu"}


def test_the_markdown_says_where_it_was_made():
    from needle.runtime import devices as cap
    text = cap.markdown()
    assert text.startswith("# Capabilities of Needle's devices")
    assert "Made by `python -m needle.runtime.capabilities --markdown`" in text
    for dev in needle.all_devices():
        assert f"| `{dev.name}` |" in text
    assert cap.main([]) == 0


# -- the trace ---------------------------------------------------------------------------------
@pytest.fixture
def tracing():
    from needle.runtime import trace
    trace.clear()
    trace.enable()
    yield trace
    trace.disable()
    trace.clear()


def test_the_trace_has_one_event_per_op(device, rng, tracing):
    a = rng.standard_normal((8, 8)).astype("float32")
    x = needle.Tensor(a, device=device)
    (x @ x).relu().sum()
    rt.matmul2d(a, a, device=device)
    step = needle.compile(lambda t: (t * 2.0).sum())
    for _ in range(4):
        step(x)
    events = tracing.events()
    eager = [e["op"] for e in events if e["kind"] == "eager"]
    assert eager[:3] == ["MatMul", "ReLU", "Summation"]
    runtime = [e for e in events if e["kind"] == "runtime"]
    assert [e["op"] for e in runtime] == ["matmul2d"]
    assert runtime[0]["shapes"] == [(8, 8), (8, 8)] and runtime[0]["bytes"] == 3 * 8 * 8 * 4
    compiled = [e for e in events if e["kind"] == "compiled"]
    assert len(compiled) == 4 and all(e["op"] == "<lambda>" for e in compiled)
    for e in events:
        assert e["device"] == str(device) and e["dtype"] == "float32"
        assert e["host_us"] > 0 and e["gpu_us"] is None and e["bytes"] > 0
    assert [e["start_us"] for e in events] == sorted(e["start_us"] for e in events)
    text = tracing.timeline()
    assert "MatMul" in text and "matmul2d" in text and "compiled" in text


def test_the_trace_exports_chrome_json_and_disabling_restores_the_hot_path(tmp_path, tracing):
    from needle.autograd import Value
    from needle.compiler.api import Compiled
    x = needle.Tensor(np.ones((3, 3), np.float32))
    (x + x).exp()
    path = tracing.export_chrome_trace(tmp_path / "trace.json")
    data = json.loads(path.read_text())
    assert [e["name"] for e in data["traceEvents"]] == ["EWiseAdd", "Exp"]
    assert all(e["ph"] == "X" and e["dur"] > 0 for e in data["traceEvents"])
    traced_make = Value.__dict__["make_from_op"]
    tracing.disable()
    assert Value.__dict__["make_from_op"] is not traced_make
    assert Value.__dict__["make_from_op"].__func__.__qualname__ == "Value.make_from_op"
    assert Compiled.__dict__["__call__"].__qualname__ == "Compiled.__call__"
    before = len(tracing.events())
    (x + x).exp()
    assert len(tracing.events()) == before  # nothing recorded while disabled


# -- resident sessions -------------------------------------------------------------------------
@pytest.mark.parametrize("sync", ["end", "always"])
def test_a_session_gives_the_one_shot_results_and_downloads_only_on_get(device, rng, sync,
                                                                       monkeypatch):
    a, b = (rng.standard_normal((16, 16)).astype("float32") for _ in range(2))
    q = rng.standard_normal((6, 8)).astype("float32")
    x = rng.standard_normal((1, 3, 8, 8)).astype("float32")
    w, bias = rng.standard_normal((4, 3, 3, 3)).astype("float32"), \
        rng.standard_normal(4).astype("float32")
    want = [rt.matmul2d(a, b, device=device), rt.attention2d(q, q, q, causal=True, device=device),
            rt.conv2d_relu(x, w, bias, device=device)]
    downloads = []
    real = type(device.backend).to_numpy
    monkeypatch.setattr(type(device.backend), "to_numpy",
                        lambda self, *args: downloads.append(1) or real(self, *args))
    with rt.session(device, sync=sync) as s:
        ta, tb, tq, tx, tw, tbias = (s.put(v) for v in (a, b, q, x, w, bias))
        for _ in range(3):  # repeated calls: launches only
            c = s.matmul2d(ta, tb)
        att = s.attention2d(tq, tq, tq, causal=True)
        conv = s.conv2d_relu(tx, tw, tbias)
        assert not downloads
        got = [s.get(c), s.get(att), s.get(conv)]
        assert len(downloads) == 3
    for g, w_ in zip(got, want):
        np.testing.assert_allclose(g, w_, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="session has ended"):
        s.matmul2d(ta, tb)


def test_a_session_refuses_host_arrays_and_unknown_sync(device):
    with pytest.raises(ValueError, match="sync must be one of"):
        rt.session(device, sync="sometimes")
    with rt.session(device) as s:
        with pytest.raises(TypeError, match=r"put it on the session first \(s.put\(array\)\)"):
            s.matmul2d(np.ones((2, 2), np.float32), s.put(np.ones((2, 2), np.float32)))


# -- the CPU crossover ---------------------------------------------------------------------------
def test_auto_measures_once_keeps_the_choice_and_the_trace_names_it(rng, cache, monkeypatch,
                                                                   tracing):
    from needle.runtime import crossover
    acc = crossover.accelerator()
    if acc is None:
        pytest.skip("no accelerator here: 'auto' is the cpu (next test)")
    timed = []
    real = crossover._best_us
    monkeypatch.setattr(crossover, "_best_us", lambda run: timed.append(1) or real(run))
    a = rng.standard_normal((32, 32)).astype("float32")
    got = rt.matmul2d(a, a, device="auto")
    np.testing.assert_allclose(got, a.astype(np.float64) @ a, rtol=1e-5, atol=1e-5)
    assert len(timed) == 2  # the cpu and the accelerator, once each
    (entry,) = tc.tune_cache().values()
    assert entry["choice"] in ("cpu", acc.name) and set(entry["times_us"]) == {"cpu", acc.name}
    rt.matmul2d(a, a, device="auto")
    assert len(timed) == 2  # kept: not measured again
    outer = [e for e in tracing.events() if e["kind"] == "runtime"][-1]
    assert outer["device"] == str(needle.device(entry["choice"]))
    np.testing.assert_allclose(rt.conv2d(np.ones((1, 2, 4, 4), np.float32),
                                         np.ones((3, 2, 3, 3), np.float32), device="auto"),
                               _conv_ref(np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3)), None, 1,
                                         1, False), rtol=1e-5)


def test_auto_without_an_accelerator_or_with_tensors_measures_nothing(rng, cache,
                                                                     monkeypatch):
    from needle.runtime import crossover
    monkeypatch.setattr(crossover, "ACCELERATORS", ())
    a = rng.standard_normal((4, 4)).astype("float32")
    np.testing.assert_allclose(rt.matmul2d(a, a, device="auto"), a @ a, rtol=1e-5)
    assert tc.tune_cache() == {}
    t = needle.Tensor(a)
    assert rt.matmul2d(t, t, device="auto").device == t.device  # where the Tensors are
