"""The backend contract: the one op table every Needle device implements.

A backend works on *flat, compact buffers* and knows nothing about views. Every view
(reshape, permute, broadcast, slice, flip) lives in :class:`needle.backend_ndarray.NDArray`,
which hands a backend either a compact buffer or an explicit ``(shape, strides, offset)``
description of a strided view to copy.

Adding a device means writing one class derived from :class:`Backend` in a package of its
own and naming it in ``device.py``'s registry. Nothing else in Needle changes.

Op table (grouped as tinygrad groups its ops):

=========== ===================================================================
group       methods
=========== ===================================================================
memory      ``alloc``, ``from_numpy``, ``to_numpy``, ``synchronize``
queueing    ``one_submission()``: a context manager batching its block's work
movement    ``fill``, ``compact``, ``ewise_setitem``, ``scalar_setitem``
unary       ``unary(op, a, out)`` for ``op`` in :data:`UNARY_OPS`
binary      ``binary(op, a, b, out)`` for ``op`` in :data:`BINARY_OPS`
scalar      ``scalar(op, a, value, out)``: ``out = op(a, value)``, same op names
ternary     ``select(cond, a, b, out)``: ``out = a if cond != 0 else b``, per element
reduce      ``reduce(op, a, out, reduce_size)`` for ``op`` in :data:`REDUCE_OPS`
gather      ``take(a, index, out)``, ``scatter_add(a, index, out)``
matmul      ``matmul(a, b, out, batch, m, k, n)``
conv        ``conv2d(a, w, out, in_shape, kernel, out_channels, stride)``
fused       ``logsumexp``, ``softmax``, ``cross_entropy``, ``layernorm``,
            ``layernorm_backward``, ``bias_act``, ``batchnorm``, ``running_stats``,
            ``sgd_update``, ``adam_update``
layers      ``linear``, ``linear_backward``, ``conv``, ``conv_backward``,
            ``attention``, ``attention_backward``, ``embedding``, ``embedding_backward``,
            ``lstm``, ``lstm_backward``
=========== ===================================================================

The *fused* and *layers* groups are optional: ``backend.supports(name)`` says whether a
backend has an op, and the ops layer falls back to a composition of the other ops when it
does not. Fused ops work on rows: ``rows`` independent rows of ``cols`` contiguous
elements.

Conventions:

* Buffers are backend objects with a ``size`` attribute (number of elements) and a
  ``dtype`` attribute (a ``numpy.dtype``). Strides and offsets are in *elements*.
* Comparison ops produce 1.0 / 0.0 in the input dtype (as classic Needle does).
* ``select`` is a true select, not arithmetic: a NaN or infinity in the branch not taken
  never reaches ``out`` (``cond * a + (1 - cond) * b`` would leak it).
* ``reduce`` treats ``a`` as a row-major ``(out.size, reduce_size)`` matrix and reduces rows.
* ``matmul`` computes ``batch`` independent row-major ``(m, k) @ (k, n)`` products.
* ``conv2d`` takes an already padded NHWC input ``in_shape = (N, H, W, C)``, weights
  ``(kernel, kernel, C, out_channels)``, and writes ``(N, Ho, Wo, out_channels)`` with
  ``Ho = (H - kernel) // stride + 1``.
* ``with backend.one_submission():`` asks that the block's work reach the device in one
  submission (webgpu: one ``queue.submit``); it is a hint, a no-op where a backend has no
  such batching, and it never waits for the work.
* Floating-point exceptions are not errors: ``log(-1)`` is NaN, as on a GPU.
* NaN and infinities behave as in NumPy and PyTorch: ``max``, ``maximum``, ``minimum`` and
  ``relu`` of a NaN are NaN, comparisons with a NaN are false but ``ne``; logsumexp of a row
  holding +inf is +inf, of a row of -inf is -inf; softmax and cross_entropy rows whose max
  is not finite are NaN.
"""
import contextlib

import numpy as np

UNARY_OPS = ("neg", "exp", "log", "tanh", "sigmoid", "sqrt", "relu", "abs", "sin", "cos")
BINARY_OPS = ("add", "sub", "mul", "div", "pow", "maximum", "minimum",
              "eq", "ne", "lt", "le", "gt", "ge")
