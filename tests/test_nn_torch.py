"""needle.nn layers against PyTorch (CPU, float32): forward outputs, input gradients and
parameter gradients, with the torch weights copied exactly into the Needle modules.

Layouts: Needle Linear weight is (in, out) = torch weight.T and its bias is (1, out); Conv
weight is (k, k, in, out) = torch weight.permute(2, 3, 1, 0); RNN/LSTM cells hold W_ih / W_hh
as the transposed torch weights; sequences are (seq, batch, feature) in both.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import needle
import needle.nn as nn
from torch_helpers import close, npy, param, seeded, tensor


# ---------------------------------------------------------------- helpers


def pair(rng, shape, device, scale=1.0):
    """The same random float32 input as a Needle tensor and a torch leaf, both needing grad."""
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    return tensor(x, device), torch.tensor(x, requires_grad=True)


def backprop(rng, n_out, t_out, device):
    """Backward ``sum(out * R)`` with the same random R through both graphs."""
    r = rng.standard_normal(t_out.shape).astype(np.float32)
    assert tuple(n_out.shape) == tuple(t_out.shape), f"{n_out.shape} vs {tuple(t_out.shape)}"
    (n_out * tensor(r, device, requires_grad=False)).sum().backward()
    (t_out * torch.tensor(r)).sum().backward()


def copy_linear(n_lin, t_lin, device):
    n_lin.weight = param(npy(t_lin.weight).T, device)
    n_lin.bias = param(npy(t_lin.bias).reshape(1, -1), device) if t_lin.bias is not None else None


def check_linear_grads(n_lin, t_lin, what="linear"):
    close(n_lin.weight.grad, t_lin.weight.grad.T, what=f"{what} weight grad")
    if t_lin.bias is not None:
        close(n_lin.bias.grad, t_lin.bias.grad.reshape(1, -1), what=f"{what} bias grad")


def copy_conv(n_conv, t_conv, device):
    n_conv.weight = param(npy(t_conv.weight.permute(2, 3, 1, 0)), device)
    n_conv.bias = param(npy(t_conv.bias), device) if t_conv.bias is not None else None


def copy_norm(n_norm, t_norm, device):
    """Random (non-trivial) affine parameters, the same in both."""
    with torch.no_grad():
        t_norm.weight.uniform_(0.5, 1.5)
        t_norm.bias.uniform_(-0.5, 0.5)
    n_norm.weight = param(npy(t_norm.weight), device)
    n_norm.bias = param(npy(t_norm.bias), device)


def copy_mha(n_mha, t_mha, device):
    d = t_mha.embed_dim
    w, b = npy(t_mha.in_proj_weight), npy(t_mha.in_proj_bias)
    for i, proj in enumerate((n_mha.q_proj, n_mha.k_proj, n_mha.v_proj)):
        proj.weight = param(w[i * d:(i + 1) * d].T, device)
        proj.bias = param(b[i * d:(i + 1) * d].reshape(1, d), device)
    copy_linear(n_mha.out_proj, t_mha.out_proj, device)


def check_mha_grads(n_mha, t_mha, what="mha"):
    d = t_mha.embed_dim
    gw, gb = npy(t_mha.in_proj_weight.grad), npy(t_mha.in_proj_bias.grad)
    for i, (name, proj) in enumerate(zip("qkv", (n_mha.q_proj, n_mha.k_proj, n_mha.v_proj))):
        close(proj.weight.grad, gw[i * d:(i + 1) * d].T, what=f"{what} {name}_proj weight grad")
        close(proj.bias.grad, gb[i * d:(i + 1) * d].reshape(1, d),
              what=f"{what} {name}_proj bias grad")
    check_linear_grads(n_mha.out_proj, t_mha.out_proj, f"{what} out_proj")


# ---------------------------------------------------------------- Linear

@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (7,)], ids=["2d", "3d", "1d"])
def test_linear(device, shape, bias):
    rng = seeded(1)
    t_lin = torch.nn.Linear(7, 4, bias=bias)
    n_lin = nn.Linear(7, 4, bias=bias, device=device)
    copy_linear(n_lin, t_lin, device)
    x, tx = pair(rng, shape, device)
    y, ty = n_lin(x), t_lin(tx)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    check_linear_grads(n_lin, t_lin)


def test_linear_default_layout(device):
    seeded(2)
    lin = nn.Linear(6, 3, device=device)
    assert lin.weight.shape == (6, 3) and lin.bias.shape == (1, 3)
    assert nn.Linear(6, 3, bias=False, device=device).bias is None


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_sequential_linear_relu_linear(device, bias):
    """Sequential fuses Linear+ReLU into one bias_act op: still equal to torch."""
    rng = seeded(3)
    t_seq = torch.nn.Sequential(torch.nn.Linear(6, 16, bias=bias), torch.nn.ReLU(),
                                torch.nn.Linear(16, 3, bias=bias))
    n_seq = nn.Sequential(nn.Linear(6, 16, bias=bias, device=device), nn.ReLU(),
                          nn.Linear(16, 3, bias=bias, device=device))
    copy_linear(n_seq.modules[0], t_seq[0], device)
    copy_linear(n_seq.modules[2], t_seq[2], device)
    x, tx = pair(rng, (8, 6), device)
    y, ty = n_seq(x), t_seq(tx)
    assert (npy(t_seq[1](t_seq[0](tx))) == 0).any(), "test should exercise the ReLU cut-off"
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    check_linear_grads(n_seq.modules[0], t_seq[0], "first")
    check_linear_grads(n_seq.modules[2], t_seq[2], "second")


def test_sequential_relu_at_end_and_3d(device):
    """Linear followed by ReLU as the last module, on 3-D input (fused path with reshape)."""
    rng = seeded(4)
    t_seq = torch.nn.Sequential(torch.nn.Linear(5, 9), torch.nn.ReLU())
    n_seq = nn.Sequential(nn.Linear(5, 9, device=device), nn.ReLU())
    copy_linear(n_seq.modules[0], t_seq[0], device)
    x, tx = pair(rng, (2, 4, 5), device)
    y, ty = n_seq(x), t_seq(tx)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    check_linear_grads(n_seq.modules[0], t_seq[0])


# ---------------------------------------------------------------- Conv

@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("size", [9, 10, 4], ids=["odd", "even", "smaller-than-kernel"])
@pytest.mark.parametrize("kernel", [1, 3, 7])
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_conv(device, stride, kernel, size, bias):
    rng = seeded(5)
    t_conv = torch.nn.Conv2d(3, 4, kernel, stride=stride, padding=kernel // 2, bias=bias)
    n_conv = nn.Conv(3, 4, kernel, stride=stride, bias=bias, device=device)
    assert n_conv.weight.shape == (kernel, kernel, 3, 4)
    copy_conv(n_conv, t_conv, device)
    x, tx = pair(rng, (2, 3, size, size), device)
    y, ty = n_conv(x), t_conv(tx)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    close(n_conv.weight.grad, t_conv.weight.grad.permute(2, 3, 1, 0), what="weight grad")
    if bias:
        close(n_conv.bias.grad, t_conv.bias.grad, what="bias grad")


def test_conv_nonsquare_forward(device):
    rng = seeded(6)
    t_conv = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1)
    n_conv = nn.Conv(2, 3, 3, stride=2, device=device)
    copy_conv(n_conv, t_conv, device)
    x, tx = pair(rng, (2, 2, 9, 6), device)
    close(n_conv(x), t_conv(tx), what="forward")


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_nonsquare_backward(device, stride):
    rng = seeded(7)
    t_conv = torch.nn.Conv2d(2, 3, 3, stride=stride, padding=1)
    n_conv = nn.Conv(2, 3, 3, stride=stride, device=device)
    copy_conv(n_conv, t_conv, device)
    x, tx = pair(rng, (2, 2, 9, 6), device)
    y, ty = n_conv(x), t_conv(tx)
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    close(n_conv.weight.grad, t_conv.weight.grad.permute(2, 3, 1, 0), what="weight grad")


# ---------------------------------------------------------------- BatchNorm / LayerNorm

def _check_batchnorm(device, n_cls, t_cls, shape):
    rng = seeded(8)
    dim = shape[1]
    t_bn = t_cls(dim, eps=1e-5, momentum=0.1)
    n_bn = n_cls(dim, device=device)
    copy_norm(n_bn, t_bn, device)
    n_bn.train()
    t_bn.train()
    bshape = (1, dim) + (1,) * (len(shape) - 2)
    for step in range(3):
        # non-zero per-channel means, so running_mean moves visibly
        shift = rng.standard_normal(bshape).astype(np.float32)
        x_np = (rng.standard_normal(shape) * 2.0 + shift).astype(np.float32)
        x, tx = tensor(x_np, device), torch.tensor(x_np, requires_grad=True)
        y, ty = n_bn(x), t_bn(tx)
        close(y, ty, what=f"train forward, step {step}")
        backprop(rng, y, ty, device)
        close(x.grad, tx.grad, what=f"train input grad, step {step}")
    close(n_bn.running_mean, t_bn.running_mean, what="running_mean")
    close(n_bn.running_var, t_bn.running_var, what="running_var")
    # eval mode normalises with the running statistics
    n_bn.eval()
    t_bn.eval()
    x, tx = pair(rng, shape, device)
    y, ty = n_bn(x), t_bn(tx)
    close(y, ty, what="eval forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="eval input grad")
    # weight/bias grads were never cleared: both sides accumulated 3 train steps + this one
    close(n_bn.weight.grad, t_bn.weight.grad, what="accumulated weight grad")
    close(n_bn.bias.grad, t_bn.bias.grad, what="accumulated bias grad")
    # eval mode does not move the running statistics
    close(n_bn.running_mean, t_bn.running_mean, what="running_mean after eval")
    close(n_bn.running_var, t_bn.running_var, what="running_var after eval")


def _check_batchnorm_grads(device, n_cls, t_cls, shape):
    rng = seeded(9)
    dim = shape[1]
    t_bn = t_cls(dim)
    n_bn = n_cls(dim, device=device)
    copy_norm(n_bn, t_bn, device)
    x, tx = pair(rng, shape, device, scale=3.0)
    y, ty = n_bn(x), t_bn(tx)
    close(y, ty, what="train forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="train input grad")
    close(n_bn.weight.grad, t_bn.weight.grad, what="train weight grad")
    close(n_bn.bias.grad, t_bn.bias.grad, what="train bias grad")


def test_batchnorm1d(device):
    _check_batchnorm(device, nn.BatchNorm1d, torch.nn.BatchNorm1d, (16, 5))


def test_batchnorm2d(device):
    _check_batchnorm(device, nn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 3, 5, 6))


def test_batchnorm1d_train_grads(device):
    _check_batchnorm_grads(device, nn.BatchNorm1d, torch.nn.BatchNorm1d, (12, 6))


def test_batchnorm2d_train_grads(device):
    _check_batchnorm_grads(device, nn.BatchNorm2d, torch.nn.BatchNorm2d, (3, 4, 5, 5))


def test_batchnorm_buffers_are_not_parameters(device):
    bn = nn.BatchNorm2d(4, device=device)
    assert len(bn.parameters()) == 2
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var"}


@pytest.mark.parametrize("shape", [(6, 8), (2, 5, 8)], ids=["2d", "3d"])
def test_layernorm1d(device, shape):
    rng = seeded(10)
    t_ln = torch.nn.LayerNorm(8, eps=1e-5)
    n_ln = nn.LayerNorm1d(8, device=device)
    copy_norm(n_ln, t_ln, device)
    x, tx = pair(rng, shape, device, scale=2.0)
    y, ty = n_ln(x), t_ln(tx)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    close(n_ln.weight.grad, t_ln.weight.grad, what="weight grad")
    close(n_ln.bias.grad, t_ln.bias.grad, what="bias grad")


# ---------------------------------------------------------------- SoftmaxLoss

@pytest.mark.parametrize("labels_as", ["float32_tensor", "int_numpy"])
def test_softmax_loss(device, labels_as):
    rng = seeded(11)
    logits, tlogits = pair(rng, (9, 6), device, scale=3.0)
    y = rng.integers(0, 6, size=9)
    # a float32 Tensor of labels requires grad by default: the loss must not differentiate it
    labels = tensor(y, device) if labels_as == "float32_tensor" else y.astype(np.int64)
    loss = nn.SoftmaxLoss()(logits, labels)
    tloss = F.cross_entropy(tlogits, torch.tensor(y))
    assert loss.shape == ()
    close(loss, tloss, what="loss")
    loss.backward()
    tloss.backward()
    close(logits.grad, tlogits.grad, what="logits grad")


def test_softmax_loss_scaled_backward(device):
    """A non-unit upstream gradient scales the logits gradient."""
    rng = seeded(12)
    logits, tlogits = pair(rng, (5, 4), device)
    y = rng.integers(0, 4, size=5)
    loss = nn.SoftmaxLoss()(logits, tensor(y, device, requires_grad=False))
    (loss * 2.5).backward()
    (F.cross_entropy(tlogits, torch.tensor(y)) * 2.5).backward()
    close(logits.grad, tlogits.grad, what="logits grad")


# ---------------------------------------------------------------- Dropout

def test_dropout_eval_is_identity(device):
    rng = seeded(13)
    drop = nn.Dropout(0.5)
    drop.eval()
    x, _ = pair(rng, (20, 30), device)
    y = drop(x)
    close(y, x, rtol=0, atol=0, what="eval dropout")
    y.sum().backward()
    close(x.grad, np.ones((20, 30), np.float32), what="eval grad")


def test_dropout_zero_p_is_identity_in_training(device):
    rng = seeded(14)
    x, _ = pair(rng, (4, 5), device)
    close(nn.Dropout(0.0)(x), x, rtol=0, atol=0)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_train(device, p):
    rng = seeded(15)
    drop = nn.Dropout(p)
    assert drop.training
    x_np = rng.uniform(0.5, 2.0, (200, 100)).astype(np.float32)
    x = tensor(x_np, device)
    y = drop(x)
    out = y.numpy()
    zero = out == 0
    frac = zero.mean()
    # 20000 Bernoulli draws: 5 sigma is about 0.018
    assert abs(frac - p) < 0.02, f"zeroed fraction {frac} vs p={p}"
    np.testing.assert_allclose(out[~zero], x_np[~zero] / (1 - p), rtol=1e-6)
    y.sum().backward()
    grad = x.grad.numpy()
    np.testing.assert_allclose(grad[zero], 0)
    np.testing.assert_allclose(grad[~zero], 1 / (1 - p), rtol=1e-6)


def test_dropout_rejects_bad_p():
    with pytest.raises(ValueError):
        nn.Dropout(1.0)
    with pytest.raises(ValueError):
        nn.Dropout(-0.1)


# ---------------------------------------------------------------- simple layers

def test_flatten(device):
    rng = seeded(16)
    x, tx = pair(rng, (3, 2, 4, 5), device)
    y, ty = nn.Flatten()(x), torch.flatten(tx, 1)
    close(y, ty, rtol=0, atol=0)
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad)


ACTIVATIONS = [
    ("relu", nn.ReLU, lambda: torch.nn.ReLU()),
    ("tanh", nn.Tanh, lambda: torch.nn.Tanh()),
    ("sigmoid", nn.Sigmoid, lambda: torch.nn.Sigmoid()),
    ("gelu", nn.GELU, lambda: torch.nn.GELU(approximate="tanh")),
]


@pytest.mark.parametrize("name,n_cls,t_make", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation(device, name, n_cls, t_make):
    rng = seeded(17)
    x, tx = pair(rng, (6, 11), device, scale=3.0)
    y, ty = n_cls()(x), t_make()(tx)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="grad")


def test_identity(device):
    rng = seeded(18)
    x, _ = pair(rng, (2, 3), device)
    assert nn.Identity()(x) is x


def test_residual(device):
    rng = seeded(19)
    t_fn = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6))
    n_fn = nn.Sequential(nn.Linear(6, 6, device=device), nn.Tanh(), nn.Linear(6, 6, device=device))
    copy_linear(n_fn.modules[0], t_fn[0], device)
    copy_linear(n_fn.modules[2], t_fn[2], device)
    res = nn.Residual(n_fn)
    assert len(res.parameters()) == 4
    x, tx = pair(rng, (5, 6), device)
    y, ty = res(x), t_fn(tx) + tx
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    check_linear_grads(n_fn.modules[0], t_fn[0], "first")
    check_linear_grads(n_fn.modules[2], t_fn[2], "second")


# ---------------------------------------------------------------- Embedding

def test_embedding(device):
    rng = seeded(20)
    t_emb = torch.nn.Embedding(11, 5)
    n_emb = nn.Embedding(11, 5, device=device)
    assert n_emb.weight.shape == (11, 5)
    n_emb.weight = param(npy(t_emb.weight), device)
    ids = rng.integers(0, 11, size=(7, 3))
    ids[0, 0] = ids[1, 1] = 4  # a repeated id accumulates its gradient
    y = n_emb(tensor(ids, device, requires_grad=False))
    ty = t_emb(torch.tensor(ids))
    assert y.shape == (7, 3, 5)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(n_emb.weight.grad, t_emb.weight.grad, what="table grad")


# ---------------------------------------------------------------- RNN / LSTM

def copy_recurrent(cells, t_rnn, device):
    for k, cell in enumerate(cells):
        cell.W_ih = param(npy(getattr(t_rnn, f"weight_ih_l{k}")).T, device)
        cell.W_hh = param(npy(getattr(t_rnn, f"weight_hh_l{k}")).T, device)
        cell.bias_ih = param(npy(getattr(t_rnn, f"bias_ih_l{k}")), device)
        cell.bias_hh = param(npy(getattr(t_rnn, f"bias_hh_l{k}")), device)


def check_recurrent_grads(cells, t_rnn):
    for k, cell in enumerate(cells):
        close(cell.W_ih.grad, getattr(t_rnn, f"weight_ih_l{k}").grad.T, what=f"W_ih l{k}")
        close(cell.W_hh.grad, getattr(t_rnn, f"weight_hh_l{k}").grad.T, what=f"W_hh l{k}")
        close(cell.bias_ih.grad, getattr(t_rnn, f"bias_ih_l{k}").grad, what=f"bias_ih l{k}")
        close(cell.bias_hh.grad, getattr(t_rnn, f"bias_hh_l{k}").grad, what=f"bias_hh l{k}")


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn(device, nonlinearity):
    rng = seeded(21)
    seq, batch, n_in, hidden, layers = 5, 3, 4, 6, 2
    t_rnn = torch.nn.RNN(n_in, hidden, num_layers=layers, nonlinearity=nonlinearity)
    n_rnn = nn.RNN(n_in, hidden, num_layers=layers, nonlinearity=nonlinearity, device=device)
    copy_recurrent(n_rnn.rnn_cells, t_rnn, device)
    x, tx = pair(rng, (seq, batch, n_in), device)
    h0, th0 = pair(rng, (layers, batch, hidden), device)
    out, h_n = n_rnn(x, h0)
    tout, th_n = t_rnn(tx, th0)
    close(out, tout, what="output")
    close(h_n, th_n, what="h_n")
    r1 = rng.standard_normal(tout.shape).astype(np.float32)
    r2 = rng.standard_normal(th_n.shape).astype(np.float32)
    ((out * tensor(r1, device, False)).sum() + (h_n * tensor(r2, device, False)).sum()).backward()
    ((tout * torch.tensor(r1)).sum() + (th_n * torch.tensor(r2)).sum()).backward()
    close(x.grad, tx.grad, what="x grad")
    close(h0.grad, th0.grad, what="h0 grad")
    check_recurrent_grads(n_rnn.rnn_cells, t_rnn)


def test_rnn_default_h0_is_zero(device):
    rng = seeded(22)
    t_rnn = torch.nn.RNN(3, 4, num_layers=2)
    n_rnn = nn.RNN(3, 4, num_layers=2, device=device)
    copy_recurrent(n_rnn.rnn_cells, t_rnn, device)
    x, tx = pair(rng, (4, 2, 3), device)
    out, h_n = n_rnn(x)
    tout, th_n = t_rnn(tx)
    close(out, tout, what="output")
    close(h_n, th_n, what="h_n")
    backprop(rng, out, tout, device)
    close(x.grad, tx.grad, what="x grad")


def compare_lstm(rng, device, batch_first):
    """A 2-layer LSTM against torch's with the same weights and states: outputs, final
    states and every gradient."""
    seq, batch, n_in, hidden, layers = 5, 3, 4, 6, 2
    t_lstm = torch.nn.LSTM(n_in, hidden, num_layers=layers, batch_first=batch_first)
    n_lstm = nn.LSTM(n_in, hidden, num_layers=layers, device=device, batch_first=batch_first)
    assert n_lstm.lstm_cells[0].W_ih.shape == (n_in, 4 * hidden)
    copy_recurrent(n_lstm.lstm_cells, t_lstm, device)
    x, tx = pair(rng, (batch, seq, n_in) if batch_first else (seq, batch, n_in), device)
    h0, th0 = pair(rng, (layers, batch, hidden), device)
    c0, tc0 = pair(rng, (layers, batch, hidden), device)
    out, (h_n, c_n) = n_lstm(x, (h0, c0))
    tout, (th_n, tc_n) = t_lstm(tx, (th0, tc0))
    assert out.shape == tuple(tout.shape) and h_n.shape == (layers, batch, hidden)
    close(out, tout, what="output")
    close(h_n, th_n, what="h_n")
    close(c_n, tc_n, what="c_n")
    rs = [rng.standard_normal(t.shape).astype(np.float32) for t in (tout, th_n, tc_n)]
    sum((o * tensor(r, device, False)).sum() for o, r in zip((out, h_n, c_n), rs)).backward()
    sum((o * torch.tensor(r)).sum() for o, r in zip((tout, th_n, tc_n), rs)).backward()
    close(x.grad, tx.grad, what="x grad")
    close(h0.grad, th0.grad, what="h0 grad")
    close(c0.grad, tc0.grad, what="c0 grad")
    check_recurrent_grads(n_lstm.lstm_cells, t_lstm)


def test_lstm(device):
    compare_lstm(seeded(23), device, batch_first=False)


def test_lstm_default_state_is_zero(device):
    rng = seeded(24)
    t_lstm = torch.nn.LSTM(3, 4, num_layers=1)
    n_lstm = nn.LSTM(3, 4, num_layers=1, device=device)
    copy_recurrent(n_lstm.lstm_cells, t_lstm, device)
    x, tx = pair(rng, (4, 2, 3), device)
    out, (h_n, c_n) = n_lstm(x)
    tout, (th_n, tc_n) = t_lstm(tx)
    close(out, tout, what="output")
    close(c_n, tc_n, what="c_n")
    backprop(rng, out, tout, device)
    close(x.grad, tx.grad, what="x grad")
    check_recurrent_grads(n_lstm.lstm_cells, t_lstm)


# ---------------------------------------------------------------- attention / transformer

@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_multihead_attention(device, causal):
    rng = seeded(25)
    batch, seq, d, heads = 2, 5, 8, 2
    t_mha = torch.nn.MultiheadAttention(d, heads, batch_first=True)
    n_mha = nn.MultiHeadAttention(d, heads, causal=causal, device=device)
    copy_mha(n_mha, t_mha, device)
    x, tx = pair(rng, (batch, seq, d), device)
    mask = torch.triu(torch.ones(seq, seq), 1).bool() if causal else None
    y = n_mha(x)
    ty, _ = t_mha(tx, tx, tx, attn_mask=mask, need_weights=False)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    check_mha_grads(n_mha, t_mha)


def test_multihead_attention_cross(device):
    """Distinct query / key / value tensors, key length != query length."""
    rng = seeded(26)
    batch, d, heads = 2, 6, 3
    t_mha = torch.nn.MultiheadAttention(d, heads, batch_first=True)
    n_mha = nn.MultiHeadAttention(d, heads, device=device)
    copy_mha(n_mha, t_mha, device)
    q, tq = pair(rng, (batch, 3, d), device)
    k, tk = pair(rng, (batch, 5, d), device)
    v, tv = pair(rng, (batch, 5, d), device)
    y = n_mha(q, k, v)
    ty, _ = t_mha(tq, tk, tv, need_weights=False)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    for name, a, b in (("q", q, tq), ("k", k, tk), ("v", v, tv)):
        close(a.grad, b.grad, what=f"{name} grad")
    check_mha_grads(n_mha, t_mha)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_transformer_layer(device, causal):
    rng = seeded(27)
    batch, seq, d, heads, ff = 2, 5, 8, 2, 16
    t_layer = torch.nn.TransformerEncoderLayer(d, heads, dim_feedforward=ff, dropout=0.0,
                                               activation="relu", batch_first=True,
                                               norm_first=True)
    t_layer.train()  # no fast path: the plain composition of its modules
    n_layer = nn.TransformerLayer(d, heads, ff, dropout=0.0, causal=causal, device=device)
    copy_mha(n_layer.attn, t_layer.self_attn, device)
    copy_norm(n_layer.norm1, t_layer.norm1, device)
    copy_norm(n_layer.norm2, t_layer.norm2, device)
    copy_linear(n_layer.ff.modules[0], t_layer.linear1, device)
    copy_linear(n_layer.ff.modules[3], t_layer.linear2, device)
    x, tx = pair(rng, (batch, seq, d), device)
    mask = torch.triu(torch.ones(seq, seq), 1).bool() if causal else None
    y, ty = n_layer(x), t_layer(tx, src_mask=mask)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    check_mha_grads(n_layer.attn, t_layer.self_attn, "attn")
    check_linear_grads(n_layer.ff.modules[0], t_layer.linear1, "linear1")
    check_linear_grads(n_layer.ff.modules[3], t_layer.linear2, "linear2")
    for name in ("norm1", "norm2"):
        close(getattr(n_layer, name).weight.grad, getattr(t_layer, name).weight.grad,
              what=f"{name} weight grad")
        close(getattr(n_layer, name).bias.grad, getattr(t_layer, name).bias.grad,
              what=f"{name} bias grad")


# ---------------------------------------------------------------- Module API

def make_net(device):
    return nn.Sequential(
        nn.Linear(4, 8, device=device), nn.ReLU(), nn.BatchNorm1d(8, device=device),
        nn.Residual(nn.Sequential(nn.Linear(8, 8, device=device), nn.Dropout(0.3))),
        nn.Linear(8, 3, bias=False, device=device))


def test_parameters_count_and_identity(device):
    seeded(28)
    net = make_net(device)
    mods = net.modules
    expected = [mods[0].weight, mods[0].bias, mods[2].weight, mods[2].bias,
                mods[3].fn.modules[0].weight, mods[3].fn.modules[0].bias, mods[4].weight]
    params = net.parameters()
    assert len(params) == 7
    assert {id(p) for p in params} == {id(p) for p in expected}
    assert all(isinstance(p, nn.Parameter) for p in params)
    # buffers are not parameters
    assert not any(p is mods[2].running_mean or p is mods[2].running_var for p in params)


def test_shared_module_parameters_listed_once(device):
    seeded(29)
    lin = nn.Linear(3, 3, device=device)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(net.parameters()) == 2


def test_assign_parameter_replaces_it(device):
    seeded(30)
    net = nn.Sequential(nn.Linear(3, 2, device=device))
    old = net.modules[0].weight
    new = param(np.ones((3, 2)), device)
    net.modules[0].weight = new
    ids = {id(p) for p in net.parameters()}
    assert id(new) in ids and id(old) not in ids
    assert len(ids) == 2
    out = net(tensor(np.ones((1, 3)), device))
    close(out, 3.0 + net.modules[0].bias.numpy(), what="forward uses the new weight")
    # assigning a new Parameter attribute adds it
    net.modules[0].extra = param(np.ones(4), device)
    assert len(net.parameters()) == 3


def test_train_eval_propagate(device):
    seeded(31)
    net = nn.Sequential(make_net(device), nn.TransformerLayer(4, 2, 8, dropout=0.1, device=device),
                        nn.LSTM(3, 3, num_layers=2, device=device))
    children = net._children()
    assert len(children) > 15
    assert net.eval() is net
    assert not net.training and not any(m.training for m in children)
    net.train()
    assert net.training and all(m.training for m in children)
    net.eval()
    # an eval-mode net with dropout is deterministic
    x = tensor(np.random.default_rng(0).standard_normal((6, 4)), device)
    close(net.modules[0](x), net.modules[0](x), rtol=1e-6, atol=1e-7)


def _trained_net(device):
    """A net whose BatchNorm running statistics have moved off their defaults."""
    net = make_net(device)
    x = tensor(np.random.default_rng(1).standard_normal((10, 4)), device)
    net(x)
    return net


def test_state_dict_round_trip(device):
    seeded(32)
    net = _trained_net(device)
    state = net.state_dict()
    assert set(state) == {"modules.0.weight", "modules.0.bias", "modules.2.weight",
                          "modules.2.bias", "modules.2.running_mean", "modules.2.running_var",
                          "modules.3.fn.modules.0.weight", "modules.3.fn.modules.0.bias",
                          "modules.4.weight"}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    seeded(33)
    other = make_net(device)
    ids_before = [id(p) for p in other.parameters()]
    assert not np.allclose(other.state_dict()["modules.0.weight"], state["modules.0.weight"])
    assert other.load_state_dict(state) == ([], [])  # (missing_keys, unexpected_keys)
    assert [id(p) for p in other.parameters()] == ids_before, "parameters are updated in place"
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
    net.eval()
    other.eval()
    x = tensor(np.random.default_rng(2).standard_normal((5, 4)), device)
    close(other(x), net(x), rtol=1e-6, atol=1e-7)
    # the state dict is a snapshot, not a view into the module
    state["modules.0.weight"][...] = 7.0
    assert not np.allclose(net.modules[0].weight.numpy(), 7.0)


def test_load_state_dict_accepts_tensors(device):
    seeded(34)
    net = _trained_net(device)
    other = make_net(device)
    other.load_state_dict({k: tensor(v, device) for k, v in net.state_dict().items()})
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, net.state_dict()[k], err_msg=k)


def test_save_load_round_trip(device, tmp_path):
    seeded(35)
    net = _trained_net(device)
    path = tmp_path / "net.npz"
    needle.save(net.state_dict(), path)
    loaded = needle.load(path)
    assert set(loaded) == set(net.state_dict())
    other = make_net(device)
    other.load_state_dict(loaded)
    net.eval()
    other.eval()
    x = tensor(np.random.default_rng(3).standard_normal((5, 4)), device)
    close(other(x), net(x), rtol=1e-6, atol=1e-7)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, net.state_dict()[k], err_msg=k)


def test_load_state_dict_errors(device):
    seeded(36)
    net = make_net(device)
    good = net.state_dict()
    bad_shape = dict(good, **{"modules.0.weight": np.ones((8, 4), np.float32)})
    with pytest.raises(ValueError):
        net.load_state_dict(bad_shape)
    missing = {k: v for k, v in good.items() if k != "modules.2.running_var"}
    with pytest.raises(KeyError):
        net.load_state_dict(missing)
    with pytest.raises(KeyError):
        net.load_state_dict(dict(good, extra=np.ones(3, np.float32)))


# ---------------------------------------------------------------- Conv2d / Conv padding

@pytest.mark.parametrize("padding", [0, 1, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3, 4])
def test_conv2d_matches_torch(device, kernel, stride, padding):
    """nn.Conv2d has PyTorch's signature and default padding=0; explicit padding too."""
    rng = seeded(60)
    t_conv = torch.nn.Conv2d(3, 4, kernel, stride=stride, padding=padding)
    n_conv = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, device=device)
    copy_conv(n_conv, t_conv, device)
    x, tx = pair(rng, (2, 3, 8, 7), device)
    y, ty = n_conv(x), t_conv(tx)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    close(n_conv.weight.grad, t_conv.weight.grad.permute(2, 3, 1, 0), what="weight grad")
    close(n_conv.bias.grad, t_conv.bias.grad, what="bias grad")


