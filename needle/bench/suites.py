"""The benchmark cases, in one place: shapes, the shared model specs, quick variants, the
shared NumPy weights and inputs every backend starts from, and what each case is checked
against.

Canonical layouts (each backend converts from these):
    matmul:  A (m, k), B (k, n) float32, standard normal.
    mlp:     weights [(W (in, out), b (out,)), ...], W ~ N(0, 0.02^2), b = 0;
             x (batch, in) standard normal, y (batch,) int64 class labels; SGD lr 0.01.
    resnet9: per layer of RESNET9 in walk order: conv {"w" (out, in, k, k), "b", "gamma",
             "beta", "mean", "var"}, linear {"w" (in, out), "b"}; x (batch, 3, 64, 64).
    attention: q, k, v and the output gradient dout, (batch, heads, seq, dim) standard
             normal; one step is softmax(q k^T / sqrt(dim)) v forward and its backward.
    resnet9-train: "layers" as resnet9 (mean/var the initial running statistics); x as
             resnet9, y (batch,) int64 labels; "sgd" the optimizer's settings.
    transformer: "params" name -> array: "embed" (vocab, dim); per layer l "l{l}.norm1.w",
             ".norm1.b", ".q.w" (dim, dim) (in, out) and ".q.b", the same for k, v and out,
             ".norm2.w/.b", ".ff1.w" (dim, ff), ".ff1.b", ".ff2.w" (ff, dim), ".ff2.b"; then
             "head.w" (dim, vocab), "head.b"; tokens and targets (batch, seq) int64, the
             targets being the next tokens.
    lstm:    "params" name -> array in PyTorch's layout: per layer l "l{l}.w_ih" (4h, in),
             "l{l}.w_hh" (4h, h), "l{l}.b_ih", "l{l}.b_hh" (4h,), gates (i, f, g, o); then
             "head.w" (h, classes) (in, out), "head.b"; x (seq, batch, input) standard
             normal, y (batch,) int64 labels.
    micro-conv-step: x (batch, c_in, h, w), the weight w (c_out, c_in, k, k) (OIHW) and the
             output gradient dout (batch, c_out, h, w); the result is {"y", "dx", "dw"}
             (dw OIHW).
    micro-norms: x (the case's shape), the affine weight w and bias b (the normalised axis:
             the last for LayerNorm, the channels for BatchNorm2d) and dout (x's shape); the
             result is {"y", "dx", "dw", "db"}, and for BatchNorm2d "running_mean" and
             "running_var" after the step (they start at 0 and 1, as the layers make them).
The three training suites' results are {"loss": float, "params": name -> array} after one
step, in these layouts (resnet9-train's names from ``flat_layers``).
"""
import fnmatch
import zlib
from dataclasses import dataclass, field

import numpy as np

from .validation import Check

SUITES = ("matmul", "mlp", "resnet9", "attention", "resnet9-train", "transformer", "lstm",
          "micro-conv-step", "micro-norms")
#: suites whose step is a training step checked by the loss and each parameter's update
TRAIN_SUITES = ("resnet9-train", "transformer", "lstm")
#: suites whose step is one layer's forward and backward, checked output by output
MICRO_SUITES = ("micro-conv-step", "micro-norms")

# (m, k, n): C = A @ B
MATMUL_SHAPES = [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096),
                 (64, 1024, 4096), (256, 1024, 4096), (64, 4096, 1024), (64, 2048, 8192),
                 (32, 512, 2048)]
MATMUL_QUICK = [(64, 64, 64), (128, 128, 128)]

# [input, hidden..., classes]: Linear between consecutive sizes, ReLU between Linears
MLP_CONFIGS = {
    "tiny-2L-128": [128, 128, 10],
    "med-4L-512": [512, 512, 512, 512, 10],
    "wide-2L-1024": [1024, 1024, 10],
    "deep-6L-1024": [1024] * 6 + [10],
    "maxwide-2L-2048": [2048, 2048, 10],
    "bneck-2048-64-2048": [2048, 64, 2048, 10],
}
MLP_QUICK = {"tiny-2L-128": [128, 128, 10], "bneck-128-16-128": [128, 16, 128, 10]}
MLP_BATCH, MLP_QUICK_BATCH = 64, 8
MLP_LR = 0.01
MLP_INIT_STD = 0.02

