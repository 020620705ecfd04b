"""Basic layers: Linear, activations, containers, losses, Dropout, Flatten."""

from .. import init, ops
from ..errors import ShapeError
from .module import Module, Parameter
from .conv import Conv
from .norm import BatchNorm1d, BatchNorm2d


class Identity(Module):
    def forward(self, x):
        return x


class Linear(Module):
    """``y = x @ weight + bias`` with weight ``(in_features, out_features)`` and bias
    ``(1, out_features)`` (classic Needle layout). Inputs may have leading batch axes.

    Example:
        >>> layer = needle.nn.Linear(4, 2)
        >>> layer(needle.init.randn(3, 4)).shape
        (3, 2)
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.kaiming_uniform(in_features, out_features, device=device,
                                                     dtype=dtype))
        self.bias = Parameter(init.kaiming_uniform(out_features, 1, device=device, dtype=dtype)
                              .reshape((1, out_features))) if bias else None

    def forward(self, x, act="identity"):
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"Linear({self.in_features}, {self.out_features}) got input of "
                             f"shape {x.shape}")
        lead = x.shape[:-1]
        bias = ops.reshape(self.bias, (self.out_features,)) if self.bias is not None else None
        y = ops.linear(ops.reshape(x, (-1, self.in_features)) if x.ndim != 2 else x, self.weight,
                       bias, act)
        return ops.reshape(y, lead + (self.out_features,)) if x.ndim != 2 else y


class Flatten(Module):
    """(B, ...) -> (B, prod(...))."""

    def forward(self, x):
        return ops.reshape(x, (x.shape[0], -1))


class ReLU(Module):
    def forward(self, x):
        return ops.relu(x)


class Tanh(Module):
    def forward(self, x):
        return ops.tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return ops.sigmoid(x)


class GELU(Module):
    """GELU with the tanh approximation (``torch.nn.GELU(approximate="tanh")``)."""

    def forward(self, x):
        return ops.gelu(x)


class Sequential(Module):
    """Apply modules in order. A Linear or BatchNorm followed by ReLU (or a Linear followed
    by GELU) runs its last step and the activation as one fused kernel; in eval mode a Conv
    followed by BatchNorm2d (and ReLU) runs the conv, then bias, normalisation and ReLU as
    one kernel."""

    def __init__(self, *modules):
        super().__init__()
        self.modules = list(modules)

    def forward(self, x):
        mods, i = self.modules, 0
        while i < len(mods):
            m = mods[i]
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if type(m) is Conv and isinstance(nxt, BatchNorm2d) and not nxt.training:
                relu_next = i + 2 < len(mods) and type(mods[i + 2]) is ReLU
                x = nxt(m.convolve(x), act="relu" if relu_next else "identity", x_bias=m.bias)
                i += 3 if relu_next else 2
            elif type(nxt) is ReLU and isinstance(m, _FUSES_RELU):
                x, i = m(x, act="relu"), i + 2
            elif type(nxt) is GELU and type(m) is Linear:
                x, i = m(x, act="gelu"), i + 2
            else:
                x, i = m(x), i + 1
        return x


_FUSES_RELU = (Linear, BatchNorm1d)  # forward(x, act="relu") runs the ReLU in the same kernel


class Residual(Module):
    """``fn(x) + x``."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


class SoftmaxLoss(Module):
    """Mean softmax cross-entropy of ``(batch, classes)`` logits and class labels ``y``
    (integers, possibly stored as a float Tensor)."""

    def forward(self, logits, y):
        return ops.softmax_cross_entropy(logits, y)


class Dropout(Module):
    """Zero each element with probability ``p`` in training, scaling the rest by 1/(1-p)."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        mask = init.randb(*x.shape, p=1 - self.p, device=x.device, dtype=x.dtype)
        return x * mask / (1 - self.p)