def test_conv_default_padding_and_conv2d_default(device):
    """Classic Conv pads k // 2 by default; Conv2d pads 0 (torch.nn.Conv2d's default)."""
    rng = seeded(61)
    x, tx = pair(rng, (1, 2, 9, 9), device)
    t_conv = torch.nn.Conv2d(2, 3, 5)
    for n_conv, expected in ((nn.Conv2d(2, 3, 5, device=device), (1, 3, 5, 5)),
                             (nn.Conv(2, 3, 5, padding=0, device=device), (1, 3, 5, 5))):
        copy_conv(n_conv, t_conv, device)
        y = n_conv(x)
        assert y.shape == expected
        close(y, t_conv(tx), what=type(n_conv).__name__)
    assert nn.Conv(2, 3, 5, device=device)(x).shape == (1, 3, 9, 9)


# ---------------------------------------------------------------- pooling

POOLS = [(2, None, 0), (3, 2, 1), (3, 1, 0), (2, 1, 1), (3, 3, 1), ((2, 3), (1, 2), (1, 0))]


@pytest.mark.parametrize("k,s,p", POOLS, ids=[str(p) for p in POOLS])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool2d(device, kind, k, s, p):
    rng = seeded(62)
    n_cls, t_cls = (nn.MaxPool2d, torch.nn.MaxPool2d) if kind == "max" else \
        (nn.AvgPool2d, torch.nn.AvgPool2d)
    n_pool, t_pool = n_cls(k, stride=s, padding=p), t_cls(k, stride=s, padding=p)
    # continuous random values: no ties within a window (MaxPool's gradient at ties differs)
    x, tx = pair(rng, (2, 3, 7, 8), device)
    y, ty = n_pool(x), t_pool(tx)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")


