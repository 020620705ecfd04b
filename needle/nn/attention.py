"""Multi-head attention and a pre-norm Transformer encoder layer (batch-first), PyTorch
style. (Classic Needle's ``AttentionLayer`` and ``Transformer`` are in ``transformer``.)"""
import math

import numpy as np

from .. import ops
from ..autograd import Tensor
from ..errors import DTypeError, ShapeError
from .basic import Dropout, Linear, ReLU, Sequential
from .module import Module
from .norm import LayerNorm1d

MASKED = -1e9  # what a boolean mask adds to the scores of the keys it hides


def _additive_mask(mask, like, what):
    """``mask`` as a Tensor to add to the attention scores: a NumPy bool array (or nested
    lists of bools) or a mask Tensor (the result of a comparison, ``t.is_mask``) becomes
    ``MASKED`` where True and 0 elsewhere; a float array or any other Tensor is added as it
    is."""
    if isinstance(mask, Tensor):
        if mask.dtype != like.dtype:
            raise DTypeError(f"{what} is {mask.dtype}, the attention inputs {like.dtype}")
        return mask * MASKED if mask.is_mask else mask
    array = np.asarray(mask)
    if array.dtype == np.bool_:
        array = np.where(array, MASKED, 0.0)
    elif not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{what} must be boolean (True = masked) or a float additive mask, "
                        f"got dtype {array.dtype}")
    return Tensor(array, device=like.device, dtype=like.dtype, requires_grad=False)


