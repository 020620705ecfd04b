"""needle-bench: the quick run end to end (Needle cpu vs PyTorch CPU, and compiled Needle),
the validation that keeps wrong results out of the timings, and the statistics. No timing is
asserted."""
import contextlib
import csv
import io
import json
import math

import numpy as np
import pytest

from needle.bench import cli, report, suites, timing
from needle.bench.backends import Backend, Runnable, all_backends, select
from needle.bench.validation import Check, rel_err, validate

pytest.importorskip("torch")

STAT_FIELDS = ("mean_ms", "std_ms", "min_ms", "median_ms", "p95_ms", "p99_ms")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = cli.main(["--quick", "--out", str(out), "--backends", "needle-cpu,torch-cpu",
                     "--no-progress"])
    return code, out


def test_quick_run_writes_every_file(quick_run):
    code, out = quick_run
    assert code == 0
    for name in ("results.json", "results.csv", "results.md"):
        assert (out / name).stat().st_size > 0
    pytest.importorskip("matplotlib")
    for suite in suites.SUITES:
        png = out / f"{suite}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_json_has_metadata_and_valid_rows(quick_run):
    _, out = quick_run
    data = json.loads((out / "results.json").read_text())
    meta = data["metadata"]
    for key in ("date", "cpu", "gpu", "driver", "versions", "git_commit", "settings"):
        assert key in meta
    assert meta["versions"]["numpy"] and meta["versions"]["torch"]
    rows = data["rows"]
    assert {r["backend"] for r in rows} == {"needle-cpu", "torch-cpu"}
    expected = {(s, c.name) for s in suites.SUITES for c in suites.cases(s, quick=True)}
    assert {(r["suite"], r["case"]) for r in rows} == expected
    for r in rows:
        assert r["status"] == "ok", r
        assert r["valid"] is True
        assert r["rel_err"] <= r["tol"]
        for f in STAT_FIELDS:
            assert isinstance(r[f], float) and r[f] > 0
        assert r["min_ms"] <= r["median_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["iters"] == 3
        assert r["vs_best_torch"] is not None and r["vs_torch_cuda"] is None
        if r["suite"] == "matmul":
            assert r["gflops"] > 0


def test_quick_csv_has_metadata_and_rows(quick_run):
    _, out = quick_run
    lines = (out / "results.csv").read_text().splitlines()
    comments = [line for line in lines if line.startswith("#")]
    assert any(line.startswith("# date:") for line in comments)
    assert any(line.startswith("# git_commit:") for line in comments)
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert len(rows) == len(json.loads((out / "results.json").read_text())["rows"])
    assert all(r["status"] == "ok" and float(r["median_ms"]) > 0 for r in rows)


@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-compiled")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["--quick", "--suite", "mlp,resnet9", "--out", str(out), "--backends",
                         "needle-cpu,needle-cpu-compiled", "--no-progress"])
    rows = json.loads((out / "results.json").read_text())["rows"]
    return code, rows, printed.getvalue(), out


def test_compiled_rows_are_valid_and_report_compile_time_apart(compiled_run):
    code, rows, printed, out = compiled_run
    assert code == 0
    compiled = [r for r in rows if r["backend"] == "needle-cpu-compiled"]
    assert {r["suite"] for r in compiled} == {"mlp", "resnet9"}
    for r in compiled:
        assert r["status"] == "ok" and r["valid"] and r["rel_err"] <= r["tol"], r
        assert r["compile_s"] > 0 and r["opt_level"] == 2 and r["launches_per_call"] > 0
        assert r["traces"] == (3 if r["suite"] == "mlp" else 2)  # SGD makes its state lazily
        assert r["iters"] == 3
    assert all("compile_s" not in r for r in rows if r["backend"] == "needle-cpu")
    for suite in ("mlp", "resnet9"):
        table = printed.split(f"== {suite} ==")[1]
        assert "compile s" in table.splitlines()[1]
    header = next(line for line in (out / "results.csv").read_text().splitlines()
                  if not line.startswith("#"))
    assert "compile_s" in header.split(",")


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-train")
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["--quick", "--suite", ",".join(suites.TRAIN_SUITES), "--out", str(out),
                         "--backends", "needle-cpu,needle-cpu-compiled,torch-cpu",
                         "--no-progress"])
    return code, json.loads((out / "results.json").read_text())["rows"]


