"""Fused ops for the training step: softmax, softmax cross-entropy, LayerNorm, BatchNorm's
normalisation, training-mode BatchNorm and bias + activation. Each runs as one backend kernel
where the backend has it (see ``Backend.supports``) and otherwise as a composition of simple
ops."""
import numpy as np

from ..autograd import Tensor, TensorOp, no_grad
from ..backend_ndarray import ACTIVATIONS, Declined, NDArray, prod
from ..backend_ndarray.ndarray import _normalize_axes
from ..errors import ShapeError
from ..init import class_indices
from .elementwise import exp, relu
from .indexing import check_once, get_item
from .movement import broadcast_to, permute, reshape
from .reduce import logsumexp, summation


def _rows(a):
    return prod(a.shape[:-1]), a.shape[-1]


class Softmax(TensorOp):
    """Softmax over the last axis."""

    def compute(self, a):
        rows, cols = _rows(a)
        out = a._new()
        if a.device.backend.supports("softmax") and a.size:
            a.device.backend.softmax(a.compact()._handle, out._handle, rows, cols)
            return out
        lse = logsumexp(Tensor.make_const(a), (a.ndim - 1,), keepdims=True).realize_cached_data()
        return (a - lse.broadcast_to(a.shape)).exp()

    def gradient(self, out_grad, node):
        s = node.detach()
        dot = summation(out_grad * s, (s.ndim - 1,), keepdims=True)
        return s * (out_grad - broadcast_to(dot, s.shape))


def _along_last(fn, a, axis):
    """``fn`` (which works on the last axis) applied along ``axis``."""
    (axis,) = _normalize_axes(axis, a.ndim)
    if axis == a.ndim - 1:
        return fn(a)
    order = list(range(a.ndim))
    order[axis], order[-1] = order[-1], order[axis]
    return permute(fn(permute(a, order)), order)


def softmax(a, axis=-1):
    """Softmax along ``axis`` (the last by default), one kernel where the backend has it."""
    return _along_last(Softmax(), a, axis)


class LogSoftmax(TensorOp):
    """``a - logsumexp(a)`` along an axis (classic Needle's LogSoftmax is over axis 1 of a
    2-D input, which is this op's default there)."""

    def __init__(self, axis=-1):
        self.axis = axis

    def compute(self, a):
        # (a - m) - log(sum(exp(a - m))), as PyTorch: a - logsumexp(a) would round the small
        # log-sum away against a large m. A row whose max is infinite is NaN, as PyTorch's.
        (axis,) = _normalize_axes(self.axis, a.ndim)
        shifted = a - a.max(axis, keepdims=True).broadcast_to(a.shape)
        return shifted - shifted.exp().sum(axis, keepdims=True).log().broadcast_to(a.shape)

    def gradient(self, out_grad, node):
        (axis,) = _normalize_axes(self.axis, node.ndim)
        total = broadcast_to(summation(out_grad, (axis,), keepdims=True), node.shape)
        return out_grad - exp(node.detach()) * total


def log_softmax(a, axis=-1):
    """``log(softmax(a))`` along ``axis``, computed without the log of a small number."""
    return LogSoftmax(axis)(a)


def logsoftmax(a):
    """Classic Needle's ``logsoftmax``: along the last axis (axis 1 of its 2-D inputs)."""
    return LogSoftmax(-1)(a)


