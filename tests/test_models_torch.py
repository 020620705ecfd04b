"""Whole models against PyTorch: an MLP with a residual BatchNorm block and a ResNet9-style
conv net, mirrored in torch with the same weights, agree in forward (train and eval mode)
and over a few SGD steps; and an MLP actually learns the bundled 8x8 digits."""
import numpy as np
import torch
import torch.nn.functional as F

import needle
import needle.nn as nn
import needle.optim as optim
from torch_helpers import npy, param, seeded, tensor


def rel_close(actual, expected, tol, what=""):
    a, b = npy(actual).astype(np.float64), npy(expected).astype(np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    err = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)
    assert err < tol, f"{what}: relative error {err:.3g} >= {tol}"


# ---------------------------------------------------------------- mirroring

class TorchResidual(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


def mirror(n_mod, t_mod, device, pairs, name="net"):
    """Copy torch's weights into the structurally identical needle module; append
    (needle tensor, torch tensor, torch -> needle layout, name) for parameters and buffers."""
    if isinstance(n_mod, nn.Sequential):
        assert len(n_mod.modules) == len(t_mod), name
        for i, (n_child, t_child) in enumerate(zip(n_mod.modules, t_mod)):
            mirror(n_child, t_child, device, pairs, f"{name}.{i}")
    elif isinstance(n_mod, nn.Residual):
        mirror(n_mod.fn, t_mod.fn, device, pairs, f"{name}.fn")
    elif isinstance(n_mod, nn.Linear):
        n_mod.weight = param(npy(t_mod.weight).T, device)
        n_mod.bias = param(npy(t_mod.bias).reshape(1, -1), device)
        pairs.append((n_mod, "weight", t_mod.weight, lambda t: t.T, f"{name}.weight"))
        pairs.append((n_mod, "bias", t_mod.bias, lambda t: t.reshape(1, -1), f"{name}.bias"))
    elif isinstance(n_mod, nn.Conv):
        n_mod.weight = param(npy(t_mod.weight.permute(2, 3, 1, 0)), device)
        n_mod.bias = param(npy(t_mod.bias), device)
        pairs.append((n_mod, "weight", t_mod.weight, lambda t: t.permute(2, 3, 1, 0),
                      f"{name}.weight"))
        pairs.append((n_mod, "bias", t_mod.bias, lambda t: t, f"{name}.bias"))
    elif isinstance(n_mod, nn.BatchNorm1d):  # BatchNorm2d too
        with torch.no_grad():
            t_mod.weight.uniform_(0.5, 1.5)
            t_mod.bias.uniform_(-0.3, 0.3)
        n_mod.weight = param(npy(t_mod.weight), device)
        n_mod.bias = param(npy(t_mod.bias), device)
        for attr in ("weight", "bias", "running_mean", "running_var"):
            pairs.append((n_mod, attr, getattr(t_mod, attr), lambda t: t, f"{name}.{attr}"))
    else:
        assert isinstance(n_mod, (nn.ReLU, nn.Flatten)), f"{name}: unmirrored {n_mod}"


def check_pairs(pairs, tol, what):
    for n_mod, attr, t_tensor, layout, name in pairs:
        rel_close(getattr(n_mod, attr), layout(t_tensor), tol, f"{what}: {name}")


def check_model(device, n_net, t_net, make_batch, pairs, steps=3, fwd_tol=1e-4, tol=1e-3):
    """Forward in train and eval mode, then ``steps`` SGD steps, against torch."""
    n_net.eval()
    t_net.eval()
    x, y, tx, ty = make_batch()
    rel_close(n_net(x), t_net(tx), fwd_tol, "eval forward (initial running stats)")
    n_net.train()
    t_net.train()
    rel_close(n_net(x), t_net(tx), fwd_tol, "train forward")
    n_opt = optim.SGD(n_net.parameters(), lr=0.01, momentum=0.9)
    t_opt = torch.optim.SGD(t_net.parameters(), lr=0.01, momentum=0.9)
    assert len(n_net.parameters()) == len(list(t_net.parameters()))
    loss_fn = nn.SoftmaxLoss()
    for step in range(steps):
        x, y, tx, ty = make_batch()
        n_opt.reset_grad()
        t_opt.zero_grad()
        loss = loss_fn(n_net(x), y)
        t_loss = F.cross_entropy(t_net(tx), ty)
        rel_close(loss, t_loss, tol, f"loss at step {step}")
        loss.backward()
        t_loss.backward()
        n_opt.step()
        t_opt.step()
    check_pairs(pairs, tol, f"after {steps} SGD steps")
    # eval mode with the running statistics the training steps accumulated
    n_net.eval()
    t_net.eval()
    x, y, tx, ty = make_batch()
    rel_close(n_net(x), t_net(tx), tol, "eval forward after training")


# ---------------------------------------------------------------- MLP

def mlp_pair(device, dim=64, hidden=32, classes=10):
    n_net = nn.Sequential(
        nn.Flatten(), nn.Linear(dim, hidden, device=device), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Linear(hidden, hidden, device=device),
                                  nn.BatchNorm1d(hidden, device=device), nn.ReLU(),
                                  nn.Linear(hidden, hidden, device=device),
                                  nn.BatchNorm1d(hidden, device=device))),
        nn.ReLU(), nn.Linear(hidden, classes, device=device))
    t_net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(dim, hidden), torch.nn.ReLU(),
        TorchResidual(torch.nn.Sequential(torch.nn.Linear(hidden, hidden),
                                          torch.nn.BatchNorm1d(hidden), torch.nn.ReLU(),
                                          torch.nn.Linear(hidden, hidden),
                                          torch.nn.BatchNorm1d(hidden))),
        torch.nn.ReLU(), torch.nn.Linear(hidden, classes))
    return n_net, t_net


