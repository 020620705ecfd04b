"""Host cost of one small fp32 matmul on the cudnn device at each layer of Needle's stack,
from the cuBLASLt call up to ``Tensor @ Tensor``, beside ``torch.mm`` in the same process.
The GEMM is tiny so that the host, not the GPU, sets the pace: each figure is microseconds
per call issued back to back.

    python tools/bench_matmul_layers.py      # on a GPU machine with the cudnn extra (+ torch)
"""
import time

import numpy as np

import needle
from needle.backend_ndarray.cuda.memory import CudaBuffer


def per_call(fn, calls=5000):
    for _ in range(200):
        fn()
    needle.cudnn().synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    issued = (time.perf_counter() - start) / calls * 1e6
    needle.cudnn().synchronize()
    return issued


def _cublas_sgemm(a, b, c, m, k, n):
    """The same product through classic cuBLAS (for comparison only: Needle uses cuBLASLt)."""
    import cupy
    from nvmath.bindings import cublas

    handle = cublas.create()
    cublas.set_stream(handle, cupy.cuda.get_current_stream().ptr)
    alpha, beta = np.ones(1, np.float32), np.zeros(1, np.float32)
    args = (handle, 0, 0, n, m, k, alpha.ctypes.data, b.ptr, n, a.ptr, k, beta.ctypes.data,
            c.ptr, n)

    def run():
        cublas.sgemm(*args)
    run.scalars = (alpha, beta)  # alive while the function is
    return run


def main(m=32, k=64, n=64):
    device = needle.cudnn()
    be = device.backend
    rng = np.random.default_rng(0)
    a_np, b_np = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    a, b = needle.Tensor(a_np, device=device), needle.Tensor(b_np, device=device)
    ad, bd = a.realize_cached_data(), b.realize_cached_data()
    ah, bh = ad._handle, bd._handle
    c = CudaBuffer(m * n, "float32")
    lt = be.lt
    key_args = (bh.ptr, ah.ptr, c.ptr, n, m, k, n, k, n, "float32", "highest")
    lt.gemm(*key_args)
    plan = next(iter(p for p in lt.plans.values()))

    def with_no_grad():
        with needle.no_grad():
            return a @ b

    import cupy

    rows = [
        ("cupy.cuda.get_current_stream().ptr", lambda: cupy.cuda.get_current_stream().ptr),
        ("cublasLtMatmul (nvmath binding)", lambda: lt._run(plan, bh.ptr, ah.ptr, c.ptr, 0,
                                                            plan.algo)),
        (f"CublasLt.gemm (replay {'on' if plan.replays else 'off'})", lambda: lt.gemm(*key_args)),
        ("CudaBuffer alloc + free", lambda: CudaBuffer(m * n, "float32")),
        ("backend.matmul", lambda: be.matmul(ah, bh, c, 1, m, k, n)),
        ("NDArray @ (+ output alloc)", lambda: ad @ bd),
        ("Tensor @", lambda: a @ b),
        ("Tensor @ under no_grad()", with_no_grad),
    ]
    if plan.replays:  # the GEMM's graph, as CublasLt.gemm launches it
        rows.insert(2, ("CUDA graph launch", next(iter(plan.replays.graphs.values())).launch))
    for name, fn in rows:
        print(f"{name:<34} {per_call(fn):7.2f} us")
    sgemm = _cublas_sgemm(ah, bh, c, m, k, n)
    print(f"{'(classic cuBLAS cublasSgemm)':<34} {per_call(sgemm):7.2f} us")
    try:
        import torch
    except ImportError:
        return
    ta, tb = torch.from_numpy(a_np).cuda(), torch.from_numpy(b_np).cuda()
    tc = torch.empty((m, n), device="cuda")
    for name, fn in (("torch.mm(out=)", lambda: torch.mm(ta, tb, out=tc)),
                     ("torch a @ b", lambda: ta @ tb)):
        for _ in range(200):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5000):
            fn()
        print(f"{name:<34} {(time.perf_counter() - start) / 5000 * 1e6:7.2f} us")
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
