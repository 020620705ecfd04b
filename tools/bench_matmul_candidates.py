"""Where the time of each seed-shape fp32 matmul goes on the cudnn device, beside PyTorch.

For every cuBLASLt algorithm the heuristic proposes (the candidates the autotuner times),
three figures in microseconds per call: ``one`` (CUDA events around a single call on an idle
GPU), ``back-to-back`` (events around 200 calls: the GPU or the host, whichever is slower,
sets it) and ``host`` (wall time to issue one call). Then the same for ``torch a @ b`` and
``needle a @ b`` (Tensors on needle.cudnn()). When ``back-to-back`` equals ``host`` the shape
is host-bound: no faster kernel can help, only a cheaper call.

    python tools/bench_matmul_candidates.py      # on a GPU machine with the cudnn extra + torch
"""
import time

import cupy
import numpy as np

import needle
from needle.backend_ndarray.cuda.memory import CudaBuffer
from needle.bench import timing
from needle.bench.suites import MATMUL_SHAPES

CALLS = 200


def _synchronize():
    cupy.cuda.get_current_stream().synchronize()


def event_us(fn, calls):
    """Microseconds per call between CuPy events around ``calls`` calls issued back to back."""
    return timing.time_cuda_events(fn, samples=1, inner=calls, api="cupy")[0] * 1e6


def host_us(fn, calls):
    _synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    issued = (time.perf_counter() - start) / calls * 1e6
    _synchronize()
    return issued


def figures(fn):
    """(one, back-to-back, host) microseconds per call, after a warm-up."""
    for _ in range(20):
        fn()
    one = min(event_us(fn, 1) for _ in range(10))
    return one, event_us(fn, CALLS), host_us(fn, CALLS)


def row(name, one, b2b, host):
    print(f"  {name:<12} one {one:7.1f}  back-to-back {b2b:7.1f}  host {host:5.1f}")


def main():
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    device = needle.cudnn()
    lt = device.backend.lt
    rng = np.random.default_rng(0)
    for m, k, n in MATMUL_SHAPES:
        a_np = rng.standard_normal((m, k), np.float32)
        b_np = rng.standard_normal((k, n), np.float32)
        a, b = needle.Tensor(a_np, device=device), needle.Tensor(b_np, device=device)
        pa, pb = a.realize_cached_data()._handle.ptr, b.realize_cached_data()._handle.ptr
        c = CudaBuffer(m * n, "float32")
        for old in lt.plans.values():  # a fresh plan, tuned here, so its candidates are listed
            old.close()
        lt.plans.clear()
        lt.gemm(pb, pa, c.ptr, n, m, k, n, k, n, "float32", "highest")  # as backend.matmul
        plan = next(iter(lt.plans.values()))
        print(f"== {m}x{k}x{n}: {len(plan.candidates)} candidates, the autotuner chose "
              f"#{plan.candidates.index(plan.algo)}, graph replay "
              f"{'on' if plan.replays else 'off'}")
        for i, algo in enumerate(plan.candidates):
            row(f"#{i}", *figures(lambda: lt._run(plan, pb, pa, c.ptr, 0, algo)))
        ta, tb = torch.from_numpy(a_np).cuda(), torch.from_numpy(b_np).cuda()
        row("torch a @ b", *figures(lambda: ta @ tb))
        row("needle a @ b", *figures(lambda: a @ b))


if __name__ == "__main__":
    main()