class MultiHeadAttention(Module):
    """Multi-head scaled dot-product attention with input and output projections, as
    ``torch.nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)``.

    Args:
        embed_dim: model width D (split into ``num_heads`` heads of D / num_heads).
        num_heads: number of heads.
        dropout: dropout on the attention probabilities (training only).
        bias: whether the four projections have biases.
        causal: mask future positions (query i sees keys up to i, aligned to the last key
            when there are more keys than queries).
        device, dtype: where and in which dtype the parameters live.

    ``forward(q, k=None, v=None, attn_mask=None, key_padding_mask=None)`` takes
    (batch, seq, D) tensors (k defaults to q, v to k) and returns (batch, seq_q, D), the
    output only (PyTorch's ``need_weights=False``).

    * ``attn_mask``: (seq_q, seq_k), or (batch * num_heads, seq_q, seq_k) as in PyTorch.
    * ``key_padding_mask``: (batch, seq_k); True marks a padded key that no query attends.

    A mask is boolean (True = masked, PyTorch's convention) when it is a NumPy bool array
    (or nested lists of bools) or a comparison's result (``pad_ids == 0``); a float array
    or any other Needle Tensor is added to the scores (use ``-inf`` or a large negative
    value to mask). Masked keys get ``MASKED`` (-1e9)
    added rather than -inf, so a query whose keys are all masked gets finite output where
    PyTorch gives NaN. With a mask (or dropout) attention runs unfused (matmul, softmax,
    matmul); without, ``ops.scaled_dot_product_attention`` (fused kernels on cuda and cudnn).

    Example:
        >>> mha = needle.nn.MultiHeadAttention(16, 4)
        >>> x = needle.init.randn(2, 5, 16)
        >>> pad = np.array([[False] * 5, [False] * 3 + [True] * 2])   # 2nd sequence: 3 tokens
        >>> mha(x, key_padding_mask=pad).shape
        (2, 5, 16)
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, causal=False,
                 device=None, dtype="float32"):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.causal = embed_dim, num_heads, causal
        self.head_dim = embed_dim // num_heads
        kw = dict(bias=bias, device=device, dtype=dtype)
        self.q_proj, self.k_proj = Linear(embed_dim, embed_dim, **kw), Linear(embed_dim, embed_dim, **kw)
        self.v_proj, self.out_proj = Linear(embed_dim, embed_dim, **kw), Linear(embed_dim, embed_dim, **kw)
        self.dropout = Dropout(dropout)

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
                + (", causal=True" if self.causal else ""))

    def _heads(self, x):
        b, t, _ = x.shape
        return ops.permute(ops.reshape(x, (b, t, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def forward(self, q, k=None, v=None, attn_mask=None, key_padding_mask=None):
        k = q if k is None else k
        v = k if v is None else v
        for name, t in (("q", q), ("k", k), ("v", v)):
            if t.ndim != 3 or t.shape[-1] != self.embed_dim:
                raise ShapeError(f"MultiHeadAttention({self.embed_dim}) expects (batch, seq, "
                                 f"{self.embed_dim}) input, got {name} of shape {t.shape}")
        b, tq, _ = q.shape
        qh, kh, vh = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        drop = self.dropout if self.dropout.training and self.dropout.p else None
        if attn_mask is None and key_padding_mask is None:
            heads = ops.scaled_dot_product_attention(qh, kh, vh, self.causal, dropout=drop)
        else:
            heads = self._masked_attention(qh, kh, vh, attn_mask, key_padding_mask, drop)
        out = ops.reshape(ops.permute(heads, (0, 2, 1, 3)), (b, tq, self.embed_dim))
        return self.out_proj(out)

    def _masked_attention(self, q, k, v, attn_mask, key_padding_mask, dropout):
        """``softmax(q @ k^T / sqrt(d) + masks) @ v`` on (batch, heads, seq, head_dim)."""
        b, h, tq, d = q.shape
        tk = k.shape[2]
        scores = (q @ ops.transpose(k)) * (1.0 / math.sqrt(d))
        masks = []
        if self.causal:
            masks.append(np.triu(np.full((1, 1, tq, tk), MASKED), tk - tq + 1))
        if attn_mask is not None:
            m = _additive_mask(attn_mask, q, "attn_mask")
            if m.shape == (tq, tk):
                m = ops.reshape(m, (1, 1, tq, tk))
            elif m.shape == (b * h, tq, tk):
                m = ops.reshape(m, (b, h, tq, tk))
            else:
                raise ShapeError(f"attn_mask must be ({tq}, {tk}) or ({b * h}, {tq}, {tk}) "
                                 f"(batch * num_heads, seq_q, seq_k), got {m.shape}")
            masks.append(m)
        if key_padding_mask is not None:
            m = _additive_mask(key_padding_mask, q, "key_padding_mask")
            if m.shape != (b, tk):
                raise ShapeError(f"key_padding_mask must be (batch, seq_k) = ({b}, {tk}), got "
                                 f"{m.shape}")
            masks.append(ops.reshape(m, (b, 1, 1, tk)))
        for m in masks:
            if isinstance(m, np.ndarray):
                m = Tensor(m, device=q.device, dtype=q.dtype, requires_grad=False)
            scores = scores + ops.broadcast_to(m, scores.shape)
        probs = ops.softmax(scores)
        return (dropout(probs) if dropout is not None else probs) @ v


class TransformerLayer(Module):
    """Pre-norm Transformer encoder layer, batch-first:
    ``x + attn(norm1(x))`` then ``x + ff(norm2(x))`` with ff = Linear-ReLU-Dropout-Linear.
    Matches ``torch.nn.TransformerEncoderLayer(norm_first=True, batch_first=True)``.
    (Classic Needle's layer, with ``dim_head`` and a prenorm inside the attention, is
    ``needle.nn.transformer.TransformerLayer``.)

    Args:
        d_model: the model width.
        num_heads: attention heads (d_model must divide by it).
        dim_feedforward: the hidden width of the feed-forward block.
        dropout: dropout after attention, in the feed-forward block and on the
            attention probabilities.
        causal: mask future positions.
        device, dtype: where and in which dtype the parameters live.

    ``forward(x, attn_mask=None, key_padding_mask=None)``: masks as for
    ``MultiHeadAttention``.

    Example:
        >>> layer = needle.nn.TransformerLayer(16, 4, 64)
        >>> layer(needle.init.randn(2, 5, 16)).shape
        (2, 5, 16)
    """

    def __init__(self, d_model, num_heads, dim_feedforward, dropout=0.0, causal=False,
                 device=None, dtype="float32"):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.attn = MultiHeadAttention(d_model, num_heads, dropout, causal=causal, **kw)
        self.norm1, self.norm2 = LayerNorm1d(d_model, **kw), LayerNorm1d(d_model, **kw)
        self.ff = Sequential(Linear(d_model, dim_feedforward, **kw), ReLU(), Dropout(dropout),
                             Linear(dim_feedforward, d_model, **kw))
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)

    def forward(self, x, attn_mask=None, key_padding_mask=None):
        h = self.norm1(x)
        x = x + self.dropout1(self.attn(h, attn_mask=attn_mask,
                                        key_padding_mask=key_padding_mask))
        return x + self.dropout2(self.ff(self.norm2(x)))
