"""Shared checks: forward against a float64 NumPy reference, gradients against finite
differences (computed by Needle in float64 on the CPU) on fresh random inputs."""
import numpy as np
import pytest

import needle

# float32 results vs a float64 reference
RTOL, ATOL = 1e-4, 1e-5


def assert_close(actual, expected, rtol=RTOL, atol=ATOL, what=""):
    actual = actual.numpy() if hasattr(actual, "numpy") else np.asarray(actual)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def numerical_grads(fn, inputs, weights, eps=1e-6):
    """d(sum(fn(*inputs) * weights))/d(input) by central differences, in float64 on cpu."""
    def loss(arrays):
        tensors = [needle.Tensor(a, device=needle.cpu(), dtype="float64") for a in arrays]
        return float((fn(*tensors).numpy() * weights).sum())

    grads = []
    for i, x in enumerate(inputs):
        g = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            orig = x[idx]
            arrays = [a.copy() for a in inputs]
            arrays[i][idx] = orig + eps
            plus = loss(arrays)
            arrays[i][idx] = orig - eps
            g[idx] = (plus - loss(arrays)) / (2 * eps)
        grads.append(g)
    return grads


def check_op(device, fn, reference, inputs, grad=True, rtol=RTOL, atol=ATOL, grad_tol=1e-3):
    """Run ``fn`` (Tensors -> Tensor) on ``device`` in float32 and check:

    * the forward against ``reference`` (numpy float64 arrays -> array);
    * every input gradient against central differences of the float64 CPU graph;
    * on cpu also the float64 autograd gradient against the numerical one, tightly.
    """
    inputs = [np.asarray(x, dtype=np.float64) for x in inputs]
    expected = np.asarray(reference(*inputs), dtype=np.float64)
    tensors = [needle.Tensor(x, device=device, dtype="float32") for x in inputs]
    out = fn(*tensors)
    assert out.shape == expected.shape, f"shape {out.shape} != reference {expected.shape}"
    assert out.device == device
    assert_close(out, expected, rtol, atol, "forward")
    if not grad:
        return
    weights = np.random.default_rng(0).standard_normal(expected.shape)
    out.backward(needle.Tensor(weights, device=device, dtype="float32"))
    numeric = numerical_grads(fn, inputs, weights)
    for t, g in zip(tensors, numeric):
        assert t.grad is not None, "no gradient reached an input"
        scale = max(np.abs(g).max(), 1.0)
        np.testing.assert_allclose(t.grad.numpy(), g, rtol=grad_tol, atol=grad_tol * scale,
                                   err_msg="float32 gradient vs numerical")
    if device == needle.cpu():
        exact = [needle.Tensor(x, device=device, dtype="float64") for x in inputs]
        fn(*exact).backward(needle.Tensor(weights, device=device, dtype="float64"))
        for t, g in zip(exact, numeric):
            np.testing.assert_allclose(t.grad.numpy(), g, rtol=1e-6, atol=1e-6 * max(np.abs(g).max(), 1),
                                       err_msg="float64 gradient vs numerical")


def fresh_rng(request):
    """Fresh random inputs every run (for the backend tests), reproducible from the seed
    recorded on the test (shown on failure)."""
    seed = np.random.SeedSequence().entropy % 2**32
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


def upload(backend, x):
    """A backend buffer holding a copy of NumPy array ``x``."""
    buf = backend.alloc(x.size, x.dtype)
    backend.from_numpy(np.ascontiguousarray(x).reshape(-1), buf)
    return buf


def download(backend, buf):
    """A flat NumPy copy of backend buffer ``buf``."""
    return backend.to_numpy(buf, (buf.size,), (1,), 0)


def held(device, dtype):
    """``device``'s backend, or skip the test when it cannot hold ``dtype`` (webgpu holds
    float32 only)."""
    if dtype not in device.backend.dtypes:
        pytest.skip(f"{device} holds no {dtype}")
    return device.backend


def course_gradient_check(f, *args, tol=1e-6, backward=False, **kwargs):
    """The course's check: central differences through ``.flat`` against either the op's
    own ``gradient_as_tuple`` or ``backward()`` of the summed output."""
    eps = 1e-4
    numerical_grads = [np.zeros(a.shape) for a in args]
    for i in range(len(args)):
        for j in range(args[i].realize_cached_data().size):
            args[i].realize_cached_data().flat[j] += eps
            f1 = float(f(*args, **kwargs).numpy().sum())
            args[i].realize_cached_data().flat[j] -= 2 * eps
            f2 = float(f(*args, **kwargs).numpy().sum())
            args[i].realize_cached_data().flat[j] += eps
            numerical_grads[i].flat[j] = (f1 - f2) / (2 * eps)
    if not backward:
        out = f(*args, **kwargs)
        computed_grads = [x.numpy() for x in out.op.gradient_as_tuple(
            needle.Tensor(np.ones(out.shape), dtype=out.dtype, device=out.device), out)]
    else:
        out = f(*args, **kwargs).sum()
        out.backward()
        computed_grads = [a.grad.numpy() for a in args]
    error = sum(np.linalg.norm(computed_grads[i] - numerical_grads[i]) for i in range(len(args)))
    assert error < tol
    return computed_grads


def training_step(model, opt, loss_fn=None):
    """The step ``needle.compile`` is made for: reset, forward, loss (softmax cross-entropy
    unless ``loss_fn`` says), backward, update; returns the loss."""
    loss_fn = loss_fn or needle.nn.SoftmaxLoss()

    def step(x, y):
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step