class SoftmaxCrossEntropy(TensorOp):
    """Mean softmax cross-entropy of ``(batch, classes)`` logits and integer labels."""

    def compute(self, logits, labels):
        rows, cols = logits.shape
        backend = logits.device.backend
        loss_rows, self.grad = logits._new((rows,)), logits._new()
        backend.cross_entropy(logits.compact()._handle, labels.compact()._handle,
                              loss_rows._handle, self.grad._handle, rows, cols)
        return loss_rows.sum() / rows

    def gradient(self, out_grad, node):
        # d(mean loss)/d(logits) = grad / rows: the 1/rows goes on the one-element out_grad
        rows = self.grad.shape[0]
        scale = broadcast_to(reshape(out_grad / rows, (1, 1)), self.grad.shape)
        return Tensor.make_const(self.grad) * scale, None


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy; ``labels`` hold class indices (any float or int dtype)."""
    if logits.ndim != 2:
        raise ShapeError(f"softmax cross-entropy expects (batch, classes) logits, got {logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise ShapeError(f"labels of shape {labels.shape} do not match logits {logits.shape}; "
                         f"expected ({logits.shape[0]},)")
    labels = _labels_like(labels, logits)
    if logits.device.backend.supports("cross_entropy"):
        return SoftmaxCrossEntropy()(logits, labels)
    # logsumexp(z - z_y) rather than logsumexp(z) - z_y: no cancellation of two large
    # numbers; z_y gathered (a one-hot product would turn a -inf logit into NaN)
    rows = logits.shape[0]
    picked = get_item(logits, (np.arange(rows), labels.realize_cached_data().numpy().astype(np.int64)))
    picked = broadcast_to(reshape(picked, (rows, 1)), logits.shape)
    return summation(logsumexp(logits - picked, (1,))) / rows


def _labels_like(labels, logits):
    """Labels as a constant of the logits' dtype, checked to be class indices.

    The check reads the labels back once per label array (it is remembered on the array),
    so a batch reused across steps pays for it once."""
    if isinstance(labels, Tensor):
        data = labels.realize_cached_data()
    else:
        data = NDArray(np.asarray(labels), device=logits.device, dtype=logits.dtype)
    classes = logits.shape[1]
    check_once(data, ("classes", classes, labels._version if isinstance(labels, Tensor) else None),
               lambda values: class_indices(values, classes))
    return Tensor.make_const(data if data.dtype == logits.dtype else data.astype(logits.dtype))


class LayerNorm(TensorOp):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last axis."""

    def __init__(self, eps):
        self.eps = eps

    def compute(self, x, weight, bias):
        rows, cols = _rows(x)
        backend = x.device.backend
        out = x._new()
        self.mean, self.rstd = x._new((rows,)), x._new((rows,))
        backend.layernorm(x.compact()._handle, weight.compact()._handle, bias.compact()._handle,
                          out._handle, self.mean._handle, self.rstd._handle, rows, cols, self.eps)
        return out

    def gradient(self, out_grad, node):
        x, weight, _ = (t.realize_cached_data() for t in node.inputs)
        rows, cols = _rows(x)
        dx, dw, db = x._new(), weight._new(), weight._new()
        x.device.backend.layernorm_backward(
            out_grad.realize_cached_data().compact()._handle, x.compact()._handle,
            weight.compact()._handle, self.mean._handle, self.rstd._handle, dx._handle,
            dw._handle, db._handle, rows, cols)
        return Tensor.make_const(dx), Tensor.make_const(dw), Tensor.make_const(db)


