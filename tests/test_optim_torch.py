"""needle.optim against torch.optim: the same MLP with the same weights, trained for a few
steps on the same fresh random batches, ends with the same parameters."""
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import needle
import needle.nn as nn
import needle.optim as optim
from torch_helpers import close, param, seeded, tensor

IN, HIDDEN, OUT, BATCH, STEPS = 10, 24, 5, 16, 5

def saved_and_loaded(state):
    """``state`` through ``needle.save`` and ``needle.load`` (a file, no pickle)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "state.npz")
        needle.save(state, path)
        return needle.load(path)



def make_pair(device):
    """A Linear-ReLU-Linear-Tanh-Linear MLP in torch and the same one in needle."""
    t_net = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.Tanh(),
                                torch.nn.Linear(HIDDEN, OUT))
    n_net = nn.Sequential(nn.Linear(IN, HIDDEN, device=device), nn.ReLU(),
                          nn.Linear(HIDDEN, HIDDEN, device=device), nn.Tanh(),
                          nn.Linear(HIDDEN, OUT, device=device))
    for i in (0, 2, 4):
        n_net.modules[i].weight = param(t_net[i].weight.detach().numpy().T, device)
        n_net.modules[i].bias = param(t_net[i].bias.detach().numpy().reshape(1, -1), device)
    return n_net, t_net


def pairs_of_params(n_net, t_net):
    """(needle param, torch param, torch -> needle layout, name) for every parameter."""
    out = []
    for i in (0, 2, 4):
        out.append((n_net.modules[i].weight, t_net[i].weight, lambda t: t.T, f"{i}.weight"))
        out.append((n_net.modules[i].bias, t_net[i].bias, lambda t: t.reshape(1, -1), f"{i}.bias"))
    return out


def batch(rng, device):
    x = rng.standard_normal((BATCH, IN)).astype(np.float32)
    y = rng.integers(0, OUT, size=BATCH)
    return (tensor(x, device, requires_grad=False), tensor(y, device, requires_grad=False),
            torch.tensor(x), torch.tensor(y))


def check_params(n_net, t_net, what, rtol=1e-4, atol=1e-5):
    for n_p, t_p, layout, name in pairs_of_params(n_net, t_net):
        close(n_p, layout(t_p), rtol=rtol, atol=atol, what=f"{what}: {name}")


def train_both(device, rng, make_opts, steps=STEPS):
    n_net, t_net = make_pair(device)
    n_opt, t_opt = make_opts(n_net.parameters(), t_net.parameters())
    loss_fn = nn.SoftmaxLoss()
    for step in range(steps):
        x, y, tx, ty = batch(rng, device)
        n_opt.reset_grad()
        t_opt.zero_grad()
        loss = loss_fn(n_net(x), y)
        t_loss = F.cross_entropy(t_net(tx), ty)
        close(loss, t_loss, what=f"loss at step {step}")
        loss.backward()
        t_loss.backward()
        n_opt.step()
        t_opt.step()
    return n_net, t_net


SGD_CASES = [(0.0, 0.0), (0.9, 0.0), (0.0, 0.01), (0.9, 0.01)]


@pytest.mark.parametrize("momentum,weight_decay", SGD_CASES,
                         ids=["plain", "momentum", "weight_decay", "momentum+weight_decay"])
def test_sgd_matches_torch(device, momentum, weight_decay):
    rng = seeded(100)

    def opts(n_params, t_params):
        return (optim.SGD(n_params, lr=0.1, momentum=momentum, weight_decay=weight_decay),
                torch.optim.SGD(t_params, lr=0.1, momentum=momentum, weight_decay=weight_decay))

    n_net, t_net = train_both(device, rng, opts)
    check_params(n_net, t_net, "after 5 SGD steps")


@pytest.mark.parametrize("weight_decay", [0.0, 0.01], ids=["default", "weight_decay"])
def test_adam_matches_torch(device, weight_decay):
    rng = seeded(101)

    def opts(n_params, t_params):
        # needle's defaults (lr 0.01, betas 0.9/0.999, eps 1e-8) spelled out for torch
        n_opt = optim.Adam(n_params, weight_decay=weight_decay) if weight_decay \
            else optim.Adam(n_params)
        return n_opt, torch.optim.Adam(t_params, lr=0.01, betas=(0.9, 0.999), eps=1e-8,
                                       weight_decay=weight_decay)

    n_net, t_net = train_both(device, rng, opts)
    check_params(n_net, t_net, "after 5 Adam steps")


def test_adam_custom_hyperparameters(device):
    rng = seeded(102)

    def opts(n_params, t_params):
        return (optim.Adam(n_params, lr=0.003, beta1=0.8, beta2=0.99, eps=1e-6),
                torch.optim.Adam(t_params, lr=0.003, betas=(0.8, 0.99), eps=1e-6))

    n_net, t_net = train_both(device, rng, opts, steps=3)
    check_params(n_net, t_net, "after 3 Adam steps")


def test_step_keeps_parameter_identity(device):
    rng = seeded(103)
    n_net, _ = make_pair(device)
    params = n_net.parameters()
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    x, y, _, _ = batch(rng, device)
    nn.SoftmaxLoss()(n_net(x), y).backward()
    before = [p.numpy() for p in params]
    opt.step()
    after = n_net.parameters()
    assert [id(p) for p in after] == [id(p) for p in params]
    assert all(isinstance(p, nn.Parameter) for p in after)
    assert all(not np.array_equal(b, p.numpy()) for b, p in zip(before, after))


def test_reset_grad_clears_grads(device):
    rng = seeded(104)
    n_net, _ = make_pair(device)
    opt = optim.SGD(n_net.parameters(), lr=0.1)
    x, y, _, _ = batch(rng, device)
    nn.SoftmaxLoss()(n_net(x), y).backward()
    assert all(p.grad is not None for p in n_net.parameters())
    opt.reset_grad()
    assert all(p.grad is None for p in n_net.parameters())
    # zero_grad is the torch-style alias
    nn.SoftmaxLoss()(n_net(x), y).backward()
    opt.zero_grad()
    assert all(p.grad is None for p in n_net.parameters())


def test_step_skips_parameters_without_grad(device):
    rng = seeded(105)
    used = param(rng.standard_normal((3,)), device)
    unused = param(rng.standard_normal((3,)), device)
    before = unused.numpy()
    opt = optim.Adam([used, unused], lr=0.1)
    (used * used).sum().backward()
    opt.step()
    np.testing.assert_array_equal(unused.numpy(), before)
    assert unused.grad is None


def test_gradients_accumulate_like_torch(device):
    rng = seeded(106)
    n_net, t_net = make_pair(device)
    n_opt = optim.SGD(n_net.parameters(), lr=0.1, momentum=0.9)
    t_opt = torch.optim.SGD(t_net.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.SoftmaxLoss()
    # two backward calls without reset: leaf gradients add up, as in torch
    for _ in range(2):
        x, y, tx, ty = batch(rng, device)
        loss_fn(n_net(x), y).backward()
        F.cross_entropy(t_net(tx), ty).backward()
    for n_p, t_p, layout, name in pairs_of_params(n_net, t_net):
        close(n_p.grad, layout(t_p.grad), what=f"accumulated grad {name}")
    n_opt.step()
    t_opt.step()
    check_params(n_net, t_net, "step on accumulated grads")


def test_leaf_gradient_accumulates_exactly(device):
    rng = seeded(107)
    x_np = rng.standard_normal((4, 3)).astype(np.float32)
    x, tx = tensor(x_np, device), torch.tensor(x_np, requires_grad=True)
    (x * x).sum().backward()
    (x.exp()).sum().backward()
    (tx * tx).sum().backward()
    tx.exp().sum().backward()
    close(x.grad, tx.grad, what="accumulated leaf grad")
    # a later graph does not see (or record) the previous gradient
    assert x.grad.requires_grad is False


def test_adam_bias_correction_is_per_parameter(device):
    rng = seeded(108)
    a_np = rng.standard_normal(4).astype(np.float32)
    b_np = rng.standard_normal(4).astype(np.float32)
    a, b = param(a_np, device), param(b_np, device)
    ta, tb = torch.tensor(a_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    n_opt, t_opt = optim.Adam([a, b], lr=0.1), torch.optim.Adam([ta, tb], lr=0.1)
    for step in range(3):
        n_opt.reset_grad()
        t_opt.zero_grad()
        n_loss = (a * a).sum() + ((b * b).sum() if step == 2 else 0)
        t_loss = (ta * ta).sum() + ((tb * tb).sum() if step == 2 else 0)
        n_loss.backward()
        t_loss.backward()
        n_opt.step()
        t_opt.step()
    close(a, ta, what="a (updated every step)")
    close(b, tb, what="b (first updated at step 3)")


# -- betas=, AdamW, checkpoints and schedulers against torch ------------------------------

@pytest.fixture(params=["fused", "composed"])
def fused(request, monkeypatch):
    """Run once with the backends' fused optimizer ops and once with the NDArray fallback."""
    if request.param == "composed":
        real = needle.backend_ndarray.Backend.supports
        monkeypatch.setattr(needle.backend_ndarray.Backend, "supports",
                            lambda self, op, dtype=None: op not in ("sgd_update", "adam_update")
                            and real(self, op, dtype))
    return request.param


