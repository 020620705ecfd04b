"""Multi-head attention and a pre-norm Transformer encoder layer (batch-first)."""
from .. import ops
from ..errors import ShapeError
from .basic import Dropout, Linear, ReLU, Sequential
from .module import Module
from .norm import LayerNorm1d


class MultiHeadAttention(Module):
    """Multi-head scaled dot-product attention with input and output projections.

    Args:
        embed_dim: model width D (split into ``num_heads`` heads of D / num_heads).
        num_heads: number of heads.
        dropout: dropout on the attention probabilities (training only).
        causal: mask future positions.

    ``forward(q, k=None, v=None)`` takes (batch, seq, D) tensors (k, v default to q) and
    returns (batch, seq_q, D). Matches ``torch.nn.MultiheadAttention(batch_first=True)``.
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

    def _heads(self, x):
        b, t, _ = x.shape
        return ops.permute(ops.reshape(x, (b, t, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def forward(self, q, k=None, v=None):
        k = q if k is None else k
        v = k if v is None else v
        if q.ndim != 3 or q.shape[-1] != self.embed_dim:
            raise ShapeError(f"MultiHeadAttention({self.embed_dim}) expects (batch, seq, "
                             f"{self.embed_dim}) input, got {q.shape}")
        b, tq, _ = q.shape
        qh, kh, vh = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        drop = self.dropout if self.dropout.training and self.dropout.p else None
        heads = ops.scaled_dot_product_attention(qh, kh, vh, self.causal, dropout=drop)
        out = ops.reshape(ops.permute(heads, (0, 2, 1, 3)), (b, tq, self.embed_dim))
        return self.out_proj(out)


class TransformerLayer(Module):
    """Pre-norm Transformer encoder layer:
    ``x + attn(norm1(x))`` then ``x + ff(norm2(x))`` with ff = Linear-ReLU-Dropout-Linear.
    Matches ``torch.nn.TransformerEncoderLayer(norm_first=True, batch_first=True)``."""

    def __init__(self, d_model, num_heads, dim_feedforward, dropout=0.0, causal=False,
                 device=None, dtype="float32"):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.attn = MultiHeadAttention(d_model, num_heads, dropout, causal=causal, **kw)
        self.norm1, self.norm2 = LayerNorm1d(d_model, **kw), LayerNorm1d(d_model, **kw)
        self.ff = Sequential(Linear(d_model, dim_feedforward, **kw), ReLU(), Dropout(dropout),
                             Linear(dim_feedforward, d_model, **kw))
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)

    def forward(self, x):
        x = x + self.dropout1(self.attn(self.norm1(x)))
        return x + self.dropout2(self.ff(self.norm2(x)))