# ResNet9: ("convbn", in, out, kernel, stride) is Conv (padding k//2, with bias) ->
# BatchNorm2d (eval, running stats) -> ReLU; ("residual", layers) is layers(x) + x.
RESNET9 = (
    ("convbn", 3, 16, 7, 4),
    ("convbn", 16, 32, 3, 2),
    ("residual", (("convbn", 32, 32, 3, 1), ("convbn", 32, 32, 3, 1))),
    ("convbn", 32, 64, 3, 2),
    ("convbn", 64, 128, 3, 2),
    ("residual", (("convbn", 128, 128, 3, 1), ("convbn", 128, 128, 3, 1))),
    ("flatten",),
    ("linear", 512, 128),
    ("relu",),
    ("linear", 128, 10),
)
RESNET9_IMAGE = (3, 64, 64)
RESNET9_BATCHES, RESNET9_QUICK_BATCHES = (16, 32, 64), (2,)
BN_EPS = 1e-5

# (batch, heads, seq, dim). Attention runs in bf16 wherever the backend can (PyTorch CUDA,
# needle-cudnn): its fused kernels exist for half precision only; elsewhere in fp32.
ATTENTION_SHAPES = [(8, 12, 128, 64), (8, 12, 512, 64)]
ATTENTION_QUICK = [(2, 2, 16, 16)]

# resnet9-train: the same network in training mode (batch statistics; the running ones
# updated with PyTorch's default momentum), cross-entropy over 10 classes, SGD with momentum
# and weight decay (torch.optim.SGD's rule: weight decay is added to the gradient).
RESNET9_TRAIN_BATCHES, RESNET9_TRAIN_QUICK_BATCHES = (32, 64), (2,)
RESNET9_CLASSES = 10
RESNET9_SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
BN_MOMENTUM = 0.1

# transformer: a causal language model, Embedding -> pre-norm TransformerLayers (no
# positional embedding, no dropout, ReLU feed-forward, every Linear with a bias) -> Linear to
# the vocabulary, cross-entropy at every position, Adam (PyTorch's defaults but lr).
TRANSFORMER = {"vocab": 2048, "dim": 512, "heads": 8, "ff": 2048, "layers": 2, "batch": 16,
               "seq": 128}
TRANSFORMER_QUICK = {"vocab": 64, "dim": 32, "heads": 2, "ff": 64, "layers": 2, "batch": 2,
                     "seq": 8}
ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}

# lstm: a stacked LSTM over the sequence, its last step's hidden state -> Linear, plain SGD.
LSTM = {"input": 256, "hidden": 512, "layers": 2, "seq": 64, "batch": 32, "classes": 10}
LSTM_QUICK = {"input": 8, "hidden": 16, "layers": 2, "seq": 5, "batch": 3, "classes": 10}
LSTM_LR = 0.01

# micro-conv-step: one convolution as nn.Conv runs it in a network (NCHW, stride 1, padding
# k//2, no bias): the forward, then the backward of dout into x's and the weight's gradients.
# (batch, c_in, height, width, c_out, kernel): ResNet-sized 3x3 layers and a 3-channel stem.
CONV_STEP_SHAPES = [(32, 64, 32, 32, 128, 3), (64, 128, 16, 16, 256, 3),
                    (64, 256, 8, 8, 512, 3), (16, 3, 32, 32, 64, 3)]
CONV_STEP_QUICK = [(2, 4, 8, 8, 8, 3)]

# micro-norms: one normalisation layer's forward and the backward of dout: LayerNorm over the
# last axis of (rows, cols), and BatchNorm2d in training mode (batch statistics over N, H, W;
# the running ones updated with momentum BN_MOMENTUM). Both with eps 1e-5.
LAYERNORM_SHAPES = [(8192, 768), (4096, 1024), (4096, 4096), (512, 512), (8192, 256),
                    (2048, 8192)]
BATCHNORM_SHAPES = [(64, 64, 32, 32), (64, 128, 16, 16), (64, 256, 8, 8), (64, 512, 4, 4),
                    (16, 64, 32, 32)]
