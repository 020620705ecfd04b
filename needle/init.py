"""Tensor initialisers. Every function takes ``device``, ``dtype`` and ``requires_grad``.

Random draws come from NumPy's global generator, so ``np.random.seed`` makes them
reproducible on every device.
"""
import math

import numpy as np

from .autograd import Tensor
from .backend_ndarray import NDArray, default_device, full as nd_full


def _tensor(array, device, dtype, requires_grad):
    return Tensor(NDArray(array, device=device or default_device(), dtype=dtype), dtype=dtype,
                  requires_grad=requires_grad)


def rand(*shape, low=0.0, high=1.0, device=None, dtype="float32", requires_grad=False):
    """Uniform in [low, high)."""
    return _tensor(np.random.uniform(low, high, shape), device, dtype, requires_grad)


def randn(*shape, mean=0.0, std=1.0, device=None, dtype="float32", requires_grad=False):
    """Normal with the given mean and standard deviation."""
    return _tensor(np.random.normal(mean, std, shape), device, dtype, requires_grad)


uniform, normal = rand, randn


def constant(*shape, c=1.0, device=None, dtype="float32", requires_grad=False):
    array = nd_full(shape, c, dtype=dtype, device=device or default_device())
    return Tensor(array, dtype=dtype, requires_grad=requires_grad)


def ones(*shape, device=None, dtype="float32", requires_grad=False):
    return constant(*shape, c=1.0, device=device, dtype=dtype, requires_grad=requires_grad)


def zeros(*shape, device=None, dtype="float32", requires_grad=False):
    return constant(*shape, c=0.0, device=device, dtype=dtype, requires_grad=requires_grad)


def randb(*shape, p=0.5, device=None, dtype="float32", requires_grad=False):
    """Bernoulli(p) mask of 1.0 / 0.0."""
    return _tensor(np.random.rand(*shape) <= p, device, dtype, requires_grad)


def class_indices(labels, n):
    """``labels`` (array or Tensor) as int64 class indices, or a ValueError if any is not an
    integer in [0, n)."""
    labels = labels.numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    idx = labels.astype(np.int64)
    if labels.size and (idx.min() < 0 or idx.max() >= n or not np.all(idx == labels)):
        raise ValueError(f"labels must be integers in [0, {n}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return idx


def one_hot(n, i, device=None, dtype="float32", requires_grad=False):
    """Rows of the ``n``-class identity selected by integer labels ``i`` (array or Tensor)."""
    return _tensor(np.eye(n)[class_indices(i, n)], device, dtype, requires_grad)


def zeros_like(t, device=None, requires_grad=False):
    return zeros(*t.shape, device=device or t.device, dtype=t.dtype, requires_grad=requires_grad)


def ones_like(t, device=None, requires_grad=False):
    return ones(*t.shape, device=device or t.device, dtype=t.dtype, requires_grad=requires_grad)


def _gain(nonlinearity):
    gains = {"relu": math.sqrt(2.0), "linear": 1.0, "tanh": 5.0 / 3, "sigmoid": 1.0}
    if nonlinearity not in gains:
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}; use one of {', '.join(gains)}")
    return gains[nonlinearity]


def xavier_uniform(fan_in, fan_out, gain=1.0, shape=None, **kwargs):
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rand(*(shape or (fan_in, fan_out)), low=-a, high=a, **kwargs)


def xavier_normal(fan_in, fan_out, gain=1.0, shape=None, **kwargs):
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return randn(*(shape or (fan_in, fan_out)), std=std, **kwargs)


def kaiming_uniform(fan_in, fan_out, shape=None, nonlinearity="relu", **kwargs):
    bound = _gain(nonlinearity) * math.sqrt(3.0 / fan_in)
    return rand(*(shape or (fan_in, fan_out)), low=-bound, high=bound, **kwargs)


def kaiming_normal(fan_in, fan_out, shape=None, nonlinearity="relu", **kwargs):
    std = _gain(nonlinearity) / math.sqrt(fan_in)
    return randn(*(shape or (fan_in, fan_out)), std=std, **kwargs)
