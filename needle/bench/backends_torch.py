"""PyTorch variants: CPU (1 thread, all threads), CUDA eager, torch.compile (default and
"reduce-overhead"), and the whole step captured by hand as one CUDA graph.

All run in fp32 with TF32 off. The models are built from the shared specs in suites.py.
"""
import contextlib
import importlib.util
import os

from .backends import Backend, NotInSuite, Runnable
from .suites import BN_EPS, RESNET9

# For developing on a machine without a GPU only: run the torch.compile variants on the
# CPU so their code path can be exercised (not a benchmark configuration).
COMPILE_ON_CPU_ENV = "NEEDLE_BENCH_TORCH_COMPILE_ON_CPU"

# name, device kind, mode, note
VARIANTS = (
    ("torch-cpu-1t", "cpu", "eager", "CPU eager, 1 thread"),
    ("torch-cpu", "cpu", "eager", "CPU eager, all threads"),
    ("torch-cuda", "cuda", "eager", "CUDA eager"),
    ("torch-compile", "cuda", "compile", "torch.compile default (train: fwd+loss compiled, "
                                         "backward and SGD step eager)"),
    ("torch-compile-ro", "cuda", "compile-ro", 'torch.compile mode="reduce-overhead" (train: '
                                               "fwd+loss compiled, SGD step eager)"),
    ("torch-cudagraph", "cuda", "cudagraph", "whole step captured as one CUDA graph"),
)


def _torch():
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return torch


def backends():
    return [Backend(name=name, family="torch", note=note, build=_builder(kind, mode),
                    check=_checker(kind, mode), scope=_one_thread if name == "torch-cpu-1t"
                    else contextlib.nullcontext)
            for name, kind, mode, note in VARIANTS]


def _device(kind, mode):
    if kind == "cuda" and mode.startswith("compile") and os.environ.get(COMPILE_ON_CPU_ENV):
        return "cpu"
    return kind


def _checker(kind, mode):
    def check():
        try:
            torch = _torch()
        except ImportError as e:
            return f"PyTorch not installed ({e}); pip install 'needle[bench]'"
        if _device(kind, mode) == "cpu":
            return None
        if torch.version.cuda is None:
            return f"PyTorch {torch.__version__} is built without CUDA"
        if not torch.cuda.is_available():
            return "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False)"
        if mode.startswith("compile") and importlib.util.find_spec("triton") is None:
            return "triton is not installed (torch.compile needs it on CUDA)"
        return None
    return check


@contextlib.contextmanager
def _one_thread():
    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _builder(kind, mode):
    def build(case, data):
        return _build(case, data, mode, _device(kind, mode))
    return build


def _build(case, data, mode, device):
    torch = _torch()
    build = {"matmul": matmul, "mlp": mlp, "resnet9": resnet9, "attention": attention}[case.suite]
    runnable = build(torch, mode, torch.device(device), case, data)
    on_cuda = device == "cuda"
    if on_cuda:
        runnable.sync = torch.cuda.synchronize
        runnable.timer = "cuda-events"

    def cleanup():
        if mode.startswith("compile"):
            torch._dynamo.reset()
        if on_cuda:
            torch.cuda.empty_cache()
    runnable.cleanup = cleanup
    return runnable


def cpu_reference(case, data):
    """The reference output of ``case``: PyTorch eager on the CPU, float32, same weights."""
    return _build(case, data, "eager", "cpu").output


# ---------------------------------------------------------------- models from the shared spec

def mlp_model(torch, sizes, weights):
    """Linear layers between consecutive ``sizes`` with ReLU between them."""
    layers = []
    for i, ((fan_in, fan_out), (w, b)) in enumerate(zip(zip(sizes[:-1], sizes[1:]), weights)):
        lin = torch.nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def resnet9_model(torch, spec, params):
    """The network described by ``spec`` (see suites.RESNET9) with ``params`` loaded."""
    nn = torch.nn
    it = iter(params)

    class Residual(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x) + x

    def t(a):
        return torch.from_numpy(a.copy())

    def make(layer):
        kind = layer[0]
        if kind == "convbn":
            _, cin, cout, k, stride = layer
            p = next(it)
            conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=True)
            bn = nn.BatchNorm2d(cout, eps=BN_EPS)
            with torch.no_grad():
                conv.weight.copy_(t(p["w"]))
                conv.bias.copy_(t(p["b"]))
                bn.weight.copy_(t(p["gamma"]))
                bn.bias.copy_(t(p["beta"]))
                bn.running_mean.copy_(t(p["mean"]))
                bn.running_var.copy_(t(p["var"]))
            return nn.Sequential(conv, bn, nn.ReLU())
        if kind == "residual":
            return Residual(nn.Sequential(*[make(sub) for sub in layer[1]]))
        if kind == "flatten":
            return nn.Flatten()
        if kind == "relu":
            return nn.ReLU()
        if kind == "linear":
            _, cin, cout = layer
            p = next(it)
            lin = nn.Linear(cin, cout)
            with torch.no_grad():
                lin.weight.copy_(t(p["w"].T))
                lin.bias.copy_(t(p["b"]))
            return lin
        raise ValueError(f"unknown layer {layer!r}")

    return nn.Sequential(*[make(layer) for layer in spec])


# ---------------------------------------------------------------- helpers

