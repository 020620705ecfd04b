"""Needle on each of its devices, eager (``needle-<name>``) and compiled with
``needle.compile`` (``needle-<name>-compiled``, every suite of COMPILED_SUITES). Written
against the public API only, so a new device appears here without any change."""
import functools
import time

import numpy as np

from .backends import Backend, NotInSuite, Runnable
from .suites import BN_EPS, BN_MOMENTUM, NORM_EPS, RESNET9, flat_layers, walk


def backends(opt_level=2):
    import needle
    out = []
    for d in needle.all_devices():
        out.append(Backend(name=f"needle-{d.name}", family="needle", note=f"needle.{d.name}()",
                           build=_builder(d), check=d.unavailable_reason))
        out.append(Backend(name=f"needle-{d.name}-compiled", family="needle",
                           note=f"needle.compile(opt_level={opt_level}) on needle.{d.name}()",
                           build=_builder(d, opt_level), check=d.unavailable_reason))
    return out


#: devices whose kernels run on CuPy's current stream: timed with CUDA events, as PyTorch
CUDA_DEVICES = ("cuda", "cudnn")
#: suites with a compiled variant (the step compiled as one function)
COMPILED_SUITES = ("mlp", "resnet9", "resnet9-train", "transformer", "lstm")
#: calls a compiled step may take to replay its graph (it does from the 2nd or 3rd)
MAX_COMPILE_CALLS = 6


def _builder(device, opt_level=None):
    """Eager when ``opt_level`` is None, else compiled at that level."""
    def build(case, data):
        suites = {"matmul": matmul, "mlp": mlp, "resnet9": resnet9, "attention": attention,
                  "resnet9-train": resnet9_train, "transformer": transformer, "lstm": lstm,
                  "micro-conv-step": conv_step, "micro-norms": norms}
        if opt_level is None:
            runnable = suites[case.suite](device, case, data)
        elif case.suite in COMPILED_SUITES:
            runnable = suites[case.suite](device, case, data, opt_level)
        else:
            raise NotInSuite(f"compiled Needle runs the {', '.join(COMPILED_SUITES)} suites")
        if device.name in CUDA_DEVICES:
            runnable.timer = "cupy-events"
        return runnable
    return build


def _compile(fn, args, opt_level, device):
    """``fn`` compiled and called on ``args`` until a call has replayed its graph.

    Returns the step (one call: a replay), the replay's result and the row's fields:
    ``compile_s``, the wall seconds from the first call until that first replay finished
    (the traced calls, which also run the step, and building the graph), ``traces``,
    ``launches_per_call`` and ``opt_level``."""
    import needle
    compiled = needle.compile(fn, opt_level=opt_level)
    start = time.perf_counter()
    for _ in range(MAX_COMPILE_CALLS):
        try:
            out = compiled(*args)
        except needle.CompileError as e:  # a documented limit (docs/compile.md): a skip
            raise NotInSuite(f"needle.compile cannot compile this step: "
                             f"{str(e).splitlines()[0]}") from None
        if compiled.stats()["cache_hits"]:
            break
    else:
        raise RuntimeError(f"needle.compile: no replay in {MAX_COMPILE_CALLS} calls "
                           f"({compiled.stats()['traces']} traces)")
    device.synchronize()
    stats = compiled.stats()
    info = {"compile_s": time.perf_counter() - start, "traces": stats["traces"],
            "launches_per_call": stats["launches_per_call"], "opt_level": opt_level}
    return functools.partial(compiled, *args), out, info


def _tensor(array, device, requires_grad=False):
    import needle
    return needle.Tensor(np.ascontiguousarray(array), device=device, dtype="float32",
                         requires_grad=requires_grad)


def _param(array, device):
    import needle
    return needle.nn.Parameter(np.ascontiguousarray(array), device=device, dtype="float32")


# ---------------------------------------------------------------- models from the shared spec

