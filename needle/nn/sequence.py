"""Sequence layers: Embedding, RNN and LSTM (sequence-first layout, as classic Needle)."""
import math

from .. import init, ops
from ..errors import ShapeError
from .module import Module, Parameter, check_dtype


def _uniform(shape, hidden_size, device, dtype):
    bound = 1.0 / math.sqrt(hidden_size)
    return Parameter(init.rand(*shape, low=-bound, high=bound, device=device, dtype=dtype))


def _broadcast_row(v, shape):
    return ops.broadcast_to(ops.reshape(v, (1, shape[1])), shape)


class Embedding(Module):
    """Look up integer ids in a learned ``(num_embeddings, embedding_dim)`` table
    (``torch.nn.Embedding``; the table starts N(0, 1) as there).

    Args:
        num_embeddings: the number of ids (rows), V.
        embedding_dim: the size of each row, D.
        device, dtype: where and in which dtype the table lives.

    ``forward(ids)`` takes a Tensor of integer values (any float or int dtype) of any shape
    (classic Needle's language models pass ``(seq_len, batch)``) and returns
    ``ids.shape + (D,)``. The lookup is a gather (``ops.embedding``) and its gradient a
    scatter-add into the table: repeated ids accumulate, and no (n, V) one-hot matrix is
    built, so a large vocabulary costs nothing extra.

    Example:
        >>> emb = needle.nn.Embedding(1000, 16)
        >>> emb(needle.Tensor([[1, 2], [3, 1]])).shape
        (2, 2, 16)
    """

    def __init__(self, num_embeddings, embedding_dim, device=None, dtype="float32"):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(init.randn(num_embeddings, embedding_dim, device=device, dtype=dtype))

    def forward(self, x):
        return ops.embedding(self.weight, x)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class RNNCell(Module):
    """One Elman RNN step, ``h' = act(x @ W_ih + b_ih + h @ W_hh + b_hh)`` with act tanh or
    relu (``torch.nn.RNNCell``; ``W_ih`` is (input_size, hidden_size), the transpose of
    PyTorch's ``weight_ih``).

    Args:
        input_size, hidden_size: feature sizes of x and h.
        bias: whether to add ``bias_ih`` and ``bias_hh``.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        device, dtype: where and in which dtype the parameters live.

    ``forward(x, h=None)`` takes x (batch, input_size) and h (batch, hidden_size), zeros
    by default, and returns h'.

    Example:
        >>> cell = needle.nn.RNNCell(4, 8)
        >>> cell(needle.init.randn(2, 4)).shape
        (2, 8)
    """

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
        check_dtype(self, x, self.W_ih)
        if h is None:
            h = init.zeros(x.shape[0], self.hidden_size, device=x.device, dtype=x.dtype)
        z = x @ self.W_ih + h @ self.W_hh
        if self.bias_ih is not None:
            z = z + _broadcast_row(self.bias_ih + self.bias_hh, z.shape)
        return ops.tanh(z) if self.nonlinearity == "tanh" else ops.relu(z)

    def extra_repr(self):
        s = f"{self.W_ih.shape[0]}, {self.hidden_size}"
        s += "" if self.bias_ih is not None else ", bias=False"
        return s + ("" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}")


