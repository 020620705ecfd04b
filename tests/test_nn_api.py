"""The Module API (tree walking, repr, apply, zero_grad, load_state_dict(strict=False)),
the containers (Sequential, ModuleList), mixed-dtype errors and Sequential's fusion of
exact classes only."""
import numpy as np
import pytest

import needle
import needle.nn as nn
from needle import DTypeError
import torch
from torch_helpers import close, seeded, tensor


def _float64_or_skip(device):
    try:
        return needle.Tensor(np.ones(1), device=device, dtype="float64")
    except DTypeError as e:
        pytest.skip(f"{device} has no float64: {e}")


# ---------------------------------------------------------------- mixed dtypes

LAYERS = [
    ("Linear", lambda dt, d: nn.Linear(4, 2, dtype=dt, device=d), (3, 4)),
    ("Conv", lambda dt, d: nn.Conv(2, 3, 3, dtype=dt, device=d), (1, 2, 5, 5)),
    ("Conv2d", lambda dt, d: nn.Conv2d(2, 3, 3, dtype=dt, device=d), (1, 2, 5, 5)),
    ("BatchNorm1d", lambda dt, d: nn.BatchNorm1d(4, dtype=dt, device=d), (3, 4)),
    ("BatchNorm2d", lambda dt, d: nn.BatchNorm2d(2, dtype=dt, device=d), (2, 2, 3, 3)),
    ("LayerNorm1d", lambda dt, d: nn.LayerNorm1d(4, dtype=dt, device=d), (3, 4)),
    ("RNNCell", lambda dt, d: nn.RNNCell(4, 3, dtype=dt, device=d), (2, 4)),
    ("LSTMCell", lambda dt, d: nn.LSTMCell(4, 3, dtype=dt, device=d), (2, 4)),
]


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[layer[0] for layer in LAYERS])
@pytest.mark.parametrize("layer_dtype,input_dtype", [("float64", "float32"),
                                                     ("float32", "float64")])
def test_mixed_dtype_input_raises(device, name, make, shape, layer_dtype, input_dtype):
    _float64_or_skip(device)
    layer = make(layer_dtype, device)
    x = needle.Tensor(np.random.default_rng(0).standard_normal(shape), device=device,
                      dtype=input_dtype)
    with pytest.raises(DTypeError, match=name) as info:
        layer(x)
    assert "float32" in str(info.value) and "float64" in str(info.value)
    # the same dtype works
    layer(needle.Tensor(x.numpy(), device=device, dtype=layer_dtype))


def test_mixed_dtype_in_sequential_and_eval(device):
    _float64_or_skip(device)
    net = nn.Sequential(nn.Linear(4, 4, dtype="float64", device=device), nn.ReLU())
    x = needle.Tensor(np.ones((2, 4)), device=device, dtype="float32")
    with pytest.raises(DTypeError, match="Linear"):
        net(x)
    bn = nn.BatchNorm1d(4, dtype="float64", device=device).eval()
    with pytest.raises(DTypeError, match="BatchNorm1d"):
        bn(x)


# ---------------------------------------------------------------- fusion of exact classes

class DoubledLinear(nn.Linear):
    """A subclass whose forward does not take ``act``."""

    def forward(self, x):
        return super().forward(x) * 2.0


class ShiftedBatchNorm(nn.BatchNorm1d):
    def forward(self, x):
        return super().forward(x) - 0.5


class ShiftedBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x):
        return super().forward(x) - 0.5


class NegatedConv(nn.Conv):
    def forward(self, x):
        return -super().forward(x)


def test_sequential_calls_linear_subclass_as_written(device):
    rng = seeded(40)
    lin = DoubledLinear(5, 6, device=device)
    net = nn.Sequential(lin, nn.ReLU())
    x = tensor(rng.standard_normal((4, 5)), device)
    w, b = lin.weight.numpy(), lin.bias.numpy()
    expected = np.maximum(2.0 * (x.numpy() @ w + b), 0)
    close(net(x), expected)
    net_gelu = nn.Sequential(DoubledLinear(5, 6, device=device), nn.GELU())
    assert net_gelu(x).shape == (4, 6)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_sequential_calls_batchnorm_subclass_as_written(device, training):
    rng = seeded(41)
    bn = ShiftedBatchNorm(6, device=device)
    bn.train(training)
    x = tensor(rng.standard_normal((8, 6)), device)
    expected = np.maximum(bn(x).numpy(), 0)  # the subclass's own forward, then ReLU
    close(nn.Sequential(bn, nn.ReLU()).train(training)(x), expected, rtol=1e-5, atol=1e-6)


