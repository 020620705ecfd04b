"""The fused backend ops a traced step keeps as composites: cross-entropy, the embedding
lookup and its gradient, attention and its gradient, an LSTM layer and its gradient,
training-mode BatchNorm and its gradient, the padded convolution and its gradients, and the
optimizer updates. Each
builds its decomposition in plain IR ops, written to compute what the NumPy backend (the
contract's specification) computes.

These are recorded as the one op they are, not as the ops layer's compositions: the
compositions of cross-entropy and of the embedding read the labels and the ids on the
host, and the optimizers' fallbacks rebind a parameter to a new array instead of updating
it in place.
"""
from ..ir import Graph
from ..ops import add_node
from .builder import Builder


def composite(b, name, inputs, body, **attrs):
    """Append a ``composite`` named ``needle.<name>`` over ``inputs`` whose decomposition
    ``body(builder, *inner inputs)`` builds; returns its outputs. ``attrs`` say what a
    fused kernel needs to know to run it."""
    inner = Graph(name=f"needle.{name}")
    args = [inner.add_input(v.type) for v in inputs]
    inner.outputs = list(body(Builder(inner), *args))
    node = add_node(b.graph, "composite", inputs, {"name": f"needle.{name}", **attrs}, inner)
    return node.outputs


def _splat(b, scalar, like):
    return b.broadcast(scalar, like.shape)


def cross_entropy(b, logits, labels):
    """``(loss per row, gradient)`` of softmax cross-entropy; labels are class indices
    stored as floats. ``loss = (max - z_label) + log(sum exp(z - max))``; a label outside
    [0, classes) (NaN too) gives a NaN loss and one inside names the class it truncates
    to, as the backends' kernels do (a replay does not check the labels as an eager call
    does)."""
    def body(b, z, y):
        rows, cols = z.shape
        m = b.reduce(z, [1], "max", float("-inf"))
        e = b.emit("exponential", [b.emit("subtract", [z, _row(b, m, z)])])
        s = b.reduce(e, [1], "add", 0.0)
        classes = b.emit("iota", [], iota_dimension=1, shape=[rows, cols], dtype=z.dtype)
        # the class of label 2.5 is 2, as the kernels truncate (its range is tested below)
        hit = b.emit("compare", [classes, _row(b, b.emit("floor", [y]), z)],
                     comparison_direction="EQ")
        picked = b.reduce(b.emit("select", [hit, z, b.full(0.0, z.shape, z.dtype)]), [1],
                          "add", 0.0)
        loss = b.emit("add", [b.emit("subtract", [m, picked]), b.emit("log", [s])])
        loss = b.emit("select", [_in_range(b, y, cols), loss,
                                 b.full(float("nan"), loss.shape, loss.dtype)])
        grad = b.emit("subtract", [b.emit("divide", [e, _row(b, s, z)]),
                                   b.emit("convert", [hit], dtype=z.dtype)])
        return loss, grad
    return composite(b, "cross_entropy", [logits, labels], body)


def embedding(b, weight, ids):
    """Rows of ``weight`` (rows, dim) picked by ``ids`` (n,) (row indices stored as
    floats): a gather, with a row of NaN for an id outside [0, rows) as the backends'
    kernels give (a replay does not check the ids as an eager call does)."""
    def body(b, w, y):
        (rows, dim), n = w.shape, y.shape[0]
        valid, index = _row_index(b, y, rows)
        picked = b.emit("gather", [w, index], offset_dims=[1], collapsed_slice_dims=[0],
                        start_index_map=[0], index_vector_dim=1, slice_sizes=[1, dim])
        return [b.emit("select", [_row(b, valid, picked), picked,
                                  b.full(float("nan"), (n, dim), w.dtype)])]
    return composite(b, "embedding", [weight, ids], body)[0]


def embedding_backward(b, grad, ids, rows):
    """The table gradient of :func:`embedding`: ``grad``'s rows (n, dim) added into a zero
    (rows, dim) table at the rows ``ids`` pick; ids outside [0, rows) add nothing."""
    def body(b, g, y):
        n, dim = g.shape
        valid, index = _row_index(b, y, rows)
        updates = b.emit("select", [_row(b, valid, g), g, b.full(0.0, (n, dim), g.dtype)])
        return [b.emit("scatter", [b.full(0.0, (rows, dim), g.dtype), index, updates],
                       update_window_dims=[1], inserted_window_dims=[0],
                       scatter_dims_to_operand_dims=[0], index_vector_dim=1,
                       computation="add")]
    return composite(b, "embedding_backward", [grad, ids], body, rows=rows)[0]


