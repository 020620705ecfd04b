"""The fully connected layer as one op: ``act(x @ w + bias)``.

On a backend with the fused ``linear``/``linear_backward`` ops the layer is one op each way:
on the cudnn device (cuBLASLt) the forward is one GEMM with a bias+activation epilogue and
the backward two GEMMs, one of which also reduces the bias gradient; on the cuda device the
same calls run our GEMM, bias and column-sum kernels. Elsewhere it is matmul + bias_act.
"""
import math

from ..autograd import Tensor, TensorOp, grad_enabled
from ..backend_ndarray import LINEAR_ACTIVATIONS
from ..errors import ShapeError
from .elementwise import relu, tanh
from .fused import bias_act
from .linalg import matmul
from .movement import reshape


class Linear(TensorOp):
    """``act(x @ w + bias)`` for x ``(..., k)``, w ``(k, n)``, bias of n elements ``(n,)`` or
    ``(1, n)``; act identity/relu. The leading axes of x are the product's rows and the bias
    keeps its shape: a layer's reshapes are views inside the op, not ops of their own."""

    def __init__(self, act):
        self.act = act

    def compute(self, x, w, bias):
        k, n = w.shape
        m = x.size // k
        out = x._new(x.shape[:-1] + (n,))
        x.device.backend.linear(x.compact()._handle, w.compact()._handle, bias.compact()._handle,
                                out._handle, m, k, n, self.act)
        return out

    def gradient(self, out_grad, node):
        x_in, _, bias_in = node.inputs
        x, w, _ = (t.realize_cached_data() for t in node.inputs)
        g = out_grad
        if self.act == "relu":
            g = g * Tensor.make_const(node.realize_cached_data() > 0)
        g = g.realize_cached_data().compact()
        k, n = w.shape
        m = x.size // k
        dx = x._new() if x_in.requires_grad else None
        dw, db = w._new(), w._new(bias_in.shape)
        x.device.backend.linear_backward(g._handle, x.compact()._handle, w.compact()._handle,
                                         dx._handle if dx is not None else None, dw._handle,
                                         db._handle, m, k, n)
        return (Tensor.make_const(dx) if dx is not None else None, Tensor.make_const(dw),
                Tensor.make_const(db))


def linear(x, w, bias=None, act="identity"):
    """``act(x @ w + bias)`` for ``x`` of shape ``(..., k)``; ``act`` is identity, relu or
    gelu (tanh form); ``bias`` has shape ``(n,)`` or ``(1, n)`` (classic Needle's layout).

    Gradients flow to x, w and bias; through the fused backend op they are computed
    directly (not as differentiable expressions), so second derivatives are not available
    there."""
    if act not in LINEAR_ACTIVATIONS:
        raise ValueError(f"linear: unknown activation {act!r}; use one of {LINEAR_ACTIVATIONS}")
    if x.ndim < 2 or w.ndim != 2 or x.shape[-1] != w.shape[0]:
        raise ShapeError(f"linear: input {x.shape} and weight {w.shape} do not fit; expected "
                         f"(..., k) and (k, n)")
    n = w.shape[1]
    if bias is not None and bias.shape not in ((n,), (1, n)):
        raise ShapeError(f"linear: bias of shape {bias.shape} does not fit weight {w.shape}; "
                         f"expected ({n},) or (1, {n})")
    backend = x.device.backend
    fused = (bias is not None and x.size and w.size and backend.supports("linear", x.dtype)
             and backend.supports("linear_backward", x.dtype))
    training = grad_enabled() and any(t is not None and t.requires_grad for t in (x, w, bias))
    if fused and not (act == "gelu" and training):  # the epilogue keeps no GELU input
        return Linear(act)(x, w, bias)
    if fused:
        return gelu(Linear("identity")(x, w, bias))
    lead = x.shape[:-1]
    y = matmul(reshape(x, (-1, x.shape[-1])) if x.ndim != 2 else x, w)
    if bias is not None:
        y = bias_act(y, reshape(bias, (n,)) if bias.ndim != 1 else bias,
                     "relu" if act == "relu" else "identity")
    elif act == "relu":
        y = relu(y)
    y = gelu(y) if act == "gelu" else y
    return reshape(y, lead + (n,)) if x.ndim != 2 else y


def gelu(x):
    """GELU, tanh approximation (``torch.nn.functional.gelu(x, approximate="tanh")``)."""
    inner = (x + x ** 3 * 0.044715) * math.sqrt(2.0 / math.pi)
    return x * (tanh(inner) + 1) * 0.5
