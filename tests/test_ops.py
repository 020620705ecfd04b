"""Every op: forward against float64 NumPy, gradient against finite differences."""
import numpy as np
import pytest

import needle
import needle.ops as ops
from helpers import check_op
from needle.errors import ShapeError


def positive(rng, *shape):
    return rng.uniform(0.5, 2.0, shape)


def away_from_zero(rng, *shape):
    """Random values with |x| >= 0.1, so kinks (relu, max) are not straddled by eps."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (np.abs(x) + 0.1)


def _lse(x, axes):
    m = x.max(axis=axes, keepdims=True)
    return (np.log(np.exp(x - m).sum(axis=axes, keepdims=True)) + m).squeeze(axis=axes)


ELEMENTWISE = [
    ("add", ops.add, np.add, 2),
    ("subtract", ops.subtract, np.subtract, 2),
    ("multiply", ops.multiply, np.multiply, 2),
    ("divide", ops.divide, np.divide, 2),
    ("maximum", ops.maximum, np.maximum, 2),
]


@pytest.mark.parametrize("name,fn,ref,_", ELEMENTWISE, ids=[e[0] for e in ELEMENTWISE])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 4))],
                         ids=["same", "broadcast-trailing", "broadcast-both"])
def test_binary(device, rng, name, fn, ref, _, shapes):
    a = away_from_zero(rng, *shapes[0])
    b = positive(rng, *shapes[1]) if name == "divide" else away_from_zero(rng, *shapes[1])
    if name == "maximum":  # keep the operands apart so no tie sits within eps
        b = a[..., :shapes[1][-1]].mean() + b if shapes[0] == shapes[1] else b
    check_op(device, fn, ref, [a, b])


SCALAR = [
    ("add_scalar", lambda a: ops.add_scalar(a, 1.7), lambda a: a + 1.7),
    ("mul_scalar", lambda a: ops.mul_scalar(a, -2.5), lambda a: a * -2.5),
    ("divide_scalar", lambda a: ops.divide_scalar(a, 3.0), lambda a: a / 3.0),
    ("power_scalar", lambda a: ops.power_scalar(a, 3), lambda a: a ** 3),
    ("power_scalar_frac", lambda a: ops.power_scalar(a, 0.5), lambda a: a ** 0.5),
    ("rsub", lambda a: 2.0 - a, lambda a: 2.0 - a),
    ("rdiv", lambda a: 2.0 / a, lambda a: 2.0 / a),
    ("negate", ops.negate, np.negative),
    ("exp", ops.exp, np.exp),
    ("log", ops.log, np.log),
    ("relu", ops.relu, lambda a: np.maximum(a, 0)),
    ("tanh", ops.tanh, np.tanh),
    ("sigmoid", ops.sigmoid, lambda a: 1 / (1 + np.exp(-a))),
    ("sqrt", ops.sqrt, np.sqrt),
]
NEEDS_POSITIVE = {"log", "sqrt", "power_scalar_frac", "rdiv"}


@pytest.mark.parametrize("name,fn,ref", SCALAR, ids=[s[0] for s in SCALAR])
def test_unary_and_scalar(device, rng, name, fn, ref):
    a = positive(rng, 3, 5) if name in NEEDS_POSITIVE else away_from_zero(rng, 3, 5)
    check_op(device, fn, ref, [a])


def test_unary_on_non_contiguous_view(device, rng):
    a = away_from_zero(rng, 4, 6)
    check_op(device, lambda x: ops.exp(ops.transpose(x)[1:, ::2]),
             lambda x: np.exp(x.T[1:, ::2]), [a])


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((1, 1), (1, 1)), ((2, 3, 4), (2, 4, 5)),
                                    ((2, 3, 4), (4, 5)), ((4,), (4, 3)), ((3, 4), (4,)),
                                    ((2, 1, 3, 4), (5, 4, 2))],
                         ids=["2d", "1x1", "batched", "batch-broadcast", "vec-mat", "mat-vec",
                              "batch-broadcast-both"])
def test_matmul(device, rng, shapes):
    check_op(device, ops.matmul, np.matmul, [rng.standard_normal(s) for s in shapes])


def test_matmul_of_transposed_views(device, rng):
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((5, 4))
    check_op(device, lambda x, y: ops.transpose(x) @ ops.transpose(y), lambda x, y: x.T @ y.T,
             [a, b])


@pytest.mark.parametrize("axes", [None, 0, 1, (0, 2), (2,), -1], ids=str)
def test_summation(device, rng, axes):
    np_axes = axes if axes is None or isinstance(axes, int) else tuple(axes)
    check_op(device, lambda a: ops.summation(a, axes), lambda a: a.sum(axis=np_axes),
             [rng.standard_normal((2, 3, 4))])


def test_summation_keepdims(device, rng):
    check_op(device, lambda a: ops.summation(a, (1,), keepdims=True),
             lambda a: a.sum(axis=1, keepdims=True), [rng.standard_normal((2, 3, 4))])


@pytest.mark.parametrize("axes", [None, 0, (1, 2), -1], ids=str)
def test_max(device, rng, axes):
    a = rng.permutation(24).reshape(2, 3, 4) * 0.1 + rng.uniform(0, 0.01, (2, 3, 4))  # no ties
    check_op(device, lambda x: ops.max(x, axes), lambda x: x.max(axis=axes), [a])


@pytest.mark.parametrize("axes", [None, (1,), (0, 2), -1], ids=str)
def test_logsumexp(device, rng, axes):
    np_axes = tuple(range(3)) if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    check_op(device, lambda x: ops.logsumexp(x, axes), lambda x: _lse(x, np_axes),
             [rng.standard_normal((2, 3, 4)) * 3])


def test_logsumexp_large_values_are_stable(device, rng):
    a = rng.standard_normal((3, 5)) + 1000.0
    check_op(device, lambda x: ops.logsumexp(x, (1,)), lambda x: _lse(x, (1,)), [a],
             grad=False, rtol=1e-6)


@pytest.mark.parametrize("shape,target", [((3, 1), (3, 4)), ((4,), (2, 3, 4)), ((1, 3, 1), (2, 3, 5)),
                                          ((1,), (3,))], ids=str)
def test_broadcast_to(device, rng, shape, target):
    check_op(device, lambda a: ops.broadcast_to(a, target), lambda a: np.broadcast_to(a, target),
             [rng.standard_normal(shape)])


@pytest.mark.parametrize("shape,target", [((3, 4), (12,)), ((2, 3, 4), (4, 6)), ((6,), (1, 2, 3, 1)),
                                          ((2, 6), (-1, 3))], ids=str)
def test_reshape(device, rng, shape, target):
    check_op(device, lambda a: ops.reshape(a, target), lambda a: a.reshape(target),
             [rng.standard_normal(shape)])


def test_reshape_of_non_contiguous_view(device, rng):
    check_op(device, lambda a: ops.reshape(ops.transpose(a), (12,)),
             lambda a: a.T.reshape(12), [rng.standard_normal((3, 4))])


@pytest.mark.parametrize("axes", [None, (0, 1), (0, 2), (1, 2)], ids=str)
def test_transpose_swaps_two_axes(device, rng, axes):
    i, j = axes or (-2, -1)
    check_op(device, lambda a: ops.transpose(a, axes), lambda a: np.swapaxes(a, i, j),
             [rng.standard_normal((2, 3, 4))])


@pytest.mark.parametrize("order", [(2, 0, 1), (1, 0, 2), (0, 1, 2)], ids=str)
def test_permute(device, rng, order):
    check_op(device, lambda a: ops.permute(a, order), lambda a: a.transpose(order),
             [rng.standard_normal((2, 3, 4))])


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(device, rng, axis):
    arrays = [rng.standard_normal((2, 3)) for _ in range(3)]
    check_op(device, lambda *ts: ops.stack(list(ts), axis), lambda *xs: np.stack(xs, axis), arrays)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_split(device, rng, axis):
    a = rng.standard_normal((2, 3, 4))
    n = a.shape[axis]
    # combine the pieces with distinct weights so each piece's gradient is distinct
    check_op(device, lambda t: sum((p * float(i + 1) for i, p in enumerate(ops.split(t, axis).tuple())),
                                   start=0.0 * ops.split(t, axis)[0]),
             lambda x: sum(np.take(x, i, axis) * (i + 1) for i in range(n)), [a])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate(device, rng, axis):
    shapes = [(2, 3), (2, 3), (2, 3)] if axis != 0 else [(1, 3), (2, 3), (3, 3)]
    if axis in (1, -1):
        shapes = [(2, 1), (2, 3), (2, 2)]
    arrays = [rng.standard_normal(s) for s in shapes]
    check_op(device, lambda *ts: ops.concatenate(list(ts), axis),
             lambda *xs: np.concatenate(xs, axis), arrays)


@pytest.mark.parametrize("axes", [(0,), (1,), (0, 2), None], ids=str)
def test_flip(device, rng, axes):
    check_op(device, lambda a: ops.flip(a, axes), lambda a: np.flip(a, axes),
             [rng.standard_normal((2, 3, 4))])


def _np_dilate(a, axes, d):
    shape = [s * (d + 1) if i in axes else s for i, s in enumerate(a.shape)]
    out = np.zeros(shape)
    out[tuple(slice(None, None, d + 1) if i in axes else slice(None) for i in range(a.ndim))] = a
    return out


@pytest.mark.parametrize("axes,d", [((0,), 1), ((1,), 2), ((0, 1), 1)], ids=str)
def test_dilate_and_undilate(device, rng, axes, d):
    a = rng.standard_normal((3, 4))
    check_op(device, lambda t: ops.dilate(t, axes, d), lambda x: _np_dilate(x, axes, d), [a])
    big = rng.standard_normal(_np_dilate(a, axes, d).shape)
    index = tuple(slice(None, None, d + 1) if i in axes else slice(None) for i in range(2))
    check_op(device, lambda t: ops.undilate(t, axes, d), lambda x: x[index], [big])


@pytest.mark.parametrize("index", [(1,), (slice(1, 3),), (slice(None), slice(None, None, 2)),
                                   (slice(None, None, -1), 2), (-1, slice(3, 0, -2)),
                                   (Ellipsis, 1), (None, 0)], ids=str)
def test_getitem(device, rng, index):
    check_op(device, lambda a: a[index], lambda a: a[index], [rng.standard_normal((4, 5))])


def test_pad(device, rng):
    axes = ((1, 0), (0, 2))
    check_op(device, lambda a: ops.pad(a, axes), lambda a: np.pad(a, axes), [rng.standard_normal((2, 3))])


def _np_conv(x, w, stride, padding):
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, wd, c = x.shape
    k = w.shape[0]
    ho, wo = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.zeros((n, ho, wo, w.shape[3]))
    for i in range(k):
        for j in range(k):
            patch = x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            out += patch @ w[i, j]
    return out


@pytest.mark.parametrize("k,stride,padding,size", [(3, 1, 1, 5), (3, 2, 1, 6), (1, 1, 0, 4),
                                                   (3, 2, 0, 7), (2, 3, 2, 5), (4, 2, 1, 6)],
                         ids=lambda v: str(v))
def test_conv(device, rng, k, stride, padding, size):
    x, w = rng.standard_normal((2, size, size + 1, 2)), rng.standard_normal((k, k, 2, 3))  # H != W
    check_op(device, lambda a, b: ops.conv(a, b, stride, padding),
             lambda a, b: _np_conv(a, b, stride, padding), [x, w], grad_tol=2e-3)


def _np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_softmax(device, rng):
    check_op(device, ops.softmax, _np_softmax, [rng.standard_normal((2, 3, 5)) * 2])


def test_softmax_cross_entropy(device, rng):
    labels = rng.integers(0, 5, 4)
    def fn(logits):
        return ops.softmax_cross_entropy(logits, needle.Tensor(labels, device=logits.device,
                                                               dtype=logits.dtype))
    def ref(x):
        return np.mean(_lse(x, (1,)) - x[np.arange(4), labels])
    check_op(device, fn, ref, [rng.standard_normal((4, 5)) * 2])


def test_layer_norm(device, rng):
    def ref(x, w, b):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w + b
    check_op(device, ops.layer_norm, ref,
             [rng.standard_normal((2, 3, 6)) * 2 + 1, rng.standard_normal(6), rng.standard_normal(6)],
             grad_tol=2e-3)


@pytest.mark.parametrize("act", ["identity", "relu"])
def test_bias_act(device, rng, act):
    def ref(a, b):
        y = a + b
        return np.maximum(y, 0) if act == "relu" else y
    a = away_from_zero(rng, 4, 5)
    check_op(device, lambda x, b: ops.bias_act(x, b, act), ref, [a, rng.uniform(-0.05, 0.05, 5)])


def _batch_norm_ref(x, mean, var, w, b, xb=None, act="identity", axis=1):
    shape = [1] * x.ndim
    shape[axis] = -1
    c = lambda v: v.reshape(shape)  # noqa: E731
    y = ((x + c(xb) if xb is not None else x) - c(mean)) / np.sqrt(c(var) + 1e-5) * c(w) + c(b)
    return np.maximum(y, 0) if act == "relu" else y


@pytest.mark.parametrize("act", ["identity", "relu"])
@pytest.mark.parametrize("shape,axis,x_bias", [((5, 4), 1, False), ((2, 3, 4, 5), 1, True),
                                               ((3, 4, 2), 2, False), ((2, 3, 4, 5), 1, False)])
def test_batch_norm(device, rng, act, shape, axis, x_bias):
    c = shape[axis]
    while True:  # pre-activations away from ReLU's kink (finite differences)
        inputs = [rng.standard_normal(shape), rng.standard_normal(c) * 0.1, positive(rng, c),
                  rng.standard_normal(c), rng.standard_normal(c) * 0.1]
        if x_bias:
            inputs.append(rng.standard_normal(c) * 0.1)
        pre = _batch_norm_ref(*inputs[:5], xb=inputs[5] if x_bias else None, axis=axis)
        if np.abs(pre).min() > 0.02:
            break
    check_op(device, lambda *t: ops.batch_norm(*t[:5], act=act, axis=axis,
                                               x_bias=t[5] if x_bias else None),
             lambda *a: _batch_norm_ref(*a[:5], xb=a[5] if x_bias else None, act=act, axis=axis),
             inputs, grad_tol=2e-3)


def _batch_norm_train_ref(x, w, b, act="identity"):
    axes = tuple(a for a in range(x.ndim) if a != 1)
    return _batch_norm_ref(x, x.mean(axes), x.var(axes), w, b, act=act)


@pytest.mark.parametrize("act", ["identity", "relu"])
@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 4, 5), (3, 2, 5)])
def test_batch_norm_train(device, rng, act, shape):
    """Training BatchNorm (batch statistics) forward, every gradient, and the mean and
    biased variance it returns for the running statistics."""
    c = shape[1]
    while True:  # pre-activations away from ReLU's kink (finite differences)
        inputs = [rng.standard_normal(shape) * 2 + 0.5, rng.standard_normal(c),
                  rng.standard_normal(c)]
        if np.abs(_batch_norm_train_ref(*inputs)).min() > 0.02:
            break
    check_op(device, lambda x, w, b: ops.batch_norm_train(x, w, b, act=act)[0],
             lambda x, w, b: _batch_norm_train_ref(x, w, b, act), inputs, grad_tol=2e-3)
    x = inputs[0]
    axes = tuple(a for a in range(x.ndim) if a != 1)
    _, mean, var = ops.batch_norm_train(*(needle.Tensor(a, device=device) for a in inputs))
    assert not mean.requires_grad and not var.requires_grad
    np.testing.assert_allclose(mean.numpy(), x.mean(axes), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var.numpy(), x.var(axes), rtol=1e-4, atol=1e-5)


def _bias_train_ref(x, w, b, xb, act="identity"):
    return _batch_norm_train_ref(x + xb.reshape((1, -1) + (1,) * (x.ndim - 2)), w, b, act)


@pytest.mark.parametrize("act", ["identity", "relu"])
@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 4, 5)])
def test_batch_norm_train_with_x_bias_and_running_statistics(device, rng, act, shape):
    """A conv's bias folded in (x_bias: its gradient is dx summed per channel) and the
    running statistics updated by the same call, PyTorch's way (unbiased variance)."""
    c = shape[1]
    while True:
        inputs = [rng.standard_normal(shape) * 2 + 0.5] + [rng.standard_normal(c)
                                                           for _ in range(3)]
        if np.abs(_bias_train_ref(*inputs)).min() > 0.02:
            break
    check_op(device, lambda x, w, b, xb: ops.batch_norm_train(x, w, b, act=act, x_bias=xb)[0],
             lambda x, w, b, xb: _bias_train_ref(x, w, b, xb, act), inputs, grad_tol=2e-3)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    running_mean, running_var = needle.Tensor(rm, device=device), needle.Tensor(rv, device=device)
    versions = running_mean._version, running_var._version
    ops.batch_norm_train(*(needle.Tensor(a, device=device) for a in inputs[:3]), act=act,
                         running=(running_mean, running_var, 0.3),
                         x_bias=needle.Tensor(inputs[3], device=device))
    v = inputs[0] + inputs[3].reshape((1, -1) + (1,) * (len(shape) - 2))
    axes = tuple(a for a in range(v.ndim) if a != 1)
    np.testing.assert_allclose(running_mean.numpy(), 0.7 * rm + 0.3 * v.mean(axes),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(running_var.numpy(), 0.7 * rv + 0.3 * v.var(axes, ddof=1),
                               rtol=1e-4, atol=1e-5)
    assert (running_mean._version, running_var._version) == (versions[0] + 1, versions[1] + 1)


@pytest.mark.parametrize("declined", ["batchnorm_train", "batchnorm_train_backward"])
def test_batch_norm_train_composes_what_the_backend_declines(rng, monkeypatch, declined):
    """A backend may decline the fused op for a shape (cuDNN has no engine for some channel
    counts): the forward then composes it, and a declined backward composes the gradient."""
    from needle.backend_ndarray import Declined
    from needle.backend_ndarray.numpy_backend import NumpyBackend

    def decline(*args, **kwargs):
        raise Declined("not for this shape")
    monkeypatch.setattr(NumpyBackend, declined, decline)
    inputs = [rng.standard_normal((3, 4, 2, 5)) + 0.5, rng.standard_normal(4),
              rng.standard_normal(4)]
    check_op(needle.cpu(), lambda x, w, b: ops.batch_norm_train(x, w, b)[0],
             lambda x, w, b: _batch_norm_train_ref(x, w, b), inputs, grad_tol=2e-3)
    inputs.append(rng.standard_normal(4))  # and with a conv's bias folded in
    check_op(needle.cpu(), lambda x, w, b, xb: ops.batch_norm_train(x, w, b, x_bias=xb)[0],
             lambda x, w, b, xb: _bias_train_ref(x, w, b, xb), inputs, grad_tol=2e-3)


def test_batch_norm_train_checks_its_arguments():
    t = needle.Tensor(np.ones((4, 3)))
    with pytest.raises(ShapeError, match=r"must be \(3,\)"):
        ops.batch_norm_train(t, needle.Tensor(np.ones(2)), needle.Tensor(np.ones(3)))
    with pytest.raises(ShapeError, match="channel axis"):
        ops.batch_norm_train(needle.Tensor(np.ones(3)), needle.Tensor(np.ones(3)),
                             needle.Tensor(np.ones(3)))
    with pytest.raises(ValueError, match="unknown activation"):
        ops.batch_norm_train(t, needle.Tensor(np.ones(3)), needle.Tensor(np.ones(3)), act="gelu")


def test_batch_norm_on_a_permuted_view(device, rng):
    """An NCHW view of NHWC data runs as stored (no copy) and answers in the same layout."""
    x = rng.standard_normal((2, 4, 5, 3))
    vectors = [rng.standard_normal(3), positive(rng, 3), rng.standard_normal(3),
               rng.standard_normal(3)]
    t = ops.permute(needle.Tensor(x, device=device), (0, 3, 1, 2))
    out = ops.batch_norm(t, *(needle.Tensor(v, device=device) for v in vectors), act="relu")
    np.testing.assert_allclose(out.numpy(), _batch_norm_ref(x.transpose(0, 3, 1, 2), *vectors,
                                                            act="relu"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0)])
