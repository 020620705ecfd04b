"""One NCHW convolution's forward + backward per step (``nn.Conv`` without bias, loss =
sum) on the cudnn device, beside ``torch.nn.Conv2d`` on the same GPU in the same process
(fp32, TF32 off). Each figure is the best of 5 windows of 20 steps, in ms per step.

    python tools/bench_conv_step.py      # on a GPU machine with the cudnn extra (+ torch)
"""
import numpy as np

import needle
from needle.bench import timing

# (batch, c_in, height, width, c_out, kernel): ResNet9-like layers and a 3-channel stem
SHAPES = [(32, 64, 32, 32, 128, 3), (64, 128, 16, 16, 256, 3), (64, 256, 8, 8, 512, 3),
          (16, 3, 32, 32, 64, 3)]


def ms_per_step(step, sync, windows=5, steps=20):
    for _ in range(5):
        step()
    return min(timing.time_host(step, sync, samples=windows, inner=steps)) * 1e3


def needle_step(shape, rng):
    n, c, h, w, c_out, k = shape
    device = needle.cudnn()
    conv = needle.nn.Conv(c, c_out, k, bias=False, device=device)
    x = needle.Tensor(rng.standard_normal((n, c, h, w)).astype("float32"), device=device,
                      requires_grad=True)
    return lambda: conv(x).sum().backward(), device.synchronize


def torch_step(shape):
    import torch

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    n, c, h, w, c_out, k = shape
    conv = torch.nn.Conv2d(c, c_out, k, padding=k // 2, bias=False).cuda()
    x = torch.randn(n, c, h, w, device="cuda", requires_grad=True)
    return lambda: conv(x).sum().backward(), torch.cuda.synchronize


def main():
    rng = np.random.default_rng(0)
    print(f"{'shape (n, c, h, w -> c_out, k)':34} {'needle ms':>10} {'torch ms':>10} {'ratio':>7}")
    for shape in SHAPES:
        ours = ms_per_step(*needle_step(shape, rng))
        theirs = ms_per_step(*torch_step(shape))
        n, c, h, w, c_out, k = shape
        label = f"{n}, {c}, {h}x{w} -> {c_out}, {k}"
        print(f"{label:34} {ours:10.3f} {theirs:10.3f} {ours / theirs:7.2f}", flush=True)


if __name__ == "__main__":
    main()
