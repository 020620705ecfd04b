"""Classic Needle's (CMU 10-414/714) ``needle.backend_ndarray`` API, used the way course
code uses it: ``import needle.backend_ndarray as nd``, module-level functions, device
constructors (``BackendDevice.randn`` ...) and the writable ``NDArray.flat`` of the
numerical gradient checks."""
import numpy as np
import pytest

import needle as ndl
import needle.backend_ndarray as nd
from helpers import course_gradient_check as gradient_check


def test_module_level_functions(device, rng):
    a_np = rng.standard_normal((3, 1, 4))
    b_np = rng.standard_normal((3, 5, 4))
    a = nd.array(a_np, device=device)
    b = nd.array(b_np, dtype="float32", device=device)
    assert isinstance(a, nd.NDArray) and a.device == device and a.dtype == "float32"
    a32, b32 = a_np.astype(np.float32), b_np.astype(np.float32)
    tol = dict(rtol=1e-5, atol=1e-6)
    big = nd.broadcast_to(a, (3, 5, 4))
    np.testing.assert_array_equal(big.numpy(), np.broadcast_to(a32, (3, 5, 4)))
    np.testing.assert_array_equal(nd.reshape(b, (15, 4)).numpy(), b32.reshape(15, 4))
    np.testing.assert_array_equal(nd.maximum(big, b).numpy(), np.maximum(a32, b32))
    np.testing.assert_allclose(nd.log(nd.exp(b)).numpy(), b32, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nd.exp(b).numpy(), np.exp(b32), **tol)
    np.testing.assert_allclose(nd.tanh(b).numpy(), np.tanh(b32), **tol)
    np.testing.assert_allclose(nd.sum(b).numpy(), b32.sum(), rtol=1e-5)
    np.testing.assert_allclose(nd.sum(b, axis=1, keepdims=True).numpy(),
                               b32.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nd.sum(b, 2).numpy(), b32.sum(axis=2), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(nd.flip(b, (0, 2)).numpy(), np.flip(b32, (0, 2)))
    e = nd.empty((2, 3), device=device)
    assert e.shape == (2, 3) and e.device == device
    f = nd.full((2, 3), 7.5, device=device)
    np.testing.assert_array_equal(f.numpy(), np.full((2, 3), 7.5, np.float32))
    # the module-level sum does not break Python's own sum inside the package
    assert nd.concatenate([a, a], axis=1).shape == (3, 2, 4)
    assert sum([1, 2]) == 3 and nd.compact_strides((2, 3, 4)) == (12, 4, 1)
    assert nd.prod((2, 3)) == 6


def test_array_from_integers_and_nested_lists(device):
    # course tests build arrays from np.random.randint; lists of ints work as well
    ints = np.random.randint(low=0, high=10, size=(4, 3))
    np.testing.assert_array_equal(nd.array(ints, device=device).numpy(), ints.astype(np.float32))
    np.testing.assert_array_equal(nd.array([[1, 2], [3, 4]], device=device).numpy(),
                                  np.array([[1, 2], [3, 4]], np.float32))


def test_cpu_numpy_and_backend_device():
    assert nd.cpu_numpy() == ndl.cpu() and nd.cpu_numpy() is nd.cpu()
    assert nd.default_device() == nd.cpu_numpy()
    assert nd.BackendDevice is nd.Device
    assert all(isinstance(d, nd.BackendDevice) for d in nd.all_devices())
    assert isinstance(nd.cuda(), nd.BackendDevice)  # exists on every machine, as in the course
    assert nd.cuda().enabled() in (True, False)


def test_device_functions_survive_loading_their_backends():
    # loading a backend imports its subpackage (needle.backend_ndarray.cuda ...), whose name
    # is the device function's: the course calls nd.cuda().enabled(), then nd.cuda() again
    import importlib
    for name in ("cuda", "cudnn", "webgpu"):
        getattr(nd, name)().enabled()
        importlib.import_module(f"needle.backend_ndarray.{name}")
        assert isinstance(getattr(nd, name)(), nd.BackendDevice), name
    from needle.backend_ndarray.cuda import memory  # the subpackages still import
    assert memory.CudaBuffer


def test_device_random_constructors_draw_from_numpy(device):
    seed = np.random.randint(2**31)
    np.random.seed(seed)
    x = device.randn(3, 4)
    np.random.seed(seed)
    want = np.random.randn(3, 4).astype("float32")
    assert isinstance(x, nd.NDArray) and x.device == device and x.dtype == "float32"
    np.testing.assert_array_equal(x.numpy(), want)
    np.random.seed(seed)
    u = device.rand(5, 2)
    np.random.seed(seed)
    np.testing.assert_array_equal(u.numpy(), np.random.rand(5, 2).astype("float32"))
    assert device.randn(2, 3, dtype="float32").shape == (2, 3)
    assert device.rand(7).shape == (7,)


def test_device_one_hot_empty_full(device):
    labels = np.random.randint(0, 6, size=9)
    h = device.one_hot(6, labels)
    np.testing.assert_array_equal(h.numpy(), np.eye(6, dtype="float32")[labels])
    assert h.device == device and h.dtype == "float32"
    np.testing.assert_array_equal(device.one_hot(4, 2).numpy(), np.eye(4, dtype="float32")[2])
    np.testing.assert_array_equal(device.one_hot(3, nd.array([2.0, 0.0], device=device)).numpy(),
                                  np.eye(3, dtype="float32")[[2, 0]])
    e = device.empty((4, 2))
    assert e.shape == (4, 2) and e.device == device and e.dtype == "float32"
    f = device.full((2, 5), -1.25)
    np.testing.assert_array_equal(f.numpy(), np.full((2, 5), -1.25, np.float32))
    g = device.full((3,), 2.0, "float32")
    np.testing.assert_array_equal(g.numpy(), [2.0, 2.0, 2.0])


def test_device_constructors_float64_on_cpu():
    x = nd.cpu().randn(2, 2, dtype="float64")
    assert x.dtype == "float64" and x.numpy().dtype == np.float64
    assert nd.cpu().full((2,), 1.0, dtype="float64").dtype == "float64"


def test_flat_reads_and_writes_compact_arrays(device, rng):
    x_np = rng.standard_normal((3, 4)).astype(np.float32)
    x = nd.array(x_np, device=device)
    flat = x.flat
    assert len(flat) == 12
    np.testing.assert_array_equal(np.array(list(flat), dtype=np.float32), x_np.ravel())
    i = int(rng.integers(12))
    assert flat[i] == x_np.flat[i] and flat[-1] == x_np.flat[-1]
    handle = x._handle
    x.flat[i] += 0.5  # the numerical gradient check's nudge
    x_np.flat[i] += 0.5
    x.flat[-2] = 3.0
    x_np.flat[-2] = 3.0
    assert x._handle is handle  # in place, in the same buffer
    np.testing.assert_array_equal(x.numpy(), x_np)
    x.flat[2:9:3] = 0.0
    x_np.flat[2:9:3] = 0.0
    x.flat[:3] = [1.0, 2.0, 3.0]
    x_np.flat[:3] = [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(x.numpy(), x_np)
    np.testing.assert_array_equal(x.flat[1:5], x_np.ravel()[1:5])
    with pytest.raises(IndexError):
        x.flat[12]
    with pytest.raises(TypeError):
        x.flat[1.5]


def test_flat_writes_through_views(device, rng):
    base_np = rng.standard_normal((4, 5)).astype(np.float32)
    base = nd.array(base_np, device=device)
    view, view_np = base.permute((1, 0))[1:4], base_np.T[1:4]  # a non-compact view
    for i in rng.choice(view_np.size, 4, replace=False):
        assert view.flat[int(i)] == view_np.flat[int(i)]
        view.flat[int(i)] -= 1.0
        view_np.flat[int(i)] -= 1.0  # numpy writes through to base_np too
    np.testing.assert_array_equal(base.numpy(), base_np)
    view.flat[::2] = 9.0
    view_np.flat[::2] = 9.0
    np.testing.assert_array_equal(base.numpy(), base_np)
    with pytest.raises(ValueError, match="broadcast"):
        nd.broadcast_to(nd.array([1.0], device=device), (3,)).flat[0] = 2.0


@pytest.mark.parametrize("backward", [False, True])
def test_course_gradient_check_runs(device, backward):
    # float32 values and eps = 1e-4 leave ~0.01-0.04 of rounding noise in the numerical
    # gradients (the course allows 4.2e-1 on its NDArray backends); a wrong one is off by ~1
    a_np, b_np = np.random.randn(3, 4), np.random.randn(4, 2)

    def fresh():  # (backward() accumulates into .grad: each check gets new leaves)
        return ndl.Tensor(a_np, device=device), ndl.Tensor(b_np, device=device)

    if backward:  # through a graph of ops
        gradient_check(lambda x, y: ndl.tanh(x) @ y, *fresh(), tol=0.2, backward=True)
        gradient_check(lambda x: ndl.exp(x * 0.5).sum(axes=(1,)), fresh()[0], tol=0.2,
                       backward=True)
    else:  # one op's gradient
        gradient_check(lambda x, y: x @ y, *fresh(), tol=0.2)
        gradient_check(ndl.exp, fresh()[0], tol=0.2)
    # the nudges are undone: the values are back (up to float32 rounding of +eps -2eps +eps)
    a, _ = fresh()
    gradient_check(ndl.exp, a, tol=0.2)
    np.testing.assert_allclose(a.numpy(), a_np, rtol=1e-6, atol=1e-6)


def test_numpy_method_and_course_style_ops(device):
    _A = np.random.randn(5, 5)
    B = nd.array(_A, device=device)
    np.testing.assert_allclose((B * 5.0).numpy(), _A * 5.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(B.maximum((np.max(_A) - 1.0).item()).numpy(),
                               np.maximum(_A, np.max(_A) - 1.0), rtol=1e-5, atol=1e-5)
    C = _A[0, 1].item()
    np.testing.assert_allclose((B == C).numpy(), _A.astype(np.float32) == np.float32(C))
    np.testing.assert_allclose(B.max(axis=1, keepdims=True).numpy(),
                               _A.max(axis=1, keepdims=True), rtol=1e-5, atol=1e-5)