def test_sequential_calls_conv_and_batchnorm2d_subclasses_as_written(device):
    rng = seeded(42)
    x = tensor(rng.standard_normal((2, 3, 6, 6)), device)
    conv, bn = NegatedConv(3, 4, 3, device=device), nn.BatchNorm2d(4, device=device).eval()
    expected = np.maximum(bn(conv(x)).numpy(), 0)
    close(nn.Sequential(conv, bn, nn.ReLU()).eval()(x), expected, rtol=1e-5, atol=1e-5)
    conv, bn2 = nn.Conv(3, 4, 3, device=device), ShiftedBatchNorm2d(4, device=device).eval()
    expected = np.maximum(bn2(conv(x)).numpy(), 0)
    close(nn.Sequential(conv, bn2, nn.ReLU()).eval()(x), expected, rtol=1e-5, atol=1e-5)


def test_sequential_still_fuses_conv2d_batchnorm_relu(device):
    """The exact classes keep their fused path (eval Conv2d + BatchNorm2d + ReLU)."""
    rng = seeded(43)
    x = tensor(rng.standard_normal((2, 3, 6, 6)), device)
    conv, bn = nn.Conv2d(3, 4, 3, padding=1, device=device), nn.BatchNorm2d(4, device=device)
    net = nn.Sequential(conv, bn, nn.ReLU()).eval()
    expected = np.maximum(bn(conv(x)).numpy(), 0)
    close(net(x), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- repr

def test_repr_sequential_like_pytorch():
    net = nn.Sequential(nn.Linear(4, 2), nn.ReLU())
    assert repr(net) == ("Sequential(\n"
                         "  (0): Linear(in_features=4, out_features=2, bias=True)\n"
                         "  (1): ReLU()\n"
                         ")")


def test_repr_nested_and_layers():
    net = nn.Sequential(
        nn.Conv(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Residual(nn.Sequential(nn.Linear(8, 8, bias=False), nn.Dropout(0.1))),
        nn.Flatten(), nn.LayerNorm1d(8), nn.Softmax(dim=1))
    assert repr(net) == (
        "Sequential(\n"
        "  (0): Conv(3, 8, kernel_size=3, stride=2, padding=1)\n"
        "  (1): BatchNorm2d(8, eps=1e-05, momentum=0.1)\n"
        "  (2): ReLU()\n"
        "  (3): MaxPool2d(kernel_size=2, stride=2, padding=0)\n"
        "  (4): Residual(\n"
        "    (fn): Sequential(\n"
        "      (0): Linear(in_features=8, out_features=8, bias=False)\n"
        "      (1): Dropout(p=0.1)\n"
        "    )\n"
        "  )\n"
        "  (5): Flatten()\n"
        "  (6): LayerNorm1d(8, eps=1e-05)\n"
        "  (7): Softmax(dim=1)\n"
        ")")
    assert repr(nn.Conv2d(3, 4, 5, bias=False)) == \
        "Conv2d(3, 4, kernel_size=5, stride=1, padding=0, bias=False)"
    assert repr(nn.Embedding(10, 3)) == "Embedding(10, 3)"
    assert repr(nn.LSTM(3, 4, num_layers=2, batch_first=True)) == \
        "LSTM(3, 4, num_layers=2, batch_first=True)"
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(nn.MSELoss(reduction="sum")) == "MSELoss(reduction='sum')"


def test_repr_custom_module_and_extra_repr():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 3)
            self.layers = nn.ModuleList([nn.ReLU(), nn.Tanh()])
            self.scale = 2.0

        def extra_repr(self):
            return f"scale={self.scale}"

        def forward(self, x):
            return self.fc(x)

    assert repr(Block()) == ("Block(\n"
                             "  scale=2.0\n"
                             "  (fc): Linear(in_features=2, out_features=3, bias=True)\n"
                             "  (layers): ModuleList(\n"
                             "    (0): ReLU()\n"
                             "    (1): Tanh()\n"
                             "  )\n"
                             ")")


# ---------------------------------------------------------------- walking the tree

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.BatchNorm1d(8))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.body(x))


def test_children_and_named_children():
    seeded(44)
    net = Net()
    assert [n for n, _ in net.named_children()] == ["body", "head"]
    assert [type(m) for m in net.children()] == [nn.Sequential, nn.Linear]
    assert net.children()[0] is net.body
    seq = net.body
    assert [n for n, _ in seq.named_children()] == ["modules.0", "modules.1", "modules.2"]
    assert [type(m) for m in seq.children()] == [nn.Linear, nn.ReLU, nn.BatchNorm1d]


def test_modules_and_named_modules():
    seeded(45)
    net = Net()
    names = [n for n, _ in net.named_modules()]
    assert names == ["", "body", "body.modules.0", "body.modules.1", "body.modules.2", "head"]
    mods = net.modules()
    assert mods[0] is net and mods[1] is net.body and mods[-1] is net.head
    assert len(mods) == 6
    # a shared module is listed once
    lin = nn.Linear(3, 3)
    shared = nn.Sequential(lin, nn.ReLU(), lin)
    assert [type(m) for m in shared.modules()] == [nn.Sequential, nn.Linear, nn.ReLU]
    assert len(shared.children()) == 2
    assert [n for n, _ in nn.Linear(2, 2).named_modules(prefix="fc")] == ["fc"]