def test_conv_channels_first(device, rng, k, stride, padding):
    """NCHW in and out (nn.Conv's form); on cudnn it runs on the NCHW data as stored."""
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((k, k, 3, 4)) * 0.3
    check_op(device, lambda a, b: ops.conv(a, b, stride, padding, channels_first=True),
             lambda a, b: _np_conv(a.transpose(0, 2, 3, 1), b, stride, padding)
             .transpose(0, 3, 1, 2), [x, w], grad_tol=2e-3)


@pytest.mark.parametrize("channels_first", [False, True], ids=["nhwc_op", "nchw_op"])
def test_conv_of_a_permuted_view(device, rng, channels_first):
    """The op's layout is not the data's: forward and backward run on the data as stored
    (cudnn, cpu) and answer in the op's layout."""
    # data stored NHWC under an NCHW op, or NCHW under an NHWC op
    to_op = (0, 3, 1, 2) if channels_first else (0, 2, 3, 1)
    x = rng.standard_normal((2, 5, 6, 3) if channels_first else (2, 3, 5, 6))
    w = rng.standard_normal((3, 3, 3, 4)) * 0.3

    def reference(a, b):
        nhwc = a if channels_first else a.transpose(0, 2, 3, 1)
        out = _np_conv(nhwc, b, 2, 1)
        return out.transpose(0, 3, 1, 2) if channels_first else out

    check_op(device, lambda a, b: ops.conv(ops.permute(a, to_op), b, 2, 1, channels_first),
             lambda a, b: reference(a, b), [x, w], grad_tol=2e-3)