def _bdot(b, lhs, rhs, lhs_contract, rhs_contract):
    """A dot_general batched over dim 0 of both operands."""
    return b.emit("dot_general", [lhs, rhs], lhs_batching_dimensions=[0],
                  rhs_batching_dimensions=[0], lhs_contracting_dimensions=[lhs_contract],
                  rhs_contracting_dimensions=[rhs_contract])


def _attention_scores(b, q, k, scale, causal):
    """``scale * q @ k^T`` (batch, seq_q, seq_k), -inf where a causal mask hides key j > i."""
    scores = _bdot(b, q, k, 2, 2)
    scores = b.emit("multiply", [scores, b.full(scale, scores.shape, scores.dtype)])
    if causal:
        shape = list(scores.shape)
        rows, cols = (b.emit("iota", [], iota_dimension=d, shape=shape, dtype=scores.dtype)
                      for d in (1, 2))
        visible = b.emit("compare", [cols, rows], comparison_direction="LE")
        scores = b.emit("select", [visible, scores,
                                   b.full(float("-inf"), scores.shape, scores.dtype)])
    return scores


def _per_row(b, per_row, like):
    """(batch, rows) values broadcast along the last dim of ``like``."""
    return b.emit("broadcast_in_dim", [per_row], broadcast_dimensions=[0, 1],
                  shape=list(like.shape))


def attention(b, q, k, v, scale, causal):
    """``(out, stats)`` of the backend's ``attention`` on (batch, seq, dim) values: the
    softmax of the scaled (masked) scores times v, and each row's log-sum-exp."""
    def body(b, q, k, v):
        scores = _attention_scores(b, q, k, scale, causal)
        m = b.reduce(scores, [2], "max", float("-inf"))
        e = b.emit("exponential", [b.emit("subtract", [scores, _per_row(b, m, scores)])])
        total = b.reduce(e, [2], "add", 0.0)
        out = _bdot(b, b.emit("divide", [e, _per_row(b, total, e)]), v, 2, 1)
        return out, b.emit("add", [m, b.emit("log", [total])])
    return composite(b, "attention", [q, k, v], body, scale=scale, causal=causal,
                     key_transposed=False)


def attention_backward(b, q, k, v, out, stats, grad, scale, causal):
    """``(dq, dk, dv)``: the gradient of :func:`attention` given ``grad`` (out's shape),
    from the probabilities rebuilt from ``stats``."""
    def body(b, q, k, v, out, stats, grad):
        scores = _attention_scores(b, q, k, scale, causal)
        probs = b.emit("exponential", [b.emit("subtract", [scores, _per_row(b, stats, scores)])])
        dv = _bdot(b, probs, grad, 1, 1)
        dp = _bdot(b, grad, v, 2, 2)
        delta = b.reduce(b.emit("multiply", [grad, out]), [2], "add", 0.0)  # = rowsum(dp * p)
        ds = b.emit("multiply", [probs, b.emit("subtract", [dp, _per_row(b, delta, dp)])])
        ds = b.emit("multiply", [ds, b.full(scale, ds.shape, ds.dtype)])
        return _bdot(b, ds, k, 2, 1), _bdot(b, ds, q, 1, 1), dv
    return composite(b, "attention_backward", [q, k, v, out, stats, grad], body, scale=scale,
                     causal=causal)


def _per_channel(b, vector, like):
    """(C,) values broadcast along axis 1 of (outer, C, inner) ``like``."""
    return b.emit("broadcast_in_dim", [vector], broadcast_dimensions=[1], shape=list(like.shape))


def _mul(b, *values):
    """The product of ``values``, left to right."""
    out = values[0]
    for v in values[1:]:
        out = b.emit("multiply", [out, v])
    return out


