"""Normalisation layers: BatchNorm1d/2d and LayerNorm1d."""
from .. import init, ops
from ..errors import ShapeError
from .module import Module, Parameter, check_dtype


class BatchNorm1d(Module):
    """Batch normalisation over axis 0 of ``(batch, dim)`` input, PyTorch semantics: the
    biased variance normalises in training, the unbiased one updates ``running_var``, and
    eval mode uses the running statistics. The normalisation (and a following ReLU, see
    ``Sequential``) is one fused kernel where the backend has it.

    Args:
        dim: the number of features (channels).
        eps: added to the variance.
        momentum: ``running = (1 - momentum) * running + momentum * batch_statistic``.
        device, dtype: where and in which dtype the parameters and statistics live; the
            input must have the same dtype (else ``needle.DTypeError``).

    ``weight``/``bias`` (learned, (dim,)) and the buffers ``running_mean``/``running_var``.
    No (N, C, L) input (PyTorch's BatchNorm1d takes it): use (N, C).

    Example:
        >>> bn = needle.nn.BatchNorm1d(8)
        >>> bn(needle.init.randn(16, 8)).shape
        (16, 8)
    """

    def __init__(self, dim, eps=1e-5, momentum=0.1, device=None, dtype="float32"):
        super().__init__()
        self.dim, self.eps, self.momentum = dim, eps, momentum
        self.weight = Parameter(init.ones(dim, device=device, dtype=dtype))
        self.bias = Parameter(init.zeros(dim, device=device, dtype=dtype))
        self.running_mean = init.zeros(dim, device=device, dtype=dtype)
        self.running_var = init.ones(dim, device=device, dtype=dtype)

    def _check(self, x):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{type(self).__name__}({self.dim}) expects (batch, {self.dim}) "
                             f"input, got {x.shape}")
        check_dtype(self, x, self.weight)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x, act="identity", x_bias=None):
        """``act(BatchNorm(x + x_bias))``; ``x_bias``, a per-channel bias (a preceding
        conv's), folds into the same kernel."""
        self._check(x)
        if not self.training:
            return ops.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                  self.bias, self.eps, act, x_bias=x_bias)
        n = x.size // self.dim
        if n == 1:
            raise ValueError(f"{type(self).__name__} needs more than one value per channel "
                             f"in training mode (got input of shape {x.shape}); use eval()")
        running = (self.running_mean, self.running_var, self.momentum)
        return ops.batch_norm_train(x, self.weight, self.bias, self.eps, act, running,
                                    x_bias)[0]


class BatchNorm2d(BatchNorm1d):
    """Batch normalisation of NCHW input over N, H and W, per channel (arguments as
    ``BatchNorm1d``, ``dim`` the channel count).

    Example:
        >>> needle.nn.BatchNorm2d(3)(needle.init.randn(4, 3, 8, 8)).shape
        (4, 3, 8, 8)
    """

    def _check(self, x):
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ShapeError(f"BatchNorm2d({self.dim}) expects NCHW input with {self.dim} "
                             f"channels, got {x.shape}")
        check_dtype(self, x, self.weight)


class LayerNorm1d(Module):
    """Layer normalisation over the last axis, with learned weight and bias of shape (dim,)
    (``torch.nn.LayerNorm(dim)``). Inputs may have any leading axes.

    Args:
        dim: the size of the last axis.
        eps: added to the variance.
        device, dtype: where and in which dtype the parameters live; the input must have
            the same dtype (else ``needle.DTypeError``).

    Example:
        >>> needle.nn.LayerNorm1d(8)(needle.init.randn(2, 5, 8)).shape
        (2, 5, 8)
    """

    def __init__(self, dim, eps=1e-5, device=None, dtype="float32"):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(init.ones(dim, device=device, dtype=dtype))
        self.bias = Parameter(init.zeros(dim, device=device, dtype=dtype))

    def forward(self, x):
        if x.shape[-1] != self.dim:
            raise ShapeError(f"LayerNorm1d({self.dim}) got input of shape {x.shape}")
        check_dtype(self, x, self.weight)
        return ops.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


LayerNorm = LayerNorm1d
