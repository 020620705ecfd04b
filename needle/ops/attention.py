"""Scaled dot-product attention: one fused op where the backend has it (our kernels on
cuda and cudnn, cuDNN's flash attention on cudnn with bf16 products), otherwise matmul +
softmax + matmul."""
import math

import numpy as np

from ..autograd import Tensor, TensorOp
from ..errors import ShapeError
from .fused import softmax
from .movement import broadcast_to, transpose


class Attention(TensorOp):
    """``softmax(scale * q @ k^T [+ causal mask]) @ v`` over (batch, heads, seq, dim) inputs."""

    def __init__(self, scale, causal):
        self.scale, self.causal = scale, causal

    def compute(self, q, k, v):
        b, h, sq, d = q.shape
        out = q._new()
        self.stats = q._new((b * h, sq))  # row log-sum-exp, reused by the backward
        q.device.backend.attention(q.compact()._handle, k.compact()._handle, v.compact()._handle,
                                   out._handle, self.stats._handle, b * h, sq, k.shape[2], d,
                                   self.scale, self.causal)
        return out

    def gradient(self, out_grad, node):
        q, k, v = (t.realize_cached_data().compact() for t in node.inputs)
        b, h, sq, d = q.shape
        dq, dk, dv = q._new(), k._new(), v._new()
        q.device.backend.attention_backward(
            q._handle, k._handle, v._handle, node.realize_cached_data().compact()._handle,
            self.stats._handle, out_grad.realize_cached_data().compact()._handle, dq._handle,
            dk._handle, dv._handle, b * h, sq, k.shape[2], d, self.scale, self.causal)
        return Tensor.make_const(dq), Tensor.make_const(dk), Tensor.make_const(dv)


def fused_attention_fits(backend, dim):
    """Whether the backend's attention kernels take head dim ``dim``."""
    return backend.attention_max_dim is None or dim <= backend.attention_max_dim


def scaled_dot_product_attention(q, k, v, causal=False, dropout=None):
    """Attention of (batch, heads, seq, dim) tensors, scaled by ``1 / sqrt(dim)``.

    ``causal`` masks keys after each query (aligned to the last key when seq_q < seq_k).
    ``dropout``, a callable (e.g. an ``nn.Dropout``), is applied to the probabilities; it
    forces the unfused path."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ShapeError(f"attention expects (batch, heads, seq, dim) tensors, got {q.shape}, "
                         f"{k.shape}, {v.shape}")
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ShapeError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} do not fit; k and v "
                         f"must be equal and share batch, heads and dim with q")
    tq, tk, d = q.shape[2], k.shape[2], q.shape[3]
    scale = 1.0 / math.sqrt(d)
    backend = q.device.backend
    if (dropout is None and (not causal or tq == tk) and q.size and k.size
            and backend.supports("attention", q.dtype)
            and backend.supports("attention_backward", q.dtype)
            and fused_attention_fits(backend, d)):
        return Attention(scale, causal)(q, k, v)
    scores = (q @ transpose(k)) * scale
    if causal:  # -1e9 above the diagonal (aligned to the last key)
        blocked = 1.0 - np.tril(np.ones((1, 1, tq, tk)), tk - tq)
        mask = Tensor(blocked * -1e9, device=q.device, dtype=q.dtype, requires_grad=False)
        scores = scores + broadcast_to(mask, scores.shape)
    probs = softmax(scores)
    return (dropout(probs) if dropout is not None else probs) @ v