def test_maxpool_padding_never_wins(device):
    """All-negative input: padded positions must not contribute 0 to the max."""
    rng = seeded(63)
    x_np = -np.abs(rng.standard_normal((1, 2, 5, 5))).astype(np.float32) - 1.0
    x, tx = tensor(x_np, device), torch.tensor(x_np, requires_grad=True)
    y, ty = nn.MaxPool2d(3, stride=2, padding=1)(x), torch.nn.MaxPool2d(3, 2, 1)(tx)
    assert (npy(y) < 0).all()
    close(y, ty)
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad)


def test_pool_in_sequential_with_conv(device):
    rng = seeded(64)
    t_net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 2 * 2, 5))
    n_net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, device=device), nn.ReLU(),
                          nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 2 * 2, 5, device=device))
    copy_conv(n_net[0], t_net[0], device)
    copy_linear(n_net[5], t_net[5], device)
    x, tx = pair(rng, (2, 3, 8, 8), device)
    y, ty = n_net(x), t_net(tx)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    close(n_net[0].weight.grad, t_net[0].weight.grad.permute(2, 3, 1, 0), what="conv grad")


def test_pool_errors():
    with pytest.raises(ValueError, match="half the kernel"):
        nn.MaxPool2d(2, padding=2)
    with pytest.raises(needle.ShapeError, match="NCHW"):
        nn.AvgPool2d(2)(needle.init.randn(3, 4, 4))
    with pytest.raises(needle.ShapeError, match="smaller than the kernel"):
        nn.MaxPool2d(5)(needle.init.randn(1, 1, 3, 3))