class LSTMCell(Module):
    """One LSTM step (``torch.nn.LSTMCell``); gate order (input, forget, cell, output) as in
    PyTorch, with ``W_ih`` (input_size, 4 * hidden_size) the transpose of PyTorch's.

    Args:
        input_size, hidden_size: feature sizes of x and h.
        bias: whether to add ``bias_ih`` and ``bias_hh``.
        device, dtype: where and in which dtype the parameters live.

    ``forward(x, state=None)`` takes x (batch, input_size) and ``state = (h, c)``, each
    (batch, hidden_size), zeros by default, and returns ``(h', c')``.

    Example:
        >>> h, c = needle.nn.LSTMCell(4, 8)(needle.init.randn(2, 4))
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.hidden_size = hidden_size
        self.W_ih = _uniform((input_size, 4 * hidden_size), hidden_size, device, dtype)
        self.W_hh = _uniform((hidden_size, 4 * hidden_size), hidden_size, device, dtype)
        self.bias_ih = _uniform((4 * hidden_size,), hidden_size, device, dtype) if bias else None
        self.bias_hh = _uniform((4 * hidden_size,), hidden_size, device, dtype) if bias else None

    def forward(self, x, state=None):
        check_dtype(self, x, self.W_ih)
        bs, hs = x.shape[0], self.hidden_size
        if state is None:
            zeros = init.zeros(bs, hs, device=x.device, dtype=x.dtype)
            state = (zeros, zeros)
        h, c = state
        z = x @ self.W_ih + h @ self.W_hh
        if self.bias_ih is not None:
            z = z + _broadcast_row(self.bias_ih + self.bias_hh, z.shape)
        return ops.lstm_cell(z, c)

    def extra_repr(self):
        s = f"{self.W_ih.shape[0]}, {self.hidden_size}"
        return s if self.bias_ih is not None else s + ", bias=False"


class _Stacked(Module):
    """Layers of cells run over a ``(seq_len, batch, input_size)`` sequence (or
    ``(batch, seq_len, input_size)`` with ``batch_first``)."""

    def _check(self, x, *states):
        if x.ndim != 3 or x.shape[2] != self.input_size:
            layout = "batch, seq_len" if self.batch_first else "seq_len, batch"
            raise ShapeError(f"{type(self).__name__} expects ({layout}, {self.input_size}) "
                             f"input, got {x.shape}")
        batch = x.shape[0] if self.batch_first else x.shape[1]
        expected = (self.num_layers, batch, self.hidden_size)
        for s in states:
            if s is not None and s.shape != expected:
                raise ShapeError(f"{type(self).__name__} expects initial states of shape "
                                 f"(num_layers, batch, hidden) = {expected}, got {s.shape}")


    def _time_major(self, x):
        return ops.permute(x, (1, 0, 2)) if self.batch_first else x

    def _layout(self, output):
        return ops.permute(output, (1, 0, 2)) if self.batch_first else output

    def _extra(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        return s


class RNN(_Stacked):
    """Multi-layer Elman RNN (``torch.nn.RNN``; sequence-first by default, as classic
    Needle and PyTorch).

    Args:
        input_size, hidden_size: feature sizes.
        num_layers: stacked layers (layer i > 0 reads layer i - 1's outputs).
        bias: whether the cells add biases.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        device, dtype: where and in which dtype the parameters live.
        batch_first: if True, input and output are (batch, seq_len, feature).

    ``forward(x, h0=None)`` returns ``(output, h_n)``: output (seq_len, batch, hidden)
    (or batch-first) holds the last layer's h at every step, h_n (num_layers, batch,
    hidden) each layer's last h (never batch-first, as in PyTorch); h0 has h_n's shape,
    zeros by default. Cells are ``rnn_cells[i]`` (``RNNCell``).

    Example:
        >>> rnn = needle.nn.RNN(4, 8, num_layers=2, batch_first=True)
        >>> out, h_n = rnn(needle.init.randn(3, 5, 4))     # 3 sequences of 5 steps
        >>> out.shape, h_n.shape
        ((3, 5, 8), (2, 3, 8))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, nonlinearity="tanh",
                 device=None, dtype="float32", batch_first=False):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first = batch_first
        self.rnn_cells = [RNNCell(input_size if i == 0 else hidden_size, hidden_size, bias,
                                  nonlinearity, device, dtype) for i in range(num_layers)]

    def extra_repr(self):
        s = self._extra()
        cell = self.rnn_cells[0]
        s += "" if cell.bias_ih is not None else ", bias=False"
        return s + ("" if cell.nonlinearity == "tanh" else f", nonlinearity={cell.nonlinearity!r}")

    def _repr_children(self):
        return []  # the cells' settings are the RNN's own

    def forward(self, x, h0=None):
        self._check(x, h0)
        inputs = list(ops.split(self._time_major(x), 0).tuple())
        h0 = [None] * self.num_layers if h0 is None else list(ops.split(h0, 0).tuple())
        finals = []
        for cell, h in zip(self.rnn_cells, h0):
            outputs = []
            for x_t in inputs:
                h = cell(x_t, h)
                outputs.append(h)
            finals.append(h)
            inputs = outputs
        return self._layout(ops.stack(inputs, 0)), ops.stack(finals, 0)


class LSTM(_Stacked):
    """Multi-layer LSTM (``torch.nn.LSTM``; sequence-first by default).

    Args:
        input_size, hidden_size: feature sizes.
        num_layers: stacked layers.
        bias: whether the cells add biases.
        device, dtype: where and in which dtype the parameters live.
        batch_first: if True, input and output are (batch, seq_len, feature).

    ``forward(x, (h0, c0)=None)`` returns ``(output, (h_n, c_n))``, shapes as for ``RNN``
    (h0, c0, h_n, c_n are (num_layers, batch, hidden) whatever ``batch_first``). Cells are
    ``lstm_cells[i]`` (``LSTMCell``), holding each layer's parameters; a layer runs as
    ``ops.lstm`` over the whole sequence (the device's fused LSTM layer where it has one).

    Example:
        >>> lstm = needle.nn.LSTM(4, 8)
        >>> out, (h_n, c_n) = lstm(needle.init.randn(5, 3, 4))   # seq 5, batch 3
        >>> out.shape
        (5, 3, 8)
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, device=None,
                 dtype="float32", batch_first=False):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first = batch_first
        self.lstm_cells = [LSTMCell(input_size if i == 0 else hidden_size, hidden_size, bias,
                                    device, dtype) for i in range(num_layers)]

    def extra_repr(self):
        return self._extra() + ("" if self.lstm_cells[0].bias_ih is not None else ", bias=False")

    def _repr_children(self):
        return []

    def forward(self, x, state=None):
        if state is not None and (not isinstance(state, (tuple, list)) or len(state) != 2):
            raise TypeError(f"LSTM expects its state as a pair (h0, c0), got "
                            f"{type(state).__name__} of {len(state) if isinstance(state, (tuple, list)) else 1}")
        self._check(x, *(state if state is not None else ()))
        check_dtype(self, x, self.lstm_cells[0].W_ih)
        inputs = self._time_major(x)
        if state is None:
            zeros = init.zeros(inputs.shape[1], self.hidden_size, device=x.device, dtype=x.dtype)
            states = [(zeros, zeros)] * self.num_layers
        else:
            states = list(zip(ops.split(state[0], 0).tuple(), ops.split(state[1], 0).tuple()))
        hs, cs = [], []
        # a layer at a time over the whole sequence: ops.lstm projects every step's input in
        # one product and runs the recurrence as the backend's fused LSTM where it has one
        for cell, (h0, c0) in zip(self.lstm_cells, states):
            bias = cell.bias_ih + cell.bias_hh if cell.bias_ih is not None else None
            inputs, (h, c) = ops.lstm(inputs, h0, c0, cell.W_ih, cell.W_hh, bias)
            hs.append(h)
            cs.append(c)
        return self._layout(inputs), (ops.stack(hs, 0), ops.stack(cs, 0))
