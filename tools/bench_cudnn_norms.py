"""LayerNorm and training-mode BatchNorm on the cudnn device: Needle's own kernels against
cuDNN's normalisation graphs (GPU only).

The cudnn device routes an op to a library only where the library is faster; this measures
that question for the two norms. Every implementation is first checked against a float64
NumPy reference (outputs, saved statistics and every gradient), then timed.

- LayerNorm, per op on the same device buffers: Needle's kernels against the cudnn
  backend's ``LayerNormGraph`` (forward and backward), the two candidates it chooses
  between per shape. ``gpu``: CUDA events around one call, median of 200;
  ``eager``: 200 calls issued back to back, host included.
- BatchNorm2d in training: one forward + backward step of ``nn.BatchNorm2d`` on the cudnn
  device as a user runs it, with cuDNN's batchnorm graphs (``batchnorm_train``) and with
  the composition other devices use (statistics by reductions, one normalisation kernel,
  autograd), eager ms per step.

    python tools/bench_cudnn_norms.py      # on a GPU machine with the cudnn extra
"""
import numpy as np

import needle
from needle.bench import timing
from needle.backend_ndarray.cuda.backend import CudaBackend
from needle.backend_ndarray.cudnn import CudnnBackend, graphs

LN_SHAPES = [(64 * 128, 768), (8 * 512, 1024), (4096, 4096), (512, 512), (64 * 128, 256),
             (2048, 8192)]
BN_SHAPES = [(64, 64, 32, 32), (64, 128, 16, 16), (64, 256, 8, 8), (64, 512, 4, 4),
             (16, 64, 32, 32)]
EPS = 1e-5
LN_OUTPUTS = ("y", "mean", "rstd", "dx", "dw", "db")


def rel_error(got, want):
    return float(np.max(np.abs(got - want) / (1 + np.abs(want))))


def gpu_ms(fn, reps=200):
    import cupy
    for _ in range(20):
        fn()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(reps):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return float(np.median(times))


def eager_ms(fn, reps=200):
    from cupy.cuda.runtime import deviceSynchronize  # the whole GPU: PyTorch's stream too

    for _ in range(20):
        fn()
    return timing.time_host(fn, deviceSynchronize, samples=1, inner=reps)[0] * 1e3


# -- LayerNorm ------------------------------------------------------------------------------
def layernorm_reference(x, w, b, dy):
    """float64 LayerNorm forward and backward over the last axis."""
    x, w, b, dy = (a.astype(np.float64) for a in (x, w, b, dy))
    mean = x.mean(1)
    rstd = 1 / np.sqrt(x.var(1) + EPS)
    xhat = (x - mean[:, None]) * rstd[:, None]
    g = dy * w
    dx = rstd[:, None] * (g - g.mean(1, keepdims=True) - xhat * (g * xhat).mean(1, keepdims=True))
    return dict(y=xhat * w + b, mean=mean, rstd=rstd, dx=dx, dw=(dy * xhat).sum(0), db=dy.sum(0))


class Buffers:
    """Device buffers for the inputs and one set of outputs of a (rows, cols) LayerNorm."""

    def __init__(self, backend, rows, cols, inputs):
        self.backend = backend
        self.shapes = dict({n: a.shape for n, a in inputs.items()}, y=(rows, cols),
                           mean=(rows,), rstd=(rows,), dx=(rows, cols), dw=(cols,), db=(cols,))
        self.buf = {n: backend.alloc(int(np.prod(s)), "float32") for n, s in self.shapes.items()}
        for n, a in inputs.items():
            backend.from_numpy(a, self.buf[n])

    def ptrs(self, *names):
        return tuple(self.buf[n].ptr for n in names)

    def read(self, name):
        return self.backend.to_numpy(self.buf[name], (self.buf[name].size,), (1,), 0) \
            .reshape(self.shapes[name])


def layernorm_table(backend):
    rng = np.random.default_rng(0)
    print("LayerNorm, ms per call: gpu = CUDA events around one call (median of 200), "
          "eager = 200 calls back to back (host included)")
    print(f"{'rows x cols':>12} | {'fwd gpu':>15} {'fwd eager':>15} | {'bwd gpu':>15} "
          f"{'bwd eager':>15} | max rel. error vs float64 (ours, cudnn)")
    print(f"{'':>12} | " + " ".join([f"{'ours   cudnn':>15}"] * 2) + " | "
          + " ".join([f"{'ours   cudnn':>15}"] * 2) + " |")
    for rows, cols in LN_SHAPES:
        inputs = dict(x=3 * rng.standard_normal((rows, cols)) - 0.5,
                      w=rng.standard_normal(cols) + 1, b=rng.standard_normal(cols),
                      dy=rng.standard_normal((rows, cols)))
        inputs = {n: a.astype(np.float32) for n, a in inputs.items()}
        ref = layernorm_reference(**inputs)
        ours, theirs = (Buffers(backend, rows, cols, inputs) for _ in range(2))
        b = ours.buf
        fwd_graph = backend.graphs.get(graphs.LayerNormGraph, "forward", rows, cols, EPS)
        bwd_graph = backend.graphs.get(graphs.LayerNormGraph, "backward", rows, cols, 0.0)
        fwd_ptrs = theirs.ptrs("x", "w", "b", "y", "mean", "rstd")
        bwd_ptrs = theirs.ptrs("dy", "x", "w", "mean", "rstd", "dx", "dw", "db")
        impls = (  # ours: CudaBackend's kernels, whatever the cudnn backend would pick
            (lambda: CudaBackend.layernorm(backend, b["x"], b["w"], b["b"], b["y"], b["mean"],
                                           b["rstd"], rows, cols, EPS),
             lambda: CudaBackend.layernorm_backward(
                 backend, b["dy"], b["x"], b["w"], b["mean"], b["rstd"], b["dx"], b["dw"],
                 b["db"], rows, cols)),
            (lambda: backend.graphs.run(fwd_graph, fwd_ptrs),
             lambda: backend.graphs.run(bwd_graph, bwd_ptrs)))
        for fwd, bwd in impls:
            fwd(), bwd()
        errors = [{n: rel_error(bufs.read(n), ref[n]) for n in LN_OUTPUTS} for bufs in (ours, theirs)]
        times = [timer(impl[i]) for i in (0, 1) for timer in (gpu_ms, eager_ms) for impl in impls]
        cells = " | ".join(" ".join(f"{times[j]:7.4f} {times[j + 1]:7.4f}" for j in (k, k + 2))
                           for k in (0, 4))
        worst = ", ".join(f"{n} {errors[0][n]:.0e} {errors[1][n]:.0e}" for n in LN_OUTPUTS)
        print(f"{rows:>5} x {cols:<4} | {cells} | {worst}", flush=True)