NORMS_QUICK = {"layernorm": [(16, 32)], "batchnorm": [(4, 8, 4, 4)]}
NORM_EPS = 1e-5

# Relative-error tolerances (||out - ref|| / ||ref||). fp32 lands far below these; TF32 or
# bf16 arithmetic (~3e-4 and up) fails the matmul check on purpose: this suite is fp32.
MATMUL_TOL = 1e-4
MLP_LOSS_TOL = 1e-4
MLP_UPDATE_TOL = 1e-2   # the weight update lr*grad; fp32 noise reaches ~7e-4 on deep-6L
RESNET9_TOL = 1e-3
ATTENTION_TOL = 2e-2  # bf16 inputs and outputs (8-bit mantissa)
# The micro suites' outputs and gradients: measured at most 9e-6 (a convolution's weight
# gradient through cuDNN, PyTorch CUDA or JAX on an H200), 3e-6 on the CPU.
MICRO_TOL = 1e-4
# The training suites. Measured on the CPU (Needle eager and compiled, JAX, against PyTorch;
# the quick and full cases): the loss within 7e-7 of PyTorch's, so MLP_LOSS_TOL.
TRAIN_LOSS_TOL = MLP_LOSS_TOL
# The updates (and resnet9-train's running-statistic changes) by parameter name, the first
# pattern that matches; None: not compared.
TRAIN_UPDATE_TOLS = {
    "resnet9-train": {
        # measured 1.6e-6 (var), 8e-7 (mean)
        "*.mean": 1e-4, "*.var": 1e-4,
        # A conv bias has no gradient in exact arithmetic (training-mode BatchNorm subtracts
        # the batch mean): its update is weight decay's lr * wd * b, ~1e-7 per element, seen
        # through the float32 rounding of b (~2e-9). Measured 4e-3. (Layers 0-7 of RESNET9
        # are its convolutions.)
        "layer[0-7].b": 2e-2,
        # measured 2.4e-3 at b64 (layer1.beta): PyTorch CPU's own error, Needle and JAX are
        # within 2e-4 of a float64 PyTorch step; 3.7e-6 at b32
        "*": 1e-2},
    "transformer": {
        # Adam's first step is ~lr * sign(grad), so a gradient that is zero in exact
        # arithmetic becomes an update of rounding noise times lr: the key projection's
        # bias is one (softmax is unchanged by a shift of all of a query's scores), and its
        # updates differ by 1.2-1.7x between backends.
        "*.k.b": None,
        # measured 2.6e-4 (JAX), 1.3e-4 (Needle), in the Linear weights at full size
        "*": 1e-2},
    "lstm": {"*": 1e-3},  # measured 2.9e-5 at full size, 5.4e-6 quick
}


@dataclass
class Case:
    suite: str
    name: str
    params: dict = field(default_factory=dict)
    flops: float = None  # per timed step, where a headline rate is reported (matmul)

    @property
    def label(self):
        return f"{self.suite}/{self.name}"


