"""Recurrent layers as ops: the LSTM cell's update and a whole LSTM layer over a sequence.

``lstm`` runs one layer over every time step. The input projection of all steps is one
product; the recurrence runs as the backend's ``lstm`` layer op where it has one (one
product and one fused cell kernel per step, no Tensor op per step) and otherwise as the
cell's composition of simple ops, step by step. Both give the same values; the layer op's
gradient is the backend's ``lstm_backward`` (a fused cell-gradient kernel and one product
per step), and the weight gradients are one product each over the whole sequence.
"""
from ..autograd import Tensor, TensorTupleOp
from ..backend_ndarray import Declined
from ..errors import ShapeError
from .linalg import matmul
from .linear import linear
from .movement import get_item, permute, reshape, split, stack
from .elementwise import sigmoid, tanh


def lstm_cell(z, c):
    """The LSTM update from the pre-activations ``z`` (batch, 4 * hidden), gate order
    (input, forget, cell, output) as PyTorch, and the cell state ``c`` (batch, hidden):
    returns ``(h, c')``."""
    batch, hidden = c.shape
    i, f, g, o = split(reshape(z, (batch, 4, hidden)), 1).tuple()
    c = sigmoid(f) * c + sigmoid(i) * tanh(g)
    return sigmoid(o) * tanh(c), c


def lstm(x, h0, c0, w_ih, w_hh, bias=None):
    """One LSTM layer over the sequence ``x`` (steps, batch, input).

    Args:
        x: the inputs, time-major.
        h0, c0: the initial states, (batch, hidden) each.
        w_ih, w_hh: (input, 4 * hidden) and (hidden, 4 * hidden), gates (i, f, g, o).
        bias: None or the (4 * hidden,) sum of the two biases.

    Returns ``(hs, (h_n, c_n))``: hs (steps, batch, hidden) holds h at every step.
    """
    if x.ndim != 3 or w_ih.ndim != 2 or w_hh.ndim != 2:
        raise ShapeError(f"lstm: expected x (steps, batch, input) and 2-D weights, got x "
                         f"{x.shape}, w_ih {w_ih.shape}, w_hh {w_hh.shape}")
    steps, batch, features = x.shape
    hidden = w_hh.shape[0]
    if w_ih.shape != (features, 4 * hidden) or w_hh.shape != (hidden, 4 * hidden):
        raise ShapeError(f"lstm: weights {w_ih.shape} and {w_hh.shape} do not fit input "
                         f"{x.shape}; expected ({features}, 4 * hidden) and (hidden, 4 * hidden)")
    for name, s in (("h0", h0), ("c0", c0)):
        if s.shape != (batch, hidden):
            raise ShapeError(f"lstm: {name} must be (batch, hidden) = {(batch, hidden)}, "
                             f"got {s.shape}")
    if bias is not None:  # every step's input projection, one product
        xp = linear(x, w_ih, bias)
    else:
        flat = reshape(x, (steps * batch, features))
        xp = reshape(matmul(flat, w_ih), (steps, batch, 4 * hidden))
    backend = x.device.backend
    if steps and batch and hidden and backend.supports("lstm", x.dtype) \
            and backend.supports("lstm_backward", x.dtype):
        try:
            hs, cs = LSTMLayer()(xp, w_hh, h0, c0).tuple()
        except Declined:  # (sequences too large for the backend's layer op)
            pass
        else:
            return hs, (hs[steps - 1], cs[steps - 1])
    h, c, outputs = h0, c0, []
    for xp_t in split(xp, 0).tuple():
        h, c = lstm_cell(xp_t + matmul(h, w_hh), c)
        outputs.append(h)
    return stack(outputs, 0), (h, c)


class LSTMLayer(TensorTupleOp):
    """``(hs, cs)``: h and c at every step of an LSTM layer whose input projections ``xp``
    (steps, batch, 4 * hidden) are given; the activated gates are kept for the gradient."""

    def compute(self, xp, w_hh, h0, c0):
        steps, batch, four_hidden = xp.shape
        hidden = four_hidden // 4
        hs, cs = xp._new((steps, batch, hidden)), xp._new((steps, batch, hidden))
        self.gates = xp._new(xp.shape)
        xp.device.backend.lstm(*_handles(xp, w_hh, h0, c0), hs._handle, cs._handle,
                               self.gates._handle, steps, batch, hidden)
        return hs, cs

    def gradient(self, out_grad, node):
        _, w_hh, h0, c0 = node.inputs
        hs, cs = (Tensor.make_const(a) for a in node.realize_cached_data())
        dhs, dcs = out_grad.tuple()
        dz, dh0, dc0 = LSTMLayerBackward(self.gates)(dhs, dcs, w_hh, c0, cs).tuple()
        steps, batch, hidden = hs.shape
        # dW_hh sums h[t-1]^T dz[t] over the steps: h0's term, then one product over the
        # rest of the sequence (slices of hs and dz, not a shifted copy of hs)
        dw_hh = matmul(permute(h0, (1, 0)), get_item(dz, 0))
        if steps > 1:
            rows = (steps - 1) * batch
            h_prev = reshape(get_item(hs, (slice(0, steps - 1),)), (rows, hidden))
            dz_next = reshape(get_item(dz, (slice(1, steps),)), (rows, 4 * hidden))
            dw_hh = dw_hh + matmul(permute(h_prev, (1, 0)), dz_next)
        return dz, dw_hh, dh0, dc0


class LSTMLayerBackward(TensorTupleOp):
    """``(dz, dh0, dc0)``: the gradients of :class:`LSTMLayer` with respect to its
    pre-activations at every step and its initial states, from those of hs and cs."""

    def __init__(self, gates):
        self.gates = gates

    def compute(self, dhs, dcs, w_hh, c0, cs):
        steps, batch, hidden = cs.shape
        dz = cs._new(self.gates.shape)
        dh0, dc0 = cs._new((batch, hidden)), cs._new((batch, hidden))
        cs.device.backend.lstm_backward(*_handles(dhs, dcs, w_hh, c0, cs, self.gates),
                                        dz._handle, dh0._handle, dc0._handle, steps, batch,
                                        hidden)
        return dz, dh0, dc0

    def gradient(self, out_grad, node):
        raise NotImplementedError("second derivatives through the fused LSTM layer are not "
                                  "available (its gradient is computed by a backend kernel)")


def _handles(*arrays):
    return tuple(a.compact()._handle for a in arrays)
