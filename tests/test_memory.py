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