def cases(suite, quick=False):
    """The cases of ``suite`` (full list, or the tiny quick variants)."""
    if suite == "matmul":
        return [Case("matmul", f"{m}x{k}x{n}", {"m": m, "k": k, "n": n}, 2.0 * m * k * n)
                for m, k, n in (MATMUL_QUICK if quick else MATMUL_SHAPES)]
    if suite == "mlp":
        batch = MLP_QUICK_BATCH if quick else MLP_BATCH
        configs = MLP_QUICK if quick else MLP_CONFIGS
        return [Case("mlp", f"{name}/b{batch}", {"config": name, "sizes": list(sizes),
                                                  "batch": batch, "lr": MLP_LR})
                for name, sizes in configs.items()]
    if suite == "resnet9":
        return [Case("resnet9", f"b{b}", {"batch": b, "image": RESNET9_IMAGE})
                for b in (RESNET9_QUICK_BATCHES if quick else RESNET9_BATCHES)]
    if suite == "attention":
        return [Case("attention", f"b{b}h{h}s{t}d{d}", {"batch": b, "heads": h, "seq": t, "dim": d},
                     # two products forward, four backward
                     6 * 2.0 * b * h * t * t * d)
                for b, h, t, d in (ATTENTION_QUICK if quick else ATTENTION_SHAPES)]
    if suite == "resnet9-train":
        return [Case(suite, f"b{b}", {"batch": b, "image": RESNET9_IMAGE})
                for b in (RESNET9_TRAIN_QUICK_BATCHES if quick else RESNET9_TRAIN_BATCHES)]
    if suite == "transformer":
        c = TRANSFORMER_QUICK if quick else TRANSFORMER
        return [Case(suite, f"d{c['dim']}h{c['heads']}v{c['vocab']}/b{c['batch']}s{c['seq']}",
                     dict(c))]
    if suite == "lstm":
        c = LSTM_QUICK if quick else LSTM
        return [Case(suite, f"i{c['input']}h{c['hidden']}/b{c['batch']}s{c['seq']}", dict(c))]
    if suite == "micro-conv-step":
        return [Case(suite, f"n{n}c{c}h{h}w{w}-o{o}k{k}",
                     {"batch": n, "c_in": c, "height": h, "width": w, "c_out": o, "kernel": k},
                     # the forward product, and as many multiply-adds for each gradient
                     3 * 2.0 * n * h * w * o * c * k * k)
                for n, c, h, w, o, k in (CONV_STEP_QUICK if quick else CONV_STEP_SHAPES)]
    if suite == "micro-norms":
        shapes = NORMS_QUICK if quick else {"layernorm": LAYERNORM_SHAPES,
                                            "batchnorm": BATCHNORM_SHAPES}
        return [Case(suite, f"{norm}/{'x'.join(map(str, shape))}",
                     {"norm": norm, "shape": shape})
                for norm, norm_shapes in shapes.items() for shape in norm_shapes]
    raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")


def _rng(case, seed):
    return np.random.default_rng([seed, zlib.crc32(case.label.encode())])


def make_data(case, seed=0):
    """The NumPy weights and inputs every backend of ``case`` starts from."""
    rng = _rng(case, seed)
    p = case.params
    if case.suite == "matmul":
        return {"a": rng.standard_normal((p["m"], p["k"]), dtype=np.float32),
                "b": rng.standard_normal((p["k"], p["n"]), dtype=np.float32)}
    if case.suite == "mlp":
        sizes = p["sizes"]
        weights = [((rng.standard_normal((i, o)) * MLP_INIT_STD).astype(np.float32),
                    np.zeros(o, np.float32)) for i, o in zip(sizes[:-1], sizes[1:])]
        return {"weights": weights, "lr": p["lr"],
                "x": rng.standard_normal((p["batch"], sizes[0]), dtype=np.float32),
                "y": rng.integers(0, sizes[-1], p["batch"]).astype(np.int64)}
    if case.suite == "resnet9":
        return {"layers": resnet9_params(RESNET9, rng),
                "x": rng.standard_normal((p["batch"],) + tuple(p["image"]), dtype=np.float32)}
    if case.suite == "attention":
        p = case.params
        shape = (p["batch"], p["heads"], p["seq"], p["dim"])
        return {name: rng.standard_normal(shape, dtype=np.float32)
                for name in ("q", "k", "v", "dout")}
    if case.suite == "resnet9-train":
        return {"layers": resnet9_params(RESNET9, rng), "sgd": dict(RESNET9_SGD),
                "x": rng.standard_normal((p["batch"],) + tuple(p["image"]), dtype=np.float32),
                "y": rng.integers(0, RESNET9_CLASSES, p["batch"]).astype(np.int64)}
    if case.suite == "transformer":
        text = rng.integers(0, p["vocab"], (p["batch"], p["seq"] + 1)).astype(np.int64)
        return {"params": transformer_params(p, rng), "adam": dict(ADAM),
                "tokens": text[:, :-1].copy(), "targets": text[:, 1:].copy()}
    if case.suite == "lstm":
        return {"params": lstm_params(p, rng), "lr": LSTM_LR,
                "x": rng.standard_normal((p["seq"], p["batch"], p["input"]), dtype=np.float32),
                "y": rng.integers(0, p["classes"], p["batch"]).astype(np.int64)}
    if case.suite == "micro-conv-step":
        n, c, h, w, o, k = (p[name] for name in ("batch", "c_in", "height", "width", "c_out",
                                                   "kernel"))
        return {"x": rng.standard_normal((n, c, h, w), dtype=np.float32),
                "w": (rng.standard_normal((o, c, k, k)) * np.sqrt(2.0 / (c * k * k))
                      ).astype(np.float32),
                "dout": rng.standard_normal((n, o, h, w), dtype=np.float32)}
    if case.suite == "micro-norms":
        shape = p["shape"]
        dim = shape[-1] if p["norm"] == "layernorm" else shape[1]
        # x off zero mean and unit variance, and an affine part far from (1, 0), so that a
        # norm that skips a term fails validation
        return {"x": (2 * rng.standard_normal(shape) + 0.5).astype(np.float32),
                "w": (rng.standard_normal(dim) + 1).astype(np.float32),
                "b": rng.standard_normal(dim).astype(np.float32),
                "dout": rng.standard_normal(shape, dtype=np.float32)}
    raise ValueError(case.suite)


