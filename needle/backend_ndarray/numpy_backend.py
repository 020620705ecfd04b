"""The NumPy backend: the executable specification of the backend contract.

Every other device is tested against it. Each op is a line or two of NumPy on flat
buffers; matmul goes through BLAS and conv through a strided im2col view + matmul.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from .contract import Backend

_UNARY = {
    "neg": np.negative,
    "exp": np.exp,
    "log": np.log,
    "tanh": np.tanh,
    # exp(-log(1 + e^-x)) never overflows, unlike 1 / (1 + e^-x)
    "sigmoid": lambda x: np.exp(-np.logaddexp(0, -x)).astype(x.dtype, copy=False),
    "sqrt": np.sqrt,
    "relu": lambda x: np.maximum(x, 0),
    "abs": np.abs,
    "sin": np.sin,
    "cos": np.cos,
}

_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "pow": np.power, "maximum": np.maximum, "minimum": np.minimum,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal,
}

_REDUCE = {"sum": np.sum, "max": np.max}


def _view(buf, shape, strides, offset):
    """The strided view of a flat buffer (strides in elements; negative strides allowed)."""
    item = buf.itemsize
    base = buf[offset:] if offset < buf.size else buf[:0]
    return as_strided(base, shape=shape, strides=tuple(s * item for s in strides))


class NumpyBackend(Backend):
    name = "cpu"
    dtypes = ("float32", "float64")

    # memory
    def alloc(self, size, dtype):
        return np.empty(size, dtype=dtype)

    def from_numpy(self, array, out):
        out[:] = array.reshape(-1)

    def to_numpy(self, a, shape, strides, offset):
        return _view(a, shape, strides, offset).copy()

    # movement
    def fill(self, out, value):
        out.fill(value)

    def compact(self, a, out, shape, strides, offset):
        out.reshape(shape)[...] = _view(a, shape, strides, offset)

    def ewise_setitem(self, a, out, shape, strides, offset):
        _view(out, shape, strides, offset)[...] = a.reshape(shape)

    def scalar_setitem(self, size, value, out, shape, strides, offset):
        _view(out, shape, strides, offset)[...] = value

    # arithmetic
    def unary(self, op, a, out):
        with np.errstate(all="ignore"):
            out[:] = _UNARY[op](a)

    def binary(self, op, a, b, out):
        with np.errstate(all="ignore"):
            out[:] = _BINARY[op](a, b)

    def scalar(self, op, a, value, out):
        with np.errstate(all="ignore"):
            out[:] = _BINARY[op](a, a.dtype.type(value))

    def select(self, cond, a, b, out):
        out[:] = np.where(cond != 0, a, b)

    def take(self, a, index, out):
        np.take(a, index, out=out)

    def scatter_add(self, a, index, out):
        np.add.at(out, index, a)

    def reduce(self, op, a, out, reduce_size):
        _REDUCE[op](a.reshape(-1, reduce_size), axis=1, out=out)

    def matmul(self, a, b, out, batch, m, k, n):
        if batch == 1:  # plain 2-D product: one BLAS gemm
            np.matmul(a.reshape(m, k), b.reshape(k, n), out=out.reshape(m, n))
        else:
            np.matmul(a.reshape(batch, m, k), b.reshape(batch, k, n),
                      out=out.reshape(batch, m, n))

    def conv2d(self, a, w, out, in_shape, kernel, out_channels, stride):
        n, h, wd, c = in_shape
        ho, wo = (h - kernel) // stride + 1, (wd - kernel) // stride + 1
        sn, sh, sw, sc = h * wd * c, wd * c, c, 1
        # im2col as a strided view; the reshape makes the one copy matmul needs
        cols = _view(a, (n, ho, wo, kernel, kernel, c),
                     (sn, sh * stride, sw * stride, sh, sw, sc), 0)
        cols = cols.reshape(n * ho * wo, kernel * kernel * c)
        np.matmul(cols, w.reshape(kernel * kernel * c, out_channels),
                  out=out.reshape(n * ho * wo, out_channels))

    # fused: the reference semantics the GPU kernels are tested against
    # Infinities and NaN as in PyTorch: logsumexp of a row is +inf if it holds +inf, -inf if
    # every element is -inf, NaN if it holds NaN; softmax and cross_entropy rows whose max is
    # not finite are NaN.
    def logsumexp(self, a, out, rows, cols):
        out[:] = _logsumexp_rows(a.reshape(rows, cols))

    def softmax(self, a, out, rows, cols):
        x = a.reshape(rows, cols)
        with np.errstate(all="ignore"):  # inf - inf: NaN, as in torch
            e = np.exp(x - x.max(axis=1, keepdims=True))
            out.reshape(rows, cols)[...] = e / e.sum(axis=1, keepdims=True)

    def cross_entropy(self, logits, labels, loss, grad, rows, cols):
        x = logits.reshape(rows, cols)
        idx, valid = _row_ids(labels, cols)  # a label outside (NaN too): a NaN loss, as on GPUs
        m = x.max(axis=1, keepdims=True)
        with np.errstate(all="ignore"):
            e = np.exp(x - m)
            s = e.sum(axis=1, keepdims=True)
            # (m - x_label) + log(s), not logsumexp - x_label: the large m cancels exactly
            # before the small log(s) is added (logits [2000, 1990] lose 4.5e-5 otherwise)
            loss[:] = np.where(valid, (m[:, 0] - x[np.arange(rows), idx]) + np.log(s[:, 0]),
                               np.nan)
            g = grad.reshape(rows, cols)
            g[...] = e / s
        g[np.arange(rows)[valid], idx[valid]] -= 1

    def embedding(self, weight, ids, out, n, rows, dim):
        index, valid = _row_ids(ids, rows)
        with np.errstate(invalid="ignore"):
            out.reshape(n, dim)[...] = np.where(valid[:, None], weight.reshape(rows, dim)[index],
                                                np.nan)

    def embedding_backward(self, grad, ids, dweight, n, rows, dim):
        index, valid = _row_ids(ids, rows)
        dw = dweight.reshape(rows, dim)
        dw[...] = 0
        np.add.at(dw, index[valid], grad.reshape(n, dim)[valid])

    def running_stats(self, running_mean, running_var, mean, var, momentum, unbiased):
        keep = 1 - momentum
        running_mean[:] = running_mean * keep + mean * momentum
        running_var[:] = running_var * keep + var * unbiased * momentum

    def lstm(self, xp, w_hh, h0, c0, hs, cs, gates, steps, batch, hidden):
        xp, w = xp.reshape(steps, batch, 4 * hidden), w_hh.reshape(hidden, 4 * hidden)
        hs, cs = hs.reshape(steps, batch, hidden), cs.reshape(steps, batch, hidden)
        gates = gates.reshape(steps, batch, 4, hidden)
        h, c = h0.reshape(batch, hidden), c0.reshape(batch, hidden)
        with np.errstate(all="ignore"):
            for t in range(steps):
                z = (xp[t] + h @ w).reshape(batch, 4, hidden)
                i, f, g, o = _UNARY["sigmoid"](z[:, 0]), _UNARY["sigmoid"](z[:, 1]), \
                    np.tanh(z[:, 2]), _UNARY["sigmoid"](z[:, 3])
                c = cs[t] = f * c + i * g
                h = hs[t] = o * np.tanh(c)
                gates[t] = np.stack([i, f, g, o], axis=1)

    def lstm_backward(self, dhs, dcs, w_hh, c0, cs, gates, dz, dh0, dc0, steps, batch, hidden):
        w = w_hh.reshape(hidden, 4 * hidden)
        dhs, dcs = dhs.reshape(steps, batch, hidden), dcs.reshape(steps, batch, hidden)
        cs, gates = cs.reshape(steps, batch, hidden), gates.reshape(steps, batch, 4, hidden)
        dz = dz.reshape(steps, batch, 4, hidden)
        dh, dc = np.zeros((batch, hidden), cs.dtype), np.zeros((batch, hidden), cs.dtype)
        with np.errstate(all="ignore"):
            for t in reversed(range(steps)):
                i, f, g, o = (gates[t, :, j] for j in range(4))
                c_prev = cs[t - 1] if t else c0.reshape(batch, hidden)
                dh = dhs[t] + dh
                tc = np.tanh(cs[t])
                dc = dcs[t] + dc + dh * o * (1 - tc * tc)
                dz[t, :, 0] = dc * g * i * (1 - i)
                dz[t, :, 1] = dc * c_prev * f * (1 - f)
                dz[t, :, 2] = dc * i * (1 - g * g)
                dz[t, :, 3] = dh * tc * o * (1 - o)
                dc = dc * f
                dh = dz[t].reshape(batch, 4 * hidden) @ w.T
        dh0[:], dc0[:] = dh.reshape(-1), dc.reshape(-1)

    def layernorm(self, x, weight, bias, out, mean, rstd, rows, cols, eps):
        x = x.reshape(rows, cols)
        mu = x.mean(axis=1)
        r = 1.0 / np.sqrt(((x - mu[:, None]) ** 2).mean(axis=1) + eps)
        mean[:], rstd[:] = mu, r
        out.reshape(rows, cols)[...] = (x - mu[:, None]) * r[:, None] * weight + bias

    def layernorm_backward(self, grad, x, weight, mean, rstd, dx, dweight, dbias, rows, cols):
        g, x = grad.reshape(rows, cols), x.reshape(rows, cols)
        xhat = (x - mean[:, None]) * rstd[:, None]
        dweight[:] = (g * xhat).sum(axis=0)
        dbias[:] = g.sum(axis=0)
        gx = g * weight
        dx.reshape(rows, cols)[...] = rstd[:, None] * (
            gx - gx.mean(axis=1, keepdims=True) - xhat * (gx * xhat).mean(axis=1, keepdims=True))

    def bias_act(self, a, bias, out, rows, cols, act):
        y = a.reshape(rows, cols) + bias
        out.reshape(rows, cols)[...] = np.maximum(y, 0) if act == "relu" else y

    def batchnorm(self, x, x_bias, mean, var, weight, bias, out, channels, inner, eps, act):
        x = x.reshape(-1, channels, inner)
        if x_bias is not None:
            x = x + x_bias[:, None]
        y = (x - mean[:, None]) / np.sqrt(var[:, None] + eps) * weight[:, None] + bias[:, None]
        out.reshape(x.shape)[...] = np.maximum(y, 0) if act == "relu" else y

    def batchnorm_train(self, x, weight, bias, out, mean, var, rstd, channels, inner, eps,
                        act="identity", running_mean=None, running_var=None, momentum=0.0,
                        unbiased=1.0, x_bias=None):
        x = x.reshape(-1, channels, inner)
        if x_bias is not None:
            x = x + x_bias[:, None]
        mu = x.mean(axis=(0, 2))
        v = ((x - mu[:, None]) ** 2).mean(axis=(0, 2))
        r = 1.0 / np.sqrt(v + eps)
        mean[:], var[:], rstd[:] = mu, v, r
        y = (x - mu[:, None]) * (r * weight)[:, None] + bias[:, None]
        out.reshape(x.shape)[...] = np.maximum(y, 0) if act == "relu" else y
        if running_mean is not None:
            self.running_stats(running_mean, running_var, mean, var, momentum, unbiased)

    def batchnorm_train_backward(self, grad, x, weight, mean, rstd, dx, dweight, dbias,
                                 channels, inner, act="identity", out=None, x_bias=None,
                                 dx_bias=None):
        g, x = grad.reshape(-1, channels, inner), x.reshape(-1, channels, inner)
        if x_bias is not None:
            x = x + x_bias[:, None]
        if act == "relu":
            g = np.where(out.reshape(g.shape) > 0, g, 0)
        xhat = (x - mean[:, None]) * rstd[:, None]
        dweight[:] = (g * xhat).sum(axis=(0, 2))
        dbias[:] = g.sum(axis=(0, 2))
        count = g.size // channels
        d = dx.reshape(g.shape)
        d[...] = (weight * rstd / count)[:, None] * (
            count * g - dbias[:, None] - xhat * dweight[:, None])
        if dx_bias is not None:
            dx_bias[:] = d.sum(axis=(0, 2))

    def sgd_update(self, param, grad, buf, lr, momentum, weight_decay, first_step):
        g = grad + weight_decay * param if weight_decay else grad
        if buf is not None:
            if first_step:
                buf[:] = g
            else:
                buf *= momentum
                buf += g
            g = buf
        param -= param.dtype.type(lr) * g

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
        g = grad + weight_decay * param if weight_decay else grad
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** step)
        v_hat = v / (1 - beta2 ** step)
        param -= (lr * m_hat / (np.sqrt(v_hat) + eps)).astype(param.dtype, copy=False)

    def linear(self, x, w, bias, out, m, k, n, act):
        y = x.reshape(m, k) @ w.reshape(k, n) + bias
        out.reshape(m, n)[...] = _LINEAR_ACT[act](y)

    def linear_backward(self, grad, x, w, dx, dw, dbias, m, k, n):
        g = grad.reshape(m, n)
        if dx is not None:
            np.matmul(g, w.reshape(k, n).T, out=dx.reshape(m, k))
        np.matmul(x.reshape(m, k).T, g, out=dw.reshape(k, n))
        g.sum(axis=0, out=dbias)

    def conv(self, x, w, out, in_shape, kernel, out_channels, stride, padding,
             channels_first=False):
        p = padding
        n, h, wd, c = in_shape
        x = x.reshape(n, c, h, wd).transpose(0, 2, 3, 1) if channels_first else x.reshape(in_shape)
        padded = np.ascontiguousarray(np.pad(x, ((0, 0), (p, p), (p, p), (0, 0))))
        target = np.empty(out.size, out.dtype) if channels_first else out
        self.conv2d(padded.reshape(-1), w, target, padded.shape, kernel, out_channels, stride)
        if channels_first:
            ho, wo = (h + 2 * p - kernel) // stride + 1, (wd + 2 * p - kernel) // stride + 1
            out.reshape(n, out_channels, ho, wo)[...] = \
                target.reshape(n, ho, wo, out_channels).transpose(0, 3, 1, 2)

    def conv_backward(self, grad, x, w, dx, dw, in_shape, kernel, out_channels, stride, padding,
                      channels_first=False):
        n, h, wd, c = in_shape
        k, s, p = kernel, stride, padding
        ho, wo = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
        if channels_first:  # the NHWC computation below, on NHWC copies of grad and x
            grad = np.ascontiguousarray(grad.reshape(n, out_channels, ho, wo).transpose(0, 2, 3, 1))
            x = x.reshape(n, c, h, wd).transpose(0, 2, 3, 1)
        g = grad.reshape(n * ho * wo, out_channels)
        w4 = w.reshape(k, k, c, out_channels)
        padded = np.pad(x.reshape(in_shape), ((0, 0), (p, p), (p, p), (0, 0)))
        # kernel tap (i, j) touches padded rows i, i + s, ... and columns j, j + s, ...
        taps = [(i, j, (slice(None), slice(i, i + s * (ho - 1) + 1, s),
                        slice(j, j + s * (wo - 1) + 1, s))) for i in range(k) for j in range(k)]
        if dw is not None:
            dw4 = dw.reshape(k, k, c, out_channels)
            for i, j, window in taps:
                dw4[i, j] = padded[window].reshape(-1, c).T @ g
        if dx is not None:
            dpad = np.zeros_like(padded)
            for i, j, window in taps:
                dpad[window] += (g @ w4[i, j].T).reshape(n, ho, wo, c)
            dx_nhwc = dpad[:, p:p + h, p:p + wd]
            if channels_first:
                dx.reshape(n, c, h, wd)[...] = dx_nhwc.transpose(0, 3, 1, 2)
            else:
                dx.reshape(in_shape)[...] = dx_nhwc

    def attention(self, q, k, v, out, stats, batch, seq_q, seq_k, dim, scale, causal):
        scores = _attention_scores(q, k, batch, seq_q, seq_k, dim, scale, causal)
        lse = _logsumexp_rows(scores)
        np.matmul(np.exp(scores - lse[..., None]), v.reshape(batch, seq_k, dim),
                  out=out.reshape(batch, seq_q, dim))
        stats.reshape(batch, seq_q)[...] = lse

    def attention_backward(self, q, k, v, out, stats, grad, dq, dk, dv, batch, seq_q, seq_k,
                           dim, scale, causal):
        qm, km, vm = (t.reshape(batch, -1, dim) for t in (q, k, v))
        g, o = grad.reshape(batch, seq_q, dim), out.reshape(batch, seq_q, dim)
        scores = _attention_scores(q, k, batch, seq_q, seq_k, dim, scale, causal)
        probs = np.exp(scores - stats.reshape(batch, seq_q, 1))
        np.matmul(probs.transpose(0, 2, 1), g, out=dv.reshape(batch, seq_k, dim))
        dp = g @ vm.transpose(0, 2, 1)
        # softmax backward: row sums of dP * P equal the row dot products of dO and O
        ds = probs * (dp - (g * o).sum(axis=2, keepdims=True)) * scale
        np.matmul(ds, km, out=dq.reshape(batch, seq_q, dim))
        np.matmul(ds.transpose(0, 2, 1), qm, out=dk.reshape(batch, seq_k, dim))


def _gelu_tanh(y):
    return 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3)))


_LINEAR_ACT = {"identity": lambda y: y, "relu": lambda y: np.maximum(y, 0), "gelu": _gelu_tanh}


def _attention_scores(q, k, batch, seq_q, seq_k, dim, scale, causal):
    scores = q.reshape(batch, seq_q, dim) @ k.reshape(batch, seq_k, dim).transpose(0, 2, 1)
    scores *= scale
    if causal:
        scores[:, np.triu(np.ones((seq_q, seq_k), dtype=bool), 1)] = -np.inf
    return scores


def _row_ids(ids, rows):
    """Embedding ids or class labels (floats) as indices, and which lie in ``[0, rows)``
    (the others, NaN too, index 0, to be masked)."""
    valid = (ids >= 0) & (ids < rows)
    return np.where(valid, ids, 0).astype(np.int64), valid


def _logsumexp_rows(x):
    """logsumexp over the last axis, the max subtracted; a max that is not finite (+inf,
    -inf for a row of -inf, NaN) is the answer itself."""
    m = x.max(axis=-1, keepdims=True)
    with np.errstate(all="ignore"):
        lse = np.log(np.exp(x - m).sum(axis=-1, keepdims=True)) + m
    return np.where(np.isfinite(m), lse, m)[..., 0]
