"""How much of the GPU a timed step uses: its share of the fp32 peak FLOP/s and of the
memory bandwidth, for the suites whose work is known (all but ``attention``; ``micro-norms``
has no products, so only its bandwidth share).

Work per step, counted the same for every backend:

* FLOPs: the multiply-adds of the products (2 per multiply-add): a Linear layer's forward
  ``2 b i o`` and, in a training step, its weight gradient and (except for the first
  layer, whose input needs no gradient) its input gradient; a convolution's
  ``2 b h w c_out c_in k^2``. Elementwise work is left out (it is small beside them).
  The training suites other than ``mlp`` (``resnet9-train``, ``transformer``, ``lstm``)
  count 3x the forward products (forward, input gradient, weight gradient: each the same
  number of multiply-adds), so they overcount by the first layer's input gradient, which
  no one computes; attention's two products are counted over the whole (seq, seq) square,
  though causal kernels can skip half of it. ``micro-conv-step`` counts its forward and
  both gradients' convolutions.
* Bytes: the *compulsory* traffic in float32: parameters read once (and, in a training
  step, written once, with their gradients written once: they are left on ``p.grad``),
  the input batch read once and the output written once; an optimizer's buffers (SGD's
  momentum, Adam's two moments) and BatchNorm's running statistics are read and written
  once. Labels and token ids count 4 bytes each. The micro suites read x, the weights and
  the output gradient and write y and every gradient (BatchNorm's running statistics are
  read and written). Everything else may stay on chip in a perfect schedule, so this is a
  lower bound: a share near 100% means the step is at the bandwidth floor, not that it
  moves only these bytes.

Peaks are the vendors' dense fp32 (non-tensor-core) FLOP/s and HBM bandwidth; a GPU missing
from :data:`PEAKS` gets no shares.
"""
import math

from .suites import RESNET9, walk

#: GPU name substring -> (fp32 FLOP/s, memory bytes/s)
PEAKS = {"H200": (66.9e12, 4.8e12), "H100 80GB HBM3": (66.9e12, 3.35e12),
         "H100 PCIe": (51.2e12, 2.0e12), "A100-SXM4-80GB": (19.5e12, 2.039e12),
         "A100 80GB PCIe": (19.5e12, 1.935e12), "A100-SXM4-40GB": (19.5e12, 1.555e12),
         "A100-PCIE-40GB": (19.5e12, 1.555e12), "L40S": (91.6e12, 0.864e12),
         "RTX 4090": (82.6e12, 1.008e12)}
GPU_BACKENDS = ("needle-cuda", "needle-cudnn", "needle-webgpu", "torch-cuda", "torch-compile",
                "torch-cudagraph", "jax-jit")


def peaks(gpu):
    for key, value in PEAKS.items():
        if gpu and key in gpu:
            return value
    return None


def resnet9_forward(batch, image):
    """(forward FLOPs, trainable parameter count, running-statistic count) of RESNET9 on
    ``batch`` images of shape ``image``."""
    _, h, w = image
    flops, params, stats = 0.0, 0, 0
    for layer in walk(RESNET9):
        if layer[0] == "convbn":
            _, cin, cout, k, stride = layer
            h, w = math.ceil(h / stride), math.ceil(w / stride)
            flops += 2.0 * batch * h * w * cout * cin * k * k
            params += cout * cin * k * k + 3 * cout  # bias, BatchNorm's weight and bias
            stats += 2 * cout
        elif layer[0] == "linear":
            _, cin, cout = layer
            flops += 2.0 * batch * cin * cout
            params += cin * cout + cout
    return flops, params, stats


def transformer_forward(p):
    """(forward FLOPs, parameter count) of the causal language model ``p`` describes."""
    n, d, f, v = p["batch"] * p["seq"], p["dim"], p["ff"], p["vocab"]
    per_layer = 2.0 * n * (4 * d * d + 2 * d * f) + 4.0 * n * p["seq"] * d  # + q k^T and p v
    params = v * d + p["layers"] * (4 * d * d + 2 * d * f + 9 * d + f) + d * v + v
    return p["layers"] * per_layer + 2.0 * n * d * v, params