# -- BatchNorm2d, training mode --------------------------------------------------------------
def batchnorm_reference(x, w, b, dy):
    """float64 training BatchNorm over N, H, W of NCHW x: y and the three gradients."""
    x, w, b, dy = (a.astype(np.float64) for a in (x, w, b, dy))
    axes, m, col = (0, 2, 3), x.size // x.shape[1], (1, -1, 1, 1)
    rstd = 1 / np.sqrt(x.var(axes) + EPS)
    xhat = (x - x.mean(axes).reshape(col)) * rstd.reshape(col)
    dw, db = (dy * xhat).sum(axes), dy.sum(axes)
    dx = (w * rstd).reshape(col) / m * (m * dy - db.reshape(col) - xhat * dw.reshape(col))
    return dict(y=xhat * w.reshape(col) + b.reshape(col), dx=dx, dw=dw, db=db)


def batchnorm_step(inputs):
    """One training step of nn.BatchNorm2d on the cudnn device, and a function that runs one
    and returns y and the gradients."""
    device = needle.cudnn()
    bn = needle.nn.BatchNorm2d(inputs["x"].shape[1], eps=EPS, device=device)
    bn.weight.data = needle.Tensor(inputs["w"], device=device)
    bn.bias.data = needle.Tensor(inputs["b"], device=device)
    x = needle.Tensor(inputs["x"], device=device, requires_grad=True)
    dy = needle.Tensor(inputs["dy"], device=device)

    def step():
        x.grad = bn.weight.grad = bn.bias.grad = None
        y = bn(x)
        y.backward(dy)
        return y

    def results():
        y = step()
        return dict(y=y.numpy(), dx=x.grad.numpy(), dw=bn.weight.grad.numpy(),
                    db=bn.bias.grad.numpy())
    return step, results


def torch_batchnorm_step(shape):
    """The same step with torch.nn.BatchNorm2d on the GPU, or None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    bn = torch.nn.BatchNorm2d(shape[1], eps=EPS).cuda()
    x = torch.randn(*shape, device="cuda", requires_grad=True)
    dy = torch.randn(*shape, device="cuda")

    def step():
        x.grad = bn.weight.grad = bn.bias.grad = None
        bn(x).backward(dy)
    return step


def batchnorm_table():
    rng = np.random.default_rng(1)
    composed = CudnnBackend.supports

    def without_cudnn_batchnorm(self, op, dtype=None):
        return op not in ("batchnorm_train", "batchnorm_train_backward") and composed(self, op, dtype)
    print("\nBatchNorm2d training step (forward + backward) on needle.cudnn(), eager ms per "
          "step [max rel. error vs float64]")
    print(f"{'n, c, h, w':>18} | {'cuDNN graphs':>18} | {'composed':>18} | composed / cuDNN "
          f"| torch | cuDNN / torch")
    for shape in BN_SHAPES:
        c = shape[1]
        inputs = dict(x=2 * rng.standard_normal(shape) + 0.5, w=rng.standard_normal(c) + 1,
                      b=rng.standard_normal(c), dy=rng.standard_normal(shape))
        inputs = {k: a.astype(np.float32) for k, a in inputs.items()}
        ref = batchnorm_reference(**inputs)
        cells, times = [], []
        for supports in (composed, without_cudnn_batchnorm):
            CudnnBackend.supports = supports
            try:
                step, results = batchnorm_step(inputs)
                got = results()
                times.append(eager_ms(step))
                error = max(rel_error(got[k], ref[k]) for k in got)
                cells.append(f"{times[-1]:8.4f} [{error:.0e}]")
            finally:
                CudnnBackend.supports = composed
        torch_step = torch_batchnorm_step(shape)
        theirs = eager_ms(torch_step) if torch_step else float("nan")
        print(f"{str(shape):>18} | " + " | ".join(f"{c:>18}" for c in cells)
              + f" | {times[1] / times[0]:16.1f} | {theirs:6.4f} | {times[0] / theirs:13.2f}",
              flush=True)


def main():
    backend = needle.cudnn().backend
    layernorm_table(backend)
    batchnorm_table()


if __name__ == "__main__":
    main()
