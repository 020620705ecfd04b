"""``backend.one_submission()``: on webgpu every op of the block goes into one
``queue.submit``, however many dispatches (the recorder otherwise submits every ``batch``);
on other backends it is the contract's no-op. Counted with ``backend.stats()``, the
recorder's counters."""
import contextlib

import numpy as np
import pytest

import needle
from needle.backend_ndarray.contract import Backend

from helpers import assert_close

WEBGPU = needle.webgpu()


@pytest.fixture
def gpu(request):
    selected = request.config.getoption("--device")
    if selected != "all" and "webgpu" not in selected.split(","):
        pytest.skip("webgpu not selected with --device")
    if not WEBGPU.enabled():
        pytest.skip(f"needle.webgpu() unavailable: {WEBGPU.unavailable_reason()}")
    WEBGPU.backend.flush()  # start with nothing pending
    return WEBGPU.backend


def _chain(x, y, steps):
    """``steps`` rounds of ``tanh(x * 0.9 + y)``: three dispatches a round, bounded values
    (works on NDArrays and on float64 NumPy arrays alike)."""
    for _ in range(steps):
        x = x * 0.9 + y
        x = x.tanh() if isinstance(x, needle.NDArray) else np.tanh(x)
    return x


def _submissions(gpu, before):
    return gpu.stats()["submissions"] - before["submissions"]


def test_a_long_chain_matmul_and_reduction_make_one_submission(gpu, rng):
    x0, y0 = rng.standard_normal((2, 48, 40))
    w0 = rng.standard_normal((40, 24))
    x, y, w = (needle.NDArray(a, device=WEBGPU) for a in (x0, y0, w0))
    before = gpu.stats()
    with gpu.one_submission():
        h = _chain(x, y, 70)
        z = (h @ w).relu()
        s = z.sum(axis=1)
        assert gpu.stats()["submissions"] == before["submissions"]
    after = gpu.stats()
    assert after["dispatches"] - before["dispatches"] > 3 * gpu._rec.batch
    assert _submissions(gpu, before) == 1 and after["pending"] == 0
    h0 = _chain(x0, y0, 70)
    z0 = np.maximum(h0 @ w0, 0)
    assert_close(h, h0, what="chain")
    assert_close(z, z0, what="matmul")
    assert_close(s, z0.sum(axis=1), what="reduction")


def test_nested_blocks_submit_once_at_the_outermost_end(gpu, rng):
    x0, y0 = rng.standard_normal((2, 1000))
    x, y = needle.NDArray(x0, device=WEBGPU), needle.NDArray(y0, device=WEBGPU)
    before = gpu.stats()
    with gpu.one_submission():
        x = _chain(x, y, 30)
        with gpu.one_submission():
            x = _chain(x, y, 30)
        assert _submissions(gpu, before) == 0 and gpu.stats()["pending"] > gpu._rec.batch
        x = _chain(x, y, 30)
    assert _submissions(gpu, before) == 1
    assert_close(x, _chain(x0, y0, 90))


def test_a_host_read_inside_the_block_submits_early_and_is_right(gpu, rng):
    x0, y0 = rng.standard_normal((2, 777))
    x, y = needle.NDArray(x0, device=WEBGPU), needle.NDArray(y0, device=WEBGPU)
    before = gpu.stats()
    with gpu.one_submission():
        x = _chain(x, y, 40)
        assert_close(x.numpy(), _chain(x0, y0, 40), what="read inside the block")
        x = _chain(x, y, 40)
    assert _submissions(gpu, before) == 2  # the read's, then the block's
    assert_close(x, _chain(x0, y0, 80))


def test_an_exception_still_submits_and_ends_the_block(gpu, rng):
    x0, y0 = rng.standard_normal((2, 100))
    x, y = needle.NDArray(x0, device=WEBGPU), needle.NDArray(y0, device=WEBGPU)
    before = gpu.stats()
    with pytest.raises(RuntimeError), gpu.one_submission():
        x = _chain(x, y, 30)
        raise RuntimeError
    assert _submissions(gpu, before) == 1 and gpu.stats()["pending"] == 0
    x = _chain(x, y, 60)  # outside any block again: submitted every batch
    assert _submissions(gpu, before) > 2
    assert_close(x, _chain(x0, y0, 90))


def test_the_contract_default_is_a_no_op_on_cpu(rng):
    cpu = needle.cpu().backend
    assert type(cpu).one_submission is Backend.one_submission
    x0, y0 = rng.standard_normal((2, 50))
    x, y = needle.NDArray(x0, device=needle.cpu()), needle.NDArray(y0, device=needle.cpu())
    block = cpu.one_submission()
    assert isinstance(block, contextlib.nullcontext)
    with block, cpu.one_submission():
        x = _chain(x, y, 5)
    assert_close(x, _chain(x0, y0, 5))


def test_a_loop_reuses_its_bind_groups(gpu, rng):
    """The same ops on the same pool buffers at the same parameter slots reuse their bind
    groups: after the first rounds, a loop makes none, and its results stay right."""
    x0 = rng.standard_normal((40, 33)).astype("float32")
    y0 = rng.standard_normal((40, 33)).astype("float32")
    expected = _chain(x0.astype("float64"), y0.astype("float64"), 4)
    made = []
    for _ in range(5):
        with gpu.one_submission():
            x = needle.NDArray(x0, device=WEBGPU)
            y = needle.NDArray(y0, device=WEBGPU)
            out = _chain(x, y, 4)
        assert_close(out.numpy(), expected, rtol=1e-5, atol=1e-5)
        del x, y, out
        made.append(gpu.stats()["bind_groups"])
    assert made[-1] == made[-2] == made[-3] and gpu.stats()["dispatches"] > made[-1]
