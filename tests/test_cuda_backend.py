"""The `cuda` backend against the NumPy backend, the executable specification.

Every contract op runs on fresh random inputs on both backends and the results are
compared (awkward sizes, strided views with negative strides, large reductions, odd and
batched matmuls, convs, every fused op, float32 and float64). These tests need a GPU and
skip with the reason otherwise. The tests at the end run anywhere: the pure-Python
helpers, and a check that every kernel launch matches the kernel's parameter list.
"""
import math
import re

import numpy as np
import pytest

from needle.backend_ndarray.device import cuda as cuda_device
from needle.backend_ndarray.contract import BINARY_OPS, FUSED_OPS, REDUCE_OPS, UNARY_OPS
from needle.backend_ndarray.cuda.kernels import SGEMM_TILES, tile_name
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
    # fresh inputs every run, but reproducible from the printed seed
    seed = np.random.SeedSequence().entropy % 2**32
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


def upload(be, x):
    buf = be.alloc(x.size, x.dtype)
    be.from_numpy(np.ascontiguousarray(x).reshape(-1), buf)
    return buf


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


def test_every_fused_op_is_native(be):
    assert all(be.supports(op) for op in FUSED_OPS)


# ---- anywhere: no GPU needed ---------------------------------------------------------
def test_unavailable_reason_says_why():
    device = cuda_device()
    if not device.enabled():
        reason = device.unavailable_reason()
        assert any(w in reason for w in ("CuPy", "GPU", "driver")), reason


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


def _ptx_signatures():
    from needle.backend_ndarray.cuda import compiler, kernels, nvrtc
    try:
        nvrtc.version()
    except nvrtc.NvrtcError as e:
        pytest.skip(f"NVRTC is not installed: {e}")
    sigs = {}
    for filename in kernels.ENTRY_POINTS:
        ptx, _ = nvrtc.compile_ptx(compiler.load_source(filename), filename,
                                   ["--gpu-architecture=compute_90"] + compiler.options("90")[1:])
        for name, params in re.findall(r"\.entry (\w+)\(([^)]*)\)", ptx):
            sigs[name] = re.findall(r"\.param\s+\.(\w+)", params)
    return sigs


class _FakeBuffer:
    """Stands in for CudaBuffer: distinct 256-byte aligned addresses, no GPU."""

    next_ptr = 1 << 20

    def __init__(self, size, dtype):
        self.size, self.dtype = int(size), np.dtype(dtype)
        self.nbytes = self.size * self.dtype.itemsize
        self.ptr = _FakeBuffer.next_ptr
        _FakeBuffer.next_ptr += (self.nbytes + 511) // 256 * 256


class _FakeRuntime:
    arch, sm_count, max_blocks = "90", 132, 132 * 32

    def __init__(self):
        self.launches = []

    def launch(self, parts, grid, block, args):
        from needle.backend_ndarray.cuda import kernels
        self.launches.append((kernels.name(*parts)[1], grid, block, args))


def test_launches_match_kernel_signatures(monkeypatch):
    """Every launch the backend makes passes the kernel's parameters in order and type,
    within CUDA's grid limits: checked against the PTX, without a GPU."""
    from needle.backend_ndarray.cuda import backend as cuda_backend
    sigs = _ptx_signatures()
    monkeypatch.setattr(cuda_backend, "CudaBuffer", _FakeBuffer)
    be = cuda_backend.CudaBackend()
    be._runtime = rt = _FakeRuntime()
    monkeypatch.setattr(be, "_memcpy", lambda *args: None)
    ptx_type = {np.uint64: "u64", np.int64: "u64", np.int32: "u32", np.float32: "f32",
                np.float64: "f64"}
    for dtype in DTYPES:
        buf = lambda n: _FakeBuffer(n, dtype)  # noqa: E731
        a, b, out = buf(4096), buf(4096), buf(4096)
        be.fill(out, 1.0)
        for op in UNARY_OPS:
            be.unary(op, a, out)
        for op in BINARY_OPS:
            be.binary(op, a, b, out)
            be.scalar(op, a, 2.0, out)
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
        for rows, cols in [(10, 100), (2, 5000), (4096, 64)]:
            x, r = buf(rows * cols), buf(rows)
            be.logsumexp(x, r, rows, cols)
            be.softmax(x, x, rows, cols)
            be.cross_entropy(x, r, r, x, rows, cols)
            be.layernorm(x, buf(cols), buf(cols), x, r, r, rows, cols, 1e-5)
            be.layernorm_backward(x, x, buf(cols), r, r, x, buf(cols), buf(cols), rows, cols)
            be.bias_act(x, buf(cols), x, rows, cols, "relu")
            be.bias_act(x, buf(cols), x, rows, cols, "identity")
        be.sgd_update(a, b, out, 0.1, 0.9, 0.0, True)
        be.sgd_update(a, b, None, 0.1, 0.0, 0.1, False)
        be.adam_update(a, b, out, out, 1e-3, 0.9, 0.999, 1e-8, 0.0, 3)
    cuda_backend.CudaBackend.set_matmul_precision("tf32")
    try:
        a, b, out = (_FakeBuffer(4096, "float32") for _ in range(3))
        be.matmul(a, b, out, 1, 64, 64, 64)
        be.matmul(a, b, out, 3, 7, 9, 11)
    finally:
        cuda_backend.CudaBackend.set_matmul_precision("highest")

    used = set()
    for name, grid, block, args in rt.launches:
        used.add(name)
        got = [ptx_type[type(x)] for x in args]
        assert got == sigs[name], f"{name}: launched with {got}, kernel takes {sigs[name]}"
        grid = tuple(grid) + (1,) * (3 - len(grid))
        assert 1 <= grid[0] < 2**31 and 1 <= grid[1] <= 65535 and 1 <= grid[2] <= 65535, (name, grid)
        assert math.prod(block) <= 1024, (name, block)
    unused = {n for n in sigs if n not in used and "_i64" not in n and "sgemm" not in n}
    assert not unused, f"kernels never launched by this test: {sorted(unused)}"
