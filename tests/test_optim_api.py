"""needle.optim's API: version counters, state dicts, argument checks, and the learning-rate
schedulers (whose sequences must equal torch.optim.lr_scheduler's)."""
import os
import tempfile

import numpy as np
import pytest
import torch

import needle
import needle.nn as nn
import needle.optim as optim
from needle.optim import lr_scheduler
from torch_helpers import param, seeded

ALL = {
    "sgd": lambda p: optim.SGD(p, lr=0.1),
    "sgd-momentum": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda p: optim.Adam(p, lr=0.01),
    "adamw": lambda p: optim.AdamW(p, lr=0.01),
}

def saved_and_loaded(state):
    """``state`` through ``needle.save`` and ``needle.load`` (a file, no pickle)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "state.npz")
        needle.save(state, path)
        return needle.load(path)



def test_package_exports():
    assert {"Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"} <= set(dir(optim))
    assert all(issubclass(c, optim.Optimizer) for c in (optim.SGD, optim.Adam, optim.AdamW))
    assert issubclass(optim.AdamW, optim.Adam)


# -- version counters ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(ALL))
def test_step_bumps_version_of_updated_params_only(device, name):
    rng = seeded(200)
    used, unused = param(rng.standard_normal((3, 2)), device), param(rng.standard_normal(2), device)
    opt = ALL[name]([used, unused])
    v_used, v_unused = used._version, unused._version
    for k in range(1, 4):
        opt.reset_grad()
        (used * used).sum().backward()
        opt.step()
        assert used._version == v_used + k
        assert unused._version == v_unused
    opt.reset_grad()
    opt.step()  # no gradients: nothing is written
    assert used._version == v_used + 3


@pytest.mark.parametrize("name", list(ALL))
def test_backward_through_a_graph_from_before_a_step_raises(device, name):
    """A step writes the parameters in place: a graph recorded before it is stale."""
    rng = seeded(202)
    p = param(rng.standard_normal(3), device)
    opt = ALL[name]([p])
    (p * p).sum().backward()
    stale = (p * p).sum()
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        stale.backward()
    opt.reset_grad()
    (p * p).sum().backward()  # a graph made after the step is fine
    assert p.grad is not None


# -- state_dict / load_state_dict ---------------------------------------------------------

def _plain(x):
    """Whether x is made of dicts, lists, tuples, Python scalars and numpy arrays only."""
    if isinstance(x, dict):
        return all(isinstance(k, (int, str)) and _plain(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return all(_plain(v) for v in x)
    return x is None or type(x) in (bool, int, float, str) or isinstance(x, np.ndarray)


def _trained(device, name, steps=2, seed=201):
    rng = seeded(seed)
    a, b = param(rng.standard_normal((4, 3)), device), param(rng.standard_normal(3), device)
    unused = param(rng.standard_normal(2), device)
    opt = ALL[name]([a, b, unused])
    for _ in range(steps):
        opt.reset_grad()
        ((a * a).sum() + (b * a).sum()).backward()
        opt.step()
    return [a, b, unused], opt


@pytest.mark.parametrize("name", list(ALL))
def test_state_dict_is_pytorch_shaped_plain_data(device, name):
    params, opt = _trained(device, name)
    sd = opt.state_dict()
    assert _plain(sd)
    assert set(sd) == {"state", "param_groups"}
    (group,) = sd["param_groups"]
    assert group["params"] == [0, 1, 2]
    assert group["lr"] == opt.lr
    assert set(sd["state"]) == {0, 1}  # the unused parameter never stepped
    for i in (0, 1):
        entry = sd["state"][i]
        assert entry["step"] == 2 and type(entry["step"]) is int
        for name_, buf in entry.items():
            if name_ != "step":
                assert buf.shape == params[i].shape
    expected = {"sgd": {"step"}, "sgd-momentum": {"step", "momentum_buffer"},
                "adam": {"step", "exp_avg", "exp_avg_sq"},
                "adamw": {"step", "exp_avg", "exp_avg_sq"}}[name]
    assert set(sd["state"][0]) == expected
    if name.startswith("adam"):
        assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
        assert group["weight_decay"] == (0.01 if name == "adamw" else 0.0)
    # a round trip through a file, and a snapshot: later steps do not change it
    again = saved_and_loaded(sd)
    before = {k: v.copy() for k, v in sd["state"][0].items() if k != "step"}
    opt.reset_grad()
    (params[0] * params[0]).sum().backward()
    opt.step()
    for k, v in before.items():
        np.testing.assert_array_equal(sd["state"][0][k], v)
        np.testing.assert_array_equal(again["state"][0][k], v)


@pytest.mark.parametrize("name", list(ALL))
def test_load_state_dict_restores_state_and_hyperparameters(device, name):
    params, opt = _trained(device, name, steps=3)
    opt.lr = 0.0123
    sd = opt.state_dict()
    fresh = ALL[name]([param(p.numpy(), device) for p in params])
    fresh.load_state_dict(sd)
    assert fresh.lr == 0.0123
    again = fresh.state_dict()
    assert again["param_groups"] == sd["param_groups"]
    assert set(again["state"]) == set(sd["state"])
    for i, entry in sd["state"].items():
        assert again["state"][i]["step"] == entry["step"]
        for k, v in entry.items():
            if k != "step":
                np.testing.assert_array_equal(again["state"][i][k], v)
    # the loaded buffers live on the parameter's device, in its dtype
    for s, p in zip(fresh.state.values(), fresh.params):
        for k, v in s.items():
            if k != "step":
                assert v.device == p.device and v.dtype == p.dtype


def test_adam_step_counts_survive_a_checkpoint(device):
    params, opt = _trained(device, "adam", steps=3)
    fresh = optim.Adam([param(p.numpy(), device) for p in params], lr=0.01)
    fresh.load_state_dict(opt.state_dict())
    assert [fresh.state[p]["step"] for p in fresh.params[:2]] == [3, 3]
    assert fresh.params[2] not in fresh.state


def test_load_state_dict_rejects_mismatches(device):
    params, opt = _trained(device, "adam")
    sd = opt.state_dict()
    target = optim.Adam([param(p.numpy(), device) for p in params])

    with pytest.raises(ValueError, match="3 parameters.*has 2"):
        optim.Adam(target.params[:2]).load_state_dict(sd)
    bad = saved_and_loaded(sd)
    bad["state"][0]["exp_avg"] = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"exp_avg has shape \(3, 4\)"):
        target.load_state_dict(bad)
    bad = saved_and_loaded(sd)
    del bad["state"][1]["exp_avg_sq"]
    with pytest.raises(ValueError, match="buffers"):
        target.load_state_dict(bad)
    bad = saved_and_loaded(sd)
    bad["state"][7] = bad["state"].pop(1)
    with pytest.raises(ValueError, match="parameter 7"):
        target.load_state_dict(bad)
    with pytest.raises(ValueError, match="another optimizer"):
        optim.SGD(target.params).load_state_dict(sd)
    with pytest.raises(ValueError, match="param_groups"):
        target.load_state_dict({"state": {}})
    bad = saved_and_loaded(sd)
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        target.load_state_dict(bad)
    # nothing was changed by the failed loads
    assert target.state == {} and target.lr == 0.01


# -- constructor arguments ----------------------------------------------------------------

def test_adam_betas_and_beta1_beta2_are_the_same(device):
    p = [param(np.ones(2), device)]
    a = optim.Adam(p, lr=0.1, betas=(0.8, 0.95))
    b = optim.Adam(p, 0.1, 0.8, 0.95)
    c = optim.Adam(p, lr=0.1, beta1=0.8, beta2=0.95)
    assert a.betas == b.betas == c.betas == (0.8, 0.95)
    assert (a.beta1, a.beta2) == (0.8, 0.95)
    d = optim.Adam(p)
    assert (d.lr, d.betas, d.eps, d.weight_decay) == (0.01, (0.9, 0.999), 1e-8, 0.0)
    assert optim.AdamW(p).weight_decay == 0.01
    assert optim.AdamW(p, lr=0.1, betas=(0.5, 0.6)).betas == (0.5, 0.6)


@pytest.mark.parametrize("kwargs", [{"beta1": 0.9}, {"beta2": 0.99}, {"beta1": 0.9, "beta2": 0.99}])
def test_adam_betas_with_beta1_beta2_is_a_type_error(device, kwargs):
    p = [param(np.ones(2), device)]
    with pytest.raises(TypeError, match="not both"):
        optim.Adam(p, betas=(0.9, 0.999), **kwargs)
    with pytest.raises(TypeError, match="not both"):
        optim.AdamW(p, betas=(0.9, 0.999), **kwargs)


@pytest.mark.parametrize("make,arg", [
    (lambda p: optim.SGD(p, lr=-0.1), "lr"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), "momentum"),
    (lambda p: optim.SGD(p, lr=0.1, weight_decay=-1), "weight_decay"),
    (lambda p: optim.Adam(p, lr=-1e-3), "lr"),
    (lambda p: optim.Adam(p, lr=float("nan")), "lr"),
    (lambda p: optim.Adam(p, beta1=1.0), "beta1"),
    (lambda p: optim.Adam(p, beta1=-0.1), "beta1"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.5)), "beta2"),
    (lambda p: optim.Adam(p, eps=-1e-8), "eps"),
    (lambda p: optim.Adam(p, weight_decay=-0.1), "weight_decay"),
    (lambda p: optim.AdamW(p, betas=(0.9, 1.0)), "beta2"),
    (lambda p: optim.AdamW(p, lr=-1), "lr"),
])
def test_out_of_range_arguments_raise_value_error_naming_them(device, make, arg):
    with pytest.raises(ValueError, match=arg):
        make([param(np.ones(2), device)])


def test_bad_argument_types(device):
    p = [param(np.ones(2), device)]
    with pytest.raises(TypeError, match="lr"):
        optim.SGD(p, lr="0.1")
    with pytest.raises(TypeError, match="betas"):
        optim.Adam(p, betas=0.9)
    with pytest.raises(TypeError, match="iterable"):
        optim.SGD(p[0])
    with pytest.raises(TypeError, match="Optimizer"):
        lr_scheduler.StepLR(object(), step_size=1)


def test_zero_boundaries_are_allowed(device):
    p = [param(np.ones(2), device)]
    optim.SGD(p, lr=0.0, momentum=0.0, weight_decay=0.0)
    optim.Adam(p, lr=0.0, betas=(0.0, 0.0), eps=0.0, weight_decay=0.0)


@pytest.mark.parametrize("name", list(ALL))
def test_reset_grad_and_zero_grad(device, name):
    params, opt = _trained(device, name, steps=1)
    (params[0] * params[0]).sum().backward()
    assert params[0].grad is not None
    opt.reset_grad()
    assert all(p.grad is None for p in params)
    (params[1] * params[1]).sum().backward()
    opt.zero_grad()
    assert all(p.grad is None for p in params)


# -- learning-rate schedulers against torch -----------------------------------------------

def _pair(lr=0.1):
    n_opt = optim.SGD([needle.nn.Parameter(needle.Tensor(np.ones(2), device=needle.cpu()))], lr=lr)
    t_opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=lr)
    return n_opt, t_opt


SCHEDULERS = {
    "step": lambda o, m: m.StepLR(o, step_size=3),
    "step-gamma": lambda o, m: m.StepLR(o, step_size=4, gamma=0.7),
    "cosine": lambda o, m: m.CosineAnnealingLR(o, T_max=10),
    "cosine-eta-min": lambda o, m: m.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
    "linear": lambda o, m: m.LinearLR(o),
    "linear-warmup": lambda o, m: m.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=8),
    "linear-decay": lambda o, m: m.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=12),
    "lambda": lambda o, m: m.LambdaLR(o, lambda epoch: 0.9 ** epoch / (1 + epoch % 3)),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_sequence_matches_torch(name):
    n_opt, t_opt = _pair()
    n_s = SCHEDULERS[name](n_opt, lr_scheduler)
    t_s = SCHEDULERS[name](t_opt, torch.optim.lr_scheduler)
    assert n_s.last_epoch == t_s.last_epoch == 0
    n_lrs, t_lrs = [n_s.get_last_lr()], [t_s.get_last_lr()]
    for _ in range(24):  # past T_max, total_iters and several decays
        n_opt.step()
        t_opt.step()
        n_s.step()
        t_s.step()
        n_lrs.append(n_s.get_last_lr())
        t_lrs.append(t_s.get_last_lr())
        assert n_opt.lr == n_lrs[-1][0]
    assert n_s.last_epoch == t_s.last_epoch == 24
    np.testing.assert_allclose(n_lrs, t_lrs, rtol=1e-12, atol=0)


def test_chained_warmup_and_cosine_match_torch():
    n_opt, t_opt = _pair(0.5)
    n_s = [lr_scheduler.LinearLR(n_opt, start_factor=0.2, total_iters=4),
           lr_scheduler.CosineAnnealingLR(n_opt, T_max=15, eta_min=0.001)]
    t_s = [torch.optim.lr_scheduler.LinearLR(t_opt, start_factor=0.2, total_iters=4),
           torch.optim.lr_scheduler.CosineAnnealingLR(t_opt, T_max=15, eta_min=0.001)]
    assert n_s[1].base_lr == 0.5 == n_opt.initial_lr  # the lr before any scheduler
    lrs = []
    for _ in range(20):
        n_opt.step()
        t_opt.step()
        for s in n_s + t_s:
            s.step()
        lrs.append((n_opt.lr, t_opt.param_groups[0]["lr"]))
    np.testing.assert_allclose(*zip(*lrs), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_state_dict_resumes(name):
    n_opt, _ = _pair()
    sched = SCHEDULERS[name](n_opt, lr_scheduler)
    for _ in range(7):
        sched.step()
    sd = sched.state_dict()
    assert _plain(sd) and sd["last_epoch"] == 7
    opt_sd = saved_and_loaded(n_opt.state_dict())
    sd = saved_and_loaded(sd)
    expected = []
    for _ in range(10):
        sched.step()
        expected.append(sched.get_last_lr())
    # resume as in PyTorch: make the scheduler, then load the optimizer's and its state
    r_opt, _ = _pair()
    resumed = SCHEDULERS[name](r_opt, lr_scheduler)
    r_opt.load_state_dict(opt_sd)
    resumed.load_state_dict(sd)
    assert resumed.last_epoch == 7 and resumed.get_last_lr() == [r_opt.lr]
    got = []
    for _ in range(10):
        resumed.step()
        got.append(resumed.get_last_lr())
    assert got == expected
    with pytest.raises(ValueError, match="unexpected"):
        resumed.load_state_dict({**sd, "bogus": 1})


@pytest.mark.parametrize("make,arg", [
    (lambda o: lr_scheduler.StepLR(o, step_size=0), "step_size"),
    (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=0), "T_max"),
    (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=-1), "eta_min"),
    (lambda o: lr_scheduler.LinearLR(o, start_factor=0.0), "start_factor"),
    (lambda o: lr_scheduler.LinearLR(o, start_factor=1.5), "start_factor"),
    (lambda o: lr_scheduler.LinearLR(o, end_factor=1.5), "end_factor"),
    (lambda o: lr_scheduler.LinearLR(o, total_iters=-1), "total_iters"),
])
def test_scheduler_arguments_are_checked(make, arg):
    n_opt, _ = _pair()
    with pytest.raises(ValueError, match=arg):
        make(n_opt)
    assert n_opt.lr == 0.1  # a rejected scheduler leaves the optimizer alone


def test_scheduler_drives_adam(device):
    """Schedulers set ``lr`` on any Needle optimizer, and the next step uses it."""
    p = param(np.ones(3), device)
    opt = optim.Adam([p], lr=0.1)
    sched = lr_scheduler.LambdaLR(opt, lambda epoch: 0.0 if epoch >= 2 else 1.0)
    for _ in range(2):
        opt.reset_grad()
        (p * p).sum().backward()
        opt.step()
        sched.step()
    assert opt.lr == 0.0
    before = p.numpy()
    opt.reset_grad()
    (p * p).sum().backward()
    opt.step()
    np.testing.assert_array_equal(p.numpy(), before)


def test_a_parameter_given_twice_is_refused():
    p = param(np.ones(2), needle.cpu())
    with pytest.raises(ValueError, match="same tensor twice"):
        optim.SGD([p, p], lr=1.0)