REDUCE_OPS = ("sum", "max")
FUSED_OPS = ("logsumexp", "softmax", "cross_entropy", "layernorm", "layernorm_backward",
             "bias_act", "batchnorm", "running_stats", "sgd_update", "adam_update")
#: whole layers as optional ops, for backends that hand them to a vendor library (cudnn) or
#: have a kernel of their own for them (embedding: the ids read on the device)
LAYER_OPS = ("linear", "linear_backward", "conv", "conv_backward", "attention",
             "attention_backward", "batchnorm_train", "batchnorm_train_backward", "embedding",
             "embedding_backward", "lstm", "lstm_backward")
#: one call for a list of tensors (each its own op's update), for backends where a launch
#: costs more host time than the update's work
FOREACH_OPS = ("sgd_update_many", "adam_update_many")
ACTIVATIONS = ("identity", "relu")
#: activations the fused ``linear`` op applies (a matmul epilogue); GELU is the tanh form
LINEAR_ACTIVATIONS = ("identity", "relu", "gelu")

#: (backend class, op) -> whether the class implements the op (see Backend.supports)
_IMPLEMENTS = {}


class Declined(Exception):
    """A backend has no implementation of a layer op for these arguments (a vendor library
    without an engine for the shape): the op composes it from simple ops instead."""