# ---------------------------------------------------------------- Softmax / LogSoftmax

@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2])
@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
def test_softmax_modules(device, name, dim):
    rng = seeded(65)
    x, tx = pair(rng, (3, 4, 5), device, scale=3.0)
    y, ty = getattr(nn, name)(dim=dim)(x), getattr(torch.nn, name)(dim=dim)(tx)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="grad")


# ---------------------------------------------------------------- losses

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_loss(device, reduction):
    rng = seeded(66)
    logits, tlogits = pair(rng, (7, 5), device, scale=2.0)
    y = rng.integers(0, 5, size=7)
    loss = nn.CrossEntropyLoss(reduction=reduction)(logits, tensor(y, device, False))
    t_loss = torch.nn.CrossEntropyLoss(reduction=reduction)(tlogits, torch.tensor(y))
    close(loss, t_loss, what="loss")
    backprop(rng, loss, t_loss, device)
    close(logits.grad, tlogits.grad, what="grad")
    assert isinstance(nn.CrossEntropyLoss(), nn.SoftmaxLoss)


def test_cross_entropy_loss_labels_as_list(device):
    rng = seeded(67)
    logits, tlogits = pair(rng, (3, 4), device)
    for reduction in ("none", "mean", "sum"):
        loss = nn.CrossEntropyLoss(reduction=reduction)(logits, [0, 3, 1])
        close(loss, F.cross_entropy(tlogits, torch.tensor([0, 3, 1]), reduction=reduction))
    with pytest.raises(needle.ShapeError, match="labels of shape"):
        nn.CrossEntropyLoss(reduction="none")(logits, [0, 1])
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="avg")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", ["MSELoss", "L1Loss"])
def test_regression_losses(device, name, reduction):
    rng = seeded(68)
    a, ta = pair(rng, (4, 6), device)
    b_np = rng.standard_normal((4, 6)).astype(np.float32)
    b_np[0, :3] = npy(ta)[0, :3]  # zero differences: L1's gradient there is 0, as torch's
    b, tb = tensor(b_np, device), torch.tensor(b_np, requires_grad=True)
    loss = getattr(nn, name)(reduction=reduction)(a, b)
    t_loss = getattr(torch.nn, name)(reduction=reduction)(ta, tb)
    close(loss, t_loss, what="loss")
    backprop(rng, loss, t_loss, device)
    close(a.grad, ta.grad, what="input grad")
    close(b.grad, tb.grad, what="target grad")
    if name == "L1Loss":
        assert not npy(a.grad)[0, :3].any()


