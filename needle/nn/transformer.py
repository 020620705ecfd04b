"""Classic Needle's Transformer (CMU 10-414/714, homework 4's ``nn_transformer``), with the
course's class names and constructor signatures:

* ``MultiHeadAttention(*, dropout, causal)``: the attention core on per-head tensors, no
  parameters; ``forward(q, k, v)`` returns ``(result, probs)``.
* ``AttentionLayer(q_features, num_head, dim_head, *, k_features, v_features,
  out_features, dropout, causal)``: prenorm (LayerNorm) of q, k and v, bias-free
  projections, the core, a bias-free output projection.
* ``TransformerLayer(q_features, num_head, dim_head, hidden_size, *, dropout, causal)``:
  ``x + dropout(attn(x))`` then ``x + dropout(linear2(dropout(relu(linear1(norm(x))))))``.
* ``Transformer(embedding_size, hidden_size, num_layers, *, num_head, dim_head, dropout,
  causal, batch_first, sequence_len)``: a learned positional embedding and a stack of
  TransformerLayers; ``forward(x, h=None)`` returns ``(x, zeros_like(x))`` so that it drops
  into the course's language model in place of an RNN or LSTM.

``needle.nn`` exports ``AttentionLayer`` and ``Transformer``. The names
``MultiHeadAttention`` and ``TransformerLayer`` at ``needle.nn`` are the PyTorch-style
layers (``embed_dim, num_heads`` / ``d_model, num_heads, dim_feedforward``), so the
course's two live here only: ``needle.nn.transformer.MultiHeadAttention`` and
``needle.nn.transformer.TransformerLayer``.
"""
import math

import numpy as np

from .. import init, ops
from ..autograd import Tensor
from ..errors import ShapeError
from .basic import Dropout, Linear, ReLU, Sequential
from .module import Module
from .norm import LayerNorm1d
from .sequence import Embedding


class MultiHeadAttention(Module):
    """The course's attention core: ``probs = dropout(softmax(q @ k^T / sqrt(d) + mask))``
    and ``result = probs @ v`` on (batch, num_head, seq, dim_head) tensors.

    Args:
        dropout: dropout on the probabilities (training only).
        causal: mask keys after each query (aligned to the last key).
        device, dtype: kept for the course's signature (the core has no parameters).

    ``forward(q, k, v)`` returns ``(result, probs)``: result (batch, heads, seq_q, d) and
    probs (batch, heads, seq_q, seq_k), after dropout.

    Example:
        >>> core = needle.nn.transformer.MultiHeadAttention(causal=True)
        >>> q = needle.init.randn(2, 4, 5, 8)
        >>> result, probs = core(q, q, q)
    """

    def __init__(self, *, dropout=0.0, causal=False, device=None, dtype="float32"):
        super().__init__()
        self.device, self.dtype, self.causal = device, dtype, causal
        self.dropout = Dropout(dropout)

    def create_causal_mask(self, i, j, device, dtype="float32"):
        """A (1, 1, i, j) constant Tensor: 0 where query row r may see key column c
        (``c <= r + j - i``), and ``-finfo(float32).max`` above that diagonal (the course's
        mask, a Tensor here rather than an NDArray)."""
        mask = -np.finfo(np.float32).max * np.triu(np.ones((1, 1, i, j)), j - i + 1)
        return Tensor(mask, device=device, dtype=dtype, requires_grad=False)

    def matmul(self, a, b_transpose):
        """Batched ``a @ b_transpose^T``: (..., m, k) and (..., n, k) -> (..., m, n)."""
        return a @ ops.transpose(b_transpose)

    def softmax(self, logit):
        """Softmax over the last axis."""
        return ops.softmax(logit)

    def forward(self, q, k, v):
        if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
            raise ShapeError(f"attention core expects (batch, num_head, seq, dim_head) "
                             f"tensors, got {q.shape}, {k.shape}, {v.shape}")
        batch, heads, q_len, q_dim = q.shape
        kv_len, k_dim, v_dim = k.shape[2], k.shape[3], v.shape[3]
        if not q_dim == k_dim == v_dim or k.shape[2] != v.shape[2]:
            raise ShapeError(f"attention core: q {q.shape}, k {k.shape}, v {v.shape} do not fit")
        logits = self.matmul(q, k) / math.sqrt(q_dim)
        if self.causal:
            mask = self.create_causal_mask(q_len, kv_len, q.device, q.dtype)
            logits = logits + ops.broadcast_to(mask, logits.shape)
        probs = self.dropout(self.softmax(logits))
        return probs @ v, probs


