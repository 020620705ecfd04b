"""Tensor initialisers. Every function takes ``device``, ``dtype`` and ``requires_grad``.

Random draws come from NumPy's global generator, so ``np.random.seed`` makes them
reproducible on every device: ``np.random.seed(s); init.rand(n)`` holds the values of
``np.random.seed(s); np.random.uniform(0, 1, n).astype("float32")``.

Memory: a random tensor is drawn in chunks (``backend_ndarray.random_host``) straight into
a host array of its dtype, which on the cpu becomes the tensor's buffer: the peak is about
the tensor's size (plus one 8 MiB chunk), not the four times of a float64 draw, a float32
copy and a device copy.
"""
import math

import numpy as np

from .autograd import Tensor
from .backend_ndarray import NDArray, default_device, full as nd_full
from .backend_ndarray import device as lookup_device
from .backend_ndarray.ndarray import one_hot_host, random_host


def _device(device):
    return default_device() if device is None else lookup_device(device)


def _shape(shape):
    """``rand(2, 3)`` and ``rand((2, 3))`` both mean shape (2, 3)."""
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def _random(sample, shape, device, dtype, requires_grad):
    """A leaf tensor of ``shape`` filled by ``sample(n)`` chunk by chunk, with no full-size
    float64 temporary, and on the cpu no copy of the host array."""
    device = _device(device)
    host = random_host(sample, _shape(shape), device.check_dtype(dtype))
    return Tensor.make_const(NDArray._from_owned_numpy(host, device),
                             requires_grad=requires_grad)


def rand(*shape, low=0.0, high=1.0, device=None, dtype="float32", requires_grad=False):
    """Uniform in [low, high)."""
    return _random(lambda n: np.random.uniform(low, high, n), shape, device, dtype,
                   requires_grad)


def randn(*shape, mean=0.0, std=1.0, device=None, dtype="float32", requires_grad=False):
    """Normal with the given mean and standard deviation."""
    return _random(lambda n: np.random.normal(mean, std, n), shape, device, dtype,
                   requires_grad)


uniform, normal = rand, randn


def constant(*shape, c=1.0, device=None, dtype="float32", requires_grad=False):
    array = nd_full(_shape(shape), c, dtype=dtype, device=_device(device))
    return Tensor.make_const(array, requires_grad=requires_grad)


def ones(*shape, device=None, dtype="float32", requires_grad=False):
    return constant(*shape, c=1.0, device=device, dtype=dtype, requires_grad=requires_grad)


def zeros(*shape, device=None, dtype="float32", requires_grad=False):
    return constant(*shape, c=0.0, device=device, dtype=dtype, requires_grad=requires_grad)


def randb(*shape, p=0.5, device=None, dtype="float32", requires_grad=False):
    """Bernoulli(p) mask of 1.0 / 0.0."""
    return _random(lambda n: np.random.rand(n) <= p, shape, device, dtype, requires_grad)


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
    device = _device(device)
    rows = one_hot_host(class_indices(i, n), n, device.check_dtype(dtype))
    return Tensor.make_const(NDArray._from_owned_numpy(rows, device), requires_grad=requires_grad)


def zeros_like(t, device=None, requires_grad=False):
    return zeros(*t.shape, device=device or t.device, dtype=t.dtype, requires_grad=requires_grad)


def ones_like(t, device=None, requires_grad=False):
    return ones(*t.shape, device=device or t.device, dtype=t.dtype, requires_grad=requires_grad)


def _calculate_fans(shape_or_tensor):
    """``(fan_in, fan_out)`` of a weight in Needle's layouts, as PyTorch's
    ``_calculate_fan_in_and_fan_out`` for its own: a Linear weight ``(in, out)`` gives
    ``(in, out)``; a conv weight ``(k, k, in, out)`` (any leading kernel axes) gives
    ``(in * k * k, out * k * k)``.

    Args:
        shape_or_tensor: a shape tuple, or anything with ``.shape`` (Tensor, NDArray,
            NumPy array).

    Raises:
        ValueError: fewer than 2 dimensions (a bias has no fans).
    """
    shape = getattr(shape_or_tensor, "shape", shape_or_tensor)
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a weight of at least 2 dimensions "
                         f"((in, out) or (k, k, in, out)), got shape {shape}")
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


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
