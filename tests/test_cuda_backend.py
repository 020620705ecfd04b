"""The `cuda` backend against the NumPy backend, the executable specification.

Every contract op runs on fresh random inputs on both backends and the results are
compared (awkward sizes, strided views with negative strides, large reductions, odd and
batched matmuls, convs, every fused op, float32 and float64). These tests need a GPU and
skip with the reason otherwise. The tests at the end run anywhere: the pure-Python
helpers, and a check that every kernel launch matches the kernel's parameter list.
"""
import ctypes
import json
import math
import struct
import sys
import types

import numpy as np
import pytest
from helpers import fresh_rng, upload

from needle.backend_ndarray.contract import BINARY_OPS, FUSED_OPS, REDUCE_OPS, UNARY_OPS
from needle.backend_ndarray.cuda import backend as cuda_backend
from needle.backend_ndarray.cuda.kernels import SGEMM_TILES, tile_name
from needle.backend_ndarray.cuda.memory import CudaBuffer
from needle.backend_ndarray.device import cuda as cuda_device
from needle.backend_ndarray.numpy_backend import NumpyBackend

REF = NumpyBackend()
DTYPES = ("float32", "float64")
TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-12, atol=1e-12)}
SIZES = (1, 3, 127, 1025)


@pytest.fixture
def be():
    device = cuda_device()
    if not device.enabled():
        pytest.skip(f"needle.cuda() is not available: {device.unavailable_reason()}")
    return device.backend


@pytest.fixture
def rng(request):
    return fresh_rng(request)


def download(be, buf):
    return be.to_numpy(buf, (buf.size,), (1,), 0)


def call_both(be, op, *args):
    """Run ``op`` on both backends. Numpy-array args become buffers (copied for the
    reference); returns (ours, reference) lists of every buffer argument afterwards."""
    ref = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    dev = [upload(be, a) if isinstance(a, np.ndarray) else a for a in args]
    getattr(REF, op)(*ref)
    getattr(be, op)(*dev)
    ours = [download(be, d) for a, d in zip(args, dev) if isinstance(a, np.ndarray)]
    return ours, [r for r in ref if isinstance(r, np.ndarray)]


def assert_same(ours, ref, dtype, scale=1.0):
    tol = TOL[dtype]
    for got, want in zip(ours, ref):
        np.testing.assert_allclose(got, want, rtol=tol["rtol"] * scale, atol=tol["atol"] * scale,
                                   equal_nan=True)


def poison(n, dtype):
    """An output buffer's initial contents: NaN, so an unwritten element shows."""
    return np.full(n, np.nan, dtype=dtype)


def rel_err(got, want):
    return np.linalg.norm((got - want).ravel()) / max(np.linalg.norm(want.ravel()), 1e-300)


# ---- memory --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES + (1 << 24,))
def test_roundtrip(be, rng, dtype, n):
    x = rng.standard_normal(n).astype(dtype)
    np.testing.assert_array_equal(download(be, upload(be, x)), x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES + ((1 << 24) + 5,))
def test_fill(be, dtype, n):
    ours, ref = call_both(be, "fill", poison(n, dtype), -2.5)
    assert_same(ours, ref, dtype)


def test_alloc_free_does_not_leak(be):
    be.synchronize()
    before = be.memory_stats()
    for i in range(5000):
        buf = be.alloc(1000 + i % 7, "float32")
        be.fill(buf, 1.0)
        del buf
    be.synchronize()
    after = be.memory_stats()
    assert after["bytes_in_use"] == before["bytes_in_use"]
    assert after["pool_used_bytes"] <= before["pool_used_bytes"] + (1 << 20)
    assert after["peak_bytes"] >= before["bytes_in_use"]


def test_launch_error_names_the_kernel(be):
    from needle.backend_ndarray.cuda import kernels
    kernel = be.rt.kernels.kernel(*kernels.name("fill", "f32"))
    with pytest.raises(RuntimeError, match="needle_fill_f32.*CUDA_ERROR_"):  # an empty grid
        kernel((0, 1, 1), (256, 1, 1), 0, (0, 1.0, 0))
    out = upload(be, poison(5, "float32"))  # the device still works
    be.fill(out, 2.0)
    np.testing.assert_array_equal(download(be, out), np.full(5, 2.0, "float32"))


