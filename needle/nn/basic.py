"""Basic layers: Linear, activations, Softmax/LogSoftmax, containers, SoftmaxLoss, Dropout,
Flatten."""

from .. import init, ops
from ..errors import ShapeError
from .conv import Conv, Conv2d
from .module import Module, Parameter, check_dtype
from .norm import BatchNorm1d, BatchNorm2d


class Identity(Module):
    """Returns its input unchanged.

    Example:
        >>> x = needle.init.randn(2, 3)
        >>> needle.nn.Identity()(x) is x
        True
    """

    def forward(self, x):
        return x


class Linear(Module):
    """``y = x @ weight + bias`` with weight ``(in_features, out_features)`` and bias
    ``(1, out_features)`` (classic Needle layout: PyTorch's weight is the transpose).
    Inputs may have leading batch axes (or be 1-D).

    Args:
        in_features: size of the last input axis.
        out_features: size of the last output axis.
        bias: whether to add a learned bias.
        device, dtype: where and in which dtype the parameters live; the input must have
            the same dtype (else ``needle.DTypeError``).

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
        """``act(x @ weight + bias)``; ``act`` (identity, relu or gelu) is how ``Sequential``
        fuses a following activation into the same kernel."""
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"Linear({self.in_features}, {self.out_features}) got input of "
                             f"shape {x.shape}")
        check_dtype(self, x, self.weight)
        if x.ndim == 1:
            return ops.reshape(self.forward(ops.reshape(x, (1, -1)), act), (self.out_features,))
        return ops.linear(x, self.weight, self.bias, act)  # (..., in) rows, (1, out) bias

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """(B, ...) -> (B, prod(...)).

    Example:
        >>> needle.nn.Flatten()(needle.init.randn(2, 3, 4)).shape
        (2, 12)
    """

    def forward(self, x):
        return ops.reshape(x, (x.shape[0], -1))


class ReLU(Module):
    """``max(x, 0)`` elementwise. Example: ``needle.nn.ReLU()(x)``."""

    def forward(self, x):
        return ops.relu(x)


class Tanh(Module):
    """``tanh(x)`` elementwise. Example: ``needle.nn.Tanh()(x)``."""

    def forward(self, x):
        return ops.tanh(x)


class Sigmoid(Module):
    """``1 / (1 + exp(-x))`` elementwise. Example: ``needle.nn.Sigmoid()(x)``."""

    def forward(self, x):
        return ops.sigmoid(x)


class GELU(Module):
    """GELU with the tanh approximation (``torch.nn.GELU(approximate="tanh")``; PyTorch's
    default is the exact erf form). Example: ``needle.nn.GELU()(x)``."""

    def forward(self, x):
        return ops.gelu(x)

    def extra_repr(self):
        return "approximate='tanh'"


class Softmax(Module):
    """Softmax along axis ``dim``: non-negative values summing to 1 along it.

    Args:
        dim: the axis (default the last; PyTorch requires it).

    Example:
        >>> p = needle.nn.Softmax(dim=1)(needle.init.randn(2, 5))
        >>> p.shape, bool(abs(p.numpy().sum(axis=1) - 1).max() < 1e-6)
        ((2, 5), True)
    """

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return ops.softmax(x, axis=self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """``log(softmax(x))`` along axis ``dim``, computed stably (``x - logsumexp(x)``).

    Args:
        dim: the axis (default the last).

    Example:
        >>> needle.nn.LogSoftmax(dim=-1)(needle.init.randn(2, 5)).shape
        (2, 5)
    """

    def forward(self, x):
        return ops.log_softmax(x, axis=self.dim)


class _Layers(list):
    """Sequential's layers: classic Needle's ``seq.modules`` list (``seq.modules[0]``),
    callable as well, so that ``seq.modules()`` is ``Module.modules()`` as for any module."""

    def __init__(self, owner, layers):
        super().__init__(layers)
        self.owner = owner

    def __call__(self):
        return Module.modules(self.owner)


class Sequential(Module):
    """Apply modules in order: ``Sequential(a, b, c)(x) = c(b(a(x)))``.

    Args:
        *modules: the layers.

    A container, as ``torch.nn.Sequential``: ``seq[i]`` (a slice gives a Sequential),
    ``len(seq)``, iteration, ``append``, ``extend``, ``insert``. The layers are also the
    list ``seq.modules`` (classic Needle; their names in ``state_dict`` are ``modules.0``,
    ``modules.1``... where PyTorch has ``0``, ``1``...).

    Fusion: a ``Linear``, ``BatchNorm1d`` or ``BatchNorm2d`` followed by ``ReLU`` (or a
    Linear followed by ``GELU``) runs its last step and the activation as one kernel; in
    eval mode a ``Conv``/``Conv2d`` followed by ``BatchNorm2d`` (and ReLU) runs the conv,
    then bias, normalisation and ReLU as one kernel. Only those exact classes fuse: a
    subclass (which may override ``forward``) is called as written.

    Example:
        >>> net = needle.nn.Sequential(needle.nn.Linear(4, 2), needle.nn.ReLU())
        >>> net
        Sequential(
          (0): Linear(in_features=4, out_features=2, bias=True)
          (1): ReLU()
        )
        >>> net[0].out_features, len(net)
        (2, 2)
    """

    def __init__(self, *modules):
        super().__init__()
        self.modules = modules

    @property
    def modules(self):
        return self.__dict__["modules"]

    @modules.setter
    def modules(self, layers):
        self.__dict__["modules"] = _Layers(self, layers)

    def forward(self, x):
        mods, i = self.__dict__["modules"], 0
        n = len(mods)
        while i < n:
            m = mods[i]
            tm = type(m)
            tn = type(mods[i + 1]) if i + 1 < n else None
            if tm in _CONVS and tn is BatchNorm2d:
                relu_next = i + 2 < n and type(mods[i + 2]) is ReLU
                x = mods[i + 1](m.convolve(x), act="relu" if relu_next else "identity",
                                x_bias=m.bias)
                i += 3 if relu_next else 2
            elif tn is ReLU and tm in _FUSES_RELU:
                x, i = m(x, act="relu"), i + 2
            elif tn is GELU and tm is Linear:
                x, i = m(x, act="gelu"), i + 2
            else:
                x, i = m(x), i + 1
        return x

    def _repr_children(self):
        return [(str(i), m) for i, m in enumerate(self.modules)]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self.modules[index])
        return self.modules[index]

    def __len__(self):
        return len(self.modules)

    def __iter__(self):
        return iter(self.modules)

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        self.modules.append(module)
        return self

    def extend(self, modules):
        self.modules.extend(modules)
        return self

    def insert(self, index, module):
        self.modules.insert(index, module)
        return self


# exact classes whose forward(x, act="relu") runs the ReLU in the same kernel; subclasses
# are left alone (their forward may not take act)
_FUSES_RELU = (Linear, BatchNorm1d, BatchNorm2d)
_CONVS = (Conv, Conv2d)  # convolve() + a BatchNorm2d kernel with the conv bias folded in


class Residual(Module):
    """``fn(x) + x``.

    Args:
        fn: a module whose output has its input's shape.

    Example:
        >>> block = needle.nn.Residual(needle.nn.Linear(4, 4))
    """

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


class SoftmaxLoss(Module):
    """Mean softmax cross-entropy of ``(batch, classes)`` logits and class labels ``y``
    (integers, possibly stored as a float Tensor). Classic Needle's name; see
    ``CrossEntropyLoss`` for the PyTorch-style one with ``reduction``.

    Example:
        >>> logits, labels = needle.init.randn(4, 10), needle.Tensor([1, 0, 3, 9])
        >>> needle.nn.SoftmaxLoss()(logits, labels).shape
        ()
    """

    def forward(self, logits, y):
        return ops.softmax_cross_entropy(logits, y)


class Dropout(Module):
    """Zero each element with probability ``p`` in training, scaling the rest by 1/(1-p);
    the identity in eval mode.

    Args:
        p: the probability of zeroing, in [0, 1).

    Example:
        >>> drop, x = needle.nn.Dropout(0.1), needle.init.randn(2, 3)
        >>> drop.eval()(x) is x
        True
    """

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

    def extra_repr(self):
        return f"p={self.p}"