def batchnorm_train(b, x, weight, bias, x_bias, running, eps, act, momentum, unbiased):
    """``(out, mean, var, rstd)`` of the backend's ``batchnorm_train`` on (outer, C, inner)
    ``x`` (plus ``x_bias`` when given), and with ``running = (running_mean, running_var)``
    their updated values after those."""
    inputs = [x, weight, bias] + ([x_bias] if x_bias is not None else []) + list(running or ())

    def body(b, x, w, shift, *rest):
        rest, dtype = list(rest), x.dtype
        if x_bias is not None:
            x = b.emit("add", [x, _per_channel(b, rest.pop(0), x)])
        outer, channels, inner = x.shape
        count = b.full(float(outer * inner), (channels,), dtype)
        mean = b.emit("divide", [b.reduce(x, [0, 2], "add", 0.0), count])
        centered = b.emit("subtract", [x, _per_channel(b, mean, x)])
        var = b.emit("divide", [b.reduce(_mul(b, centered, centered), [0, 2], "add", 0.0),
                                count])
        rstd = b.emit("divide", [b.full(1.0, (channels,), dtype), b.emit(
            "sqrt", [b.emit("add", [var, b.full(eps, (channels,), dtype)])])])
        y = b.emit("add", [_mul(b, centered, _per_channel(b, _mul(b, rstd, w), x)),
                           _per_channel(b, shift, x)])
        if act == "relu":
            y = b.emit("maximum", [y, b.full(0.0, y.shape, dtype)])
        outs = [y, mean, var, rstd]
        if running is not None:
            keep, rate = b.full(1 - momentum, (channels,), dtype), b.full(momentum, (channels,),
                                                                          dtype)
            rm, rv = rest
            outs.append(b.emit("add", [_mul(b, rm, keep), _mul(b, mean, rate)]))
            outs.append(b.emit("add", [_mul(b, rv, keep), _mul(
                b, var, b.full(unbiased, (channels,), dtype), rate)]))
        return outs
    return composite(b, "batchnorm_train", inputs, body, eps=eps, act=act, momentum=momentum,
                     unbiased=unbiased, x_bias=x_bias is not None, running=running is not None)


def batchnorm_train_backward(b, grad, x, weight, mean, rstd, out, x_bias):
    """``(dx, dweight, dbias)``, and ``dx_bias`` when ``x_bias`` is given, of
    :func:`batchnorm_train` given ``grad``; with ``out`` (a ReLU's output) the gradient
    counts only where ``out > 0``."""
    inputs = [grad, x, weight, mean, rstd] + ([out] if out is not None else []) + \
        ([x_bias] if x_bias is not None else [])

    def body(b, g, x, w, mean, rstd, *rest):
        rest, dtype = list(rest), x.dtype
        if out is not None:
            positive = b.emit("compare", [rest.pop(0), b.full(0.0, x.shape, dtype)],
                              comparison_direction="GT")
            g = b.emit("select", [positive, g, b.full(0.0, x.shape, dtype)])
        if x_bias is not None:
            x = b.emit("add", [x, _per_channel(b, rest.pop(0), x)])
        outer, channels, inner = x.shape
        xhat = _mul(b, b.emit("subtract", [x, _per_channel(b, mean, x)]),
                    _per_channel(b, rstd, x))
        dw = b.reduce(_mul(b, g, xhat), [0, 2], "add", 0.0)
        db = b.reduce(g, [0, 2], "add", 0.0)
        count = float(outer * inner)
        k = b.emit("divide", [_mul(b, w, rstd), b.full(count, (channels,), dtype)])
        inner_term = b.emit("subtract", [
            b.emit("subtract", [_mul(b, g, b.full(count, x.shape, dtype)),
                                _per_channel(b, db, x)]),
            _mul(b, xhat, _per_channel(b, dw, x))])
        dx = _mul(b, _per_channel(b, k, x), inner_term)
        outs = [dx, dw, db]
        if x_bias is not None:
            outs.append(b.reduce(dx, [0, 2], "add", 0.0))
        return outs
    return composite(b, "batchnorm_train_backward", inputs, body, relu=out is not None,
                     x_bias=x_bias is not None)