# ---- elementwise ---------------------------------------------------------------------
_DOMAIN = {"log": (0.01, 10.0), "sqrt": (0.0, 10.0), "exp": (-20.0, 20.0)}
_SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 1e30, -1e30, 100.0, -100.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", UNARY_OPS)
def test_unary(be, rng, op, n, dtype):
    lo, hi = _DOMAIN.get(op, (-10.0, 10.0))
    x = rng.uniform(lo, hi, n).astype(dtype)
    ours, ref = call_both(be, "unary", op, x, poison(n, dtype))
    assert_same(ours, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", UNARY_OPS)
def test_unary_special_values(be, op, dtype):
    x = _SPECIAL.astype(dtype)
    ours, ref = call_both(be, "unary", op, x, poison(x.size, dtype))
    assert_same(ours, ref, dtype)


def _binary_inputs(rng, op, n, dtype):
    a = rng.uniform(-5, 5, n)
    b = rng.uniform(-5, 5, n)
    if op == "pow":
        a = np.abs(a) + 0.1
    if op == "div":
        b = np.where(np.abs(b) < 0.1, 0.5, b)
    b = np.where(rng.random(n) < 0.3, a, b)  # equal elements for eq / le / ge
    return a.astype(dtype), b.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", BINARY_OPS)
def test_binary(be, rng, op, n, dtype):
    a, b = _binary_inputs(rng, op, n, dtype)
    ours, ref = call_both(be, "binary", op, a, b, poison(n, dtype))
    assert_same(ours, ref, dtype, scale=5.0 if op == "pow" else 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ("maximum", "minimum", "eq", "lt", "add"))
def test_binary_special_values(be, op, dtype):
    a = np.repeat(_SPECIAL, _SPECIAL.size).astype(dtype)
    b = np.tile(_SPECIAL, _SPECIAL.size).astype(dtype)
    ours, ref = call_both(be, "binary", op, a, b, poison(a.size, dtype))
    assert_same(ours, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", (1, 1025))
@pytest.mark.parametrize("op", BINARY_OPS)
def test_scalar(be, rng, op, n, dtype):
    a, _ = _binary_inputs(rng, op, n, dtype)
    value = 1.7 if op in ("pow", "div") else float(a[0]) if op in ("eq", "le", "ge") else -0.3
    ours, ref = call_both(be, "scalar", op, a, value, poison(n, dtype))
    assert_same(ours, ref, dtype, scale=5.0 if op == "pow" else 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_large(be, rng, dtype):
    n = (1 << 24) + 3
    a, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    ours, ref = call_both(be, "binary", "mul", a, b, poison(n, dtype))
    assert_same(ours, ref, dtype)
    ours, ref = call_both(be, "unary", "tanh", a, poison(n, dtype))
    assert_same(ours, ref, dtype)


# ---- movement ------------------------------------------------------------------------
def _views():
    """(name, base size, numpy view of a base array, may it be scattered into)."""
    as_strided = np.lib.stride_tricks.as_strided
    return [
        ("transpose", 127 * 33, lambda b: b.reshape(127, 33).T, True),
        ("flip-step", 31 * 41, lambda b: b.reshape(31, 41)[::-1, ::2], True),
        ("flip-all", 7 * 9 * 11, lambda b: b.reshape(7, 9, 11)[::-1, ::-1, ::-1], True),
        ("permute4", 3 * 5 * 7 * 11, lambda b: b.reshape(3, 5, 7, 11).transpose(2, 0, 3, 1), True),
        ("offset-slice", 1025 * 3, lambda b: b.reshape(1025, 3)[17:900:3, 1:], True),
        ("one", 10, lambda b: b[5:6], True),
        ("broadcast", 1025, lambda b: as_strided(b[3:], (64, 1022), (0, b.itemsize)), False),
        ("rank10", 1024, lambda b: b.reshape((2,) * 10).transpose(tuple(range(9, -1, -1))), True),
        ("rank10-flip", 1024, lambda b: b.reshape((2,) * 10)[::-1, :, ::-1].transpose(
            (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)), True),
        ("large", 4099 * 4097, lambda b: b.reshape(4099, 4097)[::-1].T, True),
    ]


def _layout(base, view):
    """(shape, strides, offset) of a numpy view of ``base``, in elements."""
    item = base.itemsize
    offset = (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // item
    return view.shape, tuple(s // item for s in view.strides), offset


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,size,make,_", _views(), ids=[v[0] for v in _views()])
def test_compact_and_to_numpy(be, rng, name, size, make, _, dtype):
    base = rng.standard_normal(size).astype(dtype)
    view = make(base)
    shape, strides, offset = _layout(base, view)
    buf = upload(be, base)
    out = upload(be, poison(view.size, dtype))
    be.compact(buf, out, shape, strides, offset)
    np.testing.assert_array_equal(download(be, out).reshape(shape), view)
    np.testing.assert_array_equal(be.to_numpy(buf, shape, strides, offset), view)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,size,make,scatter", _views(), ids=[v[0] for v in _views()])
def test_setitem(be, rng, name, size, make, scatter, dtype):
    if not scatter:
        pytest.skip("scattering into a broadcast view has no defined result")
    base = rng.standard_normal(size).astype(dtype)
    expect = base.copy()
    view = make(expect)
    shape, strides, offset = _layout(expect, view)
    src = rng.standard_normal(view.size).astype(dtype)
    out = upload(be, base)
    be.ewise_setitem(upload(be, src), out, shape, strides, offset)
    view[...] = src.reshape(shape)
    np.testing.assert_array_equal(download(be, out), expect)
    be.scalar_setitem(view.size, -7.25, out, shape, strides, offset)
    view[...] = -7.25
    np.testing.assert_array_equal(download(be, out), expect)


# ---- reductions ----------------------------------------------------------------------
def _check_reduce(be, op, a, rows, cols, dtype):
    out = upload(be, poison(rows, dtype))
    be.reduce(op, upload(be, a), out, cols)
    got = download(be, out)
    a64 = a.astype(np.float64).reshape(rows, cols)
    if op == "max":
        np.testing.assert_array_equal(got, a64.max(axis=1).astype(dtype))
    else:  # error relative to the sum of magnitudes, against a float64 reference
        bound = 1e-6 if dtype == "float32" else 1e-13
        err = np.abs(got - a64.sum(axis=1)) / np.maximum(np.abs(a64).sum(axis=1), 1e-300)
        assert err.max() < bound, err.max()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 1), (1, 3), (1025, 3), (127, 17),
                                       (127, 1025), (3, 1025), (1, 100003), (7, 5000),
                                       (300, 4097), (65537, 2)])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce(be, rng, op, rows, cols, dtype):
    _check_reduce(be, op, rng.standard_normal(rows * cols).astype(dtype), rows, cols, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(1, (1 << 24) + 7), (3, 1 << 23)])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_large(be, rng, op, rows, cols, dtype):
    _check_reduce(be, op, rng.uniform(-1.0, 2.0, rows * cols).astype(dtype), rows, cols, dtype)


# ---- matmul and conv -----------------------------------------------------------------
MATMUL_SHAPES = [(1, 1, 1, 1), (1, 3, 5, 7), (1, 127, 129, 131), (1, 1025, 3, 1), (1, 1, 4096, 1),
                 (1, 64, 1024, 96), (1, 257, 513, 129), (1, 128, 128, 128), (1, 64, 2048, 128),
                 (1, 300, 64, 260), (4, 33, 65, 17), (3, 128, 256, 64), (2, 1, 777, 9),
                 (1, 512, 1000, 512)]


def _check_matmul(be, rng, batch, m, k, n, dtype, bound):
    """Error against a float64 product, relative to |A| @ |B| (the scale of the rounding)."""
    a = rng.standard_normal(batch * m * k).astype(dtype)
    b = rng.standard_normal(batch * k * n).astype(dtype)
    out = upload(be, poison(batch * m * n, dtype))
    be.matmul(upload(be, a), upload(be, b), out, batch, m, k, n)
    a64, b64 = a.astype(np.float64).reshape(batch, m, k), b.astype(np.float64).reshape(batch, k, n)
    got = download(be, out).reshape(batch, m, n)
    assert not np.isnan(got).any(), "unwritten outputs"
    err = np.linalg.norm(got - a64 @ b64) / np.linalg.norm(np.abs(a64) @ np.abs(b64))
    assert err < bound, err


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,m,k,n", MATMUL_SHAPES)
def test_matmul(be, rng, batch, m, k, n, dtype):
    _check_matmul(be, rng, batch, m, k, n, dtype, 2e-6 if dtype == "float32" else 1e-14)


@pytest.mark.parametrize("tile", SGEMM_TILES, ids=[tile_name(t) for t in SGEMM_TILES])
@pytest.mark.parametrize("batch,m,k,n", [(1, 129, 131, 257), (2, 256, 64, 128), (1, 1000, 3, 5),
                                         (1, 64, 1024, 260), (3, 17, 40, 64)])
def test_sgemm_tiles(be, rng, tile, batch, m, k, n, monkeypatch):
    monkeypatch.setattr(type(be), "sgemm_tile", tile)  # both: force this tile for any shape
    monkeypatch.setattr(type(be), "sgemm_small_tile", tile)
    _check_matmul(be, rng, batch, m, k, n, "float32", 2e-6)


@pytest.mark.parametrize("batch,m,k,n", [(1, 127, 129, 131), (1, 1024, 1024, 1024),
                                         (3, 64, 100, 36), (1, 64, 4096, 256)])
def test_matmul_tf32(be, rng, batch, m, k, n):
    cls = type(be)
    cls.set_matmul_precision("tf32")
    try:
        _check_matmul(be, rng, batch, m, k, n, "float32", 5e-4)
    finally:
        cls.set_matmul_precision("highest")
    with pytest.raises(ValueError):
        cls.set_matmul_precision("bf16")


CONV_CASES = [(2, 9, 9, 3, 5, 1, 1), (2, 9, 9, 3, 5, 3, 1), (1, 10, 11, 4, 8, 3, 2),
              (3, 16, 16, 16, 32, 7, 1), (2, 15, 15, 3, 64, 7, 2), (1, 8, 8, 5, 3, 1, 2),
              (4, 32, 32, 64, 64, 3, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,h,w,cin,cout,k,stride", CONV_CASES)
def test_conv2d(be, rng, n, h, w, cin, cout, k, stride, dtype):
    x = rng.standard_normal(n * h * w * cin).astype(dtype)
    wt = rng.standard_normal(k * k * cin * cout).astype(dtype)
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    ours, ref = call_both(be, "conv2d", x, wt, poison(n * ho * wo * cout, dtype), (n, h, w, cin),
                          k, cout, stride)
    assert rel_err(ours[2], ref[2]) < (1e-5 if dtype == "float32" else 1e-12)


PADDED_CONV_CASES = [(2, 9, 9, 3, 5, 3, 1, 1), (1, 10, 11, 4, 8, 3, 2, 1),
                     (2, 7, 6, 5, 3, 5, 1, 2), (3, 8, 8, 6, 7, 1, 1, 0), (2, 6, 9, 4, 4, 1, 2, 0),
                     (2, 16, 16, 16, 32, 3, 2, 2)]


@pytest.mark.parametrize("chunked", (False, True), ids=("whole", "chunked"))
@pytest.mark.parametrize("channels_first", (False, True), ids=("nhwc", "nchw"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,h,w,cin,cout,k,stride,pad", PADDED_CONV_CASES)
def test_padded_conv_and_its_gradients(be, rng, monkeypatch, n, h, w, cin, cout, k, stride,
                                       pad, dtype, channels_first, chunked):
    """The conv layer op (im2col + GEMM, col2im) in both layouts against the NumPy backend;
    ``chunked``: a workspace of one image, so the batch runs in chunks and the weight
    gradient sums over them."""
    if chunked:
        monkeypatch.setattr(cuda_backend, "CONV_WORKSPACE", 1)
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    x = rng.standard_normal(n * h * w * cin).astype(dtype)
    wt = rng.standard_normal(k * k * cin * cout).astype(dtype)
    geometry = ((n, h, w, cin), k, cout, stride, pad, channels_first)
    ours, ref = call_both(be, "conv", x, wt, poison(n * ho * wo * cout, dtype), *geometry)
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert rel_err(ours[2], ref[2]) < tol
    g = rng.standard_normal(n * ho * wo * cout).astype(dtype)
    ours, ref = call_both(be, "conv_backward", g, x, wt, poison(x.size, dtype),
                          poison(wt.size, dtype), *geometry)
    for got, want in zip(ours[3:], ref[3:]):  # dx, dw
        assert rel_err(got, want) < tol
    ours, ref = call_both(be, "conv_backward", g, x, wt, None, poison(wt.size, dtype),
                          *geometry)  # dw alone (a frozen input)
    assert rel_err(ours[3], ref[3]) < tol


# ---- fused ---------------------------------------------------------------------------
ROWS_COLS = [(1, 1), (3, 10), (127, 1025), (1025, 127), (2, 5000), (64, 33)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", ROWS_COLS)
@pytest.mark.parametrize("op", ("logsumexp", "softmax"))
def test_logsumexp_softmax(be, rng, op, rows, cols, dtype):
    a = (rng.standard_normal(rows * cols) * 5).astype(dtype)
    out = poison(rows if op == "logsumexp" else rows * cols, dtype)
    ours, ref = call_both(be, op, a, out, rows, cols)
    assert_same(ours, ref, dtype, scale=5.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", ROWS_COLS)
def test_cross_entropy(be, rng, rows, cols, dtype):
    logits = (rng.standard_normal(rows * cols) * 3).astype(dtype)
    labels = rng.integers(0, cols, rows).astype(dtype)
    ours, ref = call_both(be, "cross_entropy", logits, labels, poison(rows, dtype),
                          poison(rows * cols, dtype), rows, cols)
    assert_same(ours, ref, dtype, scale=5.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", ROWS_COLS + [(4000, 64)])
def test_layernorm(be, rng, rows, cols, dtype):
    x = (rng.standard_normal(rows * cols) * 2 + 1).astype(dtype)
    w, b = rng.standard_normal(cols).astype(dtype), rng.standard_normal(cols).astype(dtype)
    ours, ref = call_both(be, "layernorm", x, w, b, poison(rows * cols, dtype), poison(rows, dtype),
                          poison(rows, dtype), rows, cols, 1e-5)
    assert_same(ours, ref, dtype, scale=10.0)

    g = rng.standard_normal(rows * cols).astype(dtype)
    mean, rstd = ref[4], ref[5]
    ours, ref = call_both(be, "layernorm_backward", g, x, w, mean, rstd, poison(rows * cols, dtype),
                          poison(cols, dtype), poison(cols, dtype), rows, cols)
    assert_same(ours[5:6], ref[5:6], dtype, scale=20.0)  # dx
    # dweight, dbias sum over rows: rounding grows with the row count
    assert_same(ours[6:], ref[6:], dtype, scale=20.0 * math.sqrt(rows))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ("identity", "relu"))
@pytest.mark.parametrize("rows,cols", ROWS_COLS)
def test_bias_act(be, rng, rows, cols, act, dtype):
    a, bias = rng.standard_normal(rows * cols).astype(dtype), rng.standard_normal(cols).astype(dtype)
    ours, ref = call_both(be, "bias_act", a, bias, poison(rows * cols, dtype), rows, cols, act)
    assert_same(ours, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,weight_decay,first_step", [(0.0, 0.0, False), (0.9, 0.0, True),
                                                              (0.9, 0.01, False), (0.0, 0.1, True)])
@pytest.mark.parametrize("n", (1, 1025))
def test_sgd_update(be, rng, n, momentum, weight_decay, first_step, dtype):
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    buf = rng.standard_normal(n).astype(dtype) if momentum else None
    ours, ref = call_both(be, "sgd_update", p, g, buf, 0.05, momentum, weight_decay, first_step)
    assert_same(ours, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay,step", [(0.0, 1), (0.01, 3), (0.0, 1000)])
@pytest.mark.parametrize("n", (1, 1025))
def test_adam_update(be, rng, n, weight_decay, step, dtype):
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    m, v = rng.standard_normal(n).astype(dtype) * 0.1, rng.random(n).astype(dtype) * 0.01
    ours, ref = call_both(be, "adam_update", p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, weight_decay, step)
    assert_same(ours, ref, dtype, scale=5.0)


# 37 tensors (two launches of up to 32), sizes around the block size and one of more
# elements than the 256 blocks a tensor gets cover in one sweep
MANY_SIZES = [1, 255, 256, 257, 3000, 70000, 5] * 5 + [1, 2]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 5e-4)])
def test_sgd_update_many_is_sgd_update_of_each(be, rng, momentum, weight_decay, dtype):
    ps = [rng.standard_normal(n).astype(dtype) for n in MANY_SIZES]
    gs = [rng.standard_normal(n).astype(dtype) for n in MANY_SIZES]
    bufs = [rng.standard_normal(n).astype(dtype) if momentum else None for n in MANY_SIZES]
    firsts = [i % 3 == 0 for i in range(len(ps))]
    want = [a.copy() for a in ps], [b.copy() if b is not None else None for b in bufs]
    for p, g, b, first in zip(want[0], gs, want[1], firsts):
        REF.sgd_update(p, g, b, 0.05, momentum, weight_decay, first)
    dp, dg = [upload(be, a) for a in ps], [upload(be, a) for a in gs]
    db = [upload(be, b) if b is not None else None for b in bufs]
    be.sgd_update_many(dp, dg, db, 0.05, momentum, weight_decay, firsts)
    assert_same([download(be, d) for d in dp], want[0], dtype)
    if momentum:
        assert_same([download(be, d) for d in db], want[1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_update_many_is_adam_update_of_each(be, rng, weight_decay, dtype):
    ps = [rng.standard_normal(n).astype(dtype) for n in MANY_SIZES]
    gs = [rng.standard_normal(n).astype(dtype) for n in MANY_SIZES]
    ms = [rng.standard_normal(n).astype(dtype) * 0.1 for n in MANY_SIZES]
    vs = [rng.random(n).astype(dtype) * 0.01 for n in MANY_SIZES]
    steps = [1 + 7 * i for i in range(len(ps))]
    want = [[a.copy() for a in arrays] for arrays in (ps, ms, vs)]
    for p, g, m, v, t in zip(want[0], gs, want[1], want[2], steps):
        REF.adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, weight_decay, t)
    dev = [[upload(be, a) for a in arrays] for arrays in (ps, gs, ms, vs)]
    be.adam_update_many(dev[0], dev[1], dev[2], dev[3], 1e-3, 0.9, 0.999, 1e-8, weight_decay,
                        steps)
    for got, ref in zip((dev[0], dev[2], dev[3]), want):
        assert_same([download(be, d) for d in got], ref, dtype, scale=5.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ("identity", "relu"))
@pytest.mark.parametrize("x_bias", (False, True))
@pytest.mark.parametrize("outer,channels,inner", [(64, 5, 1), (2, 16, 81), (3, 1, 1025),
                                                  (1, 7, 1)])
def test_batchnorm(be, rng, outer, channels, inner, x_bias, act, dtype):
    n = outer * channels * inner
    x = rng.standard_normal(n).astype(dtype)
    mean, weight, bias = (rng.standard_normal(channels).astype(dtype) for _ in range(3))
    var = rng.uniform(0.5, 2.0, channels).astype(dtype)
    xb = rng.standard_normal(channels).astype(dtype) if x_bias else None
    ours, ref = call_both(be, "batchnorm", x, xb, mean, var, weight, bias, poison(n, dtype),
                          channels, inner, 1e-5, act)
    assert_same(ours, ref, dtype)


def test_take_and_scatter_add_past_2_31_elements(be):
    """A buffer of more than 2**31 elements (8 GiB of float32) is indexed with int64."""
    n = 2**31 + 16
    big = CudaBuffer(n, "float32")
    be.fill(big, 1.0)
    be.scalar_setitem(1, 5.0, big, (1,), (1,), n - 3)
    out = upload(be, poison(3, "float32"))
    be.take(big, np.array([n - 3, 0, n - 1]), out)
    np.testing.assert_array_equal(download(be, out), [5.0, 1.0, 1.0])
    be.scatter_add(upload(be, np.array([2.0, 3.0, 4.0], np.float32)), np.array([n - 1, 7, n - 1]),
                   big)
    np.testing.assert_array_equal(be.to_numpy(big, (3,), (1,), n - 3), [5.0, 1.0, 7.0])
    np.testing.assert_array_equal(be.to_numpy(big, (3,), (1,), 6), [1.0, 4.0, 1.0])


def test_a_freed_buffer_is_reused_by_the_next_of_its_size(be):
    from needle.backend_ndarray.cuda.memory import CudaBuffer

    a = CudaBuffer(1000, "float32")
    ptr = a.ptr
    del a
    assert be.memory_stats()["cached_bytes"] >= 4000
    b = CudaBuffer(1000, "float32")
    assert b.ptr == ptr
    c = CudaBuffer(1000, "float32")  # b still holds that block
    assert c.ptr != ptr


def test_every_fused_op_is_native(be):
    assert all(be.supports(op) for op in FUSED_OPS)


# shapes off the kernels' tiles (32 rows, 16/32-key tiles), dims below and at each compiled
# width (16, 32, 64, 128), one problem and many
ATTENTION_CASES = [(1, 1, 1, 1), (3, 40, 70, 8), (2, 33, 33, 16), (4, 65, 65, 31),
                   (2, 17, 130, 64), (5, 128, 128, 64), (2, 47, 47, 100), (1, 20, 36, 128)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", (False, True))
@pytest.mark.parametrize("batch,seq_q,seq_k,dim", ATTENTION_CASES)
def test_attention(be, rng, batch, seq_q, seq_k, dim, causal, dtype):
    if causal and seq_q != seq_k:
        pytest.skip("causal attention takes seq_q == seq_k (the contract)")
    scale = dim ** -0.5
    q = rng.standard_normal(batch * seq_q * dim).astype(dtype) * 2
    k, v = (rng.standard_normal(batch * seq_k * dim).astype(dtype) for _ in range(2))
    ours, ref = call_both(be, "attention", q, k, v, poison(q.size, dtype),
                          poison(batch * seq_q, dtype), batch, seq_q, seq_k, dim, scale, causal)
    assert_same(ours[3:], ref[3:], dtype, scale=10.0)
    out, stats = ref[3:]
    grad = rng.standard_normal(q.size).astype(dtype)
    ours, ref = call_both(be, "attention_backward", q, k, v, out, stats, grad,
                          poison(q.size, dtype), poison(k.size, dtype), poison(v.size, dtype),
                          batch, seq_q, seq_k, dim, scale, causal)
    assert_same(ours[6:], ref[6:], dtype, scale=20.0)


# ---- anywhere: no GPU needed ---------------------------------------------------------
def test_unavailable_reason_says_why():
    device = cuda_device()
    if not device.enabled():
        reason = device.unavailable_reason()
        assert any(w in reason for w in ("CuPy", "GPU", "driver", "NVRTC")), reason


def test_coalesce():
    from needle.backend_ndarray.cuda.layout import coalesce, is_contiguous, kernel_args
    assert coalesce((4, 1, 5, 6), (30, 99, 6, 1)) == ((120,), (1,))
    assert coalesce((3, 4), (1, 3)) == ((3, 4), (1, 3))
    assert coalesce((2, 3), (-3, -1)) == ((6,), (-1,))
    assert coalesce((5, 7), (0, 0)) == ((35,), (0,))
    assert coalesce((1, 1), (5, 9)) == ((1,), (0,))
    assert is_contiguous((7,), (1,)) and not is_contiguous((7,), (-1,))
    args = kernel_args((3, 4), (1, 3), 5)
    assert args[:2] == (2, 5) and args[2:10][-2:] == (3, 4) and args[10:][-2:] == (1, 3)


def test_plan_gemm():
    from needle.backend_ndarray.cuda.gemm import plan_gemm
    big = plan_gemm(1, 4096, 4096, 4096, "float32", "highest", 132, True)
    assert big.kernel == ("sgemm", "128x128x16m1", "vec") and big.splits == 1 and big.tiles == 1024
    mid = plan_gemm(1, 1024, 1024, 1024, "float32", "highest", 132, False)
    assert mid.kernel == ("sgemm", "64x128x8m2", "any") and mid.tiles == 128
    thin = plan_gemm(1, 64, 4096, 1024, "float32", "highest", 132, True)
    assert thin.kernel[1] == "64x128x8m2" and thin.splits > 1
    assert thin.kchunk * thin.splits >= 4096 > thin.kchunk * (thin.splits - 1)
    assert thin.kchunk % 8 == 0
    assert plan_gemm(2, 5, 7, 9, "float64", "tf32", 132, False).kernel[0] == "dgemm"
    assert plan_gemm(1, 500, 64, 500, "float32", "tf32", 132, False).kernel == (
        "tf32gemm", "128x128x16", "any")


def test_kernel_names_and_sources():
    from needle.backend_ndarray.cuda import compiler, kernels
    assert kernels.name("unary", "exp", "f32") == ("elementwise.cu", "needle_unary_exp_f32")
    with pytest.raises(KeyError):
        kernels.name("unary", "erf", "f32")
    source = compiler.load_source("reduce.cu")
    assert "struct SumOp" in source and '#include "common.cuh"' not in source
    assert set(kernels.ENTRY_POINTS) == {p.name for p in compiler.KERNEL_DIR.glob("*.cu")}


# ---- training-mode BatchNorm: one block per channel ------------------------------------
# (outer, channels, inner): rows of BatchNorm1d, odd channel counts, more channels than
# blocks would take in one pass is not needed (a grid-stride loop over channels)
BATCHNORMS = [(64, 16, 1), (8, 32, 64), (4, 3, 25), (2, 5, 300), (3, 128, 7), (1, 2, 1030)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act,x_bias", [("identity", False), ("relu", True)])
@pytest.mark.parametrize("outer,channels,inner", BATCHNORMS)
def test_batchnorm_train(be, rng, outer, channels, inner, act, x_bias, dtype):
    """Statistics, output and the running update (in the same launch) against NumPy."""
    n = outer * channels * inner
    x = (rng.standard_normal(n) * 2 + 0.5).astype(dtype)
    w, b, run_mean, xb = (rng.standard_normal(channels).astype(dtype) for _ in range(4))
    run_var = rng.uniform(0.5, 2, channels).astype(dtype)
    ours, ref = call_both(be, "batchnorm_train", x, w, b, poison(n, dtype),
                          poison(channels, dtype), poison(channels, dtype),
                          poison(channels, dtype), channels, inner, 1e-5, act, run_mean,
                          run_var, 0.1, outer * inner / max(outer * inner - 1, 1),
                          xb if x_bias else None)
    assert_same(ours, ref, dtype, scale=10)


@pytest.mark.parametrize("act", ["identity", "relu"])
def test_batchnorm_train_without_running_statistics(be, rng, act):
    x = rng.standard_normal(4 * 6 * 9).astype("float32")
    w, b = (rng.standard_normal(6).astype("float32") for _ in range(2))
    ours, ref = call_both(be, "batchnorm_train", x, w, b, poison(x.size, "float32"),
                          poison(6, "float32"), poison(6, "float32"), poison(6, "float32"), 6, 9,
                          1e-3, act)
    assert_same(ours, ref, "float32", scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act,x_bias", [("identity", False), ("relu", False), ("relu", True)])
@pytest.mark.parametrize("outer,channels,inner", BATCHNORMS)
def test_batchnorm_train_backward(be, rng, outer, channels, inner, act, x_bias, dtype):
    n = outer * channels * inner
    g, x = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    w, b = (rng.standard_normal(channels).astype(dtype) for _ in range(2))
    xb = rng.standard_normal(channels).astype(dtype) if x_bias else None
    out, mean, var, rstd = (np.empty(size, dtype) for size in (n, channels, channels, channels))
    REF.batchnorm_train(x, w, b, out, mean, var, rstd, channels, inner, 1e-5, act, x_bias=xb)
    ours, ref = call_both(be, "batchnorm_train_backward", g, x, w, mean, rstd,
                          poison(n, dtype), poison(channels, dtype), poison(channels, dtype),
                          channels, inner, act, out if act == "relu" else None, xb,
                          poison(channels, dtype) if x_bias else None)
    # dweight and dbias sum outer * inner terms
    assert_same(ours, ref, dtype, scale=10 * np.sqrt(outer * inner))


# ---- launches: packing the arguments as the PTX declares the parameters ---------------
class _FakeDriver:
    """Stands in for libcuda: records each cuLaunchKernel with the bytes it would copy."""

    def __init__(self, result=0):
        self.result, self.launches = result, []

    def cuLaunchKernel(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        # pointers must come as ctypes objects: launch.py sets no argtypes (see driver())
        assert isinstance(f, ctypes.c_void_p) and isinstance(stream, ctypes.c_void_p)
        marks = list(extra)  # [BUFFER_POINTER, buffer, BUFFER_SIZE, &size, END]
        assert marks[0] == 1 and marks[2] == 2 and marks[4] is None and params is None
        size = ctypes.c_size_t.from_address(marks[3]).value
        self.launches.append((f.value, (gx, gy, gz), (bx, by, bz), shared, stream.value or 0,
                              ctypes.string_at(marks[1], size)))
        return self.result

    def cuGetErrorName(self, code, out):
        out._obj.value = b"CUDA_ERROR_INVALID_VALUE"
        return 0

    def cuGetErrorString(self, code, out):
        out._obj.value = b"invalid argument"
        return 0


@pytest.fixture
def driver(monkeypatch):
    from needle.backend_ndarray.cuda import launch
    fake = _FakeDriver()
    monkeypatch.setattr(launch, "driver", lambda: fake)
    return fake


def _kernel(name, params, handle=1):
    from needle.backend_ndarray.cuda import launch
    return launch.Kernel(name, params, types.SimpleNamespace(ptr=handle))


def test_pack_format_aligns_each_parameter_to_its_size():
    """Offsets match C's natural alignment (a ctypes Structure), with no tail padding."""
    from needle.backend_ndarray.cuda.launch import pack_format
    c_types = {"u64": ctypes.c_uint64, "s64": ctypes.c_int64, "u32": ctypes.c_uint32,
               "s32": ctypes.c_int32, "f32": ctypes.c_float, "f64": ctypes.c_double}
    cases = {("u64", "f32", "u64", "s64", "s32"): ("<qf4xqqi", 36),
             ("u64", "s32", "s64"): ("<qi4xq", 24),
             ("u32", "f32", "f64", "s32", "u32", "f32", "u64"): ("<ifdiif4xq", 40),
             ("u64",): ("<q", 8), (): ("<", 0)}
    for params, (fmt, size) in cases.items():
        assert pack_format(params) == fmt and struct.calcsize(fmt) == size, params
        values = [0.5 * (i + 1) if p[0] == "f" else (i + 1) * 1000 for i, p in enumerate(params)]
        data = struct.pack(fmt, *values)

        class Params(ctypes.Structure):
            _fields_ = [(f"p{i}", c_types[p]) for i, p in enumerate(params)]

        padded = data + bytes(ctypes.sizeof(Params) - len(data))
        got = Params.from_buffer_copy(padded)
        assert [getattr(got, f"p{i}") for i in range(len(params))] == values, params


def test_entry_params_reads_ptx():
    from needle.backend_ndarray.cuda.launch import entry_params
    ptx = """
.visible .entry needle_a(
    .param .u64 needle_a_param_0,
    .param .f32 needle_a_param_1,
    .param .u64 .ptr .global .align 4 needle_a_param_2,
    .param .u32 needle_a_param_3
)
{
    ret;
}
.visible .entry needle_b()
{
}
"""
    assert entry_params(ptx) == {"needle_a": ("u64", "f32", "u64", "u32"), "needle_b": ()}
    # a struct passed by value: its bytes, aligned as the PTX says
    assert entry_params(".entry needle_c(\n.param .align 8 .b8 needle_c_param_0[16],\n"
                        ".param .f32 needle_c_param_1\n)") == {"needle_c": ("b8[16]@8", "f32")}
    from needle.backend_ndarray.cuda.launch import pack_format
    assert pack_format(("f32", "b8[16]@8", "s32")) == "<f4x16si"
    with pytest.raises(ValueError, match="needle_c"):
        entry_params(".entry needle_c(\n.param .b8 needle_c_param_0[16]\n)")
    with pytest.raises(ValueError, match="needle_d"):
        entry_params(".entry needle_d(\n.param .u16 needle_d_param_0\n)")


def test_kernel_launch_packs_plain_python_values(driver):
    kernel = _kernel("needle_k", ("u64", "f32", "u64", "s64", "s32"), handle=42)
    kernel((3, 2, 1), (256, 1, 1), 7, (1 << 40, 0.1, (1 << 40) + 256, -5, 9))
    f, grid, block, shared, stream, data = driver.launches[-1]
    assert (f, grid, block, shared, stream) == (42, (3, 2, 1), (256, 1, 1), 0, 7)
    assert struct.unpack("<qf4xqqi", data) == (1 << 40, np.float32(0.1), (1 << 40) + 256, -5, 9)
    kernel((1, 1, 1), (1, 1, 1), 0, (0, 2, 0, 0, 0))  # an int for a float: converted
    assert struct.unpack("<qf4xqqi", driver.launches[-1][5])[1] == 2.0
    with pytest.warns(RuntimeWarning):  # beyond float32: +-inf, as NumPy rounds it
        kernel((1, 1, 1), (1, 1, 1), 0, (0, -1e300, 0, 0, 0))
    assert struct.unpack("<qf4xqqi", driver.launches[-1][5])[1] == -np.inf
    with pytest.raises(TypeError, match="needle_k takes"):
        kernel((1, 1, 1), (1, 1, 1), 0, (0, 1.0, 0, 0))  # one argument short
    with pytest.raises(TypeError, match="needle_k takes"):
        kernel((1, 1, 1), (1, 1, 1), 0, (0.5, 1.0, 0, 0, 0))  # a float for a pointer
    driver.result = 1
    with pytest.raises(RuntimeError, match="needle_k.*CUDA_ERROR_INVALID_VALUE"):
        kernel((1, 1, 1), (1, 1, 1), 0, (0, 1.0, 0, 0, 0))


def test_kernel_cache_keeps_parameter_lists_beside_cubins(tmp_path, monkeypatch, driver):
    from needle.backend_ndarray.cuda import compiler, nvrtc
    try:
        nvrtc.version()
    except nvrtc.NvrtcError as e:
        pytest.skip(f"NVRTC is not installed: {e}")

    class RawModule:  # CuPy's, loading nothing
        def __init__(self, path):
            self.path = path

        def get_function(self, name):
            return types.SimpleNamespace(kernel=types.SimpleNamespace(ptr=5))

    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(RawModule=RawModule))
    monkeypatch.setenv("NEEDLE_CACHE_DIR", str(tmp_path))
    name = "needle_reduce_sum_f32_t32"
    kernel = compiler.KernelCache("90").kernel("reduce.cu", name)
    assert kernel.params == ("u64",) * 5 and kernel.function.ptr == 5
    cubin, = (tmp_path / "cuda").glob("reduce-*.cubin")
    params = cubin.with_suffix(".params.json")
    assert json.loads(params.read_text())[name] == ["u64"] * 5
    monkeypatch.setenv("NEEDLE_CUDA_NO_COMPILE", "1")  # another process: all from the cache
    assert compiler.KernelCache("90").kernel("reduce.cu", name).params == kernel.params
    params.unlink()  # a cubin without its parameter lists is no cache hit
    with pytest.raises(RuntimeError, match="NEEDLE_CUDA_NO_COMPILE"):
        compiler.KernelCache("90").kernel("reduce.cu", name)


@pytest.fixture(scope="module")
def ptx_params():
    """{kernel: PTX parameter types} of every entry point, derived as the backend does."""
    from needle.backend_ndarray.cuda import compiler, kernels, nvrtc
    try:
        nvrtc.version()
    except nvrtc.NvrtcError as e:
        pytest.skip(f"NVRTC is not installed: {e}")
    params = {}
    for filename in kernels.ENTRY_POINTS:
        params.update(compiler.compile_file(filename, "90")[1])
    return params


class _FakeBuffer:
    """Stands in for CudaBuffer: distinct 256-byte aligned addresses, no GPU."""

    next_ptr = 1 << 20

    def __init__(self, size, dtype):
        self.size, self.dtype = int(size), np.dtype(dtype)
        self.nbytes = self.size * self.dtype.itemsize
        self.ptr = _FakeBuffer.next_ptr
        _FakeBuffer.next_ptr += (self.nbytes + 511) // 256 * 256
        self.derived = None

    def wrote(self):
        self.derived = None


class _CheckedKernels:
    """Stands in for compiler.KernelCache: real launch.Kernels on the PTX parameter lists
    (with the driver faked), each call first checked for one Python int per integer
    parameter and one float per float parameter."""

    def __init__(self, params):
        self.params, self.names, self.calls = params, {}, []  # names: handle -> kernel

    def kernel(self, filename, name):
        handle = len(self.names) + 1
        real = _kernel(name, self.params[name], handle=handle)
        self.names[handle] = name
        want = [f"bytes[{p[3:].split(']')[0]}]" if p.startswith("b8[") else
                "float" if p[0] == "f" else "int" for p in real.params]

        def checked(grid, block, stream, args):
            got = [f"bytes[{len(a)}]" if isinstance(a, bytes) else type(a).__name__
                   for a in args]
            assert got == want, f"{name}: launched with {got}, the kernel takes {real.params}"
            self.calls.append(args)
            real(grid, block, stream, args)

        return checked


def test_launches_match_kernel_parameters(monkeypatch, driver, ptx_params):
    """Every launch the backend makes passes the kernel's parameters in order and type, packed
    as the PTX lays them out, within CUDA's grid limits: checked without a GPU."""
    from needle.backend_ndarray.cuda import launch
    monkeypatch.setattr(cuda_backend, "CudaBuffer", _FakeBuffer)
    be = cuda_backend.CudaBackend()
    cache = _CheckedKernels(ptx_params)
    stream = types.SimpleNamespace(ptr=7)
    cupy_cuda = types.SimpleNamespace(get_current_stream=lambda: stream,
                                      runtime=types.SimpleNamespace(memcpyAsync=None))
    be.rt = cuda_backend._Runtime("90", 132, cache, cupy_cuda)
    monkeypatch.setattr(be, "_memcpy", lambda *args: None)
    for dtype in DTYPES:
        buf = lambda n: _FakeBuffer(n, dtype)  # noqa: E731
        a, b, out = buf(4096), buf(4096), buf(4096)
        be.fill(out, 1.0)
        for op in UNARY_OPS:
            be.unary(op, a, out)
        for op in BINARY_OPS:
            be.binary(op, a, b, out)
            be.scalar(op, a, 2.0, out)
        be.select(buf(4096), a, b, out)
        for shape, strides, offset in [((64, 64), (1, 64), 0), ((63, 2), (-64, 2), 4000),
                                       ((2,) * 10, tuple(2 ** i for i in range(10)), 0)]:
            be.compact(a, out, shape, strides, offset)
            be.ewise_setitem(a, out, shape, strides, offset)
            be.scalar_setitem(1, 3.0, out, shape, strides, offset)
        for op in REDUCE_OPS:
            for rows, cols in [(4096, 1), (128, 32), (2, 2048), (1, 1 << 24)]:
                be.reduce(op, buf(rows * cols), buf(rows), cols)
        be.matmul(a, b, out, 1, 64, 64, 64)
        be.matmul(buf(64 * 4096), buf(4096 * 1024), buf(64 * 1024), 1, 64, 4096, 1024)
        be.matmul(a, b, out, 3, 7, 9, 11)
        be.conv2d(buf(2 * 9 * 9 * 3), buf(27 * 5), buf(2 * 49 * 5), (2, 9, 9, 3), 3, 5, 1)
        be.conv2d(buf(2 * 9 * 9 * 3), buf(15), buf(2 * 81 * 5), (2, 9, 9, 3), 1, 5, 1)
        for channels_first in (False, True):
            be.conv(buf(2 * 9 * 9 * 3), buf(135), buf(2 * 81 * 5), (2, 9, 9, 3), 3, 5, 1, 1,
                    channels_first)
            be.conv_backward(buf(2 * 81 * 5), buf(2 * 9 * 9 * 3), buf(135), buf(2 * 9 * 9 * 3),
                             buf(135), (2, 9, 9, 3), 3, 5, 1, 1, channels_first)
        for rows, cols in [(10, 100), (2, 5000), (4096, 64)]:
            x, r = buf(rows * cols), buf(rows)
            be.logsumexp(x, r, rows, cols)
            be.softmax(x, x, rows, cols)
            be.cross_entropy(x, r, r, x, rows, cols)
            be.layernorm(x, buf(cols), buf(cols), x, r, r, rows, cols, 1e-5)
            be.layernorm_backward(x, x, buf(cols), r, r, x, buf(cols), buf(cols), rows, cols)
            be.bias_act(x, buf(cols), x, rows, cols, "relu")
            be.bias_act(x, buf(cols), x, rows, cols, "identity")
            be.batchnorm(x, buf(cols), buf(cols), buf(cols), buf(cols), buf(cols), x, cols, 1,
                         1e-5, "relu")
            be.batchnorm(x, None, buf(rows), buf(rows), buf(rows), buf(rows), x, rows, cols,
                         1e-5, "identity")
        for act in ("identity", "relu", "gelu"):
            be.linear(buf(64 * 32), buf(32 * 16), buf(16), buf(64 * 16), 64, 32, 16, act)
        be.linear_backward(buf(64 * 16), buf(64 * 32), buf(32 * 16), buf(64 * 32), buf(32 * 16),
                           buf(16), 64, 32, 16)
        index = np.arange(4096) % 100
        be.take(a, index, out)
        be.scatter_add(a, index, out)
        big = buf(2**31 + 8)  # more than 2**31 elements: the int64-index kernels
        be.take(big, np.array([0, 2**31 + 7]), buf(2))
        be.scatter_add(buf(2), np.array([5, 2**31 + 7]), big)
        be.sgd_update(a, b, out, 0.1, 0.9, 0.0, True)
        be.sgd_update(a, b, None, 0.1, 0.0, 0.1, False)
        be.adam_update(a, b, out, out, 1e-3, 0.9, 0.999, 1e-8, 0.0, 3)
        many = [buf(n) for n in (1, 300, 4096, 1 << 20)] * 9  # 36 tensors: two launches
        be.sgd_update_many(many, many, many, 0.1, 0.9, 1e-4, [True] * 18 + [False] * 18)
        be.sgd_update_many(many[:3], many[:3], [None] * 3, 0.1, 0.0, 0.0, [False] * 3)
        be.adam_update_many(many, many, many, many, 1e-3, 0.9, 0.999, 1e-8, 0.0,
                            list(range(1, 37)))
        be.embedding(a, buf(64), out, 64, 64, 64)
        be.embedding_backward(out, buf(64), a, 64, 64, 64)
        be.running_stats(buf(8), buf(8), buf(8), buf(8), 0.1, 1.5)
        for act in ("identity", "relu"):
            x, c = buf(4 * 8 * 25), buf(8)
            be.batchnorm_train(x, c, c, x, c, c, c, 8, 25, 1e-5, act, c, c, 0.1, 1.01)
            be.batchnorm_train(x, c, c, x, c, c, c, 8, 25, 1e-5, act)
            be.batchnorm_train_backward(x, x, c, c, c, x, c, c, 8, 25, act,
                                        x if act == "relu" else None)
            be.batchnorm_train(x, c, c, x, c, c, c, 8, 25, 1e-5, act, x_bias=c)
            be.batchnorm_train_backward(x, x, c, c, c, x, c, c, 8, 25, act, x, c, c)
        for batch, seq_q, seq_k, dim in [(3, 40, 70, 8), (3, 40, 40, 32), (2, 5, 9, 50),
                                         (1, 3, 3, 128), (70000, 1, 1, 16)]:  # (grid y split)
            q, kv = buf(batch * seq_q * dim), buf(batch * seq_k * dim)
            stats = buf(batch * seq_q)
            be.attention(q, kv, kv, q, stats, batch, seq_q, seq_k, dim, 0.125, seq_q == seq_k)
            be.attention_backward(q, kv, kv, q, stats, q, q, kv, kv, batch, seq_q, seq_k, dim,
                                  0.125, seq_q == seq_k)
        steps, batch, hidden = 3, 2, 8
        seq, gates = buf(steps * batch * hidden), buf(steps * batch * 4 * hidden)
        be.lstm(gates, buf(hidden * 4 * hidden), buf(batch * hidden), buf(batch * hidden), seq,
                seq, gates, steps, batch, hidden)
        be.lstm_backward(seq, seq, buf(hidden * 4 * hidden), buf(batch * hidden), seq, gates,
                         gates, buf(batch * hidden), buf(batch * hidden), steps, batch, hidden)
    be.copy_ranges([(1 << 20, 2 << 20, 4096), (3 << 20, 4 << 20, 5)] * 3)  # two launches
    cuda_backend.CudaBackend.set_matmul_precision("tf32")
    try:
        a, b, out = (_FakeBuffer(4096, "float32") for _ in range(3))
        be.matmul(a, b, out, 1, 64, 64, 64)
        be.matmul(a, b, out, 3, 7, 9, 11)
    finally:
        cuda_backend.CudaBackend.set_matmul_precision("highest")

    assert len(driver.launches) == len(cache.calls) > 0
    used = set()
    for (f, grid, block, shared, stream_ptr, data), args in zip(driver.launches, cache.calls):
        name = cache.names[f]
        used.add(name)
        assert stream_ptr == 7 and shared == 0
        unpacked = struct.unpack(launch.pack_format(ptx_params[name]), data)
        want = tuple(float(np.float32(a)) if p == "f32" else a
                     for p, a in zip(ptx_params[name], args))
        assert unpacked == want, (name, unpacked, args)
        assert 1 <= grid[0] < 2**31 and 1 <= min(grid[1:]) <= max(grid[1:]) <= 65535, (name, grid)
        assert min(block) >= 1 and math.prod(block) <= 1024, (name, block)
    # the _i64 movement kernels need > 2**32 elements; the casts belong to the cudnn device
    unused = {n for n in ptx_params if n not in used and "_i64" not in n and "sgemm" not in n
              and not n.startswith("needle_cast_")}
    assert not unused, f"kernels never launched by this test: {sorted(unused)}"


class _Stream:
    def __init__(self, ptr):
        self.ptr = ptr


class _OutOfMemory(Exception):
    pass


class _FakeMemory:
    """A CuPy memory block: counted out while referenced, as CuPy's pool does."""

    def __init__(self, state):
        self.state, self.ptr = state, (state.out + 1) << 20
        state.out += 1

    def __del__(self):
        self.state.out -= 1


@pytest.fixture
def blocks(monkeypatch):
    """CudaBuffers over a fake CuPy whose ``alloc`` fails once ``limit`` blocks are out;
    the current stream is ``streams[0]``. Yields (memory._Blocks, state)."""
    from needle.backend_ndarray.cuda import memory

    state = types.SimpleNamespace(out=0, limit=100, streams=[_Stream(7)])

    def alloc(nbytes):
        if state.out >= state.limit:
            raise _OutOfMemory(nbytes)
        return _FakeMemory(state)

    monkeypatch.setattr(memory._Blocks, "free", {})
    monkeypatch.setattr(memory._Blocks, "cached_bytes", 0)
    monkeypatch.setattr(memory._Blocks, "alloc", staticmethod(alloc))
    monkeypatch.setattr(memory._Blocks, "stream", staticmethod(lambda: state.streams[0]))
    monkeypatch.setattr(memory._Blocks, "out_of_memory", _OutOfMemory)
    in_use = memory._Stats.in_use
    yield memory._Blocks, state
    assert memory._Stats.in_use == in_use  # every buffer made here was counted back


def test_freed_blocks_are_reused_per_size_and_stream(blocks):
    pool, state = blocks
    a = CudaBuffer(128, "float32")
    first, stream = a.mem, a.stream
    assert stream == 7 and a.ptr == first.ptr
    del a
    assert pool.cached_bytes == 512
    assert CudaBuffer(256, "float32").mem is not first  # another size: a new block (kept)
    assert pool.cached_bytes == 512 + 1024
    b = CudaBuffer(64, "float64")  # the same 512 bytes on the same stream: reused
    assert b.mem is first and pool.cached_bytes == 1024
    del b
    state.streams[0] = _Stream(9)
    assert CudaBuffer(128, "float32").mem is not first  # another stream: no reuse without a sync


def test_out_of_memory_returns_kept_blocks_and_retries(blocks):
    pool, state = blocks
    for _ in range(3):
        CudaBuffer(64, "float32")  # freed at once, its block kept: still out for CuPy
    assert state.out == 1  # the three buffers took turns with one block
    state.limit = 1  # CuPy is full while that kept block is out
    big = CudaBuffer(1024, "float32")  # fails, returns the kept block, then succeeds
    assert pool.cached_bytes == 0 and not pool.free and state.out == 1 and big.ptr
    with pytest.raises(_OutOfMemory):  # nothing kept to give back: CuPy's error stands
        CudaBuffer(1024, "float32")


def test_copy_ranges_copies_each_range_and_nothing_else(be, rng):
    """Eight ranges (two launches): 16-byte-aligned ones copied in words (a tail of 4 bytes
    for 37 floats), 4-byte-aligned in 4-byte words, odd offsets in bytes; the bytes around
    each destination range stay as they were."""
    sizes = [(4096, 0, 0), (1, 0, 0), (333, 3, 5), (64, 16, 32), (1 << 18, 0, 16), (7, 1, 2),
             (37, 0, 0), (50, 4, 8)]
    pairs = []
    for words, src_off, dst_off in sizes:
        src = upload(be, rng.standard_normal(words + 8).astype(np.float32))
        dst = upload(be, rng.standard_normal(words + 8).astype(np.float32))
        pairs.append((src, dst, words * 4 - (src_off % 4), src_off, dst_off))
    before = [download(be, dst).view(np.uint8).copy() for _, dst, *_ in pairs]
    be.copy_ranges([(dst.ptr + d, src.ptr + s, n) for src, dst, n, s, d in pairs])
    for (src, dst, n, s, d), old in zip(pairs, before):
        got, source = download(be, dst).view(np.uint8), download(be, src).view(np.uint8)
        expected = old.copy()
        expected[d:d + n] = source[s:s + n]
        np.testing.assert_array_equal(got, expected)