def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last axis with ``weight``/``bias`` of shape ``(x.shape[-1],)``."""
    cols = x.shape[-1]
    if weight.shape != (cols,) or bias.shape != (cols,):
        raise ShapeError(f"layer_norm: weight {weight.shape} and bias {bias.shape} must be "
                         f"({cols},) for input {x.shape}")
    if x.device.backend.supports("layernorm") and x.size:
        return LayerNorm(eps)(x, weight, bias)
    axis = (x.ndim - 1,)
    mean = broadcast_to(summation(x, axis, keepdims=True) / cols, x.shape)
    centered = x - mean
    var = broadcast_to(summation(centered * centered, axis, keepdims=True) / cols, x.shape)
    return centered / (var + eps) ** 0.5 * broadcast_to(weight, x.shape) + broadcast_to(bias, x.shape)


class BiasAct(TensorOp):
    """``act(a + bias)`` for ``(rows, cols)`` input and ``(cols,)`` bias, one kernel."""

    def __init__(self, act):
        self.act = act

    def compute(self, a, bias):
        rows, cols = _rows(a)
        out = a._new()
        a.device.backend.bias_act(a.compact()._handle, bias.compact()._handle, out._handle,
                                  rows, cols, self.act)
        return out

    def gradient(self, out_grad, node):
        g = out_grad
        if self.act == "relu":
            g = g * Tensor.make_const(node.realize_cached_data() > 0)
        axes = tuple(range(g.ndim - 1))
        return g, summation(g, axes)


def bias_act(a, bias, act="identity"):
    """``act(a + bias)`` with ``bias`` broadcast along the last axis; act in identity/relu."""
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown activation {act!r}; use one of {ACTIVATIONS}")
    if bias.shape != (a.shape[-1],):
        raise ShapeError(f"bias of shape {bias.shape} does not fit input {a.shape}")
    if a.device.backend.supports("bias_act") and a.size:
        return BiasAct(act)(a, bias)
    out = a + broadcast_to(bias, a.shape)
    return relu(out) if act == "relu" else out





class BatchNormAct(TensorOp):
    """``act((x [+ x_bias] - mean) / sqrt(var + eps) * weight + bias)`` with per-channel
    vectors along ``axis``; inputs ``(x, mean, var, weight, bias[, x_bias])``."""

    def __init__(self, axis, eps, act):
        self.axis, self.eps, self.act = axis, eps, act

    def compute(self, x, mean, var, weight, bias, x_bias=None):
        # the kernel sees the buffer as (outer, channels, inner), whatever the dense layout
        if x.is_compact():
            inner, out, xa = prod(x.shape[self.axis + 1:]), x._new(), x
        else:
            order = x.memory_order()
            if order is None:
                x, order = x.compact(), tuple(range(x.ndim))
            inner = prod(x.shape[a] for a in order[order.index(self.axis) + 1:])
            out, (xa,) = x._new_like()
        x.device.backend.batchnorm(
            xa._handle, x_bias.compact()._handle if x_bias is not None else None,
            mean.compact()._handle, var.compact()._handle, weight.compact()._handle,
            bias.compact()._handle, out._handle, x.shape[self.axis], inner, self.eps, self.act)
        return out

    def gradient(self, out_grad, node):
        return _batch_norm_gradient(out_grad, node, self.axis, self.eps, self.act)


def _per_channel(v, like, axis):
    """A (C,) tensor broadcast along every axis of ``like`` but ``axis``."""
    shape = tuple(like.shape[axis] if a == axis else 1 for a in range(like.ndim))
    return broadcast_to(reshape(v, shape), like.shape)


def _batch_norm_gradient(out_grad, node, axis, eps, act):
    x, mean, var, weight = node.inputs[:4]
    x_bias = node.inputs[5] if len(node.inputs) > 5 else None
    g = out_grad
    if act == "relu":
        g = g * Tensor.make_const(node.realize_cached_data() > 0)
    others = tuple(a for a in range(x.ndim) if a != axis)
    inv_std = (var + eps) ** -0.5
    centered = (x + _per_channel(x_bias, x, axis) if x_bias is not None else x) \
        - _per_channel(mean, x, axis)
    dx = g * _per_channel(weight * inv_std, x, axis)
    dsum, gc = summation(dx, others), summation(g * centered, others)
    grads = [dx, -dsum, gc * weight * inv_std ** 3 * -0.5, gc * inv_std, summation(g, others)]
    if x_bias is not None:
        grads.append(dsum)
    return tuple(gr if t.requires_grad else None for gr, t in zip(grads, node.inputs))


def batch_norm(x, mean, var, weight, bias, eps=1e-5, act="identity", axis=1, x_bias=None):
    """BatchNorm's normalisation with the given statistics, as one kernel where the backend
    has it: ``act((x + x_bias - mean) / sqrt(var + eps) * weight + bias)``, every vector of
    shape ``(x.shape[axis],)`` broadcast along the other axes. ``x_bias`` (optional) is a
    preceding convolution's bias, so conv bias + BatchNorm + ReLU is one pass. Gradients
    flow to every input (the batch statistics of training mode included)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"batch_norm: unknown activation {act!r}; use one of {ACTIVATIONS}")
    shape = x.shape
    if not 0 <= axis < len(shape):
        raise ShapeError(f"batch_norm: axis {axis} is out of range for input {shape}")
    vectors = [mean, var, weight, bias] + ([x_bias] if x_bias is not None else [])
    channels = (shape[axis],)
    for v in vectors:
        if v.shape != channels:
            raise ShapeError(f"batch_norm: statistics and parameters must have shape "
                             f"{channels} for input {shape} along axis {axis}, got "
                             f"{[v.shape for v in vectors]}")
    if x.device.backend.supports("batchnorm") and x.size:
        return BatchNormAct(axis, eps, act)(x, *vectors)
    if x_bias is not None:
        x = x + _per_channel(x_bias, x, axis)
    y = (x - _per_channel(mean, x, axis)) * _per_channel(weight * (var + eps) ** -0.5, x, axis) \
        + _per_channel(bias, x, axis)
    return relu(y) if act == "relu" else y


