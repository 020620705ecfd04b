#!/usr/bin/env python3
"""Matmul throughput of needle.webgpu() (fp32), next to PyTorch's cuBLAS (TF32 off) where a
CUDA GPU is present, measured in the same run.

    python tools/bench_webgpu.py                  # the table
    python tools/bench_webgpu.py --out r.json     # also write JSON
    python tools/bench_webgpu.py --sweep          # time every tile / split-K plan too

Two times per shape, each the median of ``--repeats`` after warm-up:
  gpu   ``n`` products recorded into one submission, timed from its submit to
        synchronize(): the kernels' own time (plus one submit, amortised). GFLOP/s and
        the ratio to cuBLAS (timed with CUDA events around ``n`` products) use this.
  call  one product per submission, submitted as recorded, ``n`` in a row, then
        synchronize(): what eager code pays per call, Python and submit included.
"""
import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from needle.bench.suites import MATMUL_SHAPES  # noqa: E402
from needle.backend_ndarray.webgpu import WebGPUBackend, gemm  # noqa: E402

SHAPES = MATMUL_SHAPES  # (m, k, n), shared with needle-bench


def _count(seconds_each, budget_s, cap=200):
    return int(max(3, min(cap, budget_s / max(seconds_each, 1e-6))))


class WebGPUMatmul:
    """One (m, k, n) product on a private backend whose batches hold every product."""

    def __init__(self, backend, m, k, n):
        self.backend, self.shape = backend, (m, k, n)
        rng = np.random.default_rng(0)
        self.a_host = rng.standard_normal((m, k), dtype=np.float32)
        self.b_host = rng.standard_normal((k, n), dtype=np.float32)
        self.a, self.b = self._put(self.a_host), self._put(self.b_host)
        self.out = backend.alloc(m * n, "float32")

    def _put(self, x):
        buf = self.backend.alloc(x.size, "float32")
        self.backend.from_numpy(x, buf)
        return buf

    def record(self, plan):
        m, k, n = self.shape
        self.backend._gemm(plan, self.a, self.b, self.out, 1, m, k, n, (0,) * 7)

    def time(self, plan, repeats, budget_s):
        be = self.backend
        self.record(plan)
        be.synchronize()
        t0 = time.perf_counter()
        self.record(plan)
        be.synchronize()
        count = _count(time.perf_counter() - t0, budget_s / repeats / 2, cap=be._rec.batch // 4)
        gpu, call = [], []
        for _ in range(repeats):
            for _ in range(count):
                self.record(plan)  # all in one batch: the GPU starts at synchronize
            t1 = time.perf_counter()
            be.synchronize()
            gpu.append((time.perf_counter() - t1) / count)
            t1 = time.perf_counter()
            for _ in range(count):
                self.record(plan)
                be.flush()
            be.synchronize()
            call.append((time.perf_counter() - t1) / count)
        m, k, n = self.shape
        ms = statistics.median(gpu) * 1e3
        ref = self.a_host[:64] @ self.b_host
        got = be.to_numpy(self.out, (m, n), (n, 1), 0)[:64]
        err = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1.0))
        return {"gpu_ms": ms, "call_ms": statistics.median(call) * 1e3,
                "gflops": 2.0 * m * n * k / (ms * 1e-3) / 1e9, "count": count,
                "plan": describe(plan), "max_rel_err": err}


def describe(plan):
    return (f"{plan.bm}x{plan.bn}x{plan.bk} {plan.io}"
            f"{'' if plan.checked else ' unchecked'} splits={plan.splits}")


def bench_torch(m, k, n, repeats, budget_s):
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(m, k, device="cuda")
    b = torch.randn(k, n, device="cuda")
    for _ in range(3):
        torch.matmul(a, b)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    torch.matmul(a, b)
    torch.cuda.synchronize()
    count = _count(time.perf_counter() - t0, budget_s / repeats)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(count):
            torch.matmul(a, b)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / count)
    ms = statistics.median(times)
    return {"gpu_ms": ms, "gflops": 2.0 * m * n * k / (ms * 1e-3) / 1e9,
            "device": torch.cuda.get_device_name()}


def sweep_plans(m, k, n):
    for tile in gemm.TILES:
        tiles = -(-m // tile[0]) * -(-n // tile[1])
        for splits in (1, 2, 4, 8, 16) if tiles < 264 else (1,):
            if k // splits >= 64:
                yield gemm.plan(1, m, k, n, tile=tile, splits=splits)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per shape")
    parser.add_argument("--sweep", action="store_true", help="time every tile/split plan")
    parser.add_argument("--shapes", help="m,k,n;m,k,n;... instead of the default set")
    args = parser.parse_args()
    shapes = SHAPES if not args.shapes else [tuple(int(x) for x in s.split(","))
                                             for s in args.shapes.split(";")]
    backend = WebGPUBackend(batch=512)
    if backend.unavailable_reason():
        sys.exit(f"needle.webgpu() is not available: {backend.unavailable_reason()}")
    info = backend.adapter_info()
    print(f"adapter: {info['name']} ({info['backend']}, {info['adapter_type']}), "
          f"subgroups={info['subgroups']}, wgpu {info['wgpu_version']}")
    print(f"{'m x k x n':>16} {'gpu ms':>8} {'GFLOP/s':>8} {'call ms':>8} {'torch ms':>8} "
          f"{'GFLOP/s':>8} {'ratio':>6}  plan")
    rows = []
    for m, k, n in shapes:
        mm = WebGPUMatmul(backend, m, k, n)
        name = f"{m}x{k}x{n}"
        if args.sweep:
            for plan in sweep_plans(m, k, n):
                r = mm.time(plan, 3, 0.3)
                print(f"{name:>16} {r['gpu_ms']:8.3f} {r['gflops']:8.0f} {r['call_ms']:8.3f}"
                      f"{'':27}  {r['plan']} err={r['max_rel_err']:.1e}", flush=True)
        w = mm.time(gemm.plan(1, m, k, n), args.repeats, args.budget)
        t = bench_torch(m, k, n, args.repeats, args.budget)
        ratio = w["gflops"] / t["gflops"] if t else None
        nan = float("nan")
        print(f"{name:>16} {w['gpu_ms']:8.3f} {w['gflops']:8.0f} {w['call_ms']:8.3f} "
              f"{t['gpu_ms'] if t else nan:8.3f} {t['gflops'] if t else nan:8.0f} "
              f"{ratio or nan:6.2f}  {w['plan']}", flush=True)
        rows.append({"m": m, "k": k, "n": n, "webgpu": w, "torch_cuda": t, "ratio": ratio})
        del mm
    if args.out:
        Path(args.out).write_text(json.dumps({
            "adapter": info, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "results": rows}, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