def test_training_suites_run_and_validate_on_the_cpu(train_run):
    code, rows = train_run
    assert {(r["suite"], r["backend"]) for r in rows} == {
        (s, b) for s in suites.TRAIN_SUITES
        for b in ("needle-cpu", "needle-cpu-compiled", "torch-cpu")}
    for r in rows:
        assert r["status"] == "ok" and r["valid"] and r["rel_err"] <= r["tol"], r
        assert r["iters"] == 3 and r["median_ms"] > 0
        if r["backend"] == "needle-cpu-compiled":
            assert r["traces"] == 3 and r["compile_s"] > 0  # the optimizers' lazy state
    assert code == (1 if any(r["status"].startswith("error") for r in rows) else 0)


def _one_step(case, data, fn):
    """``fn(name, new, old)`` applied to every parameter of PyTorch's one step."""
    ref = suites.reference(case, data)
    initial = suites.initial_params(case, data)
    wrong = {k: fn(k, v, initial[k]) for k, v in ref["params"].items()}
    return ref, validate(suites.checks(case, {"loss": ref["loss"], "params": wrong}, ref, data))


@pytest.mark.parametrize("suite", ["resnet9-train", "lstm"])
def test_training_checks_catch_a_wrong_gradient(suite):
    case = suites.cases(suite, quick=True)[0]
    data = suites.make_data(case)
    _, verdict = _one_step(case, data, lambda k, new, old: new)
    assert verdict.ok
    # every gradient 10% off: one SGD step moves the weights by ~1e-4 of their size
    _, verdict = _one_step(case, data, lambda k, new, old: old + (new - old) * 1.1)
    assert not verdict.ok and verdict.what.startswith("update of")
    # one layer's gradient 10% off is enough
    _, verdict = _one_step(case, data, lambda k, new, old: old + (new - old) * (
        1.1 if k.startswith(("layer1.", "l1.")) else 1.0))
    assert not verdict.ok


def test_transformer_checks_catch_a_wrong_gradient_direction():
    # Adam's first step is ~lr * sign(grad): a scaled gradient cannot be seen, a wrong one can
    case = suites.cases("transformer", quick=True)[0]
    data = suites.make_data(case)
    _, verdict = _one_step(case, data, lambda k, new, old: new)
    assert verdict.ok
    _, verdict = _one_step(case, data, lambda k, new, old: old - (new - old)
                           if k == "l0.ff1.w" else new)
    assert not verdict.ok and verdict.what == "update of l0.ff1.w"


def test_resnet9_train_checks_the_running_statistics():
    # PyTorch updates running_var with the unbiased batch variance: the biased one fails
    case = suites.cases("resnet9-train", quick=True)[0]
    data = suites.make_data(case)

    def biased(name, new, old):
        if name != "layer7.var":  # the last conv: batch 2 x 2 x 2 values per channel
            return new
        n = 2 * 2 * 2
        return 0.9 * old + (new - 0.9 * old) * (n - 1) / n
    _, verdict = _one_step(case, data, biased)
    assert not verdict.ok and verdict.what == "update of layer7.var"


def _needle_cpu_first_result(case, data):
    (backend,) = select(all_backends(), ["needle-cpu"])
    return backend.build(case, data).output