class Backend:
    """Base class of a device backend. Subclasses implement every method below.

    A method a backend does not override raises :class:`NotImplementedError` naming the
    backend and the op, so a missing op is never silent.
    """

    name = "abstract"
    #: dtypes this backend can hold, as numpy dtype names
    dtypes = ("float32",)
    #: the largest head dim its ``attention`` takes (None: any); beyond it, callers compose
    attention_max_dim = None

    def unavailable_reason(self):
        """``None`` if this backend can run here, else a sentence saying why not."""
        return None

    def _missing(self, op):
        raise NotImplementedError(f"the {self.name} backend does not implement '{op}'")

    # -- memory -------------------------------------------------------------------------
    def alloc(self, size, dtype):
        """A new uninitialised flat buffer of ``size`` elements of ``dtype``."""
        self._missing("alloc")

    def from_numpy(self, array, out):
        """Copy a C-contiguous numpy array (same dtype, same size) into buffer ``out``."""
        self._missing("from_numpy")

    def to_numpy(self, a, shape, strides, offset):
        """Return a new numpy array holding the strided view of ``a``."""
        self._missing("to_numpy")

    def synchronize(self):
        """Block until all queued work on this device has finished."""

    def one_submission(self):
        """A context manager asking that the work of its block go to the device in one
        submission; by default a no-op (a backend that batches submissions overrides it)."""
        return contextlib.nullcontext()

    # -- movement -----------------------------------------------------------------------
    def fill(self, out, value):
        self._missing("fill")

    def compact(self, a, out, shape, strides, offset):
        """``out[i] = a[view(i)]``: gather the strided view of ``a`` into compact ``out``."""
        self._missing("compact")

    def ewise_setitem(self, a, out, shape, strides, offset):
        """``out[view(i)] = a[i]``: scatter compact ``a`` into the strided view of ``out``."""
        self._missing("ewise_setitem")

    def scalar_setitem(self, size, value, out, shape, strides, offset):
        """``out[view(i)] = value`` for the ``size`` elements of the view."""
        self._missing("scalar_setitem")

    # -- arithmetic ---------------------------------------------------------------------
    def unary(self, op, a, out):
        self._missing(f"unary:{op}")

    def binary(self, op, a, b, out):
        self._missing(f"binary:{op}")

    def scalar(self, op, a, value, out):
        self._missing(f"scalar:{op}")

    def select(self, cond, a, b, out):
        """``out[i] = a[i] if cond[i] != 0 else b[i]`` (NumPy: ``np.where(cond != 0, a, b)``).

        All four are compact buffers of one size and dtype; ``cond`` holds masks (1.0 / 0.0,
        as the comparison ops make them) in that dtype. The branch not taken is never read
        into the result, so its NaN and infinities do not leak."""
        self._missing("select")

    def reduce(self, op, a, out, reduce_size):
        self._missing(f"reduce:{op}")

    # -- gather (integer indexing, Embedding) ---------------------------------------------
    def take(self, a, index, out):
        """``out[i] = a[index[i]]`` for every element of ``out``. ``index`` is a host NumPy
        int64 array of ``out.size`` flat positions into ``a``, each in ``[0, a.size)`` (the
        ops layer checks them); the backend uploads it as it likes."""
        self._missing("take")

    def scatter_add(self, a, index, out):
        """``out[index[i]] += a[i]`` for every element of ``a``, repeated positions summed
        (the adjoint of :meth:`take`). ``out`` holds the values to add to (the ops layer
        zeroes it first); ``index`` is as in :meth:`take`, with ``a.size`` elements."""
        self._missing("scatter_add")

    def embedding(self, weight, ids, out, n, rows, dim):
        """``out[i, :] = weight[ids[i], :]`` for the ``n`` ids; ``weight`` is (rows, dim) and
        ``ids`` holds row indices stored in weight's dtype (as cross_entropy's labels). An
        id outside ``[0, rows)`` gives a row of NaN, never a read outside ``weight``:
        compiled replays do not check the ids as eager calls do. The index is the id
        truncated toward zero."""
        self._missing("embedding")

    def embedding_backward(self, grad, ids, dweight, n, rows, dim):
        """``dweight = 0``, then ``dweight[ids[i], :] += grad[i, :]`` for the ``n`` ids
        (repeats summed, in any order: a GPU adds them with atomics); an id outside
        ``[0, rows)`` adds nothing."""
        self._missing("embedding_backward")

    def lstm(self, xp, w_hh, h0, c0, hs, cs, gates, steps, batch, hidden):
        """One LSTM layer over ``steps`` time steps. ``xp`` (steps, batch, 4 * hidden) holds
        each step's input projection (biases included), ``w_hh`` is (hidden, 4 * hidden),
        ``h0`` and ``c0`` (batch, hidden). For t = 0, 1, ...: ``z = xp[t] + h[t-1] @ w_hh``;
        its four blocks of ``hidden`` give ``i, f, g, o = sigmoid, sigmoid, tanh, sigmoid``;
        ``cs[t] = f * c[t-1] + i * g`` and ``hs[t] = o * tanh(cs[t])``. ``gates[t]`` keeps
        (i, f, g, o) after their activations (the layout of xp), for :meth:`lstm_backward`."""
        self._missing("lstm")

    def lstm_backward(self, dhs, dcs, w_hh, c0, cs, gates, dz, dh0, dc0, steps, batch, hidden):
        """The gradient of :meth:`lstm` from ``dhs`` and ``dcs`` (the gradients of hs and
        cs, each step's own): writes ``dz`` (steps, batch, 4 * hidden), the gradient of
        every step's pre-activation z, and ``dh0``, ``dc0`` those of the initial states.
        The weight gradients are products the ops layer forms from dz."""
        self._missing("lstm_backward")

    def matmul(self, a, b, out, batch, m, k, n):
        self._missing("matmul")

    def conv2d(self, a, w, out, in_shape, kernel, out_channels, stride):
        self._missing("conv2d")

    # -- fused (optional: see supports) -------------------------------------------------
    def supports(self, op, dtype=None):
        """Whether this backend implements fused op ``op`` itself (for ``dtype``, if given:
        a backend may run an op only for some dtypes or settings)."""
        key = (type(self), op)
        found = _IMPLEMENTS.get(key)
        if found is None:  # asked on every op: decided once per backend class
            found = _IMPLEMENTS[key] = ((op in FUSED_OPS or op in LAYER_OPS or op in FOREACH_OPS)
                                        and getattr(type(self), op) is not getattr(Backend, op))
        return found

    def logsumexp(self, a, out, rows, cols):
        """``out[r] = log(sum_c exp(a[r, c]))``, computed stably (max subtracted)."""
        self._missing("logsumexp")

    def softmax(self, a, out, rows, cols):
        """``out[r, c] = exp(a[r, c]) / sum_c exp(a[r, c])``."""
        self._missing("softmax")

    def cross_entropy(self, logits, labels, loss, grad, rows, cols):
        """Per-row softmax cross-entropy and its gradient.

        ``labels`` holds ``rows`` class indices stored as floats. Writes
        ``loss[r] = logsumexp(logits[r]) - logits[r, labels[r]]`` and
        ``grad[r, c] = softmax(logits[r])[c] - (c == labels[r])``. A label outside
        ``[0, cols)`` (tested on the float: -0.5 and NaN are outside) gives a NaN loss and
        its row's softmax as the gradient, never a read outside the row; one inside names
        the class it truncates to. Compiled replays do not check the labels.
        """
        self._missing("cross_entropy")

    def layernorm(self, x, weight, bias, out, mean, rstd, rows, cols, eps):
        """``out = (x - mean) * rstd * weight + bias`` per row; also writes mean and rstd.

        ``rstd = 1 / sqrt(var + eps)`` with the biased variance; weight and bias have ``cols``
        elements.
        """
        self._missing("layernorm")

    def layernorm_backward(self, grad, x, weight, mean, rstd, dx, dweight, dbias, rows, cols):
        """Gradients of :meth:`layernorm` for x, weight and bias."""
        self._missing("layernorm_backward")

    def bias_act(self, a, bias, out, rows, cols, act):
        """``out[r, c] = act(a[r, c] + bias[c])`` with ``act`` in :data:`ACTIVATIONS`."""
        self._missing("bias_act")

    def batchnorm(self, x, x_bias, mean, var, weight, bias, out, channels, inner, eps, act):
        """Per-channel normalisation (BatchNorm with given statistics), one pass:
        ``out[i] = act((x[i] + x_bias[c] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c])``
        where ``c = (i // inner) % channels`` (NCHW: ``inner = H * W``; rows: ``inner = 1``).
        ``x_bias`` (a preceding conv's bias) may be None; ``act`` is in :data:`ACTIVATIONS`."""
        self._missing("batchnorm")

    def running_stats(self, running_mean, running_var, mean, var, momentum, unbiased):
        """BatchNorm's running statistics updated in place from a batch's per-channel
        ``mean`` and biased ``var`` (each buffer one element per channel):
        ``running_mean = running_mean * (1 - momentum) + mean * momentum`` and
        ``running_var = running_var * (1 - momentum) + var * unbiased * momentum``, with
        ``unbiased = n / (n - 1)`` for n values per channel (PyTorch's update)."""
        self._missing("running_stats")

    def sgd_update(self, param, grad, buf, lr, momentum, weight_decay, first_step):
        """In place, PyTorch's SGD: ``g = grad + wd * param``; with momentum
        ``buf = g if first_step else momentum * buf + g`` and ``g = buf``; ``param -= lr * g``.
        ``buf`` is ``None`` when momentum is 0."""
        self._missing("sgd_update")

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
        """In place, PyTorch's Adam (L2 weight decay added to the gradient, bias correction
        with ``step`` counted from 1)."""
        self._missing("adam_update")

    def sgd_update_many(self, params, grads, bufs, lr, momentum, weight_decay, first_steps):
        """:meth:`sgd_update` of each ``params[i]`` (all of one dtype) with ``grads[i]``,
        ``bufs[i]`` (None without momentum) and ``first_steps[i]``, in as few launches as
        the backend can."""
        self._missing("sgd_update_many")

    def adam_update_many(self, params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay,
                         steps):
        """:meth:`adam_update` of each ``params[i]`` (all of one dtype) with ``grads[i]``,
        ``ms[i]``, ``vs[i]`` and ``steps[i]``, in as few launches as the backend can."""
        self._missing("adam_update_many")

    def linear(self, x, w, bias, out, m, k, n, act):
        """``out = act(x @ w + bias)``: x ``(m, k)``, w ``(k, n)``, bias ``(n,)``, out ``(m, n)``,
        with ``act`` in :data:`LINEAR_ACTIVATIONS` (one GEMM with an epilogue on cuBLASLt)."""
        self._missing("linear")

    def linear_backward(self, grad, x, w, dx, dw, dbias, m, k, n):
        """Gradients of ``x @ w + bias`` given ``grad`` ``(m, n)``: ``dx = grad @ w.T``
        (skipped when ``dx`` is None), ``dw = x.T @ grad``, ``dbias = grad.sum(0)``."""
        self._missing("linear_backward")

    def conv(self, x, w, out, in_shape, kernel, out_channels, stride, padding,
             channels_first=False):
        """:meth:`conv2d` with the zero ``padding`` applied by the backend: ``in_shape`` is
        the *unpadded* NHWC input; ``Ho = (H + 2 * padding - kernel) // stride + 1``.
        With ``channels_first``, x is stored NCHW and out is written NCHW ``(N, out_channels,
        Ho, Wo)`` (``in_shape`` stays ``(N, H, W, C)``): an NCHW model then needs no copies."""
        self._missing("conv")

    def conv_backward(self, grad, x, w, dx, dw, in_shape, kernel, out_channels, stride, padding,
                      channels_first=False):
        """Gradients of :meth:`conv` given ``grad`` ``(N, Ho, Wo, out_channels)``: ``dx`` (the
        unpadded input's shape) and ``dw`` (the weight's); either may be None (not needed).
        With ``channels_first``, grad, x and dx are stored NCHW, as :meth:`conv` takes them."""
        self._missing("conv_backward")

    def attention(self, q, k, v, out, stats, batch, seq_q, seq_k, dim, scale, causal):
        """Scaled dot-product attention of ``batch`` independent (batch = batch x heads)
        problems: q ``(batch, seq_q, dim)``, k and v ``(batch, seq_k, dim)``,
        ``out = softmax(scale * q @ k.T + mask) @ v``; ``causal`` masks key j > query i
        (requires seq_q == seq_k). Also writes ``stats`` ``(batch, seq_q)``: the log-sum-exp
        of each row of scaled scores, which :meth:`attention_backward` reuses. Callers pass
        ``dim`` up to :attr:`attention_max_dim`."""
        self._missing("attention")

    def attention_backward(self, q, k, v, out, stats, grad, dq, dk, dv, batch, seq_q, seq_k,
                           dim, scale, causal):
        """Gradients of :meth:`attention` for q, k and v given ``grad`` (out's shape)."""
        self._missing("attention_backward")

    def batchnorm_train(self, x, weight, bias, out, mean, var, rstd, channels, inner, eps,
                        act="identity", running_mean=None, running_var=None, momentum=0.0,
                        unbiased=1.0, x_bias=None):
        """Training-mode BatchNorm of ``v = x + x_bias`` (x seen as ``(outer, channels,
        inner)``, NCHW: inner = H * W; x_bias, a per-channel bias such as a preceding
        conv's, may be None): per channel, the batch's ``mean``, biased variance ``var``
        (over outer and inner) and ``rstd = 1 / sqrt(var + eps)`` of v, and ``out = act((v -
        mean) * (rstd * weight) + bias)``. With ``running_mean``, the running statistics are
        then updated in place as :meth:`running_stats` updates them. May raise
        :class:`Declined` for shapes the backend cannot run."""
        self._missing("batchnorm_train")

    def batchnorm_train_backward(self, grad, x, weight, mean, rstd, dx, dweight, dbias,
                                 channels, inner, act="identity", out=None, x_bias=None,
                                 dx_bias=None):
        """Gradients of :meth:`batchnorm_train` for x, weight and bias given ``grad``
        (x's shape), from the ``mean`` and ``rstd`` it wrote; with ``act`` "relu", ``out``
        is the forward's output and ``grad`` counts only where ``out > 0``; with
        ``dx_bias``, x_bias's gradient (dx summed per channel). May raise
        :class:`Declined`."""
        self._missing("batchnorm_train_backward")


def scatter_segments(index):
    """The host-side plan of a deterministic :meth:`Backend.scatter_add` on a GPU.

    Returns ``(order, targets, starts)``: ``order`` lists the source positions sorted by
    target (stably, so the sources of one target stay in their original order),
    ``targets`` the distinct targets in increasing order, and ``starts`` (one longer) where
    each target's sources begin in ``order``. One thread per target then adds
    ``a[order[starts[t]:starts[t + 1]]]`` in order into ``out[targets[t]]``: no atomics and
    the same sums on every run.

    Example:
        >>> [x.tolist() for x in scatter_segments(np.array([3, 1, 3, 0]))]
        [[3, 1, 0, 2], [0, 1, 3], [0, 1, 2, 4]]
    """
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    first = np.ones(ordered.size, dtype=bool)  # where a new target's run begins
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return order, ordered[starts], np.append(starts, ordered.size)
