"""Normalisation layers: BatchNorm1d/2d and LayerNorm1d."""
from .. import init, ops
from ..autograd import no_grad
from ..errors import ShapeError
from .module import Module, Parameter


class BatchNorm1d(Module):
    """Batch normalisation over axis 0 of ``(batch, dim)`` input, PyTorch semantics: the
    biased variance normalises in training, the unbiased one updates ``running_var``, and
    eval mode uses the running statistics."""

    def __init__(self, dim, eps=1e-5, momentum=0.1, device=None, dtype="float32"):
        super().__init__()
        self.dim, self.eps, self.momentum = dim, eps, momentum
        self.weight = Parameter(init.ones(dim, device=device, dtype=dtype))
        self.bias = Parameter(init.zeros(dim, device=device, dtype=dtype))
        self.running_mean = init.zeros(dim, device=device, dtype=dtype)
        self.running_var = init.ones(dim, device=device, dtype=dtype)

    def forward(self, x, act="identity"):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{type(self).__name__}({self.dim}) expects (batch, {self.dim}) "
                             f"input, got {x.shape}")
        n = x.shape[0]
        if self.training:
            if n == 1:
                raise ValueError(f"{type(self).__name__} needs more than one value per channel "
                                 f"in training mode (got input of shape {x.shape}); use eval()")
            mean = ops.summation(x, (0,)) / n
            centered = x - ops.broadcast_to(ops.reshape(mean, (1, self.dim)), x.shape)
            var = ops.summation(centered * centered, (0,)) / n
            with no_grad():
                m = self.momentum
                unbiased = var.detach() * (n / max(n - 1, 1))
                self.running_mean = (self.running_mean * (1 - m) + mean.detach() * m).detach()
                self.running_var = (self.running_var * (1 - m) + unbiased * m).detach()
            scale = self.weight / (var + self.eps) ** 0.5
            shift = self.bias
        else:  # an affine map: x * scale + shift, with per-channel scale and shift
            centered = x
            scale = self.weight / (self.running_var + self.eps) ** 0.5
            shift = self.bias - self.running_mean * scale
        y = centered * ops.broadcast_to(ops.reshape(scale, (1, self.dim)), x.shape)
        return ops.bias_act(y, shift, act)


class BatchNorm2d(BatchNorm1d):
    """Batch normalisation of NCHW input over N, H and W, per channel."""

    def forward(self, x, act="identity"):
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ShapeError(f"BatchNorm2d({self.dim}) expects NCHW input with {self.dim} "
                             f"channels, got {x.shape}")
        n, c, h, w = x.shape
        flat = ops.reshape(ops.permute(x, (0, 2, 3, 1)), (n * h * w, c))
        y = super().forward(flat, act)
        return ops.permute(ops.reshape(y, (n, h, w, c)), (0, 3, 1, 2))


class LayerNorm1d(Module):
    """Layer normalisation over the last axis, with learned weight and bias of shape (dim,)."""

    def __init__(self, dim, eps=1e-5, device=None, dtype="float32"):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(init.ones(dim, device=device, dtype=dtype))
        self.bias = Parameter(init.zeros(dim, device=device, dtype=dtype))

    def forward(self, x):
        if x.shape[-1] != self.dim:
            raise ShapeError(f"LayerNorm1d({self.dim}) got input of shape {x.shape}")
        return ops.layer_norm(x, self.weight, self.bias, self.eps)


LayerNorm = LayerNorm1d
