"""The ternary contract op ``select(cond, a, b, out)`` and ``needle.backend_ndarray.where``
on every device, against NumPy's ``np.where(cond != 0, a, b)``.

A true select: NaN and infinities in the branch not taken must not reach the result (an
arithmetic blend ``cond * a + (1 - cond) * b`` would leak them). Sizes cover 0, odd sizes,
one past a workgroup, and more than 65535 * 256 elements (webgpu's 2-D grid). Fresh random
inputs each run (the seed is recorded on the test).
"""
import numpy as np
import pytest
from helpers import download as get
from helpers import fresh_rng, held, upload

import needle
import needle.backend_ndarray as nd
from needle.errors import DeviceMismatchError, DTypeError, ShapeError

NAN, INF = np.nan, np.inf
DTYPES = ("float32", "float64")


@pytest.fixture
def rng(request):
    return fresh_rng(request)


def operands(rng, n, dtype):
    """A 1.0 / 0.0 mask and two operands whose *unselected* elements are mostly NaN or
    +-inf (and some selected ones are inf, which must come through)."""
    cond = (rng.random(n) < 0.5).astype(dtype)
    a = rng.standard_normal(n).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    poison = rng.choice(np.array([NAN, INF, -INF], dtype=dtype), n)
    hide = rng.random(n) < 0.7
    a[(cond == 0) & hide] = poison[(cond == 0) & hide]
    b[(cond != 0) & hide] = poison[(cond != 0) & hide]
    shown = rng.random(n) < 0.05  # infinities in the chosen branch stay
    a[(cond != 0) & shown] = INF
    b[(cond == 0) & shown] = -INF
    cond[:2], a[:2], b[:2] = [1, 0][:n], [0.5, NAN][:n], [NAN, -0.5][:n]  # a NaN not chosen
    return cond, a, b


def reference(cond, a, b):
    return np.where(cond != 0, a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 255, 257, 1025, 100_003])
def test_select_matches_numpy(device, rng, dtype, n):
    be = held(device, dtype)
    cond, a, b = operands(rng, n, dtype)
    out = upload(be, np.full(n, -777.0, dtype=dtype))  # an unwritten element would show
    be.select(upload(be, cond), upload(be, a), upload(be, b), out)
    got, want = get(be, out), reference(cond, a, b)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(np.where(cond != 0, b, a)).any()
    assert not np.isnan(got).any()  # no NaN leaked from either side


@pytest.mark.parametrize("dtype", DTYPES)
def test_select_with_operands_sharing_a_buffer(device, rng, dtype):
    """cond, a and b may be one buffer (x where x else x), or a and b may be the same."""
    be = held(device, dtype)
    n = 513
    cond, a, _ = operands(rng, n, dtype)
    c, x = upload(be, cond), upload(be, a)
    out = upload(be, np.zeros(n, dtype))
    be.select(c, x, x, out)
    np.testing.assert_array_equal(get(be, out), a)
    be.select(c, c, x, out)
    np.testing.assert_array_equal(get(be, out), reference(cond, cond, a))


@pytest.mark.parametrize("dtype", DTYPES)
def test_select_nonzero_cond_is_true(device, rng, dtype):
    """Any nonzero cond picks a, as ``cond != 0`` does: -1, 0.5, inf and NaN; -0.0 picks b."""
    be = held(device, dtype)
    cond = np.array([1.0, 0.0, -1.0, 0.5, INF, -INF, NAN, -0.0, 1e-30], dtype=dtype)
    a = np.arange(cond.size, dtype=dtype) + 1
    b = -a
    out = upload(be, np.zeros(cond.size, dtype))
    be.select(upload(be, cond), upload(be, a), upload(be, b), out)
    np.testing.assert_array_equal(get(be, out), reference(cond, a, b))


def test_select_over_65535_workgroups(device):
    """More than 65535 * 256 elements: webgpu lays the launch out as a 2-D grid."""
    be = held(device, "float32")
    n = 65_537 * 256 + 3
    i = np.arange(n)
    cond = (i % 3 == 0).astype(np.float32)
    a = (i % 1000).astype(np.float32)
    b = np.where(cond != 0, NAN, -a).astype(np.float32)  # NaN wherever b is not chosen
    out = be.alloc(n, np.float32)
    be.select(upload(be, cond), upload(be, a), upload(be, b), out)
    got = get(be, out)
    np.testing.assert_array_equal(got, reference(cond, a, b))
    assert not np.isnan(got).any()


