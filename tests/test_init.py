"""needle.init: shapes, dtypes, devices and the distributions' parameters."""
import math

import numpy as np
import pytest

import needle
import needle.init as init


def test_uniform_and_normal_parameters(device):
    np.random.seed(0)
    u = init.rand(200, 300, low=-2.0, high=3.0, device=device).numpy()
    assert u.shape == (200, 300) and u.dtype == np.float32
    assert -2.0 <= u.min() and u.max() < 3.0 and abs(u.mean() - 0.5) < 0.02
    n = init.randn(200, 300, mean=1.0, std=2.0, device=device).numpy()
    assert abs(n.mean() - 1.0) < 0.03 and abs(n.std() - 2.0) < 0.03


@pytest.mark.parametrize("fn,bound", [
    (lambda: init.xavier_uniform(300, 200, gain=2.0), 2.0 * math.sqrt(6 / 500)),
    (lambda: init.kaiming_uniform(300, 200), math.sqrt(2) * math.sqrt(3 / 300)),
], ids=["xavier", "kaiming"])
def test_uniform_initialisers_fill_their_bound(fn, bound):
    w = fn().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound


@pytest.mark.parametrize("fn,std", [
    (lambda: init.xavier_normal(300, 200), math.sqrt(2 / 500)),
    (lambda: init.kaiming_normal(300, 200, nonlinearity="tanh"), 5 / 3 / math.sqrt(300)),
], ids=["xavier", "kaiming"])
def test_normal_initialisers_std(fn, std):
    assert abs(fn().numpy().std() / std - 1) < 0.03


def test_constants_and_likes(device):
    c = init.constant(2, 3, c=1.5, device=device)
    assert c.device == device and np.all(c.numpy() == 1.5)
    assert np.all(init.zeros_like(c).numpy() == 0) and init.zeros_like(c).shape == (2, 3)
    assert np.all(init.ones_like(c).numpy() == 1) and init.ones_like(c).device == device
    assert init.ones(3, device=device, dtype="float32", requires_grad=True).requires_grad


def test_randb_and_one_hot(device):
    np.random.seed(1)
    mask = init.randb(100, 100, p=0.3, device=device).numpy()
    assert set(np.unique(mask)) <= {0.0, 1.0} and abs(mask.mean() - 0.3) < 0.02
    labels = np.array([2, 0, 1, 2])
    np.testing.assert_array_equal(init.one_hot(3, labels, device=device).numpy(), np.eye(3)[labels])


def test_unknown_nonlinearity():
    with pytest.raises(ValueError, match="unknown nonlinearity 'swish'"):
        init.kaiming_uniform(3, 4, nonlinearity="swish")


def test_float64_on_cpu():
    assert init.randn(3, 3, dtype="float64").dtype == "float64"
    assert needle.init.zeros(2, dtype="float64").numpy().dtype == np.float64


def test_float64_models_stay_float64():
    x = needle.Tensor(np.random.default_rng(0).standard_normal((4, 3)), dtype="float64")
    model = needle.nn.Sequential(needle.nn.Linear(3, 5, dtype="float64"), needle.nn.ReLU(),
                                 needle.nn.BatchNorm1d(5, dtype="float64"))
    loss = model(x).sum()
    loss.backward()
    assert loss.dtype == "float64" and all(p.grad.dtype == "float64" for p in model.parameters())
    assert needle.Tensor(x.realize_cached_data()).dtype == "float64"   # an NDArray keeps its dtype
    assert needle.Tensor(np.arange(3)).dtype == "float32"              # host data defaults to float32


# -- the random stream: chunked draws give the values of one NumPy call ---------------------
_SIZES = [1, 1000, 2**20 + 12345]  # the last crosses the 2**20-element draw chunk


