"""Sequence layers: Embedding, RNN and LSTM (sequence-first layout, as classic Needle)."""
import math

from .. import init, ops
from ..errors import ShapeError
from .module import Module, Parameter


def _uniform(shape, hidden_size, device, dtype):
    bound = 1.0 / math.sqrt(hidden_size)
    return Parameter(init.rand(*shape, low=-bound, high=bound, device=device, dtype=dtype))


def _broadcast_row(v, shape):
    return ops.broadcast_to(ops.reshape(v, (1, shape[1])), shape)


class Embedding(Module):
    """Look up ``(seq_len, batch)`` integer ids in a ``(num_embeddings, embedding_dim)`` table."""

    def __init__(self, num_embeddings, embedding_dim, device=None, dtype="float32"):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(init.randn(num_embeddings, embedding_dim, device=device, dtype=dtype))

    def forward(self, x):
        one_hot = init.one_hot(self.num_embeddings, ops.reshape(x, (-1,)), device=x.device,
                               dtype=self.weight.dtype)
        return ops.reshape(one_hot @ self.weight, x.shape + (self.embedding_dim,))


class RNNCell(Module):
    """``h' = act(x @ W_ih + b_ih + h @ W_hh + b_hh)`` with act tanh or relu."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype="float32"):
        super().__init__()
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.hidden_size, self.nonlinearity = hidden_size, nonlinearity
        self.W_ih = _uniform((input_size, hidden_size), hidden_size, device, dtype)
        self.W_hh = _uniform((hidden_size, hidden_size), hidden_size, device, dtype)
        self.bias_ih = _uniform((hidden_size,), hidden_size, device, dtype) if bias else None
        self.bias_hh = _uniform((hidden_size,), hidden_size, device, dtype) if bias else None

    def forward(self, x, h=None):
        if h is None:
            h = init.zeros(x.shape[0], self.hidden_size, device=x.device, dtype=x.dtype)
        z = x @ self.W_ih + h @ self.W_hh
        if self.bias_ih is not None:
            z = z + _broadcast_row(self.bias_ih + self.bias_hh, z.shape)
        return ops.tanh(z) if self.nonlinearity == "tanh" else ops.relu(z)


class LSTMCell(Module):
    """One LSTM step; gate order (input, forget, cell, output) as in PyTorch."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.hidden_size = hidden_size
        self.W_ih = _uniform((input_size, 4 * hidden_size), hidden_size, device, dtype)
        self.W_hh = _uniform((hidden_size, 4 * hidden_size), hidden_size, device, dtype)
        self.bias_ih = _uniform((4 * hidden_size,), hidden_size, device, dtype) if bias else None
        self.bias_hh = _uniform((4 * hidden_size,), hidden_size, device, dtype) if bias else None

    def forward(self, x, state=None):
        bs, hs = x.shape[0], self.hidden_size
        if state is None:
            zeros = init.zeros(bs, hs, device=x.device, dtype=x.dtype)
            state = (zeros, zeros)
        h, c = state
        z = x @ self.W_ih + h @ self.W_hh
        if self.bias_ih is not None:
            z = z + _broadcast_row(self.bias_ih + self.bias_hh, z.shape)
        i, f, g, o = ops.split(ops.reshape(z, (bs, 4, hs)), 1).tuple()
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        return ops.sigmoid(o) * ops.tanh(c), c


class _Stacked(Module):
    """Layers of cells run over a ``(seq_len, batch, input_size)`` sequence."""

    def _check(self, x, *states):
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ShapeError(f"{type(self).__name__} expects (seq_len, batch, {self.input_size}) "
                             f"input, got {x.shape}")
        expected = (self.num_layers, x.shape[1], self.hidden_size)
        for s in states:
            if s is not None and s.shape != expected:
                raise ShapeError(f"{type(self).__name__} expects initial states of shape "
                                 f"(num_layers, batch, hidden) = {expected}, got {s.shape}")


class RNN(_Stacked):
    """Multi-layer Elman RNN. ``forward(x, h0)`` returns (output, h_n) with output
    ``(seq_len, batch, hidden)`` and h_n ``(num_layers, batch, hidden)``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, nonlinearity="tanh",
                 device=None, dtype="float32"):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.rnn_cells = [RNNCell(input_size if i == 0 else hidden_size, hidden_size, bias,
                                  nonlinearity, device, dtype) for i in range(num_layers)]

    def forward(self, x, h0=None):
        self._check(x, h0)
        inputs = list(ops.split(x, 0).tuple())
        h0 = [None] * self.num_layers if h0 is None else list(ops.split(h0, 0).tuple())
        finals = []
        for cell, h in zip(self.rnn_cells, h0):
            outputs = []
            for x_t in inputs:
                h = cell(x_t, h)
                outputs.append(h)
            finals.append(h)
            inputs = outputs
        return ops.stack(inputs, 0), ops.stack(finals, 0)


class LSTM(_Stacked):
    """Multi-layer LSTM. ``forward(x, (h0, c0))`` returns (output, (h_n, c_n))."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, device=None,
                 dtype="float32"):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.lstm_cells = [LSTMCell(input_size if i == 0 else hidden_size, hidden_size, bias,
                                    device, dtype) for i in range(num_layers)]

    def forward(self, x, state=None):
        self._check(x, *(state if state is not None else ()))
        inputs = list(ops.split(x, 0).tuple())
        if state is None:
            states = [None] * self.num_layers
        else:
            states = list(zip(ops.split(state[0], 0).tuple(), ops.split(state[1], 0).tuple()))
        hs, cs = [], []
        for cell, st in zip(self.lstm_cells, states):
            outputs = []
            for x_t in inputs:
                st = cell(x_t, st)
                outputs.append(st[0])
            hs.append(st[0])
            cs.append(st[1])
            inputs = outputs
        return ops.stack(inputs, 0), (ops.stack(hs, 0), ops.stack(cs, 0))
