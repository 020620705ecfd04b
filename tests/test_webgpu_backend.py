"""The webgpu backend op by op against the NumPy backend (the executable specification) at
awkward sizes, and what is webgpu's own: strided copies with negative strides, launches of
more than 65535 workgroups, tensors split over several storage bindings, every matmul
plan, the subgroup fallback, command batching, pipeline caching and adapter info.

Runs when ``--device`` selects webgpu (or all) and an adapter is present; sizes are kept
small enough for Mesa's lavapipe on two CPU cores.
"""
import sys
import zlib

import numpy as np
import pytest

import needle
from needle.backend_ndarray.contract import BINARY_OPS, UNARY_OPS
from needle.backend_ndarray.numpy_backend import NumpyBackend

WEBGPU = needle.webgpu()
SIZES = [1, 3, 127, 1025]
CPU = NumpyBackend()


@pytest.fixture(autouse=True)
def _webgpu_selected(request):
    selected = request.config.getoption("--device")
    if selected != "all" and "webgpu" not in selected.split(","):
        pytest.skip("webgpu not selected with --device")
    if not WEBGPU.enabled():
        pytest.skip(f"needle.webgpu() unavailable: {WEBGPU.unavailable_reason()}")


@pytest.fixture
def gpu():
    return WEBGPU.backend


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))  # reproducible


def put(backend, x):
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    buf = backend.alloc(x.size, "float32")
    backend.from_numpy(x, buf)
    return buf


def get(backend, buf, shape=None):
    return backend.to_numpy(buf, (buf.size,), (1,), 0).reshape(shape or (buf.size,))