def lstm_forward(p):
    """(forward FLOPs, parameter count) of the stacked LSTM and its head."""
    h, flops, params = p["hidden"], 0.0, 0
    for i in range(p["layers"]):
        fan_in = p["input"] if i == 0 else h
        flops += 2.0 * p["seq"] * p["batch"] * (fan_in + h) * 4 * h  # the four gates
        params += (fan_in + h) * 4 * h + 8 * h
    return flops + 2.0 * p["batch"] * h * p["classes"], params + h * p["classes"] + p["classes"]


def work(case):
    """``(flops, bytes)`` of one timed step of ``case`` (flops None: no products), or
    ``None``."""
    p = case.params
    if case.suite == "matmul":
        m, k, n = p["m"], p["k"], p["n"]
        return 2.0 * m * k * n, 4.0 * (m * k + k * n + m * n)
    if case.suite == "mlp":
        b, sizes = p["batch"], p["sizes"]
        pairs = list(zip(sizes[:-1], sizes[1:]))
        params = sum(i * o + o for i, o in pairs)
        products = 2 * sum(i * o for i, o in pairs) + sum(i * o for i, o in pairs[1:])
        return 2.0 * b * products, 4.0 * (3 * params + b * sizes[0] + b)
    if case.suite in ("resnet9", "resnet9-train"):
        b = p["batch"]
        flops, params, stats = resnet9_forward(b, p["image"])
        io = b * math.prod(p["image"]) + b * 10  # images in, logits out (or labels in)
        if case.suite == "resnet9":
            return flops, 4.0 * (params + stats + io)
        # parameters read and written, gradients written, momentum read and written;
        # running statistics read and written
        return 3 * flops, 4.0 * (5 * params + 2 * stats + io)
    if case.suite == "transformer":
        flops, params = transformer_forward(p)
        # parameters read and written, gradients written, two Adam moments read and written
        return 3 * flops, 4.0 * (7 * params + 2 * p["batch"] * p["seq"])
    if case.suite == "lstm":
        flops, params = lstm_forward(p)
        inputs = p["seq"] * p["batch"] * p["input"] + p["batch"]
        return 3 * flops, 4.0 * (3 * params + inputs)
    if case.suite == "micro-conv-step":
        x = p["batch"] * p["c_in"] * p["height"] * p["width"]
        y = p["batch"] * p["c_out"] * p["height"] * p["width"]
        w = p["c_out"] * p["c_in"] * p["kernel"] ** 2
        return case.flops, 4.0 * 2 * (x + y + w)  # x, dx; dout, y; w, dw
    if case.suite == "micro-norms":
        shape = p["shape"]
        dim = shape[-1] if p["norm"] == "layernorm" else shape[1]
        stats = 2 * 2 * dim if p["norm"] == "batchnorm" else 0  # running mean, var in and out
        # x, dout, y, dx; w, b, dw, db
        return None, 4.0 * (4 * math.prod(shape) + 4 * dim + stats)
    return None


def add_shares(rows, cases, gpu):
    """Fill ``pct_fp32_peak`` and ``pct_bandwidth`` of every timed GPU row."""
    peak = peaks(gpu)
    if peak is None:
        return rows
    by_label = {(c.suite, c.name): c for c in cases}
    for r in rows:
        case = by_label.get((r["suite"], r["case"]))
        if case is None or r.get("median_ms") is None or not r["backend"].startswith(GPU_BACKENDS):
            continue
        done = work(case)
        if done is None:
            continue
        seconds = r["median_ms"] * 1e-3
        r["pct_fp32_peak"] = None if done[0] is None else 100.0 * done[0] / seconds / peak[0]
        r["pct_bandwidth"] = 100.0 * done[1] / seconds / peak[1]
    return rows