class BatchNormTrain(TensorOp):
    """Training-mode BatchNorm of NCHW-like input (channels on axis 1) in one backend call:
    the batch statistics of ``v = x (+ x_bias)``, ``act((v - mean) * rstd * weight + bias)``
    and, given ``running = (running_mean, running_var, momentum)``, the running statistics'
    update; inputs ``(x, weight, bias)`` or ``(x, weight, bias, x_bias)``. The op keeps
    ``mean``, ``var`` and ``rstd`` (its gradient reads mean and rstd)."""

    def __init__(self, eps, act="identity", running=None):
        self.eps, self.act, self.running = eps, act, running

    def compute(self, x, weight, bias, x_bias=None):
        channels, inner = x.shape[1], prod(x.shape[2:])
        out = x._new()
        self.mean, self.var, self.rstd = weight._new(), weight._new(), weight._new()
        extra = {}
        if x_bias is not None:
            extra["x_bias"] = x_bias.compact()._handle
        if self.running is not None:
            running_mean, running_var, momentum = self.running
            n = x.size // channels
            extra.update(running_mean=running_mean.realize_cached_data()._handle,
                         running_var=running_var.realize_cached_data()._handle,
                         momentum=momentum, unbiased=n / (n - 1))
        x.device.backend.batchnorm_train(
            x.compact()._handle, weight.compact()._handle, bias.compact()._handle, out._handle,
            self.mean._handle, self.var._handle, self.rstd._handle, channels, inner, self.eps,
            self.act, **extra)
        if self.running is not None:
            self.running[0]._version += 1
            self.running[1]._version += 1
        return out

    def gradient(self, out_grad, node):
        x, weight = (t.realize_cached_data() for t in node.inputs[:2])
        x_bias = node.inputs[3].realize_cached_data() if len(node.inputs) == 4 else None
        dx, dw, db = x._new(), weight._new(), weight._new()
        dxb = weight._new() if x_bias is not None else None
        out = node.realize_cached_data() if self.act == "relu" else None
        try:
            x.device.backend.batchnorm_train_backward(
                out_grad.realize_cached_data().compact()._handle, x.compact()._handle,
                weight.compact()._handle, self.mean._handle, self.rstd._handle, dx._handle,
                dw._handle, db._handle, x.shape[1], prod(x.shape[2:]), self.act,
                out._handle if out is not None else None,
                x_bias.compact()._handle if x_bias is not None else None,
                dxb._handle if dxb is not None else None)
        except Declined:
            return self._composed_gradient(out_grad, node)
        grads = (Tensor.make_const(dx), Tensor.make_const(dw), Tensor.make_const(db))
        return grads + (Tensor.make_const(dxb),) if dxb is not None else grads

    def _composed_gradient(self, out_grad, node):
        x, weight = node.inputs[:2]
        if len(node.inputs) == 4:
            x = x + _per_channel(node.inputs[3], x, 1)
        if self.act == "relu":
            out_grad = out_grad * Tensor.make_const(node.realize_cached_data() > 0)
        axes = tuple(a for a in range(x.ndim) if a != 1)
        count = x.size // x.shape[1]
        rstd = Tensor.make_const(self.rstd)
        xhat = (x - _per_channel(Tensor.make_const(self.mean), x, 1)) * _per_channel(rstd, x, 1)
        dw, db = summation(out_grad * xhat, axes), summation(out_grad, axes)
        dx = _per_channel(weight * rstd / count, x, 1) * (
            out_grad * count - _per_channel(db, x, 1) - xhat * _per_channel(dw, x, 1))
        return (dx, dw, db, summation(dx, axes)) if len(node.inputs) == 4 else (dx, dw, db)