def make_batches(rng, device, shape, classes=10):
    def make():
        x = rng.standard_normal(shape).astype(np.float32)
        y = rng.integers(0, classes, size=shape[0])
        return (tensor(x, device, requires_grad=False), tensor(y, device, requires_grad=False),
                torch.tensor(x), torch.tensor(y))
    return make


def test_mlp_matches_torch(device):
    rng = seeded(200)
    n_net, t_net = mlp_pair(device)
    pairs = []
    mirror(n_net, t_net, device, pairs)
    assert len(pairs) == 8 + 2 * 4
    check_model(device, n_net, t_net, make_batches(rng, device, (16, 8, 8)), pairs)


# ---------------------------------------------------------------- ResNet9

def conv_bn(a, b, k, s, device):
    return nn.Sequential(nn.Conv(a, b, k, stride=s, device=device),
                         nn.BatchNorm2d(b, device=device), nn.ReLU())


def torch_conv_bn(a, b, k, s):
    return torch.nn.Sequential(torch.nn.Conv2d(a, b, k, stride=s, padding=k // 2),
                               torch.nn.BatchNorm2d(b), torch.nn.ReLU())


def resnet9_pair(device):
    # 3x32x32: 7x7/4 -> 8x8, /2 -> 4x4, /2 -> 2x2, /2 -> 1x1, so Flatten gives 128 * 1 * 1
    spec = [(3, 16, 7, 4), (16, 32, 3, 2), "res32", (32, 64, 3, 2), (64, 128, 3, 2), "res128"]
    n_layers, t_layers = [], []
    for s in spec:
        if isinstance(s, str):
            c = int(s[3:])
            n_layers.append(nn.Residual(nn.Sequential(conv_bn(c, c, 3, 1, device),
                                                      conv_bn(c, c, 3, 1, device))))
            t_layers.append(TorchResidual(torch.nn.Sequential(torch_conv_bn(c, c, 3, 1),
                                                              torch_conv_bn(c, c, 3, 1))))
        else:
            n_layers.append(conv_bn(*s, device))
            t_layers.append(torch_conv_bn(*s))
    flat = 128 * 1 * 1
    n_net = nn.Sequential(*n_layers, nn.Flatten(), nn.Linear(flat, 128, device=device),
                          nn.ReLU(), nn.Linear(128, 10, device=device))
    t_net = torch.nn.Sequential(*t_layers, torch.nn.Flatten(), torch.nn.Linear(flat, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, 10))
    return n_net, t_net


def test_resnet9_shapes(device):
    seeded(201)
    n_net, t_net = resnet9_pair(device)
    x = tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)), device)
    assert n_net(x).shape == (2, 10)
    assert len(n_net.parameters()) == len(list(t_net.parameters())) == 8 * 4 + 4


def test_resnet9_matches_torch(device):
    rng = seeded(202)
    n_net, t_net = resnet9_pair(device)
    pairs = []
    mirror(n_net, t_net, device, pairs)
    check_model(device, n_net, t_net, make_batches(rng, device, (8, 3, 32, 32)), pairs)


def test_resnet9_input_gradient_matches_torch(device):
    rng = seeded(203)
    n_net, t_net = resnet9_pair(device)
    mirror(n_net, t_net, device, [])
    x_np = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=4)
    x, tx = tensor(x_np, device), torch.tensor(x_np, requires_grad=True)
    nn.SoftmaxLoss()(n_net(x), tensor(y, device, requires_grad=False)).backward()
    F.cross_entropy(t_net(tx), torch.tensor(y)).backward()
    rel_close(x.grad, tx.grad, 1e-3, "input grad")


def test_resnet9_eval_mode_gradients_match_torch(device):
    """In eval mode Sequential runs conv bias + BatchNorm + ReLU as one op (the running
    statistics as constants): its output and every gradient still match PyTorch."""
    rng = seeded(204)
    n_net, t_net = resnet9_pair(device)
    pairs = []
    mirror(n_net, t_net, device, pairs)
    n_net.eval()
    t_net.eval()
    x_np = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=4)
    x, tx = tensor(x_np, device), torch.tensor(x_np, requires_grad=True)
    with needle.no_grad():
        rel_close(n_net(x), t_net(tx), 1e-4, "eval forward without a graph")
    nn.SoftmaxLoss()(n_net(x), tensor(y, device, requires_grad=False)).backward()
    F.cross_entropy(t_net(tx), torch.tensor(y)).backward()
    rel_close(x.grad, tx.grad, 1e-3, "input grad")
    for n_mod, attr, t_tensor, layout, name in pairs:
        if attr not in ("running_mean", "running_var"):
            rel_close(getattr(n_mod, attr).grad, layout(t_tensor.grad), 1e-3, f"grad of {name}")


# ---------------------------------------------------------------- end to end

def test_mlp_learns_digits(device):
    from needle.data import DataLoader, NDArrayDataset
    from needle.data.digits import digits_split

    seeded(204)
    x_train, y_train, x_test, y_test = digits_split(test_fraction=0.2, seed=0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64, device=device), nn.ReLU(),
                        nn.Linear(64, 10, device=device))
    opt = optim.Adam(net.parameters(), lr=0.01)
    loss_fn = nn.SoftmaxLoss()
    loader = DataLoader(NDArrayDataset(x_train, y_train), batch_size=64, shuffle=True,
                        device=device)
    net.train()
    for _ in range(6):
        for xb, yb in loader:
            opt.reset_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
    net.eval()
    logits = net(tensor(x_test, device, requires_grad=False)).numpy()
    accuracy = (logits.argmax(axis=1) == y_test).mean()
    assert accuracy > 0.9, f"test accuracy {accuracy:.3f}"
