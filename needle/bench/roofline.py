"""How much of the GPU a timed step uses: its share of the fp32 peak FLOP/s and of the
memory bandwidth, for the suites whose work is known (``mlp``, ``resnet9``, ``matmul``).

Work per step, counted the same for every backend:

* FLOPs: the multiply-adds of the products (2 per multiply-add): a Linear layer's forward
  ``2 b i o`` and, in a training step, its weight gradient and (except for the first
  layer, whose input needs no gradient) its input gradient; a convolution's
  ``2 b h w c_out c_in k^2``. Elementwise work is left out (it is small beside them).
* Bytes: the *compulsory* traffic in float32: parameters read once (and, in a training
  step, written once, with their gradients written once: they are left on ``p.grad``),
  the input batch read once and the output written once. Everything else may stay on chip
  in a perfect schedule, so this is a lower bound: a share near 100% means the step is at
  the bandwidth floor, not that it moves only these bytes.

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


def work(case):
    """``(flops, bytes)`` of one timed step of ``case``, or ``None``."""
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
    if case.suite == "resnet9":
        b, (_, h, w) = p["batch"], p["image"]
        flops, params = 0.0, 0
        for layer in walk(RESNET9):
            if layer[0] == "convbn":
                _, cin, cout, k, stride = layer
                h, w = math.ceil(h / stride), math.ceil(w / stride)
                flops += 2.0 * b * h * w * cout * cin * k * k
                params += cout * cin * k * k + 5 * cout  # bias, BatchNorm's four
            elif layer[0] == "linear":
                _, cin, cout = layer
                flops += 2.0 * b * cin * cout
                params += cin * cout + cout
        return flops, 4.0 * (params + b * math.prod(p["image"]) + b * 10)
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
        r["pct_fp32_peak"] = 100.0 * done[0] / seconds / peak[0]
        r["pct_bandwidth"] = 100.0 * done[1] / seconds / peak[1]
    return rows