def test_conv_step_checks_catch_a_flipped_weight_gradient():
    # correlation where the backward needs convolution (or the reverse) flips the kernel
    (case,) = suites.cases("micro-conv-step", quick=True)
    data = suites.make_data(case)
    ref = suites.reference(case, data)
    out = _needle_cpu_first_result(case, data)
    assert validate(suites.checks(case, out, ref, data)).ok
    verdict = validate(suites.checks(case, dict(out, dw=out["dw"][..., ::-1, ::-1]), ref, data))
    assert not verdict.ok and verdict.what == "dw"


def test_norms_validate_and_catch_a_biased_running_variance():
    # PyTorch updates running_var with the unbiased batch variance, as resnet9-train checks
    layernorm, batchnorm = suites.cases("micro-norms", quick=True)
    assert (layernorm.params["norm"], batchnorm.params["norm"]) == ("layernorm", "batchnorm")
    for case in (layernorm, batchnorm):
        data = suites.make_data(case)
        ref = suites.reference(case, data)
        out = _needle_cpu_first_result(case, data)
        assert validate(suites.checks(case, out, ref, data)).ok
    biased = 0.9 + 0.1 * data["x"].astype(np.float64).var((0, 2, 3))
    verdict = validate(suites.checks(batchnorm, dict(out, running_var=biased), ref, data))
    assert not verdict.ok and verdict.what == "running_var"


def test_compiled_mlp_validates_and_times_replays():
    # the validated step runs after the weights are restored in place: it and every timed
    # step must replay the graph, not trace again
    (backend,) = select(all_backends(), ["needle-cpu-compiled"])
    case = suites.cases("mlp", quick=True)[0]
    data = suites.make_data(case)
    runnable = backend.build(case, data)
    compiled = runnable.step.func
    assert validate(suites.checks(case, runnable.output, suites.reference(case, data),
                                  data)).ok
    before = compiled.stats()
    runnable.step()
    after = compiled.stats()
    assert before["cache_hits"] == 2 and after["cache_hits"] == 3
    assert after["traces"] == before["traces"] == 3 and after["recompiles"] == 0


def test_compiled_backends_skip_the_other_suites():
    (backend,) = select(all_backends(), ["needle-cpu-compiled"])
    case = suites.cases("matmul", quick=True)[0]
    row = cli.run_row(backend, case, suites.make_data(case), None, timing.Settings())
    assert row["status"] == ("skipped: compiled Needle runs the mlp, resnet9, resnet9-train, "
                             "transformer, lstm suites")


def test_commit_passed_in_wins_over_the_checkout(monkeypatch):
    # a tree copied to the GPU machine carries a stale .git: the commit passed in is the truth
    from needle.bench import metadata
    monkeypatch.setenv("NEEDLE_BENCH_COMMIT", "abc1234")
    assert metadata.git_commit() == "abc1234"
    monkeypatch.delenv("NEEDLE_BENCH_COMMIT")
    assert metadata.git_commit() != "abc1234"


def test_python_m_entry_point_exists():
    import importlib.util
    assert importlib.util.find_spec("needle.bench.__main__") is not None


# ---------------------------------------------------------------- validation

def test_rel_err():
    ref = np.array([3.0, 4.0])
    assert rel_err(ref, ref) == 0.0
    assert rel_err(ref + [0.0, 0.5], ref) == pytest.approx(0.1)
    assert rel_err(np.array([np.nan, 4.0]), ref) == math.inf
    assert rel_err(np.ones(3), ref) == math.inf  # wrong shape
    assert rel_err(np.zeros(2), np.zeros(2)) == 0.0


def test_validate_reports_worst_check():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((8, 8))
    ok = validate([Check("C", ref * (1 + 1e-7), ref, 1e-4)])
    assert ok.ok and ok.status == "ok"
    bad = validate([Check("a", ref, ref, 1e-4), Check("b", ref * 1.01, ref, 1e-4)])
    assert not bad.ok and bad.what == "b"
    assert bad.rel_err == pytest.approx(0.01)
    assert bad.status.startswith("mismatch: rel err 1.00e-02")


