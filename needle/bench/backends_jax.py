"""JAX ``jit`` on the GPU (optional: a skipped row with the reason when JAX is missing or
has no GPU). fp32 with matmul/conv precision "highest" (no TF32)."""
import os

import numpy as np

from .backends import Backend, NotInSuite, Runnable
from .suites import BN_EPS, BN_MOMENTUM, NORM_EPS, RESNET9, flat_layers

# For developing on a machine without a GPU only: run the JAX variant on JAX's CPU.
ON_CPU_ENV = "NEEDLE_BENCH_JAX_ON_CPU"


def _jax():
    # JAX grabs 75% of GPU memory on first use by default; it shares the GPU with PyTorch
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")
    return jax


def backends():
    return [Backend(name="jax-jit", family="jax", note="jax.jit, precision highest",
                    build=build, check=check)]


def _device(jax):
    if os.environ.get(ON_CPU_ENV):
        return jax.devices("cpu")[0]
    return jax.devices("gpu")[0]


def check():
    try:
        jax = _jax()
    except ImportError as e:
        return f"JAX not installed ({e})"
    try:
        _device(jax)
    except RuntimeError:
        return f"JAX {jax.__version__} has no GPU here (backend {jax.default_backend()!r})"
    return None


def build(case, data):
    if case.suite == "attention":
        raise NotInSuite("no JAX variant of the attention suite")
    jax = _jax()
    dev = _device(jax)
    return {"matmul": matmul, "mlp": mlp, "resnet9": resnet9, "resnet9-train": resnet9_train,
            "transformer": transformer, "lstm": lstm, "micro-conv-step": conv_step,
            "micro-norms": norms}[case.suite](jax, dev, case, data)


def _put(jax, dev, tree):
    return jax.device_put(tree, dev)


def _runnable(jax, state, first, advance):
    """``advance(state)`` runs one step and stores its results in ``state``."""
    def step():
        advance(state)

    def sync():
        jax.block_until_ready(state)

    return Runnable(output=first, step=step, sync=sync)


# ---------------------------------------------------------------- models from the shared spec

def cross_entropy(jax, logits, y):
    """Mean softmax cross-entropy of (n, classes) logits and (n,) integer labels."""
    logz = jax.nn.logsumexp(logits, axis=1)
    return jax.numpy.mean(logz - jax.numpy.take_along_axis(logits, y[:, None], axis=1)[:, 0])


def mlp_loss(jax, params, x, y):
    """Linear layers with ReLU between them, then mean softmax cross-entropy."""
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return cross_entropy(jax, h, y)


def resnet9_apply(jax, spec, params, x, train=False):
    """The network described by ``spec`` (see suites.RESNET9), NCHW. In training mode
    BatchNorm normalises with the batch statistics (biased variance) and the result is
    ``(logits, [(batch mean, unbiased batch variance) per BatchNorm])``; in eval mode it
    uses each layer's running "mean" and "var" and the result is the logits."""
    lax = jax.lax
    it = iter(params)
    stats = []

    def chan(v):
        return v[None, :, None, None]

    def run(layers, h):
        for layer in layers:
            kind = layer[0]
            if kind == "convbn":
                _, _, _, k, s = layer
                p, pad = next(it), k // 2
                h = lax.conv_general_dilated(h, p["w"], (s, s), [(pad, pad), (pad, pad)],
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                             precision=lax.Precision.HIGHEST) + chan(p["b"])
                if train:
                    mean, var = h.mean(axis=(0, 2, 3)), h.var(axis=(0, 2, 3))
                    n = h.size // h.shape[1]
                    stats.append((mean, var * (n / (n - 1))))
                else:
                    mean, var = p["mean"], p["var"]
                scale = p["gamma"] * lax.rsqrt(var + BN_EPS)
                h = jax.nn.relu((h - chan(mean)) * chan(scale) + chan(p["beta"]))
            elif kind == "residual":
                h = run(layer[1], h) + h
            elif kind == "flatten":
                h = h.reshape(h.shape[0], -1)
            elif kind == "relu":
                h = jax.nn.relu(h)
            elif kind == "linear":
                p = next(it)
                h = h @ p["w"] + p["b"]
            else:
                raise ValueError(f"unknown layer {layer!r}")
        return h

    out = run(spec, x)
    return (out, stats) if train else out