def mlp_model(sizes, weights, device):
    """Linear layers between consecutive ``sizes`` with ReLU between them."""
    from needle import nn
    layers = []
    for i, ((fan_in, fan_out), (w, b)) in enumerate(zip(zip(sizes[:-1], sizes[1:]), weights)):
        lin = nn.Linear(fan_in, fan_out, device=device)
        lin.weight = _param(w, device)
        lin.bias = _param(b.reshape(1, -1), device)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def resnet9_model(spec, params, device):
    """The network described by ``spec`` (see suites.RESNET9) with ``params`` loaded."""
    from needle import nn
    it = iter(params)

    def make(layer):
        kind = layer[0]
        if kind == "convbn":
            _, cin, cout, k, stride = layer
            p = next(it)
            conv = nn.Conv(cin, cout, k, stride, bias=True, device=device)
            conv.weight = _param(p["w"].transpose(2, 3, 1, 0), device)  # OIHW -> (k, k, in, out)
            conv.bias = _param(p["b"], device)
            bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM, device=device)
            bn.weight, bn.bias = _param(p["gamma"], device), _param(p["beta"], device)
            bn.running_mean = _tensor(p["mean"], device)
            bn.running_var = _tensor(p["var"], device)
            return nn.Sequential(conv, bn, nn.ReLU())
        if kind == "residual":
            return nn.Residual(nn.Sequential(*[make(sub) for sub in layer[1]]))
        if kind == "flatten":
            return nn.Flatten()
        if kind == "relu":
            return nn.ReLU()
        if kind == "linear":
            _, cin, cout = layer
            p = next(it)
            lin = nn.Linear(cin, cout, device=device)
            lin.weight, lin.bias = _param(p["w"], device), _param(p["b"].reshape(1, -1), device)
            return lin
        raise ValueError(f"unknown layer {layer!r}")

    return nn.Sequential(*[make(layer) for layer in spec])


def resnet9_state(model):
    """The parameters and running statistics of a resnet9_model, per layer of RESNET9 in walk
    order and in the shared layout (suites.resnet9_params)."""
    from needle import nn
    mods = [m for _, m in model.named_modules() if type(m) in (nn.Conv, nn.BatchNorm2d, nn.Linear)]
    out = []
    for layer in (la for la in walk(RESNET9) if la[0] in ("convbn", "linear")):
        if layer[0] == "convbn":
            conv, bn = mods.pop(0), mods.pop(0)
            out.append({"w": conv.weight.numpy().transpose(3, 2, 0, 1), "b": conv.bias.numpy(),
                        "gamma": bn.weight.numpy(), "beta": bn.bias.numpy(),
                        "mean": bn.running_mean.numpy(), "var": bn.running_var.numpy()})
        else:
            lin = mods.pop(0)
            out.append({"w": lin.weight.numpy(), "b": lin.bias.numpy().reshape(-1)})
    return out


def transformer_model(cfg, params, device):
    """Embedding -> nn.TransformerLayer (pre-norm, causal, no dropout) per layer -> Linear to
    the vocabulary; ``model(tokens)`` gives (batch * seq, vocab) logits."""
    from needle import nn, ops

    def linear(lin, name):
        lin.weight = _param(params[f"{name}.w"], device)
        lin.bias = _param(params[f"{name}.b"].reshape(1, -1), device)
        return lin

    def norm(ln, name):
        ln.weight, ln.bias = _param(params[f"{name}.w"], device), _param(params[f"{name}.b"], device)

    class CausalLM(nn.Module):
        def __init__(self):
            super().__init__()
            d, v = cfg["dim"], cfg["vocab"]
            self.embed = nn.Embedding(v, d, device=device)
            self.embed.weight = _param(params["embed"], device)
            self.layers = nn.Sequential(*[
                nn.TransformerLayer(d, cfg["heads"], cfg["ff"], dropout=0.0, causal=True,
                                    device=device) for _ in range(cfg["layers"])])
            for i, layer in enumerate(self.layers):
                norm(layer.norm1, f"l{i}.norm1")
                norm(layer.norm2, f"l{i}.norm2")
                for name, lin in (("q", layer.attn.q_proj), ("k", layer.attn.k_proj),
                                  ("v", layer.attn.v_proj), ("out", layer.attn.out_proj),
                                  ("ff1", layer.ff[0]), ("ff2", layer.ff[3])):
                    linear(lin, f"l{i}.{name}")
            self.head = linear(nn.Linear(d, v, device=device), "head")

        def forward(self, tokens):
            logits = self.head(self.layers(self.embed(tokens)))
            return ops.reshape(logits, (-1, cfg["vocab"]))

    return CausalLM()


def transformer_state(model):
    """The CausalLM's parameters by their shared names (suites.transformer_params)."""
    out = {"embed": model.embed.weight.numpy()}

    def put(name, module):
        out[f"{name}.w"], out[f"{name}.b"] = module.weight.numpy(), module.bias.numpy().reshape(-1)

    for i, layer in enumerate(model.layers):
        for name, m in (("norm1", layer.norm1), ("q", layer.attn.q_proj),
                        ("k", layer.attn.k_proj), ("v", layer.attn.v_proj),
                        ("out", layer.attn.out_proj), ("norm2", layer.norm2),
                        ("ff1", layer.ff[0]), ("ff2", layer.ff[3])):
            put(f"l{i}.{name}", m)
    put("head", model.head)
    return out


