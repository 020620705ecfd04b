"""ops.lstm, one LSTM layer over a sequence: against torch's LSTM in float64, its gradients
against central differences, and the backend's fused layer against the composition of
simple ops it replaces (on every device; shapes that are not multiples of 4 keep the
per-step products unaligned on the GPU)."""
import numpy as np
import pytest
import torch
from helpers import check_op

import needle
import needle.ops as ops


def lstm_out(x, h0, c0, w_ih, w_hh, bias):
    """hs with c_n appended as one more step: both outputs' gradients flow."""
    hs, (h_n, c_n) = ops.lstm(x, h0, c0, w_ih, w_hh, bias)
    steps, batch, hidden = hs.shape
    return ops.concatenate([hs, ops.reshape(c_n, (1, batch, hidden))], 0)


def torch_lstm(x, h0, c0, w_ih, w_hh, bias):
    """The same layer as torch.nn.LSTM (its weights are the transposes of ours)."""
    features, hidden = w_ih.shape[0], w_hh.shape[0]
    layer = torch.nn.LSTM(features, hidden, dtype=torch.float64)
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.from_numpy(w_ih.T))
        layer.weight_hh_l0.copy_(torch.from_numpy(w_hh.T))
        layer.bias_ih_l0.copy_(torch.from_numpy(bias))
        layer.bias_hh_l0.zero_()
        hs, (_, c_n) = layer(torch.from_numpy(x), (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]))
    return torch.cat([hs, c_n]).numpy()


def lstm_inputs(rng, steps, batch, features, hidden):
    bound = 1 / np.sqrt(hidden)
    return [rng.standard_normal((steps, batch, features)), rng.standard_normal((batch, hidden)),
            rng.standard_normal((batch, hidden)),
            rng.uniform(-bound, bound, (features, 4 * hidden)) * 2,
            rng.uniform(-bound, bound, (hidden, 4 * hidden)) * 2,
            rng.uniform(-bound, bound, 4 * hidden)]


@pytest.mark.parametrize("steps, batch, features, hidden", [(4, 3, 5, 6), (1, 2, 3, 4)])
def test_lstm_matches_torch_and_numerical_gradients(device, rng, steps, batch, features, hidden):
    check_op(device, lstm_out, torch_lstm, lstm_inputs(rng, steps, batch, features, hidden))


def test_lstm_without_bias_matches_torch(device, rng):
    x, h0, c0, w_ih, w_hh, _ = lstm_inputs(rng, 3, 2, 4, 5)
    want = torch_lstm(x, h0, c0, w_ih, w_hh, np.zeros(20))
    got = lstm_out(*(needle.Tensor(a, device=device) for a in (x, h0, c0, w_ih, w_hh)), None)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)


def test_fused_lstm_layer_matches_the_composition(device, rng, unfused):
    """Forward and every input's gradient, fused (where the backend has the layer op) and
    composed step by step, a longer sequence with hidden 37 (not a multiple of 4)."""
    inputs = lstm_inputs(rng, 9, 5, 7, 37)
    weights = rng.standard_normal((10, 5, 37))

    def run():
        tensors = [needle.Tensor(a, device=device, requires_grad=True) for a in inputs]
        out = lstm_out(*tensors)
        out.backward(needle.Tensor(weights, device=device))
        return [out.numpy()] + [t.grad.numpy() for t in tensors]

    fused, composite = run(), unfused(run)
    for f, c in zip(fused, composite):
        np.testing.assert_allclose(f, c, rtol=1e-4, atol=1e-5)


def test_backend_lstm_layer_is_used_where_the_backend_has_it(device, rng):
    """The fused op's tensors come from LSTMLayer (not a silently taken composition)."""
    tensors = [needle.Tensor(a, device=device) for a in lstm_inputs(rng, 3, 2, 4, 5)]
    hs, _ = ops.lstm(*tensors)
    fused = device.backend.supports("lstm", "float32")
    assert isinstance(hs.inputs[0].op, ops.LSTMLayer) == fused


def test_lstm_refuses_weights_of_the_wrong_shape(rng):
    x, h0, c0, w_ih, w_hh, b = (needle.Tensor(a) for a in lstm_inputs(rng, 2, 2, 3, 4))
    with pytest.raises(needle.errors.ShapeError, match="weights"):
        ops.lstm(x, h0, c0, w_hh, w_hh, b)
    with pytest.raises(needle.errors.ShapeError, match="h0"):
        ops.lstm(x, c0[0:1], c0, w_ih, w_hh, b)


