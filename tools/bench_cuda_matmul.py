"""Needle's CUDA SGEMM against torch.matmul (cuBLAS, TF32 off) on the same GPU.

For each shape (m, k, n) both run on the same stream; each timed sample is `--inner`
back-to-back products between two CUDA events (so launch overhead overlaps, as in a
real program), and the median of `--reps` samples is reported, after warm-up. Prints
GFLOP/s of cuBLAS, of the backend's default SGEMM choice and of each SGEMM configuration
in --tiles (forced for every shape), with ratio = our GFLOP/s / cuBLAS GFLOP/s; writes
everything as JSON.

Usage: PYTHONPATH=. python tools/bench_cuda_matmul.py --out results.json
       [--tiles 128x128x8m2,128x128x16m2] [--reps 20] [--inner 5] [--tf32]
"""
import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from needle.bench.suites import MATMUL_SHAPES  # noqa: E402

SHAPES = MATMUL_SHAPES  # (m, k, n), shared with needle-bench


def median_ms(fn, reps, inner, torch, host=None):
    """Median over reps of (time of `inner` calls between two events) / inner.

    If ``host`` is a list, the median host time to issue one call (ms) is appended to it:
    when it is close to the event time, the product is bound by Python/launch overhead.
    """
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    samples, issue = [], []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        issue.append((time.perf_counter() - t0) * 1e3 / inner)
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / inner)
    if host is not None:
        host.append(statistics.median(issue))
    return statistics.median(samples)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--tiles", default="",
                        help="SGEMM configurations (BMxBNxBKmMB, see kernels.SGEMM_TILES) to "
                             "time on every shape, comma-separated; 'all' for every one")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--inner", type=int, default=5)
    parser.add_argument("--tf32", action="store_true", help="also time TF32 (ours and torch)")
    args = parser.parse_args(argv)

    import torch

    from needle.backend_ndarray.cuda import CudaBackend
    from needle.backend_ndarray.cuda.kernels import SGEMM_TILES, tile_name
    from needle.backend_ndarray.device import cuda

    device = cuda()
    if not device.enabled():
        sys.exit(f"needle.cuda() is not available: {device.unavailable_reason()}")
    be = device.backend
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    by_name = {tile_name(t): t for t in SGEMM_TILES}
    names = list(by_name) if args.tiles == "all" else [t for t in args.tiles.split(",") if t]
    configs = [("default", None)] + [(name, by_name[name]) for name in names]
    default = (CudaBackend.sgemm_tile, CudaBackend.sgemm_small_tile)
    rng = np.random.default_rng(0)
    results = []
    print(f"{'m':>5} {'k':>5} {'n':>5} | {'cuBLAS GF/s':>11} | " +
          " | ".join(f"{name:>12} GF/s ratio" for name, _ in configs))
    for m, k, n in SHAPES:
        a_np = rng.standard_normal((m, k), dtype=np.float32)
        b_np = rng.standard_normal((k, n), dtype=np.float32)
        a, b, c = be.alloc(m * k, "float32"), be.alloc(k * n, "float32"), be.alloc(m * n, "float32")
        be.from_numpy(a_np, a)
        be.from_numpy(b_np, b)
        ta, tb = torch.from_numpy(a_np).cuda(), torch.from_numpy(b_np).cuda()
        tc = torch.empty((m, n), device="cuda")
        flops = 2.0 * m * k * n
        row = {"m": m, "k": k, "n": n}
        row["torch_ms"] = median_ms(lambda: torch.matmul(ta, tb, out=tc), args.reps, args.inner, torch)
        row["torch_gflops"] = flops / row["torch_ms"] / 1e6
        ref = tc.cpu().numpy().astype(np.float64)
        row["ours"] = {}
        for name, tile in configs:
            CudaBackend.sgemm_tile, CudaBackend.sgemm_small_tile = default if tile is None \
                else (tile, tile)
            host = []
            ms = median_ms(lambda: be.matmul(a, b, c, 1, m, k, n), args.reps, args.inner, torch,
                           host)
            got = be.to_numpy(c, (m, n), (n, 1), 0).astype(np.float64)
            err = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            row["ours"][name] = {"ms": ms, "gflops": flops / ms / 1e6, "host_ms": host[0],
                                 "ratio": row["torch_ms"] / ms, "rel_err_vs_torch": err}
        CudaBackend.sgemm_tile, CudaBackend.sgemm_small_tile = default
        if args.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            row["torch_tf32_ms"] = median_ms(lambda: torch.matmul(ta, tb, out=tc), args.reps,
                                             args.inner, torch)
            torch.backends.cuda.matmul.allow_tf32 = False
            CudaBackend.set_matmul_precision("tf32")
            row["ours_tf32_ms"] = median_ms(lambda: be.matmul(a, b, c, 1, m, k, n), args.reps,
                                            args.inner, torch)
            CudaBackend.set_matmul_precision("highest")
        results.append(row)
        print(f"{m:>5} {k:>5} {n:>5} | {row['torch_gflops']:>11.0f} | " + " | ".join(
            f"{v['gflops']:>17.0f} {v['ratio']:5.2f}" for v in row["ours"].values()) +
            f" | host {row['ours']['default']['host_ms'] * 1e3:.0f} us/call" +
            (f" | tf32 ours {row['ours_tf32_ms']:.3f} ms torch {row['torch_tf32_ms']:.3f} ms"
             if args.tf32 else ""), flush=True)
    report = {"gpu": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "torch": torch.__version__, "python": platform.python_version(),
              "method": f"median of {args.reps} samples, {args.inner} calls each, CUDA events",
              "default_tiles": [tile_name(t) for t in default],
              "results": results}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
