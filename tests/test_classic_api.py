"""Classic Needle (CMU 10-414/714) course code, as its homework tests are written: devices
parametrised as ``ndl.cpu()`` / ``ndl.cuda()``, inputs made with ``nd.array`` or
``ndl.init``, gradients checked numerically by nudging ``realize_cached_data().flat[j]``,
and op classes called directly (``ndl.ops.EWiseAdd()(a, b)``). Needle must run such code
unchanged."""
import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
from needle import backend_ndarray as nd
from helpers import course_gradient_check as gradient_check

_DEVICES = [ndl.cpu(), pytest.param(ndl.cuda(), marks=pytest.mark.skipif(
    not ndl.cuda().enabled(), reason="No GPU"))]


def rand(*shape, device):
    return ndl.Tensor(nd.array(np.random.randn(*shape), device=device), device=device,
                      dtype="float64")


def _float64(device):
    if "float64" not in device.backend.dtypes:
        pytest.skip(f"{device} holds float32 only")


SINGLE_OPS = {"add", "mul", "power_scalar", "divide_scalar", "matmul", "batched_matmul",
              "summation", "broadcast_to", "reshape", "negate", "transpose", "Transpose",
              "relu", "tanh", "logsumexp", "LogSoftmax", "logsoftmax", "flip", "dilate", "conv",
              "conv_default_padding"}


@pytest.mark.parametrize("device", _DEVICES, ids=["cpu", "cuda"])
@pytest.mark.parametrize("name,f,shapes", [
    ("add", lambda a, b: ndl.ops.EWiseAdd()(a, b), [(3, 4), (3, 4)]),
    ("mul", lambda a, b: a * b, [(3, 4), (3, 4)]),
    ("div", lambda a, b: ndl.ops.EWiseDiv()(a, b + 3.0), [(3, 4), (3, 4)]),
    ("pow", lambda a, b: ndl.ops.EWisePow()(ndl.ops.exp(a), b), [(3, 4), (3, 4)]),
    ("power_scalar", lambda a: ndl.ops.PowerScalar(3)(a), [(3, 4)]),
    ("divide_scalar", lambda a: ndl.ops.divide_scalar(a, 2.0), [(3, 4)]),
    ("matmul", lambda a, b: ndl.ops.matmul(a, b), [(3, 4), (4, 2)]),
    ("batched_matmul", lambda a, b: a @ b, [(2, 3, 4), (2, 4, 2)]),
    ("summation", lambda a: ndl.ops.summation(a, axes=(1,)), [(3, 4, 2)]),
    ("broadcast_to", lambda a: ndl.ops.broadcast_to(a, (3, 4, 2)), [(4, 1)]),
    ("reshape", lambda a: ndl.ops.reshape(a, (2, 6)), [(3, 4)]),
    ("negate", lambda a: ndl.ops.negate(a), [(3, 4)]),
    ("transpose", lambda a: ndl.ops.transpose(a, axes=(0, 2)), [(2, 3, 4)]),
    ("Transpose", lambda a: ndl.ops.Transpose((1, 2))(a), [(2, 3, 4)]),
    ("log", lambda a: ndl.ops.log(ndl.ops.exp(a)), [(3, 4)]),
    ("relu", lambda a: ndl.ops.relu(a), [(3, 4)]),
    ("tanh", lambda a: ndl.ops.tanh(a), [(3, 4)]),
    ("logsumexp", lambda a: ndl.ops.logsumexp(a, axes=(0, 2)), [(3, 4, 2)]),
    ("LogSoftmax", lambda a: ndl.ops.LogSoftmax()(a), [(3, 5)]),
    ("logsoftmax", lambda a: ndl.ops.logsoftmax(a), [(3, 5)]),
    ("stack", lambda a, b: ndl.ops.stack([a, b], axis=1), [(3, 4), (3, 4)]),
    ("flip", lambda a: ndl.ops.flip(a, axes=(0, 1)), [(3, 4)]),
    ("dilate", lambda a: ndl.ops.dilate(a, axes=(1,), dilation=2), [(3, 4)]),
    ("conv", lambda a, b: ndl.ops.conv(a, b, stride=2, padding=1), [(1, 5, 5, 2), (3, 3, 2, 3)]),
    ("conv_default_padding", lambda a, b: ndl.ops.conv(a, b), [(1, 4, 4, 2), (3, 3, 2, 2)]),
])
def test_op_gradients_as_the_course_checks_them(device, name, f, shapes):
    _float64(device)
    np.random.seed(sum(map(ord, name)))
    args = [rand(*s, device=device) for s in shapes]
    gradient_check(f, *args, backward=True)
    if name in SINGLE_OPS:  # the op's own gradient, as hw1's tests call it
        gradient_check(f, *[rand(*s, device=device) for s in shapes])