def transformer_loss(jax, cfg, p, tokens, targets):
    """The causal language model of suites.TRANSFORMER (as Needle's nn.TransformerLayer:
    pre-norm, ReLU feed-forward, biases everywhere), mean cross-entropy at every position."""
    jnp = jax.numpy
    b, t = tokens.shape
    d, heads = cfg["dim"], cfg["heads"]

    def dense(h, name):
        return h @ p[f"{name}.w"] + p[f"{name}.b"]

    def norm(h, name):
        mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        return (h - mean) * jax.lax.rsqrt(var + 1e-5) * p[f"{name}.w"] + p[f"{name}.b"]

    def split(h):
        return h.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)

    causal = jnp.tril(jnp.ones((t, t), bool))
    h = p["embed"][tokens]
    for i in range(cfg["layers"]):
        a = norm(h, f"l{i}.norm1")
        q, k, v = (split(dense(a, f"l{i}.{n}")) for n in ("q", "k", "v"))
        scores = jnp.where(causal, q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads), -jnp.inf)
        a = (jax.nn.softmax(scores, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        h = h + dense(a, f"l{i}.out")
        h = h + dense(jax.nn.relu(dense(norm(h, f"l{i}.norm2"), f"l{i}.ff1")), f"l{i}.ff2")
    return cross_entropy(jax, dense(h, "head").reshape(b * t, -1), targets.reshape(-1))


def lstm_loss(jax, cfg, p, x, y):
    """A stacked LSTM over (seq, batch, input) ``x`` (PyTorch's weights and gate order
    i, f, g, o), a Linear on the last step's hidden state, mean cross-entropy."""
    jnp = jax.numpy
    sig = jax.nn.sigmoid
    zeros = jnp.zeros((x.shape[1], cfg["hidden"]), x.dtype)
    h_seq = x
    for i in range(cfg["layers"]):
        w_hh = p[f"l{i}.w_hh"].T
        z_in = h_seq @ p[f"l{i}.w_ih"].T + p[f"l{i}.b_ih"] + p[f"l{i}.b_hh"]  # every step at once

        def cell(carry, z_x, w_hh=w_hh):
            h, c = carry
            gi, gf, gg, go = jnp.split(z_x + h @ w_hh, 4, axis=-1)
            c = sig(gf) * c + sig(gi) * jnp.tanh(gg)
            h = sig(go) * jnp.tanh(c)
            return (h, c), h

        _, h_seq = jax.lax.scan(cell, (zeros, zeros), z_in)
    return cross_entropy(jax, h_seq[-1] @ p["head.w"] + p["head.b"], y)


# ---------------------------------------------------------------- optimizers (PyTorch's rules)

def sgd(jax, params, grads, bufs, lr, momentum=0.0, weight_decay=0.0):
    """torch.optim.SGD (no dampening, no Nesterov): ``g += weight_decay * p``, ``buf =
    momentum * buf + g``, ``p -= lr * buf``. The buffers start at zero, which gives
    PyTorch's first step (``buf = g``); without momentum there are none (``bufs`` None)."""
    tree_map = jax.tree_util.tree_map
    if weight_decay:
        grads = tree_map(lambda g, p: g + weight_decay * p, grads, params)
    if momentum:
        bufs = grads = tree_map(lambda b, g: momentum * b + g, bufs, grads)
    return tree_map(lambda p, g: p - lr * g, params, grads), bufs


def adam(jax, params, grads, state, lr, betas, eps):
    """torch.optim.Adam (no weight decay, no amsgrad) from state ``(m, v, step)``:
    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, and with the bias corrections
    ``c1 = 1 - b1^t``, ``c2 = 1 - b2^t``: ``p -= (lr / c1) m / (sqrt(v) / sqrt(c2) + eps)``."""
    tree_map, jnp = jax.tree_util.tree_map, jax.numpy
    (b1, b2), (m, v, t) = betas, state
    t = t + 1
    m = tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
    v = tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
    step_size, c2_sqrt = lr / (1 - b1 ** t), jnp.sqrt(1 - b2 ** t)
    params = tree_map(lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / c2_sqrt + eps),
                      params, m, v)
    return params, (m, v, t)


def _zeros(jax, tree):
    return jax.tree_util.tree_map(jax.numpy.zeros_like, tree)


def _train(jax, dev, train_step, state, batch, output):
    """``train_step(state, *batch) -> (state, loss)`` jitted, the state (parameters,
    optimizer state, buffers) donated on GPUs (updated in place), and its first step run;
    ``output(state, loss)`` is the validated result."""
    donate = () if dev.platform == "cpu" else (0,)
    step_fn = jax.jit(train_step, donate_argnums=donate)
    batch = _put(jax, dev, batch)
    s = {}
    s["state"], s["loss"] = step_fn(_put(jax, dev, state), *batch)
    first = output(s["state"], s["loss"])

    def advance(s):
        s["state"], s["loss"] = step_fn(s["state"], *batch)
    return _runnable(jax, s, first, advance)


# ---------------------------------------------------------------- suites

def matmul(jax, dev, case, data):
    f = jax.jit(lambda a, b: jax.numpy.matmul(a, b, precision=jax.lax.Precision.HIGHEST))
    a, b = _put(jax, dev, data["a"]), _put(jax, dev, data["b"])
    state = {"out": f(a, b)}
    first = np.asarray(state["out"])

    def advance(s):
        s["out"] = f(a, b)
    return _runnable(jax, state, first, advance)


def _labels(y):
    return y.reshape(-1).astype(np.int32)


def _numpy(tree):
    return {k: np.asarray(v) for k, v in tree.items()}


def mlp(jax, dev, case, data):
    lr = data["lr"]

    def train_step(params, x, y):
        loss, grads = jax.value_and_grad(lambda p: mlp_loss(jax, p, x, y))(params)
        return sgd(jax, params, grads, None, lr)[0], loss

    def output(params, loss):
        return {"loss": float(loss), "params": [np.asarray(a) for w, b in params for a in (w, b)]}
    return _train(jax, dev, train_step, [(w, b) for w, b in data["weights"]],
                  (data["x"], _labels(data["y"])), output)


def resnet9_train(jax, dev, case, data):
    """State: the trainable parameters, their momentum buffers, and the running statistics
    of each BatchNorm (updated as PyTorch's: unbiased batch variance, momentum 0.1)."""
    opt = data["sgd"]
    params = [{k: v for k, v in layer.items() if k not in ("mean", "var")}
              for layer in data["layers"]]
    running = [{k: layer[k] for k in ("mean", "var")} for layer in data["layers"] if "mean" in layer]

    def train_step(state, x, y):
        params, bufs, running = state

        def loss_fn(p):
            logits, stats = resnet9_apply(jax, RESNET9, p, x, train=True)
            return cross_entropy(jax, logits, y), stats
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        params, bufs = sgd(jax, params, grads, bufs, **opt)
        m = BN_MOMENTUM
        running = [{"mean": (1 - m) * r["mean"] + m * mean, "var": (1 - m) * r["var"] + m * var}
                   for r, (mean, var) in zip(running, stats)]
        return (params, bufs, running), loss

    def output(state, loss):
        params, _, running = state
        it = iter(running)
        layers = [dict(p, **(next(it) if "gamma" in p else {})) for p in params]
        return {"loss": float(loss), "params": _numpy(flat_layers(layers))}
    return _train(jax, dev, train_step, (params, _zeros(jax, params), running),
                  (data["x"], _labels(data["y"])), output)


def transformer(jax, dev, case, data):
    cfg, opt = case.params, data["adam"]

    def train_step(state, tokens, targets):
        params, adam_state = state
        loss, grads = jax.value_and_grad(
            lambda p: transformer_loss(jax, cfg, p, tokens, targets))(params)
        return adam(jax, params, grads, adam_state, **opt), loss

    params = data["params"]
    adam_state = (_zeros(jax, params), _zeros(jax, params), np.float32(0))
    return _train(jax, dev, train_step, (params, adam_state),
                  (data["tokens"].astype(np.int32), _labels(data["targets"])),
                  lambda state, loss: {"loss": float(loss), "params": _numpy(state[0])})


def lstm(jax, dev, case, data):
    cfg, lr = case.params, data["lr"]

    def train_step(params, x, y):
        loss, grads = jax.value_and_grad(lambda p: lstm_loss(jax, cfg, p, x, y))(params)
        return sgd(jax, params, grads, None, lr)[0], loss

    return _train(jax, dev, train_step, data["params"], (data["x"], _labels(data["y"])),
                  lambda params, loss: {"loss": float(loss), "params": _numpy(params)})


def resnet9(jax, dev, case, data):
    f = jax.jit(lambda p, x: resnet9_apply(jax, RESNET9, p, x))
    params = _put(jax, dev, data["layers"])
    x = _put(jax, dev, data["x"])
    state = {"out": f(params, x)}
    first = np.asarray(state["out"])

    def advance(s):
        s["out"] = f(params, x)
    return _runnable(jax, state, first, advance)


def _backward_step(jax, dev, forward, inputs, dout, output):
    """``forward(*inputs) -> (y, extra)`` and the VJP of ``dout`` through y jitted as one
    function (the gradients of every input); ``output(y, grads, extra)`` names the results
    for validation."""
    def fwd_bwd(inputs, dout):
        y, vjp, extra = jax.vjp(forward, *inputs, has_aux=True)
        return y, vjp(dout), extra
    f = jax.jit(fwd_bwd)
    inputs, dout = _put(jax, dev, inputs), _put(jax, dev, dout)
    state = {"out": f(inputs, dout)}
    first = {k: np.asarray(v) for k, v in output(*state["out"]).items()}

    def advance(s):
        s["out"] = f(inputs, dout)
    return _runnable(jax, state, first, advance)


def conv_step(jax, dev, case, data):
    """One NCHW convolution (stride 1, padding k//2, no bias) and its two gradients."""
    lax, pad = jax.lax, case.params["kernel"] // 2

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), [(pad, pad), (pad, pad)],
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                        precision=lax.Precision.HIGHEST), {}
    return _backward_step(jax, dev, conv, (data["x"], data["w"]), data["dout"],
                          lambda y, grads, _: {"y": y, "dx": grads[0], "dw": grads[1]})


def norms(jax, dev, case, data):
    """LayerNorm over the last axis, or training BatchNorm2d, and the gradients of x and the
    affine terms. BatchNorm also updates its running statistics from PyTorch's initial 0 and
    1, with the unbiased batch variance as PyTorch does."""
    norm = case.params["norm"]
    axes = (-1,) if norm == "layernorm" else (0, 2, 3)

    def along(a):  # the weight or bias along the normalised axis
        return a if norm == "layernorm" else a[None, :, None, None]

    def forward(x, w, b):
        mean, var = x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + NORM_EPS) * along(w) + along(b)
        if norm == "layernorm":
            return y, {}
        n, m = x.size // x.shape[1], BN_MOMENTUM
        return y, {"running_mean": m * mean.reshape(-1),
                   "running_var": (1 - m) + m * var.reshape(-1) * (n / (n - 1))}

    return _backward_step(jax, dev, forward, (data["x"], data["w"], data["b"]), data["dout"],
                          lambda y, grads, extra: {"y": y, "dx": grads[0], "dw": grads[1],
                                                   "db": grads[2], **extra})