def test_named_parameters_keeps_names():
    seeded(46)
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "body.modules.0.weight", "body.modules.0.bias", "body.modules.2.weight",
        "body.modules.2.bias", "head.weight", "head.bias"]
    named, params = net.named_parameters(), net.parameters()
    assert len(named) == len(params) and all(p is q for (_, p), q in zip(named, params))
    lin = nn.Linear(3, 3)
    assert [n for n, _ in nn.Sequential(lin, lin).named_parameters()] == \
        ["modules.0.weight", "modules.0.bias"]


def test_apply_is_post_order_and_returns_self():
    seeded(47)
    net = Net()
    order = []
    assert net.apply(lambda m: order.append(m)) is net
    assert [type(m).__name__ for m in order] == ["Linear", "ReLU", "BatchNorm1d", "Sequential",
                                                 "Linear", "Net"]
    assert order[-1] is net and order[3] is net.body

    def reset(m):
        if type(m) is nn.Linear:
            m.weight.data = needle.init.zeros(*m.weight.shape)
    net.apply(reset)
    assert not net.head.weight.numpy().any() and not net.body[0].weight.numpy().any()


def test_zero_grad_sets_grads_to_none(device):
    seeded(48)
    net = nn.Sequential(nn.Linear(4, 3, device=device), nn.ReLU(), nn.Linear(3, 2, device=device))
    x = tensor(np.random.default_rng(0).standard_normal((5, 4)), device)
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_sequential_copies_and_pickles():
    import copy
    import pickle

    seeded(55)
    seq = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    for clone in (copy.deepcopy(seq), pickle.loads(pickle.dumps(seq))):
        assert clone[0] is not seq[0] and len(clone) == 2
        assert clone.modules()[0] is clone and clone.modules[0] is clone[0]
        np.testing.assert_array_equal(clone[0].weight.numpy(), seq[0].weight.numpy())


def test_train_eval_mode_argument():
    net = Net()
    assert net.train(False) is net and not net.training and not net.body[2].training
    net.train()
    assert net.body[2].training


# ---------------------------------------------------------------- load_state_dict

def test_load_state_dict_strict_returns_no_keys(device):
    seeded(49)
    net, other = Net().to(device), Net().to(device)
    result = other.load_state_dict(net.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    missing, unexpected = result  # a namedtuple
    assert missing == unexpected == []
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, net.state_dict()[k])


def test_load_state_dict_non_strict(device):
    seeded(50)
    net, other = Net().to(device), Net().to(device)
    state = net.state_dict()
    del state["head.bias"]
    state["extra.weight"] = np.ones(3, np.float32)
    before = other.head.bias.numpy()
    with pytest.raises(KeyError, match="head.bias"):
        other.load_state_dict(state)
    missing, unexpected = other.load_state_dict(state, strict=False)
    assert missing == ["head.bias"] and unexpected == ["extra.weight"]
    np.testing.assert_array_equal(other.head.weight.numpy(), net.head.weight.numpy())
    np.testing.assert_array_equal(other.head.bias.numpy(), before)  # left alone


def test_load_state_dict_shape_mismatch_raises_even_non_strict():
    seeded(51)
    net = Net()
    state = net.state_dict()
    state["head.weight"] = np.ones((2, 8), np.float32)
    before = net.body[0].weight.numpy()
    with pytest.raises(ValueError, match="head.weight"):
        net.load_state_dict(state, strict=False)
    # nothing was written before the shape error
    np.testing.assert_array_equal(net.body[0].weight.numpy(), before)


def test_load_state_dict_and_to_bump_versions(device):
    seeded(52)
    net = Net()
    w = net.head.weight
    v0 = w._version
    net.load_state_dict(Net().state_dict())
    assert w._version == v0 + 1
    net.to(device)
    assert w._version == v0 + 2
    assert w.device == device


# ---------------------------------------------------------------- containers

def test_sequential_container_api(device):
    seeded(53)
    a, b, c = nn.Linear(4, 5, device=device), nn.ReLU(), nn.Linear(5, 3, device=device)
    seq = nn.Sequential(a, b)
    assert len(seq) == 2 and seq[0] is a and seq[-1] is b
    assert [type(m) for m in seq] == [nn.Linear, nn.ReLU] and next(iter(seq)) is a
    assert seq.append(c) is seq and len(seq) == 3 and seq[2] is c
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is a
    assert len(seq.parameters()) == 4
    x = tensor(np.random.default_rng(1).standard_normal((2, 4)), device)
    close(seq(x), c(b(a(x))), rtol=1e-6, atol=1e-6)
    # classic Needle's list attribute is the same list, and still callable as modules()
    assert seq.modules[0] is a and len(seq.modules) == 3
    assert seq.modules()[0] is seq and len(seq.modules()) == 4
    seq.modules = [a]  # assignment keeps both behaviours
    assert len(seq) == 1 and seq.modules()[1] is a
    assert "modules.0.weight" in seq.state_dict()