def batch_norm_train(x, weight, bias, eps=1e-5, act="identity", running=None, x_bias=None):
    """Training-mode BatchNorm over every axis but 1 (BatchNorm1d's (N, C), BatchNorm2d's
    NCHW) of ``v = x + x_bias`` (``x_bias``, a per-channel bias such as a preceding conv's,
    is optional): ``act((v - mean) / sqrt(var + eps) * weight + bias)`` with the batch's mean
    and biased variance of v. Returns ``(y, mean, var)``; gradients flow from y to x,
    weight, bias and x_bias, and mean and var are constants. ``running = (running_mean,
    running_var, momentum)`` updates those buffers in place as :func:`update_running_stats`
    does. One backend call for all of it where the backend has one, else a composition of
    reductions, :func:`batch_norm` and :func:`update_running_stats`."""
    if act not in ACTIVATIONS:
        raise ValueError(f"batch_norm_train: unknown activation {act!r}; use one of "
                         f"{ACTIVATIONS}")
    if x.ndim < 2:
        raise ShapeError(f"batch_norm_train: input must have a channel axis 1, got {x.shape}")
    channels = (x.shape[1],)
    if weight.shape != channels or bias.shape != channels or (
            x_bias is not None and x_bias.shape != channels):
        raise ShapeError(f"batch_norm_train: weight {weight.shape}, bias {bias.shape}"
                         f"{'' if x_bias is None else f' and x_bias {x_bias.shape}'} must be "
                         f"{channels} for input {x.shape}")
    n = x.size // channels[0]
    if running is not None:
        _check_running(running, channels[0], n)
    if (x.device.backend.supports("batchnorm_train", x.dtype) and x.size
            and (running is None or all(r.realize_cached_data().is_compact()
                                        for r in running[:2]))):
        op = BatchNormTrain(eps, act, running)
        try:
            y = op(x, weight, bias) if x_bias is None else op(x, weight, bias, x_bias)
        except Declined:
            pass
        else:
            return y, Tensor.make_const(op.mean), Tensor.make_const(op.var)
    if x_bias is not None:
        x = x + _per_channel(x_bias, x, 1)
    axes = tuple(a for a in range(x.ndim) if a != 1)
    mean = summation(x, axes) / n
    centered = x - _per_channel(mean, x, 1)
    var = summation(centered * centered, axes) / n
    y = batch_norm(x, mean, var, weight, bias, eps, act)
    if running is not None:
        update_running_stats(running[0], running[1], mean, var, running[2], n)
    return y, mean.detach(), var.detach()


def _check_running(running, channels, n):
    running_mean, running_var, _ = running
    if running_mean.size != channels or running_var.size != channels:
        raise ShapeError(f"batch_norm_train: running_mean {running_mean.shape} and running_var "
                         f"{running_var.shape} must have one element per channel ({channels})")
    if n < 2:
        raise ValueError(f"batch_norm_train: the unbiased running variance needs n > 1 "
                         f"values per channel, got n = {n}")


def update_running_stats(running_mean, running_var, mean, var, momentum, n):
    """BatchNorm's running statistics updated in place from a batch's per-channel ``mean``
    and biased ``var`` over ``n`` values per channel, as PyTorch updates them:
    ``running = running * (1 - momentum) + stat * momentum``, the variance unbiased
    (``* n / (n - 1)``). One backend kernel for both where the backend has it, else a few
    in-place Tensor ops; either way the buffers' versions move on."""
    channels = running_mean.size
    if any(t.size != channels for t in (running_var, mean, var)):
        raise ShapeError(f"update_running_stats: running_mean {running_mean.shape}, running_var "
                         f"{running_var.shape}, mean {mean.shape} and var {var.shape} must have "
                         f"one element per channel each")
    if n < 2:
        raise ValueError(f"update_running_stats: the unbiased variance needs n > 1 values per "
                         f"channel, got n = {n}")
    unbiased = n / (n - 1)
    backend = running_mean.device.backend
    rm, rv = running_mean.realize_cached_data(), running_var.realize_cached_data()
    if backend.supports("running_stats", rm.dtype) and rm.is_compact() and rv.is_compact():
        backend.running_stats(rm._handle, rv._handle, mean.realize_cached_data().compact()._handle,
                              var.realize_cached_data().compact()._handle, momentum, unbiased)
        running_mean._version += 1
        running_var._version += 1
        return
    with no_grad():  # in place, as PyTorch: a compiled step updates the same buffers every call
        running_mean[...] = running_mean * (1 - momentum) + mean * momentum
        running_var[...] = running_var * (1 - momentum) + var * unbiased * momentum