def lstm_model(cfg, params, device):
    """nn.LSTM (sequence-first, gates i, f, g, o as PyTorch; W_ih and W_hh are the
    transposes of PyTorch's) and a Linear on the last step's hidden state."""
    from needle import nn

    class LastStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(cfg["input"], cfg["hidden"], num_layers=cfg["layers"],
                                device=device)
            for i, cell in enumerate(self.lstm.lstm_cells):
                cell.W_ih = _param(params[f"l{i}.w_ih"].T, device)
                cell.W_hh = _param(params[f"l{i}.w_hh"].T, device)
                cell.bias_ih = _param(params[f"l{i}.b_ih"], device)
                cell.bias_hh = _param(params[f"l{i}.b_hh"], device)
            self.head = nn.Linear(cfg["hidden"], cfg["classes"], device=device)
            self.head.weight = _param(params["head.w"], device)
            self.head.bias = _param(params["head.b"].reshape(1, -1), device)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[-1])

    return LastStep()


def lstm_state(model):
    out = {}
    for i, cell in enumerate(model.lstm.lstm_cells):
        out.update({f"l{i}.w_ih": cell.W_ih.numpy().T, f"l{i}.w_hh": cell.W_hh.numpy().T,
                    f"l{i}.b_ih": cell.bias_ih.numpy(), f"l{i}.b_hh": cell.bias_hh.numpy()})
    out["head.w"], out["head.b"] = model.head.weight.numpy(), model.head.bias.numpy().reshape(-1)
    return out


# ---------------------------------------------------------------- training

def _train_step(model, opt):
    """One training step of ``model``: zero grads, forward, mean softmax cross-entropy
    against class labels, backward, ``opt.step()``; returns the loss."""
    from needle import nn
    loss_fn = nn.SoftmaxLoss()

    def train_step(x, y):
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return train_step


def _reset_optimizer(opt):
    """``opt`` as before its first step, in place (a compiled step reads these buffers): a
    zero momentum buffer or Adam moment, and step count 0, give the first step's update."""
    for state in opt.state.values():
        state["step"] = 0
        for name in opt.buffers:
            if name in state:
                state[name].fill(0.0)


def _train(device, model, opt, x, y, opt_level):
    """The training step of ``model`` on (x, y), eager or compiled at ``opt_level``, and its
    validated run: one step from the initial state, run as it will be timed. Compiling
    takes a few steps, so the weights, buffers (BatchNorm's running statistics) and the
    optimizer's state are restored first, in place, where the graph reads them.

    Returns the step (for timing), the validated step's loss and the row's fields."""
    train_step = _train_step(model, opt)
    if opt_level is None:
        step, info = functools.partial(train_step, x, y), {}
    else:
        initial = model.state_dict()
        step, _, info = _compile(train_step, (x, y), opt_level, device)
        model.load_state_dict(initial)
        _reset_optimizer(opt)
    loss = float(step().numpy())
    return step, loss, info


# ---------------------------------------------------------------- suites

def matmul(device, case, data):
    a, b = _tensor(data["a"], device), _tensor(data["b"], device)  # no gradients: no graph

    def step():
        return a @ b

    return Runnable(output=step().numpy(), step=step, sync=device.synchronize)


def _labels(y, device):
    return _tensor(y.reshape(-1).astype(np.float32), device)  # class indices, as Needle takes them


def mlp(device, case, data, opt_level=None):
    import needle
    from needle import nn
    model = mlp_model(case.params["sizes"], data["weights"], device)
    opt = needle.optim.SGD(model.parameters(), lr=data["lr"])
    step, loss, info = _train(device, model, opt, _tensor(data["x"], device),
                              _labels(data["y"], device), opt_level)
    linears = [m for m in model.modules if isinstance(m, nn.Linear)]
    params = [a for lin in linears for a in (lin.weight.numpy(), lin.bias.numpy().reshape(-1))]
    return Runnable(output={"loss": loss, "params": params}, step=step,
                    sync=device.synchronize, info=info)


def resnet9_train(device, case, data, opt_level=None):
    """ResNet9 in training mode: batch statistics, running statistics updated in place."""
    import needle
    model = resnet9_model(RESNET9, data["layers"], device).train()
    opt = needle.optim.SGD(model.parameters(), **data["sgd"])
    step, loss, info = _train(device, model, opt, _tensor(data["x"], device),
                              _labels(data["y"], device), opt_level)
    return Runnable(output={"loss": loss, "params": flat_layers(resnet9_state(model))},
                    step=step, sync=device.synchronize, info=info)


