"""PyTorch variants: CPU (1 thread, all threads), CUDA eager, torch.compile (default and
"reduce-overhead"), and the whole step captured by hand as one CUDA graph.

All run in fp32 with TF32 off. The models are built from the shared specs in suites.py.
"""
import contextlib
import importlib.util
import os

from .backends import Backend, NotInSuite, Runnable
from .suites import BN_EPS, BN_MOMENTUM, NORM_EPS, RESNET9, flat_layers, walk

# For developing on a machine without a GPU only: run the torch.compile variants on the
# CPU so their code path can be exercised (not a benchmark configuration).
COMPILE_ON_CPU_ENV = "NEEDLE_BENCH_TORCH_COMPILE_ON_CPU"

# name, device kind, mode, note
VARIANTS = (
    ("torch-cpu-1t", "cpu", "eager", "CPU eager, 1 thread"),
    ("torch-cpu", "cpu", "eager", "CPU eager, all threads"),
    ("torch-cuda", "cuda", "eager", "CUDA eager"),
    ("torch-compile", "cuda", "compile", "torch.compile default (train: fwd+loss compiled, "
                                         "backward and optimizer step eager)"),
    ("torch-compile-ro", "cuda", "compile-ro", 'torch.compile mode="reduce-overhead" (train: '
                                               "fwd+loss compiled, optimizer step eager)"),
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
    build = {"matmul": matmul, "mlp": mlp, "resnet9": resnet9, "attention": attention,
             "resnet9-train": resnet9_train, "transformer": transformer,
             "lstm": lstm, "micro-conv-step": conv_step, "micro-norms": norms}[case.suite]
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
            bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
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


def resnet9_state(torch, model):
    """The parameters and running statistics of a resnet9_model, per layer of RESNET9 in walk
    order and in the shared layout (suites.resnet9_params)."""
    nn = torch.nn
    mods = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    out = []
    for layer in (la for la in walk(RESNET9) if la[0] in ("convbn", "linear")):
        if layer[0] == "convbn":
            conv, bn = mods.pop(0), mods.pop(0)
            out.append({"w": _np(conv.weight), "b": _np(conv.bias), "gamma": _np(bn.weight),
                        "beta": _np(bn.bias), "mean": _np(bn.running_mean),
                        "var": _np(bn.running_var)})
        else:
            lin = mods.pop(0)
            out.append({"w": _np(lin.weight).T.copy(), "b": _np(lin.bias)})
    return out


def _load_linear(torch, lin, w, b):
    """Load the shared (in, out) weight and the bias into ``torch.nn.Linear`` ``lin``."""
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w.T.copy()))
        lin.bias.copy_(torch.from_numpy(b))
    return lin