def test_adam_betas_keyword_matches_torch(device, fused):
    rng = seeded(109)

    def opts(n_params, t_params):
        return (optim.Adam(n_params, lr=0.003, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
                torch.optim.Adam(t_params, lr=0.003, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01))

    n_net, t_net = train_both(device, rng, opts, steps=4)
    check_params(n_net, t_net, "after 4 Adam(betas=...) steps")


def test_adam_classic_positional_signature(device):
    rng = seeded(110)

    def opts(n_params, t_params):
        # classic Needle: Adam(params, lr, beta1, beta2, eps, weight_decay)
        return (optim.Adam(n_params, 0.003, 0.8, 0.99, 1e-6, 0.01),
                torch.optim.Adam(t_params, lr=0.003, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01))

    n_net, t_net = train_both(device, rng, opts, steps=3)
    check_params(n_net, t_net, "after 3 positional Adam steps")


@pytest.mark.parametrize("weight_decay", [None, 0.0, 0.1], ids=["default", "none", "wd0.1"])
def test_adamw_matches_torch(device, fused, weight_decay):
    rng = seeded(111)
    kw = {} if weight_decay is None else {"weight_decay": weight_decay}

    def opts(n_params, t_params):
        return (optim.AdamW(n_params, lr=0.02, betas=(0.9, 0.98), **kw),
                torch.optim.AdamW(t_params, lr=0.02, betas=(0.9, 0.98), **kw))

    n_net, t_net = train_both(device, rng, opts)
    check_params(n_net, t_net, "after 5 AdamW steps")


def test_adamw_decay_is_decoupled(device):
    """With a zero gradient Adam's step is 0, so AdamW only shrinks p by 1 - lr * wd while
    Adam with L2 moves it by about lr."""
    w = np.full(3, 2.0, dtype=np.float32)
    pw, pa = param(w, device), param(w, device)
    for p, opt in ((pw, optim.AdamW([pw], lr=0.1, weight_decay=0.5)),
                   (pa, optim.Adam([pa], lr=0.1, weight_decay=0.5))):
        (p * 0.0).sum().backward()
        opt.step()
    close(pw, w * (1 - 0.1 * 0.5), rtol=1e-6, what="AdamW: decay only")
    close(pa, w - 0.1, rtol=1e-5, what="Adam + L2: a full Adam step")


OPTIMIZERS = {
    "sgd-momentum": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
                     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01)),
    "adam": (lambda p: optim.Adam(p, lr=0.01, weight_decay=0.01),
             lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01)),
    "adamw": (lambda p: optim.AdamW(p, lr=0.01, betas=(0.85, 0.99)),
              lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.85, 0.99))),
}