@pytest.mark.parametrize("device", _DEVICES, ids=["cpu", "cuda"])
def test_split_and_tuple_indexing(device):
    _float64(device)
    np.random.seed(1)
    a = rand(3, 4, device=device)
    gradient_check(lambda x: ndl.ops.split(x, axis=1)[2], a, backward=True)


@pytest.mark.parametrize("device", _DEVICES, ids=["cpu", "cuda"])
def test_backend_ndarray_module_functions(device):
    np.random.seed(2)
    x = np.random.randn(3, 1, 4).astype(np.float32)
    a = nd.array(x, device=device)
    np.testing.assert_allclose(nd.broadcast_to(a, (3, 2, 4)).numpy(), np.broadcast_to(x, (3, 2, 4)))
    np.testing.assert_allclose(nd.reshape(a, (12,)).numpy(), x.reshape(12))
    np.testing.assert_allclose(nd.maximum(a, nd.array(-x, device=device)).numpy(), np.maximum(x, -x))
    np.testing.assert_allclose(nd.exp(a).numpy(), np.exp(x), rtol=1e-6)
    np.testing.assert_allclose(nd.log(nd.exp(a)).numpy(), x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nd.tanh(a).numpy(), np.tanh(x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(nd.sum(a, axis=2).numpy(), x.sum(2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nd.flip(a, (0, 2)).numpy(), np.flip(x, (0, 2)))
    assert nd.compact_strides((2, 3, 4)) == (12, 4, 1)
    assert nd.cpu_numpy() == ndl.cpu()
    empty, full = device.empty((2, 3)), device.full((2, 3), 7.0)
    assert empty.shape == (2, 3) and (full.numpy() == 7).all()
    assert device.randn(4, 5).shape == (4, 5) and device.rand(2).shape == (2,)
    np.testing.assert_allclose(device.one_hot(3, nd.array([0, 2], device=device)).numpy(),
                               np.eye(3)[[0, 2]])
    assert isinstance(device, nd.BackendDevice)


@pytest.mark.parametrize("device", _DEVICES, ids=["cpu", "cuda"])
def test_a_homework_training_loop(device):
    """hw2/hw4's MLP loop: DataLoader over an NDArrayDataset, Sequential, SoftmaxLoss, SGD."""
    np.random.seed(3)
    X = np.random.randn(64, 10).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.float32)
    loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(X, y), batch_size=16, shuffle=True,
                                 device=device)
    model = nn.Sequential(nn.Linear(10, 16, device=device), nn.ReLU(),
                          nn.Residual(nn.Sequential(nn.Linear(16, 16, device=device), nn.ReLU())),
                          nn.Linear(16, 2, device=device))
    opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.SoftmaxLoss()
    losses = []
    for _ in range(10):
        for xb, yb in loader:
            opt.reset_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.numpy().item())
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])


def test_init_fans():
    assert ndl.init._calculate_fans((4, 3)) == (4, 3)
    assert ndl.init._calculate_fans((3, 3, 8, 16)) == (72, 144)


def test_ndarray_compact_strides_is_a_staticmethod():
    assert nd.NDArray.compact_strides((2, 3, 4)) == (12, 4, 1)