def transformer(device, case, data, opt_level=None):
    import needle
    model = transformer_model(case.params, data["params"], device)
    adam = data["adam"]
    opt = needle.optim.Adam(model.parameters(), lr=adam["lr"], betas=adam["betas"],
                            eps=adam["eps"])
    step, loss, info = _train(device, model, opt, _tensor(data["tokens"], device),
                              _labels(data["targets"], device), opt_level)
    return Runnable(output={"loss": loss, "params": transformer_state(model)}, step=step,
                    sync=device.synchronize, info=info)


def lstm(device, case, data, opt_level=None):
    import needle
    model = lstm_model(case.params, data["params"], device)
    opt = needle.optim.SGD(model.parameters(), lr=data["lr"])
    step, loss, info = _train(device, model, opt, _tensor(data["x"], device),
                              _labels(data["y"], device), opt_level)
    return Runnable(output={"loss": loss, "params": lstm_state(model)}, step=step,
                    sync=device.synchronize, info=info)


def resnet9(device, case, data, opt_level=None):
    import needle
    model = resnet9_model(RESNET9, data["layers"], device).eval()
    x = _tensor(data["x"], device)

    def forward(x):
        with needle.no_grad():
            return model(x)

    if opt_level is None:
        step = functools.partial(forward, x)
        return Runnable(output=step().numpy(), step=step, sync=device.synchronize)
    step, out, info = _compile(forward, (x,), opt_level, device)  # out: a replay's
    return Runnable(output=out.numpy(), step=step, sync=device.synchronize, info=info)


def attention(device, case, data):
    """Forward and backward of scaled_dot_product_attention; on cudnn in bf16 (the only
    precision of cuDNN's fused attention), elsewhere fp32."""
    import needle
    backend = device.backend
    before = getattr(backend, "matmul_precision", None)
    if device.name == "cudnn":
        backend.set_matmul_precision("bf16")
    q, k, v = (_tensor(data[n], device, requires_grad=True) for n in ("q", "k", "v"))
    dout = _tensor(data["dout"], device)

    def step():
        for t in (q, k, v):
            t.grad = None
        out = needle.ops.scaled_dot_product_attention(q, k, v)
        out.backward(dout)
        return out

    out = step()
    output = {"out": out.numpy(), "dq": q.grad.numpy(), "dk": k.grad.numpy(),
              "dv": v.grad.numpy()}

    def cleanup():
        if device.name == "cudnn":
            backend.set_matmul_precision(before)
    return Runnable(output=output, step=step, sync=device.synchronize, cleanup=cleanup)


def _backward_step(layer, x, dout, params):
    """A step of one layer: its forward on ``x``, then the backward of ``dout``; the
    gradients are cleared first so that each step writes them afresh."""
    def step():
        for t in (x, *params):
            t.grad = None
        y = layer(x)
        y.backward(dout)
        return y
    return step


def conv_step(device, case, data):
    """nn.Conv (no bias) forward and backward: the convolution, data-gradient and
    weight-gradient kernels of one layer."""
    from needle import nn
    p = case.params
    conv = nn.Conv(p["c_in"], p["c_out"], p["kernel"], bias=False, device=device)
    conv.weight = _param(data["w"].transpose(2, 3, 1, 0), device)  # OIHW -> (k, k, in, out)
    x = _tensor(data["x"], device, requires_grad=True)
    step = _backward_step(conv, x, _tensor(data["dout"], device), [conv.weight])
    output = {"y": step().numpy(), "dx": x.grad.numpy(),
              "dw": conv.weight.grad.numpy().transpose(3, 2, 0, 1)}
    return Runnable(output=output, step=step, sync=device.synchronize)


def norms(device, case, data):
    """nn.LayerNorm1d, or nn.BatchNorm2d in training mode, forward and backward."""
    from needle import nn
    norm, shape = case.params["norm"], case.params["shape"]
    if norm == "layernorm":
        layer = nn.LayerNorm1d(shape[-1], eps=NORM_EPS, device=device)
    else:
        layer = nn.BatchNorm2d(shape[1], eps=NORM_EPS, momentum=BN_MOMENTUM,
                               device=device).train()
    layer.weight, layer.bias = _param(data["w"], device), _param(data["b"], device)
    x = _tensor(data["x"], device, requires_grad=True)
    step = _backward_step(layer, x, _tensor(data["dout"], device), [layer.weight, layer.bias])
    output = {"y": step().numpy(), "dx": x.grad.numpy(), "dw": layer.weight.grad.numpy(),
              "db": layer.bias.grad.numpy()}
    if norm == "batchnorm":
        output.update(running_mean=layer.running_mean.numpy(),
                      running_var=layer.running_var.numpy())
    return Runnable(output=output, step=step, sync=device.synchronize)
