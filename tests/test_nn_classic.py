"""Classic Needle's Transformer (CMU 10-414/714 homework 4): the attention core, AttentionLayer,
the course's TransformerLayer and Transformer, against a PyTorch composition with the same
weights (forward and every parameter's gradient), plus shapes, causality and dropout."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import needle
import needle.nn as nn
from needle.nn import transformer as classic
from torch_helpers import close, npy, param, seeded, tensor


def randomize_norms(module, rng, device):
    """Non-trivial LayerNorm affine parameters everywhere in ``module``."""
    for m in module.modules():
        if isinstance(m, nn.LayerNorm1d):
            m.weight = param(rng.uniform(0.5, 1.5, m.dim), device)
            m.bias = param(rng.uniform(-0.5, 0.5, m.dim), device)


class TorchParams:
    """Torch leaves holding the values of a Needle module's parameters, by name."""

    def __init__(self, module):
        self.needle = dict(module.named_parameters())
        self.torch = {n: torch.tensor(npy(p), requires_grad=True) for n, p in self.needle.items()}

    def __getitem__(self, name):
        return self.torch[name]

    def check_grads(self, what=""):
        # some gradients are zero in exact arithmetic (a key bias shifts all of a query's
        # scores equally), so float32 noise is compared at the scale of the largest one
        scale = max(float(t.grad.abs().max()) for t in self.torch.values())
        for name, p in self.needle.items():
            assert p.grad is not None, f"{what}: no gradient reached {name}"
            close(p.grad, self.torch[name].grad, atol=1e-5 * max(scale, 1.0),
                  what=f"{what}: {name} grad")


def torch_attention_layer(tp, prefix, q, k, v, num_head, dim_head, causal):
    """The course's AttentionLayer in torch, from the parameters named ``prefix.*``."""
    def ln(x, name):
        return F.layer_norm(x, (x.shape[-1],), tp[f"{prefix}{name}.weight"],
                            tp[f"{prefix}{name}.bias"], eps=1e-5)

    def heads(x):
        b, t, _ = x.shape
        return x.reshape(b, t, num_head, dim_head).transpose(1, 2)

    qh = heads(ln(q, "prenorm_q") @ tp[f"{prefix}q_projection.weight"])
    kh = heads(ln(k, "prenorm_k") @ tp[f"{prefix}k_projection.weight"])
    vh = heads(ln(v, "prenorm_v") @ tp[f"{prefix}v_projection.weight"])
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(dim_head)
    if causal:
        tq, tk = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(tq, tk).triu(tk - tq + 1).bool(), float("-inf"))
    out = torch.softmax(scores, -1) @ vh
    b, _, tq, _ = out.shape
    return out.transpose(1, 2).reshape(b, tq, num_head * dim_head) @ \
        tp[f"{prefix}out_projection.weight"]


def torch_transformer_layer(tp, prefix, x, num_head, dim_head, causal):
    x = x + torch_attention_layer(tp, f"{prefix}attn.", x, x, x, num_head, dim_head, causal)
    h = F.layer_norm(x, (x.shape[-1],), tp[f"{prefix}layernorm.weight"],
                     tp[f"{prefix}layernorm.bias"], eps=1e-5)
    h = torch.relu(h @ tp[f"{prefix}linear1.weight"] + tp[f"{prefix}linear1.bias"])
    return x + h @ tp[f"{prefix}linear2.weight"] + tp[f"{prefix}linear2.bias"]


def pair(rng, shape, device):
    x = rng.standard_normal(shape).astype(np.float32)
    return tensor(x, device), torch.tensor(x, requires_grad=True)


def backprop(rng, n_out, t_out, device):
    assert tuple(n_out.shape) == tuple(t_out.shape), f"{n_out.shape} vs {tuple(t_out.shape)}"
    r = rng.standard_normal(t_out.shape).astype(np.float32)
    (n_out * tensor(r, device, requires_grad=False)).sum().backward()
    (t_out * torch.tensor(r)).sum().backward()