def test_matmul_checks_reject_tf32_like_error():
    case = suites.cases("matmul", quick=True)[0]
    data = suites.make_data(case)
    ref = suites.reference(case, data)
    exact = (data["a"] @ data["b"]).astype(np.float32)
    assert validate(suites.checks(case, exact, ref, data)).ok
    noise = np.random.default_rng(1).standard_normal(exact.shape) * 5e-4 * np.std(ref)
    assert not validate(suites.checks(case, exact + noise, ref, data)).ok


def test_mlp_checks_catch_a_wrong_gradient():
    pytest.importorskip("torch")
    case = suites.cases("mlp", quick=True)[0]
    data = suites.make_data(case)
    ref = suites.reference(case, data)
    assert validate(suites.checks(case, ref, ref, data)).ok
    # the weights hardly move in one step: a gradient off by 10% changes them by ~1e-4
    # relative, yet the check of the update must see it
    initial = [a for w, b in data["weights"] for a in (w, b)]
    wrong = [p0 + (p - p0) * 1.1 for p, p0 in zip(ref["params"], initial)]
    verdict = validate(suites.checks(case, {"loss": ref["loss"], "params": wrong}, ref, data))
    assert not verdict.ok and verdict.what.startswith("update of")


def _fake_backend(output_fn):
    def build(case, data):
        return Runnable(output=output_fn(case, data), step=lambda: None)
    return Backend(name="fake", family="needle", build=build, check=lambda: None)


def test_wrong_backend_output_is_marked_invalid_and_not_timed():
    case = suites.cases("matmul", quick=True)[0]
    data = suites.make_data(case)
    ref = suites.reference(case, data)
    settings = timing.Settings(iters=3, warmup=1)

    wrong = _fake_backend(lambda c, d: d["a"] @ d["b"] + 1.0)
    row = cli.run_row(wrong, case, data, ref, settings)
    assert row["status"].startswith("mismatch: rel err")
    assert row["valid"] is False and "median_ms" not in row

    right = _fake_backend(lambda c, d: d["a"] @ d["b"])
    row = cli.run_row(right, case, data, ref, settings)
    assert row["status"] == "ok" and row["valid"] and row["iters"] == 3


def test_unavailable_error_and_too_slow_rows():
    case = suites.cases("matmul", quick=True)[0]
    data = suites.make_data(case)
    ref = suites.reference(case, data)
    settings = timing.Settings()

    missing = Backend(name="gone", family="jax", build=None, check=lambda: "no GPU here")
    row = cli.run_row(missing, case, data, ref, settings)
    assert row["status"] == "skipped: no GPU here" and row["unavailable"]

    def broken(case, data):
        raise RuntimeError("kernel failed\nmore text")
    row = cli.run_row(Backend(name="b", family="needle", build=broken, check=lambda: None),
                      case, data, ref, settings)
    assert row["status"] == "error: RuntimeError: kernel failed"

    def slow(case, data):
        import time
        return Runnable(output=data["a"] @ data["b"], step=lambda: time.sleep(0.05))
    tight = timing.Settings(max_row_time=0.2)
    row = cli.run_row(Backend(name="s", family="needle", build=slow, check=lambda: None),
                      case, data, ref, tight)
    assert row["status"].startswith("skipped: too slow") and row["valid"]


# ---------------------------------------------------------------- statistics and timing

def test_summarize_matches_numpy():
    samples_s = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 2.5, 3.5]) * 1e-3
    stats = timing.summarize(samples_s)
    ms = samples_s * 1e3
    assert stats["mean_ms"] == pytest.approx(np.mean(ms))
    assert stats["std_ms"] == pytest.approx(np.std(ms, ddof=1))
    assert stats["min_ms"] == pytest.approx(1.0)
    assert stats["median_ms"] == pytest.approx(3.0)
    assert stats["p95_ms"] == pytest.approx(np.percentile(ms, 95))
    assert stats["p99_ms"] == pytest.approx(np.percentile(ms, 99))
    assert timing.summarize([0.002])["std_ms"] == 0.0
    with pytest.raises(ValueError):
        timing.summarize([])


