"""JAX ``jit`` on the GPU (optional: a skipped row with the reason when JAX is missing or
has no GPU). fp32 with matmul/conv precision "highest" (no TF32)."""
import os

import numpy as np

from .backends import Backend, NotInSuite, Runnable
from .suites import BN_EPS, RESNET9

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
    return {"matmul": matmul, "mlp": mlp, "resnet9": resnet9}[case.suite](jax, dev, case, data)


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

def mlp_loss(jax, params, x, y):
    """Linear layers with ReLU between them, then mean softmax cross-entropy."""
    jnp = jax.numpy
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    logz = jax.nn.logsumexp(h, axis=1)
    return jnp.mean(logz - jnp.take_along_axis(h, y[:, None], axis=1)[:, 0])


def resnet9_apply(jax, spec, params, x):
    """The network described by ``spec`` (see suites.RESNET9), NCHW."""
    lax = jax.lax
    it = iter(params)

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
                scale = p["gamma"] * lax.rsqrt(p["var"] + BN_EPS)
                h = jax.nn.relu((h - chan(p["mean"])) * chan(scale) + chan(p["beta"]))
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

    return run(spec, x)


# ---------------------------------------------------------------- suites

def matmul(jax, dev, case, data):
    f = jax.jit(lambda a, b: jax.numpy.matmul(a, b, precision=jax.lax.Precision.HIGHEST))
    a, b = _put(jax, dev, data["a"]), _put(jax, dev, data["b"])
    state = {"out": f(a, b)}
    first = np.asarray(state["out"])

    def advance(s):
        s["out"] = f(a, b)
    return _runnable(jax, state, first, advance)


def mlp(jax, dev, case, data):
    lr = data["lr"]

    def train_step(params, x, y):
        loss, grads = jax.value_and_grad(lambda p: mlp_loss(jax, p, x, y))(params)
        new = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
        return new, loss

    donate = () if dev.platform == "cpu" else (0,)  # update the weights in place on GPUs
    step_fn = jax.jit(train_step, donate_argnums=donate)
    params = _put(jax, dev, [(w, b) for w, b in data["weights"]])
    x = _put(jax, dev, data["x"])
    y = _put(jax, dev, data["y"].astype(np.int32))
    state = {}
    state["params"], state["loss"] = step_fn(params, x, y)
    first = {"loss": float(state["loss"]),
             "params": [np.asarray(a) for w, b in state["params"] for a in (w, b)]}

    def advance(s):
        s["params"], s["loss"] = step_fn(s["params"], x, y)
    return _runnable(jax, state, first, advance)


def resnet9(jax, dev, case, data):
    f = jax.jit(lambda p, x: resnet9_apply(jax, RESNET9, p, x))
    params = _put(jax, dev, data["layers"])
    x = _put(jax, dev, data["x"])
    state = {"out": f(params, x)}
    first = np.asarray(state["out"])

    def advance(s):
        s["out"] = f(params, x)
    return _runnable(jax, state, first, advance)