# ---------------------------------------------------------------- the attention core

def test_core_probs_and_causal_mask(device):
    rng = seeded(80)
    core = classic.MultiHeadAttention(causal=True, device=device)
    q, k, v = (tensor(rng.standard_normal((2, 3, 4, 5)), device) for _ in range(3))
    result, probs = core(q, k, v)
    assert result.shape == (2, 3, 4, 5) and probs.shape == (2, 3, 4, 4)
    p = npy(probs)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    assert not p[..., np.triu_indices(4, 1)[0], np.triu_indices(4, 1)[1]].any()
    scores = npy(q) @ np.swapaxes(npy(k), -1, -2) / math.sqrt(5)
    scores = np.where(np.triu(np.ones((4, 4)), 1) > 0, -np.inf, scores)
    ref = np.exp(scores - scores.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    close(probs, ref, what="probs vs NumPy")
    close(result, ref @ npy(v), what="result vs NumPy")
    mask = npy(core.create_causal_mask(2, 3, device))
    assert mask.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(mask[0, 0] < 0, [[False, False, True], [False, False, False]])


# ---------------------------------------------------------------- AttentionLayer

CASES = [  # (q_len, kv_len, k_features, v_features, out_features, causal)
    (5, 5, None, None, None, True),
    (5, 5, None, None, 7, False),
    (3, 6, 4, 9, 5, False),
    (3, 6, 4, 9, None, True),  # causal with more keys than queries: aligned to the last key
]


@pytest.mark.parametrize("case", CASES, ids=["self-causal", "self-full", "cross", "cross-causal"])
def test_attention_layer_matches_torch(device, case):
    q_len, kv_len, k_feat, v_feat, out_feat, causal = case
    rng = seeded(81)
    batch, q_feat, heads, dim_head = 2, 6, 2, 3
    layer = nn.AttentionLayer(q_feat, heads, dim_head, k_features=k_feat, v_features=v_feat,
                              out_features=out_feat, causal=causal, device=device)
    randomize_norms(layer, rng, device)
    tp = TorchParams(layer)
    q, tq = pair(rng, (batch, q_len, q_feat), device)
    cross = k_feat is not None
    k, tk = pair(rng, (batch, kv_len, k_feat), device) if cross else (None, tq)
    v, tv = pair(rng, (batch, kv_len, v_feat), device) if cross else (None, tq)
    y = layer(q, k, v)
    ty = torch_attention_layer(tp, "", tq, tk, tv, heads, dim_head, causal)
    assert y.shape == (batch, q_len, out_feat or q_feat)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(q.grad, tq.grad, what="q grad")
    if cross:
        close(k.grad, tk.grad, what="k grad")
        close(v.grad, tv.grad, what="v grad")
    tp.check_grads("AttentionLayer")


def test_attention_layer_structure():
    layer = nn.AttentionLayer(8, 2, 4, out_features=3)
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["prenorm_q.weight", "prenorm_q.bias", "prenorm_k.weight", "prenorm_k.bias",
                     "prenorm_v.weight", "prenorm_v.bias", "q_projection.weight",
                     "k_projection.weight", "v_projection.weight", "out_projection.weight"]
    assert layer.q_projection.weight.shape == (8, 8) and layer.out_projection.weight.shape == (8, 3)
    assert layer.attn.causal  # causal by default, as in the course
    with pytest.raises(TypeError):
        nn.AttentionLayer(8, 2, 4, 8)  # k_features and later are keyword-only
    with pytest.raises(needle.ShapeError, match="q of shape"):
        layer(needle.init.randn(2, 3, 7))


# ---------------------------------------------------------------- TransformerLayer, Transformer

@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_classic_transformer_layer_matches_torch(device, causal):
    rng = seeded(82)
    batch, seq, d, heads, dim_head, hidden = 2, 5, 6, 2, 4, 10
    layer = classic.TransformerLayer(d, heads, dim_head, hidden, causal=causal, device=device)
    randomize_norms(layer, rng, device)
    tp = TorchParams(layer)
    x, tx = pair(rng, (batch, seq, d), device)
    y, ty = layer(x), torch_transformer_layer(tp, "", tx, heads, dim_head, causal)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    tp.check_grads("TransformerLayer")


@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
def test_transformer_matches_torch(device, batch_first):
    rng = seeded(83)
    batch, seq, d, hidden, layers, heads, dim_head = 3, 4, 8, 12, 2, 2, 4
    model = nn.Transformer(d, hidden, layers, num_head=heads, dim_head=dim_head, device=device,
                           batch_first=batch_first, sequence_len=10)
    randomize_norms(model, rng, device)
    tp = TorchParams(model)
    shape = (batch, seq, d) if batch_first else (seq, batch, d)
    x, tx = pair(rng, shape, device)
    y, h = model(x)
    assert y.shape == shape and h.shape == shape and not npy(h).any()
    t = tx if batch_first else tx.transpose(0, 1)
    t = t + tp["pos_embedding.weight"][:seq]
    for i in range(layers):
        t = torch_transformer_layer(tp, f"layers.modules.{i}.", t, heads, dim_head, True)
    ty = t if batch_first else t.transpose(0, 1)
    close(y, ty, what="forward")
    backprop(rng, y, ty, device)
    close(x.grad, tx.grad, what="input grad")
    tp.check_grads("Transformer")
    grad = npy(model.pos_embedding.weight.grad)
    assert grad[:seq].any(axis=1).all() and not grad[seq:].any()


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_transformer_causality(device, causal):
    """Causal: the output at step t does not depend on inputs after t."""
    rng = seeded(84)
    seq, batch, d = 6, 2, 8
    model = nn.Transformer(d, 16, 2, num_head=2, dim_head=4, causal=causal, device=device)
    x_np = rng.standard_normal((seq, batch, d)).astype(np.float32)
    y1, _ = model(tensor(x_np, device, False))
    t = 2
    x_np[t + 1:] = rng.standard_normal(x_np[t + 1:].shape)
    y2, _ = model(tensor(x_np, device, False))
    same = np.allclose(npy(y1)[:t + 1], npy(y2)[:t + 1], rtol=1e-5, atol=1e-6)
    assert same == causal
    assert not np.allclose(npy(y1)[t + 1:], npy(y2)[t + 1:])


def test_transformer_gradients_reach_every_parameter(device):
    rng = seeded(85)
    model = nn.Transformer(8, 16, 2, num_head=2, dim_head=4, device=device)
    assert len(model.parameters()) == 1 + 2 * (10 + 2 + 4)
    x = tensor(rng.standard_normal((5, 2, 8)), device)
    out, _ = model(x)
    (out * out).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert np.abs(npy(p.grad)).sum() > 0, name


def test_transformer_dropout_train_and_eval(device):
    rng = seeded(86)
    model = nn.Transformer(8, 16, 1, num_head=2, dim_head=4, dropout=0.5, device=device)
    x = tensor(rng.standard_normal((4, 2, 8)), device, False)
    a, b = npy(model(x)[0]), npy(model(x)[0])
    assert not np.allclose(a, b), "training mode drops at random"
    model.eval()
    close(model(x)[0], model(x)[0], rtol=0, atol=0)


def test_transformer_errors(device):
    model = nn.Transformer(8, 16, 1, num_head=2, dim_head=4, sequence_len=4, device=device)
    with pytest.raises(needle.ShapeError, match="sequence_len=4"):
        model(needle.init.randn(5, 2, 8, device=device))
    with pytest.raises(needle.ShapeError, match="seq_len, batch, 8"):
        model(needle.init.randn(5, 2, 7, device=device))
