"""Compiled calls replayed as one recorded device graph (a CUDA graph on cuda and cudnn):
the replay reads each call's new arguments, what a call returned survives later calls,
optimizer scalars that change every step (Adam's bias corrections, a new lr) reach the
recorded graph, and stats() shows one graph launch per call."""
import numpy as np
import pytest

import needle
from needle import nn, optim

from helpers import training_step


def _graph_device(device):
    if not getattr(device.backend, "records_graphs", False):
        pytest.skip(f"{device.name} replays compiled calls op by op")


def _tensor(rng, shape, device):
    return needle.Tensor(rng.standard_normal(shape).astype("float32"), device=device)


@pytest.mark.parametrize("opt_level", [0, 2, 3])
def test_replays_read_new_arguments_and_outputs_survive(device, rng, opt_level):
    _graph_device(device)
    model = nn.Sequential(nn.Linear(20, 33, device=device), nn.ReLU(),
                          nn.Linear(33, 7, device=device))
    model.eval()
    forward = needle.compile(lambda x: model(x) * 2.0, opt_level=opt_level)
    xs = [_tensor(rng, (9, 20), device) for _ in range(6)]
    outs = [forward(x) for x in xs]
    stats = forward.stats()
    assert stats["device_graph"] == "recorded" and stats["graph_launches_per_call"] == 1
    assert stats["graph_nodes"] >= 1
    for x, out in zip(xs, outs):  # each call's own result, after all the later calls
        np.testing.assert_allclose(out.numpy(), (model(x) * 2.0).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("optimizer,hyper", [(optim.SGD, dict(lr=0.1, momentum=0.9,
                                                              weight_decay=1e-3)),
                                             (optim.Adam, dict(lr=0.01))],
                         ids=["sgd", "adam"])
def test_recorded_training_equals_eager(device, rng, optimizer, hyper):
    _graph_device(device)
    runs = []
    for compiled in (False, True):
        np.random.seed(3)
        model = nn.Sequential(nn.Linear(10, 24, device=device), nn.Tanh(),
                              nn.Linear(24, 4, device=device))
        opt = optimizer(model.parameters(), **hyper)
        step = training_step(model, opt)
        run = needle.compile(step, opt_level=3) if compiled else step
        data = np.random.default_rng(5)
        losses = []
        for i in range(8):
            if i == 5:
                opt.lr = hyper["lr"] / 4  # a new scalar reaches the recorded graph
            x = needle.Tensor(data.standard_normal((6, 10)).astype("float32"), device=device)
            y = needle.Tensor(data.integers(0, 4, 6).astype("float32"), device=device)
            losses.append(float(run(x, y).numpy()))
        runs.append((losses, model.state_dict(), run))
    (e_losses, e_state, _), (c_losses, c_state, run) = runs
    np.testing.assert_allclose(c_losses, e_losses, rtol=2e-4, atol=2e-5)
    for name in e_state:
        np.testing.assert_allclose(c_state[name], e_state[name], rtol=2e-4, atol=2e-5,
                                   err_msg=name)
    stats = run.stats()
    assert stats["device_graph"] == "recorded" and stats["recompiles"] == 0
    assert stats["generated_kernels"] >= 1


def test_graphs_can_be_switched_off(device, rng, monkeypatch):
    _graph_device(device)
    monkeypatch.setenv("NEEDLE_DEVICE_GRAPHS", "0")
    model = nn.Linear(5, 3, device=device)
    forward = needle.compile(lambda x: model(x))
    x = _tensor(rng, (4, 5), device)
    for _ in range(4):
        out = forward(x)
    assert "device_graph" not in forward.stats()["graphs"][-1]
    np.testing.assert_allclose(out.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_weights_written_between_calls_are_read_by_the_replay(device, rng):
    """A conv weight loaded in place between calls reaches the recorded graph (cudnn packs
    conv weights into a derived copy: the recording packs on every launch)."""
    _graph_device(device)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, device=device), nn.ReLU())
    model.eval()
    forward = needle.compile(lambda x: model(x))
    x = _tensor(rng, (2, 3, 8, 8), device)
    for _ in range(4):
        forward(x)
    state = {k: rng.standard_normal(v.shape).astype("float32")
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    got = forward(x).numpy()
    assert forward.stats()["recompiles"] == 0
    np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_a_call_that_writes_an_argument_runs_op_by_op(device, rng):
    """The replay's copy of an argument is not the argument: a call that writes one in
    place is not recorded, and each call's write reaches the caller's tensor."""
    _graph_device(device)

    @needle.compile
    def accumulate(x, y):
        x[...] = x + y
        return (x * 2.0).sum()

    start = rng.standard_normal(5).astype("float32")
    x, y = needle.Tensor(start, device=device), needle.Tensor(np.ones(5, "float32"), device=device)
    for k in range(1, 5):
        accumulate(x, y)
        np.testing.assert_allclose(x.numpy(), start + k, rtol=1e-6, atol=1e-6)
    assert "writes argument" in accumulate.stats()["device_graph"]