def copy_net(n_net, device):
    """A new needle MLP with ``n_net``'s current weights."""
    other, _ = make_pair(device)
    for i in (0, 2, 4):
        other.modules[i].weight = param(n_net.modules[i].weight.numpy(), device)
        other.modules[i].bias = param(n_net.modules[i].bias.numpy(), device)
    return other


def train_step(net, opt, x, y):
    opt.reset_grad()
    nn.SoftmaxLoss()(net(x), y).backward()
    opt.step()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_resumes_training_like_torch(device, fused, name):
    """3 steps, checkpoint (through needle.save / needle.load), a new model and optimizer loaded from it, 3
    more steps on both: the resumed run equals the uninterrupted one exactly and torch's
    6 steps."""
    make_n, make_t = OPTIMIZERS[name]
    rng = seeded(112)
    n_net, t_net = make_pair(device)
    n_opt, t_opt = make_n(n_net.parameters()), make_t(t_net.parameters())
    data = [batch(rng, device) for _ in range(6)]

    def t_step(tx, ty):
        t_opt.zero_grad()
        F.cross_entropy(t_net(tx), ty).backward()
        t_opt.step()

    for x, y, tx, ty in data[:3]:
        train_step(n_net, n_opt, x, y)
        t_step(tx, ty)
    saved = saved_and_loaded(n_opt.state_dict())
    r_net = copy_net(n_net, device)
    r_opt = make_n(r_net.parameters())
    r_opt.load_state_dict(saved)
    for x, y, tx, ty in data[3:]:
        train_step(n_net, n_opt, x, y)
        train_step(r_net, r_opt, x, y)
        t_step(tx, ty)
    for a, b in zip(n_net.parameters(), r_net.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    check_params(r_net, t_net, f"resumed {name} after 3 + 3 steps")


def test_state_dict_without_loading_differs(device):
    """The checkpoint matters: a fresh Adam (no moments, step 0) on the same weights drifts."""
    make_n, _ = OPTIMIZERS["adam"]
    rng = seeded(113)
    n_net, _ = make_pair(device)
    n_opt = make_n(n_net.parameters())
    data = [batch(rng, device) for _ in range(4)]
    for x, y, _, _ in data[:3]:
        train_step(n_net, n_opt, x, y)
    r_net = copy_net(n_net, device)
    r_opt = make_n(r_net.parameters())
    train_step(n_net, n_opt, *data[3][:2])
    train_step(r_net, r_opt, *data[3][:2])
    assert any(not np.allclose(a.numpy(), b.numpy()) for a, b in
               zip(n_net.parameters(), r_net.parameters()))


def test_scheduled_training_matches_torch(device):
    """SGD with a warm-up then a step decay, both schedulers on one optimizer."""
    rng = seeded(114)
    n_net, t_net = make_pair(device)
    n_opt = optim.SGD(n_net.parameters(), lr=0.2, momentum=0.9)
    t_opt = torch.optim.SGD(t_net.parameters(), lr=0.2, momentum=0.9)
    n_scheds = [optim.lr_scheduler.LinearLR(n_opt, start_factor=0.25, total_iters=3),
                optim.lr_scheduler.StepLR(n_opt, step_size=2, gamma=0.5)]
    t_scheds = [torch.optim.lr_scheduler.LinearLR(t_opt, start_factor=0.25, total_iters=3),
                torch.optim.lr_scheduler.StepLR(t_opt, step_size=2, gamma=0.5)]
    for step in range(6):
        x, y, tx, ty = batch(rng, device)
        train_step(n_net, n_opt, x, y)
        t_opt.zero_grad()
        F.cross_entropy(t_net(tx), ty).backward()
        t_opt.step()
        for s in n_scheds + t_scheds:
            s.step()
        assert n_opt.lr == t_opt.param_groups[0]["lr"], f"lr after step {step}"
    check_params(n_net, t_net, "after 6 scheduled SGD steps")