def both(x):
    """The same float32 data as a NumPy-backend buffer and a webgpu-backend buffer."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    return x.copy(), put(WEBGPU.backend, x)


def empty(n):
    return np.empty(n, np.float32), WEBGPU.backend.alloc(n, "float32")


def close(gpu_buf, expected, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(get(WEBGPU.backend, gpu_buf), np.asarray(expected).reshape(-1),
                               rtol=rtol, atol=atol)


# -- memory and movement ----------------------------------------------------------------
@pytest.mark.parametrize("n", SIZES)
def test_roundtrip_and_fill(gpu, rng, n):
    x = rng.standard_normal(n).astype(np.float32)
    buf = put(gpu, x)
    np.testing.assert_array_equal(get(gpu, buf), x)
    gpu.fill(buf, -2.5)
    np.testing.assert_array_equal(get(gpu, buf), np.full(n, -2.5, np.float32))


def _views(rng):
    """(buffer size, shape, strides, offset) of assorted views, negative strides included."""
    yield 24, (2, 3, 4), (12, 4, 1), 0                    # compact
    yield 24, (4, 3, 2), (1, 4, 12), 0                    # permuted
    yield 24, (2, 3, 4), (-12, 4, -1), 15                 # flipped on two axes
    yield 30, (3, 4), (-8, 2), 17                         # negative step with offset
    yield 5, (4, 3, 5), (0, 0, 1), 0                      # broadcast
    yield 1025, (1025,), (-1,), 1024                      # a reversed awkward run
    yield 300, (7, 9), (40, -3), 26
    yield 2 ** 10, (2,) * 10, tuple(2 ** i for i in range(10)), 0  # ten axes (> 8)


@pytest.mark.parametrize("case", range(8))
def test_compact_and_to_numpy_of_views(gpu, rng, case):
    size, shape, strides, offset = list(_views(rng))[case]
    x_cpu, x_gpu = both(rng.standard_normal(size))
    expected = CPU.to_numpy(x_cpu, shape, strides, offset)
    np.testing.assert_array_equal(gpu.to_numpy(x_gpu, shape, strides, offset), expected)
    out = gpu.alloc(expected.size, "float32")
    gpu.compact(x_gpu, out, shape, strides, offset)
    np.testing.assert_array_equal(get(gpu, out, expected.shape), expected)


@pytest.mark.parametrize("case", [0, 1, 2, 3, 5, 6, 7])  # every view but the broadcast
def test_setitem_into_views(gpu, rng, case):
    size, shape, strides, offset = list(_views(rng))[case]
    n = int(np.prod(shape))
    out_cpu, out_gpu = both(rng.standard_normal(size))
    src_cpu, src_gpu = both(rng.standard_normal(n))
    CPU.ewise_setitem(src_cpu, out_cpu, shape, strides, offset)
    gpu.ewise_setitem(src_gpu, out_gpu, shape, strides, offset)
    np.testing.assert_array_equal(get(gpu, out_gpu), out_cpu)
    CPU.scalar_setitem(n, 7.25, out_cpu, shape, strides, offset)
    gpu.scalar_setitem(n, 7.25, out_gpu, shape, strides, offset)
    np.testing.assert_array_equal(get(gpu, out_gpu), out_cpu)


def test_setitem_from_its_own_buffer(gpu):
    x = np.arange(8, dtype=np.float32)
    buf = put(gpu, x)
    gpu.ewise_setitem(buf, buf, (8,), (-1,), 7)  # reverse in place through one buffer
    np.testing.assert_array_equal(get(gpu, buf), x[::-1])


# -- elementwise ------------------------------------------------------------------------
def _operand(rng, op, n):
    if op in ("log", "sqrt"):
        return rng.uniform(0.1, 3.0, n)
    return rng.uniform(-3.0, 3.0, n)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", UNARY_OPS)
def test_unary(gpu, rng, op, n):
    a_cpu, a_gpu = both(_operand(rng, op, n))
    out_cpu, out_gpu = empty(n)
    CPU.unary(op, a_cpu, out_cpu)
    gpu.unary(op, a_gpu, out_gpu)
    close(out_gpu, out_cpu)


def test_unary_edge_values(gpu):
    x = np.array([-1.0, 0.0, 1e-30, 1e-4, -50.0, 50.0, 100.0, -100.0], np.float32)
    for op in UNARY_OPS:
        a_cpu, a_gpu = both(x)
        out_cpu, out_gpu = empty(x.size)
        CPU.unary(op, a_cpu, out_cpu)
        gpu.unary(op, a_gpu, out_gpu)
        if op in ("sin", "cos"):  # large arguments: GPUs reduce the range less exactly
            out_cpu, got = out_cpu[:6], get(gpu, out_gpu)[:6]
        else:
            got = get(gpu, out_gpu)
        np.testing.assert_allclose(got, out_cpu, rtol=2e-5, atol=2e-6, err_msg=op)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", BINARY_OPS)
def test_binary_and_scalar(gpu, rng, op, n):
    a = rng.uniform(0.5, 3.0, n) if op == "pow" else rng.integers(-3, 4, n) * 0.5
    b = rng.uniform(-2.0, 2.0, n) if op == "pow" else rng.integers(-3, 4, n) * 0.5
    if op == "div":
        b[b == 0] = 1.5
    a_cpu, a_gpu = both(a)
    b_cpu, b_gpu = both(b)
    out_cpu, out_gpu = empty(n)
    CPU.binary(op, a_cpu, b_cpu, out_cpu)
    gpu.binary(op, a_gpu, b_gpu, out_gpu)
    close(out_gpu, out_cpu)
    for value in (-1.0, 0.5, 2.0):
        CPU.scalar(op, a_cpu, value, out_cpu)
        gpu.scalar(op, a_gpu, value, out_gpu)
        close(out_gpu, out_cpu)


def test_pow_of_negative_bases(gpu):
    a = np.array([-2.0, -1.5, -3.0, 0.0, 2.0], np.float32)
    for exponent in (3.0, 2.0, -1.0, -2.0, 0.5, 0.0):
        a_cpu, a_gpu = both(a)
        out_cpu, out_gpu = empty(a.size)
        with np.errstate(all="ignore"):
            CPU.scalar("pow", a_cpu, exponent, out_cpu)
        gpu.scalar("pow", a_gpu, exponent, out_gpu)
        np.testing.assert_allclose(get(gpu, out_gpu), out_cpu, rtol=1e-5, err_msg=str(exponent))


# -- reductions -------------------------------------------------------------------------
@pytest.mark.parametrize("rows,length", [(1, 1), (3, 5), (127, 64), (5, 65), (2, 1025),
                                         (1, 100_003), (1000, 3)])
@pytest.mark.parametrize("op", ["sum", "max"])
def test_reduce(gpu, rng, op, rows, length):
    a_cpu, a_gpu = both(rng.standard_normal(rows * length))
    out_cpu, out_gpu = empty(rows)
    CPU.reduce(op, a_cpu, out_cpu, length)
    gpu.reduce(op, a_gpu, out_gpu, length)
    close(out_gpu, out_cpu, rtol=1e-5, atol=1e-5 * np.sqrt(length))


# -- matmul and conv --------------------------------------------------------------------
def _matmul_case(gpu, rng, batch, m, k, n, plan=None):
    a_cpu, a_gpu = both(rng.standard_normal(batch * m * k))
    b_cpu, b_gpu = both(rng.standard_normal(batch * k * n))
    out_cpu, out_gpu = empty(batch * m * n)
    CPU.matmul(a_cpu, b_cpu, out_cpu, batch, m, k, n)
    if plan is None:
        gpu.matmul(a_gpu, b_gpu, out_gpu, batch, m, k, n)
    else:
        gpu._gemm(plan, a_gpu, b_gpu, out_gpu, batch, m, k, n, (0,) * 7)
    close(out_gpu, out_cpu, rtol=1e-4, atol=1e-5 * k)


@pytest.mark.parametrize("batch,m,k,n", [(1, 1, 1, 1), (1, 3, 5, 7), (1, 127, 129, 131),
                                         (1, 128, 256, 128), (1, 33, 1025, 3), (3, 33, 17, 65),
                                         (2, 64, 64, 128), (4, 1, 64, 1)])
def test_matmul(gpu, rng, batch, m, k, n):
    _matmul_case(gpu, rng, batch, m, k, n)


def _all_plans():
    from needle.backend_ndarray.webgpu import gemm
    for tile in gemm.TILES:
        for splits in (1, 3):
            for m, k, n in ((128, 96, 128), (37, 100, 52), (70, 64, 20)):
                yield pytest.param(m, k, n, gemm.plan(2, m, k, n, tile=tile, splits=splits),
                                   id=f"{m}x{k}x{n}-{tile[0]}x{tile[1]}x{tile[2]}-split{splits}")


def test_plans_fit_small_workgroup_memory():
    from needle.backend_ndarray.webgpu import gemm
    for shape in ((4096, 4096, 4096), (64, 1024, 4096), (100, 300, 200)):
        assert gemm.shared_bytes(gemm.plan(1, *shape).tile) <= 32768
        plan = gemm.plan(1, *shape, max_shared=16384)  # WebGPU's guaranteed minimum
        assert gemm.shared_bytes(plan.tile) <= 16384


@pytest.mark.parametrize("m,k,n,plan", list(_all_plans()))
def test_matmul_every_plan(gpu, rng, m, k, n, plan):
    _matmul_case(gpu, rng, 2, m, k, n, plan)


@pytest.mark.parametrize("channels", [(3, 5), (8, 12)], ids=["scalar-io", "vec4-io"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3, 7])
def test_conv2d(gpu, rng, kernel, stride, channels):
    c_in, c_out = channels
    shape = (2, 9, 11, c_in)
    a_cpu, a_gpu = both(rng.standard_normal(shape))
    w_cpu, w_gpu = both(rng.standard_normal((kernel, kernel, c_in, c_out)))
    ho, wo = (shape[1] - kernel) // stride + 1, (shape[2] - kernel) // stride + 1
    out_cpu, out_gpu = empty(shape[0] * ho * wo * c_out)
    CPU.conv2d(a_cpu, w_cpu, out_cpu, shape, kernel, c_out, stride)
    gpu.conv2d(a_gpu, w_gpu, out_gpu, shape, kernel, c_out, stride)
    close(out_gpu, out_cpu, rtol=1e-4, atol=1e-4)


def test_conv2d_aligned_tiles_without_checks(gpu, rng):
    from needle.backend_ndarray.webgpu import gemm
    shape, kernel, c_out = (2, 10, 10, 8), 3, 64  # im2col rows 128, columns 72
    a_cpu, a_gpu = both(rng.standard_normal(shape))
    w_cpu, w_gpu = both(rng.standard_normal((kernel, kernel, 8, c_out)))
    out_cpu, out_gpu = empty(128 * c_out)
    CPU.conv2d(a_cpu, w_cpu, out_cpu, shape, kernel, c_out, 1)
    plan = gemm.plan(1, 128, 72, c_out, io="conv4", tile=(64, 64, 8))
    assert not plan.checked
    gpu._gemm(plan, a_gpu, w_gpu, out_gpu, 1, 128, 72, c_out, (10, 10, 8, kernel, 1, 8, 8))
    close(out_gpu, out_cpu, rtol=1e-4, atol=1e-4)


# -- fused ------------------------------------------------------------------------------
ROWS = [(1, 1), (3, 5), (7, 300), (2, 1025)]


@pytest.mark.parametrize("rows,cols", ROWS)
def test_logsumexp_softmax_cross_entropy(gpu, rng, rows, cols):
    x = rng.standard_normal(rows * cols) * 4
    x_cpu, x_gpu = both(x)
    for op, n in (("logsumexp", rows), ("softmax", rows * cols)):
        out_cpu, out_gpu = empty(n)
        getattr(CPU, op)(x_cpu, out_cpu, rows, cols)
        getattr(gpu, op)(x_gpu, out_gpu, rows, cols)
        close(out_gpu, out_cpu, rtol=1e-5, atol=1e-6)
    labels_cpu, labels_gpu = both(rng.integers(0, cols, rows))
    loss_cpu, loss_gpu = empty(rows)
    grad_cpu, grad_gpu = empty(rows * cols)
    CPU.cross_entropy(x_cpu, labels_cpu, loss_cpu, grad_cpu, rows, cols)
    gpu.cross_entropy(x_gpu, labels_gpu, loss_gpu, grad_gpu, rows, cols)
    close(loss_gpu, loss_cpu, rtol=1e-5, atol=1e-5)
    close(grad_gpu, grad_cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows,cols", ROWS)
def test_layernorm_forward_and_backward(gpu, rng, rows, cols):
    x_cpu, x_gpu = both(rng.standard_normal(rows * cols) * 3 + 1)
    w_cpu, w_gpu = both(rng.standard_normal(cols))
    b_cpu, b_gpu = both(rng.standard_normal(cols))
    out_cpu, out_gpu = empty(rows * cols)
    mean_cpu, mean_gpu = empty(rows)
    rstd_cpu, rstd_gpu = empty(rows)
    CPU.layernorm(x_cpu, w_cpu, b_cpu, out_cpu, mean_cpu, rstd_cpu, rows, cols, 1e-5)
    gpu.layernorm(x_gpu, w_gpu, b_gpu, out_gpu, mean_gpu, rstd_gpu, rows, cols, 1e-5)
    for g, c in ((out_gpu, out_cpu), (mean_gpu, mean_cpu), (rstd_gpu, rstd_cpu)):
        close(g, c, rtol=1e-4, atol=1e-5)
    g_cpu, g_gpu = both(rng.standard_normal(rows * cols))
    dx_cpu, dx_gpu = empty(rows * cols)
    dw_cpu, dw_gpu = empty(cols)
    db_cpu, db_gpu = empty(cols)
    CPU.layernorm_backward(g_cpu, x_cpu, w_cpu, mean_cpu, rstd_cpu, dx_cpu, dw_cpu, db_cpu,
                           rows, cols)
    gpu.layernorm_backward(g_gpu, x_gpu, w_gpu, mean_gpu, rstd_gpu, dx_gpu, dw_gpu, db_gpu,
                           rows, cols)
    for g, c in ((dx_gpu, dx_cpu), (dw_gpu, dw_cpu), (db_gpu, db_cpu)):
        close(g, c, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", ["identity", "relu"])
@pytest.mark.parametrize("rows,cols", ROWS)
def test_bias_act(gpu, rng, rows, cols, act):
    a_cpu, a_gpu = both(rng.standard_normal(rows * cols))
    b_cpu, b_gpu = both(rng.standard_normal(cols))
    out_cpu, out_gpu = empty(rows * cols)
    CPU.bias_act(a_cpu, b_cpu, out_cpu, rows, cols, act)
    gpu.bias_act(a_gpu, b_gpu, out_gpu, rows, cols, act)
    close(out_gpu, out_cpu)


@pytest.mark.parametrize("act", ["identity", "relu"])
@pytest.mark.parametrize("x_bias", [False, True])
@pytest.mark.parametrize("outer,channels,inner", [(64, 5, 1), (2, 16, 81), (1, 3, 1025)])
def test_batchnorm(gpu, rng, outer, channels, inner, x_bias, act):
    n = outer * channels * inner
    x_cpu, x_gpu = both(rng.standard_normal(n))
    vectors = [both(rng.standard_normal(channels)) for _ in range(3)]
    var_cpu, var_gpu = both(rng.uniform(0.5, 2.0, channels))
    xb_cpu, xb_gpu = both(rng.standard_normal(channels)) if x_bias else (None, None)
    out_cpu, out_gpu = empty(n)
    (m_cpu, m_gpu), (w_cpu, w_gpu), (b_cpu, b_gpu) = vectors
    CPU.batchnorm(x_cpu, xb_cpu, m_cpu, var_cpu, w_cpu, b_cpu, out_cpu, channels, inner, 1e-5, act)
    gpu.batchnorm(x_gpu, xb_gpu, m_gpu, var_gpu, w_gpu, b_gpu, out_gpu, channels, inner, 1e-5, act)
    close(out_gpu, out_cpu)


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 0.01)])
@pytest.mark.parametrize("n", [3, 1025])
def test_sgd_update(gpu, rng, n, momentum, weight_decay):
    p_cpu, p_gpu = both(rng.standard_normal(n))
    buf_cpu, buf_gpu = (None, None) if not momentum else empty(n)
    for step in range(3):
        g_cpu, g_gpu = both(rng.standard_normal(n))
        CPU.sgd_update(p_cpu, g_cpu, buf_cpu, 0.1, momentum, weight_decay, step == 0)
        gpu.sgd_update(p_gpu, g_gpu, buf_gpu, 0.1, momentum, weight_decay, step == 0)
    close(p_gpu, p_cpu, rtol=1e-5, atol=1e-6)
    if momentum:
        close(buf_gpu, buf_cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("n", [3, 1025])
def test_adam_update(gpu, rng, n, weight_decay):
    p_cpu, p_gpu = both(rng.standard_normal(n))
    m_cpu, m_gpu = both(np.zeros(n))
    v_cpu, v_gpu = both(np.zeros(n))
    for step in range(1, 4):
        g_cpu, g_gpu = both(rng.standard_normal(n))
        CPU.adam_update(p_cpu, g_cpu, m_cpu, v_cpu, 0.01, 0.9, 0.999, 1e-8, weight_decay, step)
        gpu.adam_update(p_gpu, g_gpu, m_gpu, v_gpu, 0.01, 0.9, 0.999, 1e-8, weight_decay, step)
    for g, c in ((p_gpu, p_cpu), (m_gpu, m_cpu), (v_gpu, v_cpu)):
        close(g, c, rtol=1e-5, atol=1e-6)


def test_every_fused_op_is_native(gpu):
    from needle.backend_ndarray.contract import FUSED_OPS
    assert all(gpu.supports(op) for op in FUSED_OPS)


# -- limits: grids over 65535 workgroups, tensors over one binding ------------------------
def test_launches_over_65535_workgroups(gpu, rng):
    rows = 70_000  # one workgroup per row: a 2-D grid
    x_cpu, x_gpu = both(rng.standard_normal(rows * 65))
    out_cpu, out_gpu = empty(rows)
    CPU.reduce("sum", x_cpu, out_cpu, 65)
    gpu.reduce("sum", x_gpu, out_gpu, 65)
    close(out_gpu, out_cpu, rtol=1e-5, atol=1e-4)
    x_cpu, x_gpu = both(rng.standard_normal(rows * 3))
    out_cpu, out_gpu = empty(rows * 3)
    CPU.softmax(x_cpu, out_cpu, rows, 3)
    gpu.softmax(x_gpu, out_gpu, rows, 3)
    close(out_gpu, out_cpu, rtol=1e-5, atol=1e-6)
    n = 65_537 * 256  # elementwise: 65537 workgroups of 256 threads
    a = needle.NDArray((np.arange(n) % 1000).astype(np.float32), device=WEBGPU)
    b = (a + 1.0).numpy()
    assert b[0] == 1.0 and b[-1] == (n - 1) % 1000 + 1 and b[n // 2 + 7] == (n // 2 + 7) % 1000 + 1


@pytest.fixture(scope="module")
def small_binding():
    """A second device whose storage bindings hold 1024 floats, so modest tensors take the
    paths that giant ones take on a real GPU."""
    from needle.backend_ndarray.webgpu import WebGPUBackend
    return WebGPUBackend(max_binding=4096)


def test_tensors_larger_than_one_binding(small_binding, rng):
    g = small_binding
    n = 5000
    a, b = rng.standard_normal(n).astype(np.float32), rng.uniform(1, 2, n).astype(np.float32)
    ga, gb, out = put(g, a), put(g, b), g.alloc(n, "float32")
    g.binary("div", ga, gb, out)
    np.testing.assert_allclose(get(g, out), a / b, rtol=1e-6)
    g.unary("exp", ga, out)
    np.testing.assert_allclose(get(g, out), np.exp(a), rtol=2e-5)
    g.fill(out, 3.0)
    np.testing.assert_array_equal(get(g, out), 3.0)
    bias = rng.standard_normal(100).astype(np.float32)
    g.bias_act(ga, put(g, bias), out, 50, 100, "relu")
    np.testing.assert_allclose(get(g, out), np.maximum(a.reshape(50, 100) + bias, 0).ravel(),
                               rtol=1e-6)
    # a transposed view and a reversed view, each spanning several windows
    np.testing.assert_array_equal(g.to_numpy(ga, (100, 50), (1, 100), 0), a.reshape(50, 100).T)
    np.testing.assert_array_equal(g.to_numpy(ga, (n,), (-1,), n - 1), a[::-1])
    g.ewise_setitem(gb, ga, (n,), (-1,), n - 1)
    np.testing.assert_array_equal(get(g, ga), b[::-1])
    red = g.alloc(50, "float32")
    g.reduce("max", gb, red, 100)
    np.testing.assert_array_equal(get(g, red), b.reshape(50, 100).max(axis=1))
    stats = [put(g, v) for v in (bias, b[:100], a[:100], bias)]  # mean, var > 0, weight, bias
    g.batchnorm(put(g, a), None, *stats, out, 100, 5, 1e-5, "identity")  # (10, 100, 5)
    c = lambda v: v[None, :, None]  # noqa: E731
    want = (a.reshape(10, 100, 5) - c(bias)) / np.sqrt(c(b[:100]) + 1e-5) * c(a[:100]) + c(bias)
    np.testing.assert_allclose(get(g, out), want.ravel(), rtol=1e-5, atol=1e-5)
    p_ = put(g, a)
    g.sgd_update(p_, gb, None, 0.5, 0.0, 0.0, True)
    np.testing.assert_allclose(get(g, p_), a - 0.5 * b, rtol=1e-6, atol=1e-6)


def test_take_and_scatter_add_over_several_bindings(small_binding, rng):
    from needle.backend_ndarray.webgpu import DeviceLimitError
    g = small_binding
    a = rng.standard_normal(1000).astype(np.float32)
    index = rng.integers(0, a.size, 5000)  # out and index span five windows of 1024
    out = g.alloc(index.size, "float32")
    g.take(put(g, a), index, out)
    np.testing.assert_array_equal(get(g, out), a[index])
    src, start = rng.standard_normal(900).astype(np.float32), rng.standard_normal(1000)
    target = put(g, start)
    g.scatter_add(put(g, src), index[:900], target)
    want = start.copy()
    np.add.at(want, index[:900], src)
    np.testing.assert_allclose(get(g, target), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(DeviceLimitError, match="storage binding"):  # `a` is read at random
        g.take(g.alloc(2048, "float32"), index, out)


def test_embedding_kernels_and_their_host_fallback_for_tables_beyond_a_binding(small_binding,
                                                                                rng):
    """Within one binding the kernels run (ids read on the device); a lookup whose result
    exceeds a binding gathers piece by piece, its ids read on the host and checked; a
    gradient that exceeds one is a clear error (as scatter_add's)."""
    from needle.backend_ndarray.webgpu import DeviceLimitError
    g = small_binding
    rows, dim = 20, 16  # 320 elements; a binding holds 1024
    weight = rng.standard_normal((rows, dim)).astype(np.float32)
    for n in (40, 100):  # results of 640 and 1600 elements
        ids = rng.integers(0, rows, n).astype(np.float32)
        out = g.alloc(n * dim, "float32")
        g.embedding(put(g, weight), put(g, ids), out, n, rows, dim)
        np.testing.assert_array_equal(get(g, out).reshape(-1, dim), weight[ids.astype(int)])
    ids = ids[:40]
    grad = rng.standard_normal((40, dim)).astype(np.float32)
    dweight = put(g, np.full(rows * dim, 7.0, np.float32))  # (zeroed by the op)
    g.embedding_backward(put(g, grad), put(g, ids), dweight, 40, rows, dim)
    want = np.zeros((rows, dim))
    np.add.at(want, ids.astype(int), grad)
    np.testing.assert_allclose(get(g, dweight).reshape(rows, dim), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(IndexError, match="ids must lie in"):
        bad = np.r_[np.zeros(99), rows].astype(np.float32)
        g.embedding(put(g, weight), put(g, bad), out, 100, rows, dim)
    with pytest.raises(DeviceLimitError, match="storage binding"):
        g.embedding_backward(put(g, np.zeros(1600, np.float32)), put(g, np.zeros(100, np.float32)),
                             dweight, 100, rows, dim)


def test_split_k_falls_back_when_its_partials_exceed_a_binding(small_binding, rng):
    from needle.backend_ndarray.webgpu import gemm
    g = small_binding
    m, k, n = 32, 32, 32  # 4 partial products of 32 x 32 need 4096 floats > 1024
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    out = g.alloc(m * n, "float32")
    g._gemm(gemm.plan(1, m, k, n, splits=4), put(g, a), put(g, b), out, 1, m, k, n, (0,) * 7)
    np.testing.assert_allclose(get(g, out, (m, n)), a @ b, rtol=1e-4, atol=1e-3)


def test_ops_that_cannot_split_raise_a_clear_error(small_binding):
    from needle.backend_ndarray.webgpu import DeviceLimitError
    g = small_binding
    a, out = g.alloc(2048, "float32"), g.alloc(4, "float32")
    with pytest.raises(DeviceLimitError, match="storage binding"):
        g.matmul(a, a, out, 1, 2, 1024, 2)
    with pytest.raises(DeviceLimitError, match="storage binding"):
        g.reduce("sum", a, g.alloc(1, "float32"), 2048)


def test_float64_is_refused():
    with pytest.raises(needle.DTypeError, match="float32"):
        needle.Tensor([1.0, 2.0], device=WEBGPU, dtype="float64")


# -- subgroups, batching, caching, info -----------------------------------------------
def test_reductions_without_subgroups(rng):
    from needle.backend_ndarray.webgpu import WebGPUBackend
    g = WebGPUBackend(subgroups=False)
    assert g.adapter_info()["subgroups"] is False
    x = rng.standard_normal((6, 700)).astype(np.float32)
    gx, out = put(g, x), g.alloc(6, "float32")
    g.reduce("max", gx, out, 700)
    np.testing.assert_array_equal(get(g, out), x.max(axis=1))
    g.reduce("sum", gx, out, 700)
    np.testing.assert_allclose(get(g, out), x.sum(axis=1), rtol=1e-5, atol=1e-4)
    sm = g.alloc(x.size, "float32")
    g.softmax(gx, sm, 6, 700)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(get(g, sm, x.shape), e / e.sum(axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-7)


def test_nan_propagates_without_subgroups(rng):
    """The shared-memory workgroup max keeps NaN as the subgroup one does."""
    from needle.backend_ndarray.webgpu import WebGPUBackend
    g = WebGPUBackend(subgroups=False)
    x = rng.standard_normal((6, 700)).astype(np.float32)
    x[1, rng.integers(700)] = np.nan
    x[4, rng.integers(700)] = np.nan
    x[3, rng.integers(700)] = np.inf
    gx, out = put(g, x), g.alloc(6, "float32")
    g.reduce("max", gx, out, 700)
    np.testing.assert_array_equal(get(g, out), x.max(axis=1))
    g.logsumexp(gx, out, 6, 700)
    lse = get(g, out)
    assert np.isnan(lse[[1, 4]]).all() and lse[3] == np.inf and np.isfinite(lse[[0, 2, 5]]).all()
    sm = g.alloc(x.size, "float32")
    g.softmax(gx, sm, 6, 700)
    assert np.isnan(get(g, sm, x.shape)[[1, 3, 4]]).all()


def test_many_ops_then_one_synchronize(gpu, rng):
    x0 = rng.standard_normal(1000).astype(np.float32)
    x = needle.NDArray(x0, device=WEBGPU)
    before = gpu.stats()
    expected = x0.copy()
    for i in range(150):
        x = x * 0.5 + float(i)
        expected = expected * np.float32(0.5) + np.float32(i)
    after = gpu.stats()
    dispatches = after["dispatches"] - before["dispatches"]
    submissions = after["submissions"] - before["submissions"]
    assert dispatches == 300
    assert submissions <= dispatches // gpu._rec.batch + 1  # batched, not one per op
    WEBGPU.synchronize()
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5)


def test_upload_is_ordered_after_pending_work(gpu):
    x = put(gpu, np.arange(5))
    out = gpu.alloc(5, "float32")
    gpu.unary("neg", x, out)                          # recorded, not yet submitted
    gpu.from_numpy(np.full(5, 9, np.float32), x)      # must not overtake the kernel
    np.testing.assert_array_equal(get(gpu, out), -np.arange(5))
    np.testing.assert_array_equal(get(gpu, x), np.full(5, 9))


def test_buffers_freed_in_reference_cycles_are_not_recycled_dead(gpu):
    import gc

    class Holder:
        pass

    for _ in range(20):  # a Buffer and its wgpu buffer finalized together, in any order
        h = Holder()
        h.buf, h.me = gpu.alloc(1000, "float32"), h
        del h
    gc.collect()
    for _ in range(40):
        buf = gpu.alloc(1000, "float32")
        gpu.fill(buf, 2.0)
    np.testing.assert_array_equal(get(gpu, buf)[:3], 2.0)


def test_pipelines_are_compiled_once(gpu, rng):
    a = needle.NDArray(rng.standard_normal(10), device=WEBGPU)
    (a.exp() + 1.0).numpy()
    count = gpu.stats()["pipelines"]
    for _ in range(3):
        (a.exp() + 1.0).numpy()
    assert gpu.stats()["pipelines"] == count


def test_memory_stats_follow_allocations(gpu):
    import gc
    gc.collect()
    before = gpu.memory_stats()["bytes_in_use"]
    bufs = [gpu.alloc(4096, "float32") for _ in range(3)]
    assert gpu.memory_stats()["bytes_in_use"] >= before + 3 * 4096 * 4
    del bufs
    assert gpu.memory_stats()["bytes_in_use"] == before


def test_adapter_info(gpu):
    info = gpu.adapter_info()
    for key in ("name", "vendor", "backend", "adapter_type", "subgroups", "limits",
                "features", "wgpu_version"):
        assert key in info
    assert info["backend"] in ("Vulkan", "Metal", "D3D12", "OpenGL")
    assert info["limits"]["max_binding"] > 0 and info["limits"]["max_groups"] >= 65535


def test_reason_without_wgpu(monkeypatch):
    from needle.backend_ndarray.webgpu import WebGPUBackend
    monkeypatch.setitem(sys.modules, "wgpu", None)  # makes `import wgpu` fail
    assert WebGPUBackend().unavailable_reason() == "the wgpu package is not installed"
