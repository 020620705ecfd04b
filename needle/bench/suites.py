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
"""
import zlib
from dataclasses import dataclass, field

import numpy as np

from .validation import Check

SUITES = ("matmul", "mlp", "resnet9", "attention")

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

# Relative-error tolerances (||out - ref|| / ||ref||). fp32 lands far below these; TF32 or
# bf16 arithmetic (~3e-4 and up) fails the matmul check on purpose: this suite is fp32.
MATMUL_TOL = 1e-4
MLP_LOSS_TOL = 1e-4
MLP_UPDATE_TOL = 1e-2   # the weight update lr*grad; fp32 noise reaches ~7e-4 on deep-6L
RESNET9_TOL = 1e-3
ATTENTION_TOL = 2e-2  # bf16 inputs and outputs (8-bit mantissa)


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


def walk(spec):
    """Every layer of a nested spec, depth first (residual blocks by their contents)."""
    for layer in spec:
        if layer[0] == "residual":
            yield from walk(layer[1])
        else:
            yield layer


def reference(case, data):
    """What every backend's output is compared with: NumPy float64 for matmul, PyTorch CPU
    float32 with the same weights for mlp and resnet9. Raises ImportError without torch."""
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
    if case.suite == "mlp":
        # The weights barely move in one step (lr * grad is ~1e-4 of them), so compare the
        # update itself; a small floor keeps float32 rounding of W from dominating it.
        result = [Check("loss", out["loss"], ref["loss"], MLP_LOSS_TOL)]
        initial = [a for w, b in data["weights"] for a in (w, b)]
        for i, (new, new_ref, old) in enumerate(zip(out["params"], ref["params"], initial)):
            old = old.astype(np.float64)
            floor = 1e-5 * float(np.linalg.norm(np.asarray(new_ref, np.float64)))
            result.append(Check(f"update of {'W' if i % 2 == 0 else 'b'}{i // 2}",
                                np.asarray(new, np.float64) - old,
                                np.asarray(new_ref, np.float64) - old, MLP_UPDATE_TOL,
                                floor=floor))
        if len(out["params"]) != len(ref["params"]):
            result.append(Check("parameter count", np.array([len(out["params"])]),
                                np.array([len(ref["params"])]), 0.0))
        return result
    raise ValueError(case.suite)


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
