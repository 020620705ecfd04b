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