def test_regression_loss_shape_mismatch():
    with pytest.raises(needle.ShapeError, match="same shape"):
        nn.MSELoss()(needle.init.randn(3, 2), needle.init.randn(3, 1))


# ---------------------------------------------------------------- attention masks

def _bool_mask(rng, shape, keep_first=True):
    """Random True = masked, with key 0 always visible (no fully masked row: torch NaNs)."""
    m = rng.random(shape) < 0.4
    if keep_first:
        m[..., 0] = False
    return m


MASKS = ["bool_attn", "float_attn", "attn_3d", "padding", "padding_and_attn", "causal_padding"]


@pytest.mark.parametrize("kind", MASKS)
def test_multihead_attention_masks(device, kind):
    rng = seeded(69)
    batch, tq, tk, d, heads = 2, 4, 6, 8, 2
    t_mha = torch.nn.MultiheadAttention(d, heads, batch_first=True)
    causal = kind == "causal_padding"
    n_mha = nn.MultiHeadAttention(d, heads, causal=causal, device=device)
    copy_mha(n_mha, t_mha, device)
    q, tq_ = pair(rng, (batch, tq, d), device)
    kv_len = tq if causal else tk
    k, tk_ = pair(rng, (batch, kv_len, d), device)
    v, tv = pair(rng, (batch, kv_len, d), device)
    n_kw, t_kw = {}, {}
    if kind in ("bool_attn", "padding_and_attn"):
        m = _bool_mask(rng, (tq, kv_len))
        n_kw["attn_mask"], t_kw["attn_mask"] = m, torch.tensor(m)
    if kind == "float_attn":
        m = rng.standard_normal((tq, kv_len)).astype(np.float32)
        n_kw["attn_mask"], t_kw["attn_mask"] = tensor(m, device, False), torch.tensor(m)
    if kind == "attn_3d":
        m = _bool_mask(rng, (batch * heads, tq, kv_len))
        n_kw["attn_mask"], t_kw["attn_mask"] = m, torch.tensor(m)
    if kind in ("padding", "padding_and_attn", "causal_padding"):
        m = np.zeros((batch, kv_len), bool)
        m[1, -2:] = True  # the second sequence's last two keys are padding
        n_kw["key_padding_mask"], t_kw["key_padding_mask"] = m, torch.tensor(m)
    if causal:
        t_kw["attn_mask"] = torch.triu(torch.ones(tq, kv_len), 1).bool()
    y = n_mha(q, k, v, **n_kw)
    ty, _ = t_mha(tq_, tk_, tv, need_weights=False, **t_kw)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    for name, a, b in (("q", q, tq_), ("k", k, tk_), ("v", v, tv)):
        close(a.grad, b.grad, what=f"{name} grad")
    check_mha_grads(n_mha, t_mha)