def transformer_model(torch, cfg, params):
    """The causal language model written out from nn.Linear, nn.LayerNorm and
    F.scaled_dot_product_attention, as Needle's nn.TransformerLayer computes it: pre-norm,
    ``x + out(attn(norm1(x)))`` then ``x + ff2(relu(ff1(norm2(x))))``, causal, no dropout;
    ``model(tokens)`` gives (batch * seq, vocab) logits."""
    nn, F = torch.nn, torch.nn.functional
    d, heads = cfg["dim"], cfg["heads"]

    def linear(name, fan_in, fan_out):
        return _load_linear(torch, nn.Linear(fan_in, fan_out), params[f"{name}.w"],
                            params[f"{name}.b"])

    def norm(name):
        ln = nn.LayerNorm(d, eps=1e-5)
        with torch.no_grad():
            ln.weight.copy_(torch.from_numpy(params[f"{name}.w"]))
            ln.bias.copy_(torch.from_numpy(params[f"{name}.b"]))
        return ln

    class Layer(nn.Module):
        def __init__(self, i):
            super().__init__()
            self.norm1, self.norm2 = norm(f"l{i}.norm1"), norm(f"l{i}.norm2")
            self.q, self.k, self.v, self.out = (linear(f"l{i}.{n}", d, d)
                                                for n in ("q", "k", "v", "out"))
            self.ff1, self.ff2 = linear(f"l{i}.ff1", d, cfg["ff"]), linear(f"l{i}.ff2", cfg["ff"], d)

        def forward(self, x):
            b, t, _ = x.shape
            h = self.norm1(x)
            q, k, v = (p(h).view(b, t, heads, d // heads).transpose(1, 2)
                       for p in (self.q, self.k, self.v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
            return x + self.ff2(F.relu(self.ff1(self.norm2(x))))

    class CausalLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(cfg["vocab"], d)
            with torch.no_grad():
                self.embed.weight.copy_(torch.from_numpy(params["embed"]))
            self.layers = nn.ModuleList(Layer(i) for i in range(cfg["layers"]))
            self.head = linear("head", d, cfg["vocab"])

        def forward(self, tokens):
            h = self.embed(tokens)
            for layer in self.layers:
                h = layer(h)
            return self.head(h).reshape(-1, cfg["vocab"])

    return CausalLM()


def transformer_state(torch, model):
    """The CausalLM's parameters by their shared names (suites.transformer_params)."""
    out = {"embed": _np(model.embed.weight)}
    for i, layer in enumerate(model.layers):
        for name in ("norm1", "q", "k", "v", "out", "norm2", "ff1", "ff2"):
            m = getattr(layer, name)
            w = _np(m.weight)
            out[f"l{i}.{name}.w"] = w if name.startswith("norm") else w.T.copy()
            out[f"l{i}.{name}.b"] = _np(m.bias)
    out["head.w"], out["head.b"] = _np(model.head.weight).T.copy(), _np(model.head.bias)
    return out


def lstm_model(torch, cfg, params):
    """nn.LSTM (sequence-first; the shared weights are in its layout) and a Linear on the
    last step's hidden state."""
    nn = torch.nn

    class LastStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(cfg["input"], cfg["hidden"], num_layers=cfg["layers"])
            with torch.no_grad():
                for i in range(cfg["layers"]):
                    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
                        torch_name = name.replace("w_", "weight_").replace("b_", "bias_")
                        getattr(self.lstm, f"{torch_name}_l{i}").copy_(
                            torch.from_numpy(params[f"l{i}.{name}"]))
            self.head = _load_linear(torch, nn.Linear(cfg["hidden"], cfg["classes"]),
                                     params["head.w"], params["head.b"])

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[-1])

    return LastStep()


def lstm_state(torch, model):
    out = {}
    for i in range(model.lstm.num_layers):
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            torch_name = name.replace("w_", "weight_").replace("b_", "bias_")
            out[f"l{i}.{name}"] = _np(getattr(model.lstm, f"{torch_name}_l{i}"))
    out["head.w"], out["head.b"] = _np(model.head.weight).T.copy(), _np(model.head.bias)
    return out


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


def _eager_only(case, mode):
    """The suites that measure kernels themselves run eager PyTorch only."""
    if mode != "eager":
        raise NotInSuite(f"the {case.suite} suite runs PyTorch eager only")


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


def _reset_optimizer(torch, opt):
    """``opt`` as before its first step, in place (a captured graph reads these tensors):
    zero momentum buffers, Adam moments and step counts give the first step's update."""
    for state in opt.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                value.zero_()


def _train(torch, mode, model, opt, x, y):
    """The training step of ``model`` on (x, y) as ``mode`` runs it: zero grads, forward,
    cross-entropy, backward, ``opt.step()``; torch.compile compiles forward and loss, and
    "cudagraph" captures the whole step. Returns the validated step's loss and the step.

    The validated step is one step from the initial state, run as it will be timed: after
    the warm-up, recording or capture calls, which move the weights, the buffers (BatchNorm's
    running statistics) and the optimizer's state, so all are restored first, in place."""
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

    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def restore():
        model.load_state_dict(initial)  # copies in place
        _reset_optimizer(torch, opt)

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
    return float(_np(loss)), step


def _labels(torch, y, device):
    return torch.from_numpy(y.reshape(-1)).to(device)


def mlp(torch, mode, device, case, data):
    model = mlp_model(torch, case.params["sizes"], data["weights"]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=data["lr"])
    loss, step = _train(torch, mode, model, opt, torch.from_numpy(data["x"]).to(device),
                        _labels(torch, data["y"], device))
    params = [a for m in model if isinstance(m, torch.nn.Linear)
              for a in (_np(m.weight).T.copy(), _np(m.bias))]
    return Runnable(output={"loss": loss, "params": params}, step=step)


def resnet9_train(torch, mode, device, case, data):
    """ResNet9 in training mode (batch statistics; the running ones are updated, also under
    CUDA-graph capture, where that update is part of the graph)."""
    model = resnet9_model(torch, RESNET9, data["layers"]).to(device).train()
    opt = torch.optim.SGD(model.parameters(), **data["sgd"])
    loss, step = _train(torch, mode, model, opt, torch.from_numpy(data["x"]).to(device),
                        _labels(torch, data["y"], device))
    return Runnable(output={"loss": loss, "params": flat_layers(resnet9_state(torch, model))},
                    step=step)


def transformer(torch, mode, device, case, data):
    model = transformer_model(torch, case.params, data["params"]).to(device)
    adam = data["adam"]
    # capturable: the step count lives on the GPU, so a captured step advances it
    opt = torch.optim.Adam(model.parameters(), lr=adam["lr"], betas=adam["betas"],
                           eps=adam["eps"], capturable=mode == "cudagraph")
    loss, step = _train(torch, mode, model, opt, torch.from_numpy(data["tokens"]).to(device),
                        _labels(torch, data["targets"], device))
    return Runnable(output={"loss": loss, "params": transformer_state(torch, model)},
                    step=step)


def lstm(torch, mode, device, case, data):
    model = lstm_model(torch, case.params, data["params"]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=data["lr"])
    loss, step = _train(torch, mode, model, opt, torch.from_numpy(data["x"]).to(device),
                        _labels(torch, data["y"], device))
    return Runnable(output={"loss": loss, "params": lstm_state(torch, model)}, step=step)


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
    _eager_only(case, mode)
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


def _backward_step(layer, x, dout):
    """A step of one layer: its forward on ``x``, then the backward of ``dout``, the
    gradients cleared first."""
    def step():
        x.grad = None
        layer.zero_grad(set_to_none=True)
        y = layer(x)
        y.backward(dout)
        return y
    return step


def _copy_params(torch, layer, **arrays):
    """``layer`` with each named parameter set to its shared NumPy array."""
    with torch.no_grad():
        for name, array in arrays.items():
            getattr(layer, name).copy_(torch.from_numpy(array))
    return layer


def conv_step(torch, mode, device, case, data):
    """nn.Conv2d (padding k//2, no bias) forward and backward; eager only."""
    _eager_only(case, mode)
    p = case.params
    conv = torch.nn.Conv2d(p["c_in"], p["c_out"], p["kernel"], padding=p["kernel"] // 2,
                           bias=False)
    conv = _copy_params(torch, conv, weight=data["w"]).to(device)
    x = torch.from_numpy(data["x"]).to(device).requires_grad_()
    step = _backward_step(conv, x, torch.from_numpy(data["dout"]).to(device))
    output = {"y": _np(step()), "dx": _np(x.grad), "dw": _np(conv.weight.grad)}
    return Runnable(output=output, step=step)


def norms(torch, mode, device, case, data):
    """nn.LayerNorm, or nn.BatchNorm2d in training mode, forward and backward; eager only."""
    _eager_only(case, mode)
    norm, shape = case.params["norm"], case.params["shape"]
    if norm == "layernorm":
        layer = torch.nn.LayerNorm(shape[-1], eps=NORM_EPS)
    else:
        layer = torch.nn.BatchNorm2d(shape[1], eps=NORM_EPS, momentum=BN_MOMENTUM).train()
    layer = _copy_params(torch, layer, weight=data["w"], bias=data["b"]).to(device)
    x = torch.from_numpy(data["x"]).to(device).requires_grad_()
    step = _backward_step(layer, x, torch.from_numpy(data["dout"]).to(device))
    output = {"y": _np(step()), "dx": _np(x.grad), "dw": _np(layer.weight.grad),
              "db": _np(layer.bias.grad)}
    if norm == "batchnorm":
        output.update(running_mean=_np(layer.running_mean), running_var=_np(layer.running_var))
    return Runnable(output=output, step=step)
