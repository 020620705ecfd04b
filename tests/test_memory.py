"""Training does not leak device memory: bytes in use stay flat over many steps."""
import numpy as np
import pytest

import needle
import needle.nn as nn


def test_no_memory_growth_over_training_steps(device, rng):
    try:
        device.memory_stats()
    except NotImplementedError:
        pytest.skip(f"{device} does not report memory statistics")
    model = nn.Sequential(nn.Linear(32, 64, device=device), nn.ReLU(), nn.Linear(64, 10, device=device))
    opt = needle.optim.Adam(model.parameters(), lr=1e-3)
    x = needle.Tensor(rng.standard_normal((16, 32)), device=device)
    y = needle.Tensor(rng.integers(0, 10, 16), device=device)

    def steps(n):
        for _ in range(n):
            opt.reset_grad()
            loss = nn.SoftmaxLoss()(model(x), y)
            loss.backward()
            opt.step()
        device.synchronize()
        return loss

    steps(20)  # optimizer state and caches are allocated here
    before = device.memory_stats()["bytes_in_use"]
    loss = steps(2000)
    after = device.memory_stats()["bytes_in_use"]
    assert np.isfinite(loss.numpy()).all()
    assert after <= before + 64 * 1024, f"bytes in use grew from {before} to {after}"
    device.reset_peak_memory()
    stats = device.memory_stats()
    assert stats["peak_bytes"] == stats["bytes_in_use"]


# -- host memory (tracemalloc sees NumPy's allocations) -------------------------------------
def _host_peak(fn):
    """Bytes of the peak host allocation while ``fn()`` runs, and its result."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, out


@pytest.mark.parametrize("draw", ["rand", "randn", "randb"])
def test_random_init_peaks_at_about_the_tensor_size(draw):
    n = 2**24  # 64 MiB of float32; a float64 draw alone would be 128 MiB
    peak, t = _host_peak(lambda: getattr(needle.init, draw)(n, device=needle.cpu()))
    assert t.shape == (n,) and t.dtype == "float32"
    assert peak < 1.3 * 4 * n, f"init.{draw}({n}) peaked at {peak / (4 * n):.2f}x its size"


def test_ndarray_from_float64_makes_one_float32_copy():
    x = np.random.default_rng().standard_normal(2**22)
    peak, a = _host_peak(lambda: needle.backend_ndarray.NDArray(x, device=needle.cpu()))
    assert a.dtype == "float32"
    assert peak < 1.3 * 4 * x.size, f"peaked at {peak / (4 * x.size):.2f}x the float32 size"


def test_sum_of_a_broadcast_does_not_materialise_it():
    n = 2**26  # a materialised float32 copy would be 256 MiB
    x = needle.backend_ndarray.NDArray([1.5], device=needle.cpu())
    peak, s = _host_peak(lambda: (x.broadcast_to((n,)).sum(), x.broadcast_to((n,)).max()))
    assert float(s[0].numpy()) == 1.5 * n and float(s[1].numpy()) == 1.5
    assert peak < 1 << 20, f"sum of a broadcast allocated {peak} bytes"
    t = needle.Tensor([[2.0], [3.0]], device=needle.cpu())
    peak, total = _host_peak(lambda: needle.ops.summation(t.broadcast_to((2, n // 2)), (1,)))
    np.testing.assert_array_equal(total.numpy(), [2.0 * n / 2, 3.0 * n / 2])
    assert peak < 1 << 20, f"Tensor summation of a broadcast allocated {peak} bytes"


def test_sum_of_a_broadcast_on_device_memory(device):
    try:
        device.memory_stats()
    except NotImplementedError:
        pytest.skip(f"{device} does not report memory statistics (the cpu test covers it)")
    n = 2**26
    x = needle.Tensor([0.25], device=device)
    device.synchronize()
    device.reset_peak_memory()
    before = device.memory_stats()["bytes_in_use"]
    s = needle.ops.summation(x.broadcast_to((n,)))
    device.synchronize()
    assert float(s.numpy()) == 0.25 * n
    grown = device.memory_stats()["peak_bytes"] - before
    assert grown < 1 << 20, f"sum of a broadcast allocated {grown} device bytes"
