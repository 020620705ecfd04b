"""Needle on each of its devices. Written against the public API only, so a new device
appears here (as ``needle-<name>``) without any change."""
import numpy as np

from .backends import Backend, Runnable
from .suites import BN_EPS


def backends():
    import needle
    return [Backend(name=f"needle-{d.name}", family="needle", note=f"needle.{d.name}()",
                    build=_builder(d), check=d.unavailable_reason)
            for d in needle.all_devices()]


#: devices whose kernels run on CuPy's current stream: timed with CUDA events, as PyTorch
CUDA_DEVICES = ("cuda", "cudnn")


def _builder(device):
    def build(case, data):
        suites = {"matmul": matmul, "mlp": mlp, "resnet9": resnet9, "attention": attention}
        runnable = suites[case.suite](device, case, data)
        if device.name in CUDA_DEVICES:
            runnable.timer = "cupy-events"
        return runnable
    return build


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


def mlp(device, case, data):
    import needle
    from needle import nn
    model = mlp_model(case.params["sizes"], data["weights"], device)
    x = _tensor(data["x"], device)
    y = _tensor(data["y"].astype(np.float32), device)  # class indices
    opt = needle.optim.SGD(model.parameters(), lr=data["lr"])
    loss_fn = nn.SoftmaxLoss()

    def step():
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    loss = step()
    linears = [m for m in model.modules if isinstance(m, nn.Linear)]
    params = [a for lin in linears for a in (lin.weight.numpy(), lin.bias.numpy().reshape(-1))]
    return Runnable(output={"loss": float(loss.numpy()), "params": params}, step=step,
                    sync=device.synchronize)


def resnet9(device, case, data):
    import needle
    from .suites import RESNET9
    model = resnet9_model(RESNET9, data["layers"], device).eval()
    x = _tensor(data["x"], device)

    def step():
        with needle.no_grad():
            return model(x)

    return Runnable(output=step().numpy(), step=step, sync=device.synchronize)


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