class AttentionLayer(Module):
    """Multi-head attention with a prenorm, classic Needle (the course's layer):
    ``LayerNorm`` each of q, k and v, project them (no bias) to ``num_head * dim_head``
    features, attend per head (``MultiHeadAttention`` core, causal by default), and project
    back to ``out_features`` (no bias).

    Args:
        q_features: features of q (and the default for the others).
        num_head: number of heads.
        dim_head: features per head.
        k_features, v_features: features of k and v (default ``q_features``).
        out_features: output features (default ``q_features``).
        dropout: dropout on the attention probabilities (training only).
        causal: mask future positions (default True, as in the course).
        device, dtype: where and in which dtype the parameters live.

    ``forward(q, k=None, v=None)`` takes batch-first (batch, seq, features) tensors; k and
    v both default to q (self-attention) and returns (batch, seq_q, out_features).

    Example:
        >>> layer = needle.nn.AttentionLayer(16, num_head=4, dim_head=8)
        >>> layer(needle.init.randn(2, 5, 16)).shape
        (2, 5, 16)
    """

    def __init__(self, q_features, num_head, dim_head, *, k_features=None, v_features=None,
                 out_features=None, dropout=0.0, causal=True, device=None, dtype="float32"):
        super().__init__()
        self.device, self.dtype = device, dtype
        k_features = q_features if k_features is None else k_features
        v_features = q_features if v_features is None else v_features
        out_features = q_features if out_features is None else out_features
        self.q_features, self.k_features = q_features, k_features
        self.v_features, self.out_features = v_features, out_features
        self.num_head, self.dim_head = num_head, dim_head
        kw = dict(device=device, dtype=dtype)
        self.prenorm_q = LayerNorm1d(q_features, **kw)
        self.prenorm_k = LayerNorm1d(k_features, **kw)
        self.prenorm_v = LayerNorm1d(v_features, **kw)
        inner = num_head * dim_head
        self.q_projection = Linear(q_features, inner, bias=False, **kw)
        self.k_projection = Linear(k_features, inner, bias=False, **kw)
        self.v_projection = Linear(v_features, inner, bias=False, **kw)
        self.attn = MultiHeadAttention(dropout=dropout, causal=causal, **kw)
        self.out_projection = Linear(inner, out_features, bias=False, **kw)

    def extra_repr(self):
        return f"num_head={self.num_head}, dim_head={self.dim_head}"

    def _heads(self, x):
        b, t, _ = x.shape
        return ops.permute(ops.reshape(x, (b, t, self.num_head, self.dim_head)), (0, 2, 1, 3))

    def forward(self, q, k=None, v=None):
        k = q if k is None else k
        v = q if v is None else v
        for name, t, n in (("q", q, self.q_features), ("k", k, self.k_features),
                           ("v", v, self.v_features)):
            if t.ndim != 3 or t.shape[-1] != n:
                raise ShapeError(f"AttentionLayer expects {name} of shape (batch, seq, {n}), "
                                 f"got {t.shape}")
        batch, q_len, _ = q.shape
        qh = self._heads(self.q_projection(self.prenorm_q(q)))
        kh = self._heads(self.k_projection(self.prenorm_k(k)))
        vh = self._heads(self.v_projection(self.prenorm_v(v)))
        result, _ = self.attn(qh, kh, vh)
        result = ops.reshape(ops.permute(result, (0, 2, 1, 3)),
                             (batch, q_len, self.num_head * self.dim_head))
        return self.out_projection(result)