def test_sample_plan_adapts_to_step_time():
    s = timing.Settings(row_time=0.5, min_iters=10, max_samples=2000, chunk_s=1e-3)
    assert timing.sample_plan(1e-6, s) == (500, 1000)   # 1 ms chunks
    assert timing.sample_plan(1e-5, s) == (500, 100)
    assert timing.sample_plan(0.2, s) == (10, 1)        # at least min_iters
    assert timing.sample_plan(0.2, timing.Settings(iters=7)) == (7, 1)
    with pytest.raises(timing.TooSlow):
        timing.check_budget(1.0, timing.Settings(max_row_time=5.0))


def test_measure_counts_steps():
    calls = []
    r = Runnable(output=None, step=lambda: calls.append(1))
    times, info = timing.measure(r, timing.Settings(iters=5, warmup=2))
    assert len(times) == 5 and info["iters"] == 5
    assert len(calls) == 2 + 2 + 5  # two estimating steps, warm-up, timed


def test_event_samples_are_means_of_back_to_back_steps(monkeypatch):
    # fake CUDA events on a clock that each step advances by 2 ms
    clock = [0.0]

    class Event:
        def record(self):
            self.t = clock[0]

    monkeypatch.setattr(timing, "_events", lambda api: (Event, lambda: None,
                                                        lambda s, e: e.t - s.t))

    def step():
        clock[0] += 2.0
    assert timing.time_cuda_events(step, samples=3, inner=4) == pytest.approx([2e-3] * 3)
    assert clock[0] == 2.0 * 3 * 4


# ---------------------------------------------------------------- cases, backends, report

