"""The StableHLO that ``needle.compile(...).lower(...).as_stablehlo()`` exports for whole
training steps: jaxlib's MLIR bindings parse and verify it, and jaxlib's reference
interpreter (an oracle nobody here wrote) computes what Needle computes, at small shapes."""
import numpy as np
import pytest

pytest.importorskip("jaxlib.mlir.dialects.stablehlo",
                    reason="jaxlib (with its MLIR bindings) is needed to check StableHLO export")

import needle  # noqa: E402
from needle import nn, optim  # noqa: E402
from needle.compiler import Executor, stablehlo  # noqa: E402

from helpers import training_step  # noqa: E402


def _mlp(rng):
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    return model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3), (4, 6)


def _mlp_adam(rng):
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    return model, optim.Adam(model.parameters(), lr=0.01), (4, 6)


def _cnn(rng):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    return model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9), (2, 2, 4, 4)


class _Tokens(nn.Module):
    """Embedding(7, 5) -> Linear(5, 3) per token: the gather and its scatter-add gradient."""

    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Embedding(7, 5), nn.Linear(5, 3)

    def forward(self, ids):
        return self.head(self.embed(ids))


def _tokens(rng):
    model = _Tokens()  # (ids repeat: the gradient sums rows)
    return model, optim.SGD(model.parameters(), lr=0.1), rng.integers(0, 7, 6)


class _LastStep(nn.Module):
    """A 2-layer LSTM (batch first) -> Linear on the last step: the layer composites."""

    def __init__(self):
        super().__init__()
        self.lstm, self.head = nn.LSTM(3, 4, num_layers=2, batch_first=True), nn.Linear(4, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def _lstm(rng):
    model = _LastStep()
    return model, optim.SGD(model.parameters(), lr=0.1), (2, 3, 3)


class _CausalAttention(nn.Module):
    """Causal multi-head self-attention -> Linear on the last position: the attention
    composites (forward and gradient, with the causal mask)."""

    def __init__(self):
        super().__init__()
        self.attn, self.head = nn.MultiHeadAttention(8, 2, causal=True), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.attn(x)[:, -1])


def _attention(rng):
    model = _CausalAttention()
    return model, optim.SGD(model.parameters(), lr=0.1), (2, 4, 8)


def _lowered(make, opt_level, composites):
    rng = np.random.default_rng(11)
    np.random.seed(11)
    model, opt, x_shape = make(rng)
    step = training_step(model, opt)
    x = needle.Tensor(x_shape.astype("float32") if isinstance(x_shape, np.ndarray) else
                      rng.standard_normal(x_shape).astype("float32"))
    y = needle.Tensor(rng.integers(0, 3, x.shape[0]).astype("float32"))
    run = needle.compile(step, opt_level=opt_level)
    for _ in range(3):
        run(x, y)
    low = run.lower(x, y)
    return low, low.arguments(x, y)


@pytest.mark.parametrize("composites", ["decompose", "keep"])
@pytest.mark.parametrize("opt_level", [0, 2])
@pytest.mark.parametrize("make", [_mlp, _mlp_adam, _cnn, _tokens, _lstm, _attention],
                         ids=["mlp_sgd", "mlp_adam", "cnn_bn", "embedding", "lstm", "attention"])
def test_exported_step_runs_on_jaxlibs_interpreter(make, opt_level, composites):
    low, arguments = _lowered(make, opt_level, composites)
    text = low.as_stablehlo(composites=composites)
    stablehlo.parse_and_verify(text)
    assert "tf.aliasing_output" in text  # parameters and momentum updated in place
    if composites == "keep":
        assert "stablehlo.composite" in text
    expected = [a.numpy() for a in Executor(low.graph, needle.cpu())(*arguments)]
    got = stablehlo.evaluate(text, *arguments)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=2e-6)