def _conv_numbers(channels_first, lhs=None, rhs=(2, 3), out=None):
    """``dimension_numbers`` of a convolution on Needle's activations (NCHW with
    ``channels_first``, else NHWC) and (k, k, c_in, c_out) weights; ``lhs`` / ``out``
    override the (batch, feature) axes of the input / output, ``rhs`` the kernel's (input,
    output) feature axes."""
    batch, feature, spatial = (0, 1, [2, 3]) if channels_first else (0, 3, [1, 2])
    lhs, out = lhs or (batch, feature), out or (batch, feature, spatial)
    return {"input_batch_dimension": lhs[0], "input_feature_dimension": lhs[1],
            "input_spatial_dimensions": spatial, "kernel_input_feature_dimension": rhs[0],
            "kernel_output_feature_dimension": rhs[1], "kernel_spatial_dimensions": [0, 1],
            "output_batch_dimension": out[0], "output_feature_dimension": out[1],
            "output_spatial_dimensions": out[2]}


def _convolution(b, lhs, rhs, numbers, padding=((0, 0), (0, 0)), lhs_dilation=(1, 1),
                 rhs_dilation=(1, 1)):
    return b.emit("convolution", [lhs, rhs], window_strides=[1, 1],
                  padding=[list(p) for p in padding], lhs_dilation=list(lhs_dilation),
                  rhs_dilation=list(rhs_dilation), dimension_numbers=numbers)


def conv(b, x, w, stride, padding, channels_first):
    """The backend's ``conv``: ``x`` convolved with ``w`` at ``stride`` over its zero
    ``padding``, in the activations' layout."""
    def body(b, x, w):
        p = padding
        return [b.emit("convolution", [x, w], window_strides=[stride, stride],
                       padding=[[p, p], [p, p]], lhs_dilation=[1, 1], rhs_dilation=[1, 1],
                       dimension_numbers=_conv_numbers(channels_first))]
    return composite(b, "conv", [x, w], body, stride=stride, padding=padding,
                     channels_first=channels_first)[0]


def conv_backward(b, grad, x, w, stride, padding, channels_first, want_dx, want_dw):
    """The backend's ``conv_backward``: ``dx`` (if ``want_dx``) and ``dw`` (if
    ``want_dw``) of :func:`conv` given ``grad``.

    dx is the convolution of the stride-dilated gradient, padded by k - 1 - p below and
    what makes h rows above, with the flipped kernel (its feature axes swapped). dw takes
    the padded input, cut to the rows the windows reach, as the "batch" of channels and its
    images as the features, and the gradient, dilated by the stride, as the kernel."""
    def body(b, g, x, w):
        k, s, p = w.shape[0], stride, padding
        spatial = [2, 3] if channels_first else [1, 2]
        sizes = [x.shape[d] for d in spatial]
        outs = [g.shape[d] for d in spatial]
        results = []
        if want_dx:
            flipped = b.emit("reverse", [w], dimensions=[0, 1])
            pads = [(k - 1 - p, size + p - 1 - (o - 1) * s) for size, o in zip(sizes, outs)]
            results.append(_convolution(b, g, flipped, _conv_numbers(channels_first, rhs=(3, 2)),
                                        pads, lhs_dilation=(s, s)))
        if want_dw:
            rank = len(x.shape)
            low, high = [0] * rank, [0] * rank
            for d in spatial:
                low[d] = high[d] = p
            padded = b.emit("pad", [x, b.scalar(0.0, x.dtype)], edge_padding_low=low,
                            edge_padding_high=high, interior_padding=[0] * rank)
            limit = list(padded.shape)
            for d, o in zip(spatial, outs):
                limit[d] = (o - 1) * s + k
            reached = b.emit("slice", [padded], start_indices=[0] * rank, limit_indices=limit,
                             strides=[1] * rank)
            batch, feature = (0, 1) if channels_first else (0, 3)
            numbers = _conv_numbers(channels_first, lhs=(feature, batch), rhs=(batch, feature),
                                    out=(2, 3, [0, 1]))
            numbers["kernel_spatial_dimensions"] = spatial
            results.append(_convolution(b, reached, g, numbers, rhs_dilation=(s, s)))
        return results
    return composite(b, "conv_backward", [grad, x, w], body, stride=stride, padding=padding,
                     channels_first=channels_first, dx=want_dx, dw=want_dw)