def _compile(torch, fn, mode):
    torch._dynamo.reset()  # fresh caches: no recompile limit, no dynamic-shape fallback
    return torch.compile(fn, mode="reduce-overhead" if mode == "compile-ro" else None,
                         dynamic=False)


def _mark_step(torch, mode):
    if mode == "compile-ro" and hasattr(torch, "compiler") and \
            hasattr(torch.compiler, "cudagraph_mark_step_begin"):
        return torch.compiler.cudagraph_mark_step_begin
    return None


def _capture(torch, fn, warmup=3):
    """Capture ``fn`` into a CUDA graph, warming up on a side stream first (as the PyTorch
    CUDA-graph docs require); returns the graph and the static output of the capture."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: JAX's runtime threads, still freeing an earlier row's buffers, must not
    # invalidate this capture (under "global" one did, and broke the CUDA context after it)
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = fn()
    return graph, out


def _wrap(fn, mark=None, no_grad=None):
    def step():
        if mark is not None:
            mark()
        if no_grad is None:
            return fn()
        with no_grad():
            return fn()
    return step


def _first(step, mode):
    """The output to validate: for torch.compile, that of the third call, so that with
    "reduce-overhead" it comes from a CUDA-graph replay (call 1 warms up, call 2 records)."""
    for _ in range(2 if mode.startswith("compile") else 0):
        step()
    return step()


def _np(t):
    return t.detach().cpu().numpy()


# ---------------------------------------------------------------- suites

def matmul(torch, mode, device, case, data):
    a = torch.from_numpy(data["a"]).to(device)
    b = torch.from_numpy(data["b"]).to(device)

    def mm(x, y):
        return x @ y

    if mode == "cudagraph":
        graph, c = _capture(torch, lambda: mm(a, b))
        graph.replay()
        return Runnable(output=_np(c), step=graph.replay)
    fn = mm if mode == "eager" else _compile(torch, mm, mode)
    step = _wrap(lambda: fn(a, b), _mark_step(torch, mode))
    return Runnable(output=_np(_first(step, mode)), step=step)


def _loss_module(torch, model):
    """forward + cross-entropy of ``model`` as one module (what torch.compile compiles)."""
    class WithLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x, y):
            return torch.nn.functional.cross_entropy(self.model(x), y)
    return WithLoss()


def mlp(torch, mode, device, case, data):
    model = mlp_model(torch, case.params["sizes"], data["weights"]).to(device)
    x = torch.from_numpy(data["x"]).to(device)
    y = torch.from_numpy(data["y"]).to(device)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=data["lr"])
    loss_fn = _loss_module(torch, model)
    if mode.startswith("compile"):
        loss_fn = _compile(torch, loss_fn, mode)
    mark = _mark_step(torch, mode)

    def train_step():
        if mark is not None:
            mark()
        opt.zero_grad(set_to_none=True)  # under capture: backward then writes fresh grads
        loss = loss_fn(x, y)
        loss.backward()
        opt.step()
        return loss

    def linear_params():
        return [a for m in model if isinstance(m, torch.nn.Linear)
                for a in (_np(m.weight).T.copy(), _np(m.bias))]

    def restore():
        with torch.no_grad():
            for p, p0 in zip(params, initial):
                p.copy_(p0)

    # The validated step is one step from the initial weights, run as it will be timed:
    # after the warm-up/recording calls (which move the weights, so they are restored;
    # plain SGD has no other state).
    initial = [p.detach().clone() for p in params]
    if mode == "cudagraph":
        graph, loss = _capture(torch, train_step)
        restore()
        graph.replay()
        step = graph.replay
    else:
        for _ in range(2 if mode.startswith("compile") else 0):
            train_step()
        restore()
        loss = train_step()
        step = train_step
    output = {"loss": float(_np(loss)), "params": linear_params()}
    return Runnable(output=output, step=step)


def resnet9(torch, mode, device, case, data):
    model = resnet9_model(torch, RESNET9, data["layers"]).to(device).eval()
    x = torch.from_numpy(data["x"]).to(device)
    if mode == "cudagraph":
        graph, out = _capture(torch, _wrap(lambda: model(x), no_grad=torch.no_grad))
        graph.replay()
        return Runnable(output=_np(out), step=graph.replay)
    fn = model if mode == "eager" else _compile(torch, model, mode)
    step = _wrap(lambda: fn(x), _mark_step(torch, mode), no_grad=torch.no_grad)
    return Runnable(output=_np(_first(step, mode)), step=step)


def attention(torch, mode, device, case, data):
    """scaled_dot_product_attention forward + backward; bf16 on CUDA (flash attention), fp32
    on the CPU. Eager only: the suite measures the attention kernels themselves."""
    if mode != "eager":
        raise NotInSuite("the attention suite runs PyTorch eager only")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = (torch.from_numpy(data[n]).to(device, dtype).requires_grad_() for n in "qkv")
    dout = torch.from_numpy(data["dout"]).to(device, dtype)

    def step():
        for t in (q, k, v):
            t.grad = None
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        out.backward(dout)
        return out

    out = step()
    output = {"out": _np(out.float()), "dq": _np(q.grad.float()), "dk": _np(k.grad.float()),
              "dv": _np(v.grad.float())}
    return Runnable(output=output, step=step)