# -- the backend layer op, called directly ---------------------------------------------------
def test_the_backend_layer_op_matches_the_numpy_backend_call_after_call(device, rng):
    """The backend's lstm and lstm_backward called six times, new contents each time, on two
    sets of buffers in turn (awkward sizes: hidden 9), against the NumPy backend, the
    specification. On cuda and cudnn the later calls replay a graph recorded on buffers of
    its own: each call's results must reach its own buffers, and stay there while the other
    set is used."""
    from helpers import download, upload
    from needle.backend_ndarray.numpy_backend import NumpyBackend
    be, ref = device.backend, NumpyBackend()
    if not be.supports("lstm", "float32") or isinstance(be, NumpyBackend):
        pytest.skip(f"{device} has no fused LSTM layer, or is the reference")
    steps, batch, hidden = 6, 3, 9
    shapes = {"xp": (steps, batch, 4 * hidden), "w_hh": (hidden, 4 * hidden), "h0": (batch, hidden),
              "c0": (batch, hidden), "dhs": (steps, batch, hidden), "dcs": (steps, batch, hidden)}
    outs = {"hs": steps * batch * hidden, "cs": steps * batch * hidden,
            "gates": steps * batch * 4 * hidden, "dz": steps * batch * 4 * hidden,
            "dh0": batch * hidden, "dc0": batch * hidden}
    forward = ("xp", "w_hh", "h0", "c0", "hs", "cs", "gates")
    backward = ("dhs", "dcs", "w_hh", "c0", "cs", "gates", "dz", "dh0", "dc0")
    sets = []
    for _ in range(2):
        bufs = {k: upload(be, np.zeros(s, np.float32)) for k, s in shapes.items()}
        sets.append({**bufs, **{k: be.alloc(n, np.float32) for k, n in outs.items()}})
    expected = [None, None]
    for call in range(6):
        bufs = sets[call % 2]
        arrays = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        for k, a in arrays.items():
            be.from_numpy(a.reshape(-1), bufs[k])
        mine = {k: ref.alloc(n, np.float32) for k, n in outs.items()}
        inputs = {k: a.reshape(-1).copy() for k, a in arrays.items()}
        for impl, b in ((be, bufs), (ref, {**inputs, **mine})):
            impl.lstm(*(b[k] for k in forward), steps, batch, hidden)
            impl.lstm_backward(*(b[k] for k in backward), steps, batch, hidden)
        expected[call % 2] = mine
        for k in outs:
            np.testing.assert_allclose(download(be, bufs[k]), mine[k], rtol=2e-5, atol=2e-6,
                                       err_msg=f"{k} of call {call}")
    for k in outs:  # the 5th call's results, after the 6th ran on the other buffers
        np.testing.assert_allclose(download(be, sets[0][k]), expected[0][k], rtol=2e-5,
                                   atol=2e-6, err_msg=f"{k} of call 4, after call 5")
    if hasattr(be, "_layer_replays"):  # the later calls were graph launches
        assert {key[0] for key in be._layer_replays.graphs} >= {"lstm", "lstm_backward"}


def test_a_compiled_step_keeps_the_fused_layer_as_one_composite(device, rng):
    """needle.compile records the layer op (and its gradient) as one composite each where
    the backend has it, compiled results equal to eager ones; elsewhere the steps."""
    from needle import nn, optim
    model = nn.LSTM(3, 5, num_layers=2, device=device)
    opt = optim.SGD(model.parameters(), lr=0.1)

    def step(x):
        opt.reset_grad()
        out, (h, c) = model(x)
        loss = (out * out).sum() + (c * c).sum()
        loss.backward()
        opt.step()
        return loss

    x = needle.Tensor(rng.standard_normal((4, 2, 3)), device=device)
    compiled = needle.compile(step, opt_level=3)
    text = compiled.lower(x).as_text()
    fused = device.backend.supports("lstm", "float32")
    assert ('"needle.lstm"' in text and '"needle.lstm_backward"' in text) == fused
    state = model.state_dict()
    eager = [step(x).numpy() for _ in range(3)]
    model.load_state_dict(state)
    np.testing.assert_allclose([compiled(x).numpy() for _ in range(3)], eager, rtol=1e-4)


def test_a_declined_layer_op_runs_as_the_composition(rng, monkeypatch):
    """A backend may decline the layer op for some arguments (webgpu: sequences larger
    than one storage binding): the steps' composition gives the result instead."""
    from needle.backend_ndarray import Declined
    from needle.backend_ndarray.numpy_backend import NumpyBackend

    def decline(*args):
        raise Declined("too large")
    monkeypatch.setattr(NumpyBackend, "lstm", decline)
    inputs = lstm_inputs(rng, 3, 2, 4, 5)
    hs, _ = ops.lstm(*(needle.Tensor(a) for a in inputs))
    assert not isinstance(hs.inputs[0].op, ops.LSTMLayer)
    np.testing.assert_allclose(lstm_out(*(needle.Tensor(a) for a in inputs)).numpy(),
                               torch_lstm(*inputs), rtol=1e-4, atol=1e-5)


def test_an_in_place_write_to_the_layer_outputs_is_caught_by_backward(device, rng):
    """The layer's gradient reads its outputs: writing into them (or into a view, h_n)
    before backward raises, as for any op whose saved tensor changed."""
    tensors = [needle.Tensor(a, device=device, requires_grad=True)
               for a in lstm_inputs(rng, 3, 2, 4, 5)]
    hs, (h_n, c_n) = ops.lstm(*tensors)
    loss = (hs * hs).sum() + (c_n * c_n).sum()
    with needle.no_grad():
        h_n[...] = 0.0
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        loss.backward()