def test_select_across_storage_bindings(device, rng):
    """webgpu: operands larger than one storage binding go in aligned chunks."""
    if device.name != "webgpu":
        pytest.skip("webgpu's binding windows")
    from needle.backend_ndarray.webgpu import WebGPUBackend
    be = WebGPUBackend(max_binding=4096)  # 1024 floats a binding
    n = 5003
    cond, a, b = operands(rng, n, "float32")
    out = be.alloc(n, np.float32)
    be.select(upload(be, cond), upload(be, a), upload(be, b), out)
    np.testing.assert_array_equal(get(be, out), reference(cond, a, b))


# -- nd.where: the NDArray-level function --------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (3, 0, 2), (), (7,), (4, 5, 6)])
def test_where_matches_numpy(device, rng, dtype, shape):
    held(device, dtype)
    n = int(np.prod(shape))
    cond, a, b = (v.reshape(shape) for v in operands(rng, n, dtype))
    args = [nd.NDArray(v, device=device, dtype=dtype) for v in (cond, a, b)]
    out = nd.where(*args)
    assert out.shape == shape and out.dtype == dtype and out.device == device
    np.testing.assert_array_equal(out.numpy(), reference(cond, a, b))


def test_where_of_views(device, rng):
    """Non-compact operands (a transpose, a broadcast, a reversed slice) are compacted
    first; operands that share a dense non-compact layout keep it."""
    held(device, "float32")
    x = rng.standard_normal((4, 6)).astype(np.float32)
    cond_np = (x > 0).astype(np.float32)
    a_np = rng.standard_normal((6, 4)).astype(np.float32)
    b_np = rng.standard_normal(4).astype(np.float32)
    cond = nd.NDArray(x, device=device) > 0
    a = nd.NDArray(a_np, device=device).permute((1, 0))
    b = nd.NDArray(b_np, device=device).reshape((4, 1)).broadcast_to((4, 6))
    want = np.where(cond_np != 0, a_np.T, b_np[:, None])
    np.testing.assert_array_equal(nd.where(cond, a, b).numpy(), want)
    flipped = nd.NDArray(x, device=device)[::-1, ::2]
    np.testing.assert_array_equal(
        nd.where(flipped > 0, flipped, flipped * 0.0).numpy(), np.maximum(x[::-1, ::2], 0))
    # NCHW views of NHWC buffers: one dense non-compact layout, kept by the output
    t = [rng.standard_normal((2, 3, 4, 5)).astype(np.float32) for _ in range(3)]
    views = [nd.NDArray(v, device=device).permute((0, 3, 1, 2)) for v in t]
    want = np.where(t[0].transpose(0, 3, 1, 2) > 0, t[1].transpose(0, 3, 1, 2),
                    t[2].transpose(0, 3, 1, 2))
    out = nd.where(views[0] > 0, views[1], views[2])
    np.testing.assert_array_equal(out.numpy(), want)


def test_where_checks_its_operands(device):
    held(device, "float32")
    a = nd.NDArray(np.ones((2, 3)), device=device)
    with pytest.raises(ShapeError, match="broadcast"):
        nd.where(a, a, nd.NDArray(np.ones((3,)), device=device))
    with pytest.raises(ShapeError):
        nd.where(nd.NDArray(np.ones((3, 2)), device=device), a, a)
    if "float64" in device.backend.dtypes:
        with pytest.raises(DTypeError):
            nd.where(a, a, nd.NDArray(np.ones((2, 3)), device=device, dtype="float64"))
    if device != needle.cpu():
        with pytest.raises(DeviceMismatchError):
            nd.where(a, a, nd.NDArray(np.ones((2, 3)), device=needle.cpu()))


def test_where_is_exported():
    from needle.backend_ndarray.ndarray import where
    assert nd.where is where