def resnet9_params(spec, rng):
    """One parameter dict per conv/linear layer of ``spec``, in walk order (see walk())."""
    out = []
    for layer in walk(spec):
        kind = layer[0]
        if kind == "convbn":
            _, cin, cout, k, _ = layer
            fan_in = cin * k * k
            out.append({
                "w": (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32),
                "b": rng.uniform(-1, 1, cout).astype(np.float32) / np.float32(np.sqrt(fan_in)),
                "gamma": rng.uniform(0.5, 1.5, cout).astype(np.float32),
                "beta": (rng.standard_normal(cout) * 0.1).astype(np.float32),
                "mean": (rng.standard_normal(cout) * 0.1).astype(np.float32),
                "var": rng.uniform(0.5, 1.5, cout).astype(np.float32)})
        elif kind == "linear":
            _, cin, cout = layer
            out.append({"w": (rng.standard_normal((cin, cout)) * np.sqrt(2.0 / cin)).astype(np.float32),
                        "b": (rng.standard_normal(cout) * 0.01).astype(np.float32)})
    return out


def transformer_params(cfg, rng):
    """The causal language model's weights (names in the module docstring). Linear weights
    ~ N(0, 1/fan_in), so that attention is far from uniform; biases and LayerNorm's affine
    terms are non-trivial, so that a backend ignoring one of them fails validation."""
    def linear(fan_in, fan_out):
        return ((rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32),
                (rng.standard_normal(fan_out) * 0.02).astype(np.float32))

    def norm():
        return (rng.uniform(0.8, 1.2, cfg["dim"]).astype(np.float32),
                (rng.standard_normal(cfg["dim"]) * 0.02).astype(np.float32))

    d, f = cfg["dim"], cfg["ff"]
    out = {"embed": rng.standard_normal((cfg["vocab"], d)).astype(np.float32)}
    for i in range(cfg["layers"]):
        shapes = [("norm1", None), ("q", (d, d)), ("k", (d, d)), ("v", (d, d)),
                  ("out", (d, d)), ("norm2", None), ("ff1", (d, f)), ("ff2", (f, d))]
        for name, shape in shapes:
            w, b = norm() if shape is None else linear(*shape)
            out[f"l{i}.{name}.w"], out[f"l{i}.{name}.b"] = w, b
    out["head.w"], out["head.b"] = linear(d, cfg["vocab"])
    return out


def lstm_params(cfg, rng):
    """The LSTM's and the head's weights, U(-1/sqrt(hidden), 1/sqrt(hidden)) as PyTorch
    initialises them (names and layout in the module docstring)."""
    h = cfg["hidden"]
    bound = 1.0 / np.sqrt(h)

    def u(*shape):
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    out = {}
    for i in range(cfg["layers"]):
        fan_in = cfg["input"] if i == 0 else h
        out.update({f"l{i}.w_ih": u(4 * h, fan_in), f"l{i}.w_hh": u(4 * h, h),
                    f"l{i}.b_ih": u(4 * h), f"l{i}.b_hh": u(4 * h)})
    out["head.w"], out["head.b"] = u(h, cfg["classes"]), u(cfg["classes"])
    return out


