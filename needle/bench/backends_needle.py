"""Needle on each of its devices, eager (``needle-<name>``) and compiled with
``needle.compile`` (``needle-<name>-compiled``, the mlp and resnet9 suites). Written against
the public API only, so a new device appears here without any change."""
import functools
import time

import numpy as np

from .backends import Backend, NotInSuite, Runnable
from .suites import BN_EPS


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
COMPILED_SUITES = ("mlp", "resnet9")
#: calls a compiled step may take to replay its graph (it does from the 2nd or 3rd)
MAX_COMPILE_CALLS = 6


def _builder(device, opt_level=None):
    """Eager when ``opt_level`` is None, else compiled at that level."""
    def build(case, data):
        suites = {"matmul": matmul, "mlp": mlp, "resnet9": resnet9, "attention": attention}
        if opt_level is None:
            runnable = suites[case.suite](device, case, data)
        elif case.suite in COMPILED_SUITES:
            runnable = suites[case.suite](device, case, data, opt_level)
        else:
            raise NotInSuite(f"compiled Needle runs the {' and '.join(COMPILED_SUITES)} suites")
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
        out = compiled(*args)
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
            bn = nn.BatchNorm2d(cout, eps=BN_EPS, device=device)
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


# ---------------------------------------------------------------- suites

def matmul(device, case, data):
    a, b = _tensor(data["a"], device), _tensor(data["b"], device)  # no gradients: no graph

    def step():
        return a @ b

    return Runnable(output=step().numpy(), step=step, sync=device.synchronize)


def mlp(device, case, data, opt_level=None):
    import needle
    from needle import nn
    model = mlp_model(case.params["sizes"], data["weights"], device)
    x = _tensor(data["x"], device)
    y = _tensor(data["y"].astype(np.float32), device)  # class indices
    opt = needle.optim.SGD(model.parameters(), lr=data["lr"])
    loss_fn = nn.SoftmaxLoss()
    linears = [m for m in model.modules if isinstance(m, nn.Linear)]

    def train_step(x, y):
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    if opt_level is None:
        step, info = functools.partial(train_step, x, y), {}
    else:
        # The validated step is one step from the initial weights, run as it will be timed:
        # a replay, after the calls that compiled it (which moved the weights, so they are
        # restored in place, where the graph reads them; plain SGD keeps no other state).
        step, _, info = _compile(train_step, (x, y), opt_level, device)
        for lin, (w, b) in zip(linears, data["weights"]):
            lin.weight.data[...] = _tensor(w, device)
            lin.bias.data[...] = _tensor(b.reshape(1, -1), device)
    loss = step()
    params = [a for lin in linears for a in (lin.weight.numpy(), lin.bias.numpy().reshape(-1))]
    return Runnable(output={"loss": float(loss.numpy()), "params": params}, step=step,
                    sync=device.synchronize, info=info)


def resnet9(device, case, data, opt_level=None):
    import needle
    from .suites import RESNET9
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