def lstm(b, xp, w_hh, h0, c0):
    """``(hs, cs, gates)`` of an LSTM layer over ``xp`` (steps, batch, 4 * hidden), each
    step's input projection, as the backend's ``lstm`` computes them: the recurrence
    unrolled over the steps (the decomposition a level without the fused op runs)."""
    def body(b, xp, w, h, c):
        steps, batch, four = xp.shape
        hidden = four // 4
        hs, cs, gates = [], [], []
        for t in range(steps):
            z = b.emit("add", [_slice(b, xp, 0, t, t + 1, (batch, four)), _dot(b, h, w)])
            i, f, g, o = (_slice(b, z, 1, k * hidden, (k + 1) * hidden) for k in range(4))
            i, f, o = (b.emit("logistic", [v]) for v in (i, f, o))
            g = b.emit("tanh", [g])
            c = b.emit("add", [b.emit("multiply", [f, c]), b.emit("multiply", [i, g])])
            h = b.emit("multiply", [o, b.emit("tanh", [c])])
            hs.append(h)
            cs.append(c)
            gates.append(b.emit("concatenate", [i, f, g, o], dimension=1))
        return [_steps(b, values) for values in (hs, cs, gates)]
    return composite(b, "lstm", [xp, w_hh, h0, c0], body)


def lstm_backward(b, dhs, dcs, w_hh, c0, cs, gates):
    """``(dz, dh0, dc0)``: the gradient of :func:`lstm` with respect to every step's
    pre-activation and the initial states, from those of hs and cs (the backend's
    ``lstm_backward``, unrolled)."""
    def body(b, dhs, dcs, w, c0, cs, gates):
        steps, batch, hidden = cs.shape
        w_t = b.emit("transpose", [w], permutation=[1, 0])
        one = b.full(1.0, (batch, hidden), cs.dtype)
        dh, dc, dz = None, None, [None] * steps

        def one_minus(v):
            return b.emit("subtract", [one, v])

        for t in reversed(range(steps)):
            row = _slice(b, gates, 0, t, t + 1, (batch, 4 * hidden))
            i, f, g, o = (_slice(b, row, 1, k * hidden, (k + 1) * hidden) for k in range(4))
            c = _slice(b, cs, 0, t, t + 1, (batch, hidden))
            c_prev = _slice(b, cs, 0, t - 1, t, (batch, hidden)) if t else c0
            dh_t = _slice(b, dhs, 0, t, t + 1, (batch, hidden))
            dh = dh_t if dh is None else b.emit("add", [dh_t, dh])
            tc = b.emit("tanh", [c])
            dc_t = _slice(b, dcs, 0, t, t + 1, (batch, hidden))
            dc = dc_t if dc is None else b.emit("add", [dc_t, dc])
            dc = b.emit("add", [dc, _mul(b, dh, o, one_minus(_mul(b, tc, tc)))])
            dz[t] = b.emit("concatenate", [_mul(b, dc, g, i, one_minus(i)),
                                           _mul(b, dc, c_prev, f, one_minus(f)),
                                           _mul(b, dc, i, one_minus(_mul(b, g, g))),
                                           _mul(b, dh, tc, o, one_minus(o))], dimension=1)
            dc = _mul(b, dc, f)
            dh = _dot(b, dz[t], w_t)
        return [_steps(b, dz), dh, dc]
    return composite(b, "lstm_backward", [dhs, dcs, w_hh, c0, cs, gates], body)


def _slice(b, value, dim, start, limit, shape=None):
    """``value`` from ``start`` to ``limit`` on ``dim`` (reshaped to ``shape``, if given)."""
    starts, limits = [0] * len(value.shape), list(value.shape)
    starts[dim], limits[dim] = start, limit
    out = b.emit("slice", [value], start_indices=starts, limit_indices=limits,
                 strides=[1] * len(value.shape))
    return b.reshape(out, shape) if shape is not None else out


def _dot(b, x, y):
    return b.emit("dot_general", [x, y], lhs_batching_dimensions=[], rhs_batching_dimensions=[],
                  lhs_contracting_dimensions=[1], rhs_contracting_dimensions=[0])


def _steps(b, values):
    """Per-step (batch, n) values stacked into (steps, batch, n)."""
    return b.emit("concatenate", [b.reshape(v, (1,) + tuple(v.shape)) for v in values],
                  dimension=0)