class TransformerLayer(Module):
    """The course's Transformer layer (batch-first (batch, seq, q_features) in and out):
    ``x = x + dropout(attn(x))`` (``AttentionLayer``, whose prenorm is the first norm),
    then ``x = x + dropout(linear2(dropout(relu(linear1(layernorm(x))))))``.

    Args:
        q_features: the model width.
        num_head, dim_head: attention heads and features per head.
        hidden_size: the feed-forward block's hidden width.
        dropout: dropout probability everywhere in the layer.
        causal: mask future positions (default True).
        device, dtype: where and in which dtype the parameters live.

    Example:
        >>> layer = needle.nn.transformer.TransformerLayer(16, 4, 8, 64)
        >>> layer(needle.init.randn(2, 5, 16)).shape
        (2, 5, 16)
    """

    def __init__(self, q_features, num_head, dim_head, hidden_size, *, dropout=0.0,
                 causal=True, device=None, dtype="float32"):
        super().__init__()
        self.device, self.dtype = device, dtype
        kw = dict(device=device, dtype=dtype)
        self.attn = AttentionLayer(q_features, num_head, dim_head, dropout=dropout,
                                   causal=causal, **kw)
        self.layernorm = LayerNorm1d(q_features, **kw)
        self.linear1 = Linear(q_features, hidden_size, **kw)
        self.relu = ReLU()
        self.linear2 = Linear(hidden_size, q_features, **kw)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        x = x + self.dropout(self.attn(x))
        h = self.dropout(self.relu(self.linear1(self.layernorm(x))))
        return x + self.dropout(self.linear2(h))


class Transformer(Module):
    """The course's Transformer: a learned positional embedding added to the input, then
    ``num_layers`` of ``needle.nn.transformer.TransformerLayer``.

    Args:
        embedding_size: the model width (the input's last axis).
        hidden_size: each layer's feed-forward hidden width.
        num_layers: the number of layers.
        num_head, dim_head: attention heads and features per head (default 8 and 32).
        dropout: dropout probability in every layer.
        causal: mask future positions (default True: a language model).
        device, dtype: where and in which dtype the parameters live.
        batch_first: if False (the default, as the course's RNN/LSTM language models),
            input and output are (seq_len, batch, embedding_size); else batch-first.
        sequence_len: the longest sequence (rows of the positional embedding).

    ``forward(x, h=None)`` returns ``(output, init.zeros_like(output))``: the second value
    stands in for an RNN's hidden state (``h`` is ignored), as in the course.

    Example:
        >>> model = needle.nn.Transformer(16, 32, 2, num_head=2, dim_head=8)
        >>> out, _ = model(needle.init.randn(5, 3, 16))     # (seq, batch, features)
        >>> out.shape
        (5, 3, 16)
    """

    def __init__(self, embedding_size, hidden_size, num_layers, *, num_head=8, dim_head=32,
                 dropout=0.0, causal=True, device=None, dtype="float32", batch_first=False,
                 sequence_len=2048):
        super().__init__()
        self.device, self.dtype, self.batch_first = device, dtype, batch_first
        self.embedding_size, self.sequence_len = embedding_size, sequence_len
        kw = dict(device=device, dtype=dtype)
        self.pos_embedding = Embedding(sequence_len, embedding_size, **kw)
        self.layers = Sequential(*[
            TransformerLayer(embedding_size, num_head, dim_head, hidden_size, dropout=dropout,
                             causal=causal, **kw) for _ in range(num_layers)])

    def extra_repr(self):
        return "batch_first=True" if self.batch_first else ""

    def forward(self, x, h=None):
        if x.ndim != 3 or x.shape[-1] != self.embedding_size:
            layout = "batch, seq_len" if self.batch_first else "seq_len, batch"
            raise ShapeError(f"Transformer expects ({layout}, {self.embedding_size}) input, got "
                             f"{x.shape}")
        if not self.batch_first:
            x = ops.transpose(x, (0, 1))
        batch, seq_len, dim = x.shape
        if seq_len > self.sequence_len:
            raise ShapeError(f"Transformer: sequence of length {seq_len} is longer than "
                             f"sequence_len={self.sequence_len}")
        positions = Tensor(np.arange(seq_len).reshape(1, seq_len), device=x.device,
                           dtype=x.dtype, requires_grad=False)
        x = x + ops.broadcast_to(self.pos_embedding(positions), x.shape)
        x = self.layers(x)
        if not self.batch_first:
            x = ops.transpose(x, (0, 1))
        return x, init.zeros_like(x)