def test_multihead_attention_padding_hides_keys(device):
    """Changing a padded key's value changes nothing."""
    rng = seeded(70)
    mha = nn.MultiHeadAttention(8, 2, device=device)
    x_np = rng.standard_normal((1, 5, 8)).astype(np.float32)
    pad = np.array([[False, False, False, True, True]])
    y1 = mha(tensor(x_np[:, :3], device), tensor(x_np, device), key_padding_mask=pad)
    x_np[:, 3:] = 100.0
    y2 = mha(tensor(x_np[:, :3], device), tensor(x_np, device), key_padding_mask=pad)
    close(y1, y2, rtol=1e-6, atol=1e-6)


def test_multihead_attention_mask_errors(device):
    mha = nn.MultiHeadAttention(8, 2, device=device)
    x = needle.init.randn(2, 3, 8, device=device)
    with pytest.raises(needle.ShapeError, match="attn_mask"):
        mha(x, attn_mask=np.zeros((3, 4), bool))
    with pytest.raises(needle.ShapeError, match="key_padding_mask"):
        mha(x, key_padding_mask=np.zeros((3, 3), bool))
    with pytest.raises(TypeError, match="boolean"):
        mha(x, attn_mask=np.zeros((3, 3), np.int64))


# ---------------------------------------------------------------- batch-first RNN / LSTM