@pytest.mark.parametrize("n", _SIZES)
def test_rand_and_randn_match_numpy_global_stream(device, n):
    seed = int(np.random.default_rng().integers(2**31))
    np.random.seed(seed)
    u = init.rand(n, device=device).numpy()
    np.random.seed(seed)
    np.testing.assert_array_equal(u, np.random.uniform(0, 1, n).astype(np.float32))
    np.random.seed(seed)
    g = init.randn(n, mean=0.5, std=2.0, device=device).numpy()
    np.random.seed(seed)
    np.testing.assert_array_equal(g, np.random.normal(0.5, 2.0, n).astype(np.float32))
    np.random.seed(seed)
    m = init.randb(n, p=0.3, device=device).numpy()
    np.random.seed(seed)
    np.testing.assert_array_equal(m, (np.random.rand(n) <= 0.3).astype(np.float32))


def test_random_draws_keep_the_stream_going_and_shapes():
    seed = int(np.random.default_rng().integers(2**31))
    np.random.seed(seed)
    a, b = init.rand(3, 4), init.randn(2, 5, dtype="float64")
    np.random.seed(seed)
    np.testing.assert_array_equal(a.numpy(), np.random.uniform(0, 1, (3, 4)).astype(np.float32))
    np.testing.assert_array_equal(b.numpy(), np.random.normal(0, 1, (2, 5)))
    assert b.dtype == "float64" and a.shape == (3, 4)
    assert init.rand((2, 3)).shape == (2, 3) and init.zeros((2, 3)).shape == (2, 3)
    assert init.rand().shape == () and init.rand(0, 3).shape == (0, 3)
    w = init.rand(2, 2, requires_grad=True)
    assert w.requires_grad and w.is_leaf()


def test_random_tensors_are_adopted_on_cpu_and_copied_elsewhere(device):
    t = init.rand(4, 5, device=device)
    data = t.realize_cached_data()
    assert data.device == device and data.is_compact() and data.shape == (4, 5)
    if device == needle.cpu():  # the drawn host array is the buffer itself
        assert isinstance(data._handle, np.ndarray) and data._handle.base is not None


def test_webgpu_float64_is_refused_before_drawing():
    dev = needle.webgpu()
    if not dev.enabled():
        pytest.skip(f"{dev} unavailable: {dev.unavailable_reason()}")
    state = np.random.get_state()[1].copy()
    with pytest.raises(needle.DTypeError):
        init.rand(3, device=dev, dtype="float64")
    np.testing.assert_array_equal(np.random.get_state()[1], state)


# -- _calculate_fans: PyTorch's fan_in / fan_out for Needle's weight layouts ---------------
def test_calculate_fans_linear_and_conv():
    assert init._calculate_fans((5, 7)) == (5, 7)  # Linear weight (in, out)
    assert init._calculate_fans((3, 3, 4, 8)) == (4 * 9, 8 * 9)  # conv (k, k, in, out)
    assert init._calculate_fans((1, 1, 16, 2)) == (16, 2)
    assert init._calculate_fans((2, 3, 3, 4, 8)) == (4 * 18, 8 * 18)  # any kernel axes
    w = init.rand(3, 3, 2, 6)
    assert init._calculate_fans(w) == (18, 54)  # a Tensor, NDArray or numpy array
    assert init._calculate_fans(w.realize_cached_data()) == (18, 54)
    assert init._calculate_fans(np.zeros((6, 4))) == (6, 4)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init._calculate_fans((5,))


def test_calculate_fans_agrees_with_torch():
    torch = pytest.importorskip("torch")
    from torch.nn.init import _calculate_fan_in_and_fan_out
    # PyTorch stores Linear (out, in) and Conv2d (out, in, k, k); Needle (in, out), (k, k, in, out)
    assert init._calculate_fans((5, 7)) == _calculate_fan_in_and_fan_out(torch.empty(7, 5))
    assert init._calculate_fans((3, 3, 4, 8)) == \
        _calculate_fan_in_and_fan_out(torch.empty(8, 4, 3, 3))
    fan_in, fan_out = init._calculate_fans((3, 3, 4, 8))
    assert init.kaiming_uniform(fan_in, fan_out, shape=(3, 3, 4, 8)).shape == (3, 3, 4, 8)