def test_module_list(device):
    seeded(54)
    layers = nn.ModuleList([nn.Linear(4, 4, device=device) for _ in range(2)])
    assert len(layers) == 2
    layers.append(nn.ReLU())
    layers.extend([nn.Linear(4, 2, device=device)])
    layers.insert(0, nn.Tanh())
    assert [type(m).__name__ for m in layers] == ["Tanh", "Linear", "Linear", "ReLU", "Linear"]
    assert isinstance(layers[1:3], nn.ModuleList) and len(layers[1:3]) == 2
    assert isinstance(layers[-1], nn.Linear)
    assert len(layers.parameters()) == 6

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = layers

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    net = Stack()
    assert len(net.parameters()) == 6
    assert "layers.1.weight" in net.state_dict() and "layers.4.bias" in net.state_dict()
    assert [n for n, _ in net.named_modules()][:3] == ["", "layers", "layers.0"]
    x = tensor(np.random.default_rng(2).standard_normal((3, 4)), device)
    assert net(x).shape == (3, 2)
    net.eval()
    assert not layers[1].training
    with pytest.raises(NotImplementedError):
        layers(x)
    with pytest.raises(TypeError):
        layers.append(3)
    del layers[0]
    assert len(layers) == 4


# ---------------------------------------------------------------- docs

def test_docstring_examples_run():
    """Every ``>>>`` example in needle.nn's docstrings runs and prints what it shows."""
    import doctest

    from needle.nn import (attention, basic, conv, loss, module, norm, pooling, sequence,
                           transformer)

    attempted = 0
    for mod in (module, basic, conv, norm, pooling, loss, sequence, attention, transformer):
        result = doctest.testmod(mod, extraglobs={"needle": needle, "np": np}, report=False,
                                 optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, f"{mod.__name__}: {result.failed} docstring examples fail"
        attempted += result.attempted
    assert attempted > 50


def test_attention_takes_a_comparison_as_a_boolean_mask(device):
    rng = np.random.default_rng(11)
    mha = nn.MultiHeadAttention(8, 2, device=device)
    x = needle.Tensor(rng.standard_normal((2, 5, 8)), device=device)
    ids = needle.Tensor([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0]], device=device, requires_grad=False)
    from_tensor = mha(x, key_padding_mask=ids == 0)
    from_numpy = mha(x, key_padding_mask=ids.numpy() == 0)
    np.testing.assert_allclose(from_tensor.numpy(), from_numpy.numpy(), rtol=1e-5, atol=1e-6)


def test_lstm_state_must_be_a_pair():
    lstm = nn.LSTM(3, 5)
    x = needle.init.randn(2, 4, 3)
    with pytest.raises(TypeError, match=r"pair \(h0, c0\)"):
        lstm(x, (needle.init.randn(1, 4, 5),))


def test_cross_entropy_loss_none_keeps_small_losses(device):
    logits = [[2000.0, 1990.0], [-5000.0, -4990.0]]
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor([0, 1]),
                                                 reduction="none").numpy()
    got = nn.CrossEntropyLoss(reduction="none")(needle.Tensor(logits, device=device), [0, 1])
    assert (got.numpy() > 0).all()
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-3,
                               atol=2.0 ** -21 if device.name == "webgpu" else 0)


def test_one_hot_memory_is_the_results():
    import tracemalloc
    tracemalloc.start()
    tracemalloc.reset_peak()
    y = needle.ops.one_hot(np.array([1, 2]), 20000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert y.shape == (2, 20000) and peak < 2e6  # (not a 20000 x 20000 identity: 3 GB)


def test_linear_without_bias_and_a_frozen_weight_runs_on_inputs_of_any_rank():
    """(A frozen, bias-free layer: nothing to differentiate; 1-, 2- and 3-D inputs.)"""
    lin = nn.Linear(3, 4, bias=False)
    lin.weight.requires_grad = False
    w = lin.weight.numpy()
    for shape in ((3,), (2, 3), (5, 2, 3)):
        x = np.random.default_rng(1).standard_normal(shape)
        out = lin(needle.Tensor(x, requires_grad=False))
        assert out.shape == shape[:-1] + (4,)
        np.testing.assert_allclose(out.numpy(), x @ w, rtol=1e-5, atol=1e-6)
