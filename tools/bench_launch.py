"""Host cost of one kernel launch on the cuda device: Needle's ctypes path against CuPy's.

Times back-to-back launches of the fill kernel (``needle_fill_f32`` over 1024 floats) on
CuPy's current stream, each case as the median over --reps samples of --n calls:

  cupy RawKernel, numpy args  the old path: numpy scalars built per call, CuPy's launch
  cupy RawKernel, args ready  CuPy's launch alone (the argument tuple built once)
  needle launch.Kernel        pack_into + cuLaunchKernel through ctypes (launch.py)
  backend.fill                the whole backend path: suffix, grid, kernel lookup, launch

then small ops per call: NDArray ``a + b`` and Tensor ``a + b`` on 1024 floats (output
allocation included). "host" is the time to issue the calls; "+sync" adds the wait for
the GPU at the end of each sample (when the two are close, the loop is host-bound). The
cyclic GC is paused while timing. Results are checked against NumPy. Runs in a few
seconds (the first run also compiles elementwise.cu, about 2 s).

Usage: PYTHONPATH=. python tools/bench_launch.py [--n 10000] [--reps 5]
"""
import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import needle  # noqa: E402
from needle.backend_ndarray.cuda import kernels  # noqa: E402

SIZE = 1024


def time_calls(fn, n, reps, sync):
    """Median over reps of (host µs per call, µs per call including a final sync)."""
    for _ in range(min(n, 1000)):  # warm up: caches, the memory pool, the launch queue
        fn()
    sync()
    host, total = [], []
    gc.disable()
    try:
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            t1 = time.perf_counter()
            sync()
            t2 = time.perf_counter()
            host.append((t1 - t0) / n * 1e6)
            total.append((t2 - t0) / n * 1e6)
    finally:
        gc.enable()
    return statistics.median(host), statistics.median(total)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="calls per sample")
    parser.add_argument("--reps", type=int, default=5, help="samples per case")
    args = parser.parse_args(argv)

    device = needle.cuda()
    if not device.enabled():
        print(f"needle.cuda() is not available: {device.unavailable_reason()}")
        return 1
    import cupy

    be = device.backend
    rt = be.rt
    sync = be.synchronize
    filename, name = kernels.name("fill", "f32")
    kernel = rt.kernels.kernel(filename, name)  # Needle's launcher (launch.Kernel)
    raw = rt.kernels._modules[filename].get_function(name)  # CuPy's RawKernel, as before
    buf = be.alloc(SIZE, "float32")
    ptr, grid, block = buf.ptr, (1, 1, 1), (256, 1, 1)
    ready = (np.uint64(ptr), np.float32(2.5), np.int64(SIZE))
    stream = cupy.cuda.get_current_stream()

    def check(value):
        sync()
        got = be.to_numpy(buf, (SIZE,), (1,), 0)
        assert np.array_equal(got, np.full(SIZE, value, np.float32)), got[:4]

    cases = [
        ("cupy RawKernel, numpy args",
         lambda: raw((1,), (256,), (np.uint64(ptr), np.float32(1.5), np.int64(SIZE))), 1.5),
        ("cupy RawKernel, args ready", lambda: raw((1,), (256,), ready), 2.5),
        ("needle launch.Kernel", lambda: kernel(grid, block, stream.ptr, (ptr, 3.5, SIZE)), 3.5),
        ("backend.fill", lambda: be.fill(buf, 4.5), 4.5),
    ]
    print(f"{cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, CuPy {cupy.__version__}, "
          f"Python {sys.version.split()[0]}; {args.n} calls x {args.reps} samples")
    print(f"{'case':34s} {'host µs/call':>13s} {'+sync µs/call':>14s}")
    for label, fn, value in cases:
        host, total = time_calls(fn, args.n, args.reps, sync)
        check(value)
        print(f"{label:34s} {host:13.2f} {total:14.2f}")

    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal(SIZE).astype(np.float32) for _ in range(2))
    for label, cls in (("NDArray a + b (1024 floats)", needle.NDArray),
                       ("Tensor a + b (1024 floats)", needle.Tensor)):
        a, b = cls(x, device=device), cls(y, device=device)
        host, total = time_calls(lambda: a + b, args.n, args.reps, sync)
        np.testing.assert_array_equal((a + b).numpy(), x + y)
        print(f"{label:34s} {host:13.2f} {total:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