def _in_range(b, y, n):
    """Which float indices ``y`` lie in [0, n) (NaN does not)."""
    return b.emit("and", [
        b.emit("compare", [y, b.full(0.0, y.shape, y.dtype)], comparison_direction="GE"),
        b.emit("compare", [y, b.full(float(n), y.shape, y.dtype)], comparison_direction="LT")])


def _row_index(b, ids, rows):
    """``(valid, index)``: which float ids lie in [0, rows), and the ids as (n, 1) int32
    start indices (an invalid one as 0)."""
    valid = _in_range(b, ids, rows)
    index = b.emit("convert", [b.emit("select", [valid, ids, b.full(0.0, ids.shape, ids.dtype)])],
                   dtype="int32")
    return valid, b.reshape(index, (ids.shape[0], 1))


def _row(b, per_row, like):
    return b.emit("broadcast_in_dim", [per_row], broadcast_dimensions=[0], shape=list(like.shape))


def sgd_update(b, param, grad, buf, lr, momentum, weight_decay, with_buffer):
    """PyTorch's SGD step: ``(new param, new momentum buffer or None)``. ``buf`` is the
    momentum buffer's value (None on its first step, which sets it to the gradient);
    ``with_buffer`` says whether there is momentum at all. ``lr``, ``momentum`` and
    ``weight_decay`` are rank-0 values; momentum and weight_decay are None when unused."""
    scalars = [s for s in (lr, momentum, weight_decay) if s is not None]

    def body(b, p, g, *rest):
        rest = list(rest)
        m = rest.pop(0) if buf is not None else None
        s_lr = rest.pop(0)
        s_mom = rest.pop(0) if momentum is not None else None
        s_wd = rest.pop(0) if weight_decay is not None else None
        if s_wd is not None:
            g = b.emit("add", [g, b.emit("multiply", [_splat(b, s_wd, p), p])])
        outs = []
        if with_buffer:
            if m is not None:  # not the first step: buf = momentum * buf + g
                g = b.emit("add", [b.emit("multiply", [m, _splat(b, s_mom, m)]), g])
            outs.append(g)
        new_p = b.emit("subtract", [p, b.emit("multiply", [_splat(b, s_lr, p), g])])
        return [new_p] + outs

    inputs = [param, grad] + ([buf] if buf is not None else []) + scalars
    outs = composite(b, "sgd_update", inputs, body, momentum_buffer=with_buffer,
                     first_step=with_buffer and buf is None,
                     weight_decay=weight_decay is not None)
    return outs[0], (outs[1] if with_buffer else None)


def adam_update(b, param, grad, m, v, s):
    """PyTorch's Adam step: ``(new param, new m, new v)``. ``s`` maps names to rank-0
    values: lr, beta1, one_minus_beta1, beta2, one_minus_beta2, the bias corrections
    bias1 and bias2, eps, weight_decay (absent when 0) and step (the count the bias
    corrections come from: the decomposition does not read it, a fused kernel does)."""
    names = ["lr", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "bias1", "bias2",
             "eps"] + (["weight_decay"] if "weight_decay" in s else []) + ["step"]

    def body(b, p, g, m, v, *scalars):
        k = dict(zip(names, scalars))
        like = lambda name: _splat(b, k[name], p)  # noqa: E731
        if "weight_decay" in k:
            g = b.emit("add", [g, b.emit("multiply", [like("weight_decay"), p])])
        m = b.emit("add", [b.emit("multiply", [m, like("beta1")]),
                           b.emit("multiply", [like("one_minus_beta1"), g])])
        v = b.emit("add", [b.emit("multiply", [v, like("beta2")]),
                           b.emit("multiply", [b.emit("multiply", [like("one_minus_beta2"), g]),
                                               g])])
        m_hat = b.emit("divide", [m, like("bias1")])
        v_hat = b.emit("divide", [v, like("bias2")])
        step = b.emit("divide", [b.emit("multiply", [like("lr"), m_hat]),
                                 b.emit("add", [b.emit("sqrt", [v_hat]), like("eps")])])
        return b.emit("subtract", [p, step]), m, v

    return composite(b, "adam_update", [param, grad, m, v] + [s[n] for n in names], body,
                     weight_decay="weight_decay" in s)