def test_cases_match_the_issue():
    shapes = [(c.params["m"], c.params["k"], c.params["n"]) for c in suites.cases("matmul")]
    assert (4096, 4096, 4096) in shapes and (64, 2048, 8192) in shapes and len(shapes) == 8
    mlp = {c.params["config"]: c.params["sizes"] for c in suites.cases("mlp")}
    assert mlp["deep-6L-1024"] == [1024] * 6 + [10]
    assert mlp["bneck-2048-64-2048"] == [2048, 64, 2048, 10]
    assert all(c.params["batch"] == 64 for c in suites.cases("mlp"))
    assert [c.params["batch"] for c in suites.cases("resnet9")] == [16, 32, 64]
    assert [c.params["batch"] for c in suites.cases("resnet9-train")] == [32, 64]
    assert suites.RESNET9_SGD == {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
    (lm,) = suites.cases("transformer")
    assert {k: lm.params[k] for k in ("vocab", "dim", "heads", "ff", "layers", "batch", "seq")} \
        == {"vocab": 2048, "dim": 512, "heads": 8, "ff": 2048, "layers": 2, "batch": 16,
            "seq": 128}
    assert suites.ADAM["lr"] == 1e-3
    (lstm,) = suites.cases("lstm")
    assert {k: lstm.params[k] for k in ("input", "hidden", "layers", "seq", "batch", "classes")} \
        == {"input": 256, "hidden": 512, "layers": 2, "seq": 64, "batch": 32, "classes": 10}
    data = suites.make_data(suites.cases("transformer", quick=True)[0])
    assert (data["targets"][:, :-1] == data["tokens"][:, 1:]).all()  # next-token targets
    conv = suites.cases("micro-conv-step")
    assert [c.name for c in conv] == ["n32c64h32w32-o128k3", "n64c128h16w16-o256k3",
                                      "n64c256h8w8-o512k3", "n16c3h32w32-o64k3"]
    norms = [c.name for c in suites.cases("micro-norms")]
    assert "layernorm/8192x768" in norms and "batchnorm/64x64x32x32" in norms
    assert len(norms) == 11


def test_resnet9_models_agree_with_each_other():
    torch = pytest.importorskip("torch")
    import needle
    from needle.bench import backends_needle, backends_torch
    case = suites.cases("resnet9", quick=True)[0]
    data = suites.make_data(case)
    tm = backends_torch.resnet9_model(torch, suites.RESNET9, data["layers"]).eval()
    with torch.no_grad():
        expect = tm(torch.from_numpy(data["x"])).numpy()
    nm = backends_needle.resnet9_model(suites.RESNET9, data["layers"], needle.cpu()).eval()
    with needle.no_grad():
        got = nm(needle.Tensor(data["x"], device=needle.cpu())).numpy()
    assert expect.shape == (2, 10)
    assert rel_err(got, expect) < 1e-4


def test_backend_selection():
    backends = all_backends()
    names = [b.name for b in backends]
    assert {"needle-cpu", "needle-cpu-compiled", "needle-cuda-compiled",
            "needle-cudnn-compiled", "needle-webgpu-compiled", "torch-cpu", "torch-cpu-1t",
            "torch-cuda", "torch-compile", "torch-compile-ro", "torch-cudagraph",
            "jax-jit"} <= set(names)
    assert [b.name for b in select(backends, ["torch-cpu*"])] == ["torch-cpu-1t", "torch-cpu"]
    assert [b.name for b in select(backends, ["needle-cpu*"])] == ["needle-cpu",
                                                                    "needle-cpu-compiled"]
    assert "opt_level=0" in select(all_backends(opt_level=0), ["needle-cpu-compiled"])[0].note
    with pytest.raises(ValueError):
        select(backends, ["nope"])


def test_ratios():
    rows = [{"suite": "mlp", "case": "c", "backend": "torch-cuda", "family": "torch",
             "valid": True, "median_ms": 2.0},
            {"suite": "mlp", "case": "c", "backend": "torch-cudagraph", "family": "torch",
             "valid": True, "median_ms": 0.5},
            {"suite": "mlp", "case": "c", "backend": "needle-cuda", "family": "needle",
             "valid": True, "median_ms": 1.0},
            {"suite": "mlp", "case": "c", "backend": "jax-jit", "family": "jax",
             "valid": False, "status": "mismatch: rel err 1"}]
    report.add_ratios(rows)
    needle_row = rows[2]
    assert needle_row["vs_torch_cuda"] == pytest.approx(0.5)
    assert needle_row["vs_best_torch"] == pytest.approx(2.0)
    assert needle_row["best_torch"] == "torch-cudagraph"
    assert "vs_torch_cuda" not in rows[3]


def test_cli_rejects_unknown_suite_and_backend():
    with pytest.raises(SystemExit):
        cli.parse_args(["--suite", "nope"])
    assert cli.parse_args([])[0].opt_level == 2
    with pytest.raises(SystemExit):
        cli.parse_args(["--opt-level", "7"])
    with pytest.raises(SystemExit):
        cli.main(["--backends", "nope", "--quick"])


def test_compare_runs_tool_tables_ratios_across_runs(tmp_path):
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parent.parent / "tools" / "compare_runs.py"
    spec = importlib.util.spec_from_file_location("compare_runs", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    def run(name, needle_ms, torch_ms, extra=()):
        rows = [{"suite": "mlp", "case": "a", "backend": "needle-cudnn", "valid": True,
                 "median_ms": needle_ms},
                {"suite": "mlp", "case": "a", "backend": "torch-cuda", "valid": True,
                 "median_ms": torch_ms}, *extra]
        (tmp_path / name).write_text(json.dumps({"metadata": {}, "rows": rows}))
        return tool.medians(tmp_path / name)

    invalid = {"suite": "mlp", "case": "b", "backend": "needle-cudnn", "valid": False,
               "median_ms": None}
    runs = [run("1.json", 1.0, 2.0, [invalid]), run("2.json", 2.08, 2.0), run("3.json", 3.0, 2.0)]
    lines = tool.table(runs, "needle-cudnn", "torch-cuda", tolerance=0.05).splitlines()
    assert len(lines) == 3  # header, rule, one case: the invalid row is left out
    assert lines[2] == "| mlp | a | 0.50 | 1.04 | 1.50 | 1.04 | 0.50–1.50 | 2/3 |"


def test_roofline_work_and_shares():
    from needle.bench import roofline
    (tiny, *_) = suites.cases("mlp")
    flops, nbytes = roofline.work(tiny)  # [128, 128, 10] at batch 64: forward, dW, and dX
    assert flops == 2 * 64 * (2 * (128 * 128 + 128 * 10) + 128 * 10)  # (not the first dX)
    params = 128 * 128 + 128 + 128 * 10 + 10
    assert nbytes == 4 * (3 * params + 64 * 128 + 64)  # params in and out, grads out
    (b16, *_) = suites.cases("resnet9")
    conv1 = 2 * 16 * 16 * 16 * 16 * 3 * 7 * 7  # 64x64 at stride 4 -> 16x16, 3 -> 16 channels
    assert roofline.work(b16)[0] > conv1
    rows = [{"suite": "mlp", "case": tiny.name, "backend": "needle-cudnn-compiled",
             "median_ms": 0.1, "status": "ok"},
            {"suite": "mlp", "case": tiny.name, "backend": "needle-cpu", "median_ms": 1.0,
             "status": "ok"}]
    roofline.add_shares(rows, [tiny], "NVIDIA H200")
    assert rows[0]["pct_fp32_peak"] == pytest.approx(100 * flops / 1e-4 / 66.9e12)
    assert rows[0]["pct_bandwidth"] == pytest.approx(100 * nbytes / 1e-4 / 4.8e12)
    assert "pct_fp32_peak" not in rows[1]  # the CPU is not the GPU
    assert "%fp32" in report.table(rows, "mlp")
    (lm,) = suites.cases("transformer")
    n, d, f, v = 16 * 128, 512, 2048, 2048  # per layer: 4 projections, 2 FF, 2 attention products
    per_layer = 2 * n * (4 * d * d + 2 * d * f) + 2 * 2 * n * 128 * d
    assert roofline.work(lm)[0] == 3 * (2 * per_layer + 2 * n * d * v)
    (lstm,) = suites.cases("lstm")
    forward = 2 * 64 * 32 * 4 * 512 * ((256 + 512) + (512 + 512)) + 2 * 32 * 512 * 10
    assert roofline.work(lstm)[0] == 3 * forward
    (train32, _) = suites.cases("resnet9-train")
    assert roofline.work(train32)[0] == 3 * roofline.work(suites.cases("resnet9")[1])[0]
    (conv, *_) = suites.cases("micro-conv-step")  # 32x64x32x32 -> 128 channels, 3x3
    assert roofline.work(conv) == (3 * 2 * 32 * 32 * 32 * 128 * 64 * 9,
                                   4 * 2 * (32 * 64 * 32 * 32 + 32 * 128 * 32 * 32 + 128 * 64 * 9))
    (layernorm, *_) = suites.cases("micro-norms")  # no products: a bandwidth share only
    assert roofline.work(layernorm) == (None, 4 * (4 * 8192 * 768 + 4 * 768))
    norm_row = {"suite": "micro-norms", "case": layernorm.name, "backend": "needle-cuda",
                "median_ms": 0.1, "status": "ok"}
    roofline.add_shares([norm_row], [layernorm], "NVIDIA H200")
    assert norm_row["pct_fp32_peak"] is None and norm_row["pct_bandwidth"] > 0
    assert "%HBM" in report.table([norm_row], "micro-norms")
    unknown = [dict(rows[0])]
    del unknown[0]["pct_fp32_peak"], unknown[0]["pct_bandwidth"]
    roofline.add_shares(unknown, [tiny], "Some Other GPU")
    assert "pct_fp32_peak" not in unknown[0]