def flat_layers(layers):
    """resnet9's per-layer dicts as one name -> array dict ("layer3.gamma")."""
    return {f"layer{i}.{k}": v for i, layer in enumerate(layers) for k, v in layer.items()}


def initial_params(case, data):
    """The parameters (and running statistics) before the step, as a training suite's
    result names them."""
    return flat_layers(data["layers"]) if case.suite == "resnet9-train" else data["params"]


def walk(spec):
    """Every layer of a nested spec, depth first (residual blocks by their contents)."""
    for layer in spec:
        if layer[0] == "residual":
            yield from walk(layer[1])
        else:
            yield layer


def reference(case, data):
    """What every backend's output is compared with: NumPy float64 for matmul and
    attention, PyTorch CPU float32 with the same weights for the others. Raises ImportError
    without torch."""
    if case.suite == "matmul":
        return data["a"].astype(np.float64) @ data["b"].astype(np.float64)
    if case.suite == "attention":
        return attention_reference(**{k: v.astype(np.float64) for k, v in data.items()})
    from . import backends_torch
    return backends_torch.cpu_reference(case, data)


def checks(case, out, ref, data):
    """The comparisons that decide whether ``out`` (a backend's first result) is right."""
    if case.suite == "matmul":
        return [Check("C", out, ref, MATMUL_TOL)]
    if case.suite == "resnet9":
        return [Check("logits", out, ref, RESNET9_TOL)]
    if case.suite == "attention":
        return [Check(name, out[name], ref[name], ATTENTION_TOL) for name in ref]
    if case.suite in MICRO_SUITES:
        return [Check(name, out[name], ref[name], MICRO_TOL) for name in ref]
    if case.suite == "mlp":
        def named(params):
            return {f"{'W' if i % 2 == 0 else 'b'}{i // 2}": a for i, a in enumerate(params)}
        initial = named([a for w, b in data["weights"] for a in (w, b)])
        return ([Check("loss", out["loss"], ref["loss"], MLP_LOSS_TOL)]
                + update_checks(named(out["params"]), named(ref["params"]), initial,
                                lambda name: MLP_UPDATE_TOL))
    if case.suite in TRAIN_SUITES:
        return ([Check("loss", out["loss"], ref["loss"], TRAIN_LOSS_TOL)]
                + update_checks(out["params"], ref["params"], initial_params(case, data),
                                lambda name: train_update_tol(case.suite, name)))
    raise ValueError(case.suite)


def train_update_tol(suite, name):
    """The tolerance of parameter ``name``'s update in training suite ``suite``: that of the
    first pattern of TRAIN_UPDATE_TOLS that matches (None: not compared)."""
    return next(tol for pattern, tol in TRAIN_UPDATE_TOLS[suite].items()
                if fnmatch.fnmatchcase(name, pattern))


def update_checks(new, new_ref, initial, tol):
    """One Check per name of ``initial``: the update ``new - initial`` against
    ``new_ref - initial``, within ``tol(name)`` (None: that name is not compared).

    The weights barely move in one step (lr * grad is ~1e-4 of them), so comparing the
    weights themselves would not see a wrong gradient; a small floor keeps float32 rounding
    of W from dominating an update that is ~0. A missing or extra name fails."""
    result = []
    for name, old in initial.items():
        limit = tol(name)
        if limit is None:
            continue
        old = np.asarray(old, np.float64)
        ref = np.asarray(new_ref[name], np.float64)
        got = np.asarray(new[name], np.float64) if name in new else np.array(np.nan)
        result.append(Check(f"update of {name}", got - old, ref - old, limit,
                            floor=1e-5 * float(np.linalg.norm(ref))))
    if set(new) != set(initial):
        result.append(Check("parameter names", np.array([len(set(new) ^ set(initial))]),
                            np.array([0]), 0.0))
    return result


def attention_reference(q, k, v, dout):
    """Output and input gradients of softmax(q k^T / sqrt(d)) v, in NumPy (float64 in)."""
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = p @ v
    dp = dout @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) / np.sqrt(q.shape[-1])
    return {"out": out, "dq": ds @ k, "dk": np.swapaxes(ds, -1, -2) @ q,
            "dv": np.swapaxes(p, -1, -2) @ dout}