def test_lstm_batch_first(device):
    compare_lstm(seeded(71), device, batch_first=True)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_batch_first(device, nonlinearity):
    rng = seeded(72)
    batch, seq, n_in, hidden = 2, 4, 3, 5
    t_rnn = torch.nn.RNN(n_in, hidden, num_layers=2, nonlinearity=nonlinearity, batch_first=True)
    n_rnn = nn.RNN(n_in, hidden, num_layers=2, nonlinearity=nonlinearity, device=device,
                   batch_first=True)
    copy_recurrent(n_rnn.rnn_cells, t_rnn, device)
    x, tx = pair(rng, (batch, seq, n_in), device)
    out, h_n = n_rnn(x)
    tout, th_n = t_rnn(tx)
    close(out, tout, what="output")
    close(h_n, th_n, what="h_n")
    backprop(rng, out, tout, device)
    close(x.grad, tx.grad, what="x grad")
    check_recurrent_grads(n_rnn.rnn_cells, t_rnn)
    with pytest.raises(needle.ShapeError, match="batch, seq_len"):
        n_rnn(needle.init.randn(2, 4, 7, device=device))


# ---------------------------------------------------------------- Embedding: any shape, large V

@pytest.mark.parametrize("shape", [(6,), (2, 3, 4)], ids=["1d", "3d"])
def test_embedding_any_shape(device, shape):
    rng = seeded(73)
    t_emb = torch.nn.Embedding(9, 4)
    n_emb = nn.Embedding(9, 4, device=device)
    n_emb.weight = param(npy(t_emb.weight), device)
    ids = rng.integers(0, 9, size=shape)
    ids.reshape(-1)[:2] = 3  # repeated
    y, ty = n_emb(tensor(ids, device, requires_grad=False)), t_emb(torch.tensor(ids))
    assert y.shape == shape + (4,)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(n_emb.weight.grad, t_emb.weight.grad, what="table grad")


def test_embedding_large_vocabulary_is_cheap():
    """A (4, 4) lookup into a (20000, 16) table: no (n, V) one-hot (nor a V x V identity),
    so forward and backward take well under a second and a few MB at most (the table's
    gradient, 1.3 MB, is the largest array)."""
    import time
    import tracemalloc

    rng = seeded(74)
    emb = nn.Embedding(20000, 16, device=needle.cpu())
    ids = tensor(rng.integers(0, 20000, size=(4, 4)), needle.cpu(), requires_grad=False)
    emb(ids)  # warm up
    tracemalloc.start()
    start = time.perf_counter()
    try:
        y = emb(ids)
        y.sum().backward()
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert y.shape == (4, 4, 16)
    assert elapsed < 1.0, f"embedding forward+backward took {elapsed:.2f} s"
    assert peak < 8 * 2**20, f"peak traced memory {peak / 2**20:.1f} MB"
    grad = emb.weight.grad.numpy()
    np.testing.assert_array_equal(np.nonzero(grad.any(axis=1))[0],
                                  np.unique(ids.numpy().astype(int)))