def test_gradient_accumulates_over_reused_inputs(device, rng):
    a = rng.standard_normal((3, 3))
    check_op(device, lambda x: x * x + x @ x + ops.exp(x), lambda x: x * x + x @ x + np.exp(x), [a])


def test_float64_on_cpu_is_exact_enough():
    a = np.random.default_rng(1).standard_normal((5, 5))
    t = needle.Tensor(a, dtype="float64")
    assert t.dtype == "float64"
    np.testing.assert_allclose((t @ t).numpy(), a @ a, rtol=1e-12)


def _linear_inputs(rng, m, k, n):
    """x, w, b whose pre-activations stay away from ReLU's kink (finite differences)."""
    while True:
        x, w, b = rng.standard_normal((m, k)), rng.standard_normal((k, n)), rng.standard_normal(n)
        if np.abs(x @ w + b).min() > 0.05:
            return [x, w, b]


@pytest.mark.parametrize("act", ["identity", "relu", "gelu"])
def test_linear(device, rng, act):
    def ref(x, w, b):
        y = x @ w + b
        if act == "relu":
            return np.maximum(y, 0)
        if act == "gelu":
            return 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3)))
        return y
    check_op(device, lambda x, w, b: ops.linear(x, w, b, act), ref, _linear_inputs(rng, 5, 7, 4))


def _attention_ref(q, k, v, causal):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        tq, tk = scores.shape[-2:]
        scores = np.where(np.tril(np.ones((tq, tk)), tk - tq) > 0, scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


@pytest.mark.parametrize("tq,tk,causal", [(5, 5, False), (6, 6, True), (3, 5, False), (3, 5, True)])
def test_scaled_dot_product_attention(device, rng, tq, tk, causal):
    q, k, v = (rng.standard_normal((2, 3, t, 4)) for t in (tq, tk, tk))
    check_op(device, lambda a, b, c: ops.scaled_dot_product_attention(a, b, c, causal),
             lambda a, b, c: _attention_ref(a, b, c, causal), [q, k, v])
