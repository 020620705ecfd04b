"""NumPy-level ops: call a device's kernels on NumPy arrays (or Needle Tensors) without
building Tensors yourself, as Lightning Core's API does.

Inputs are float32 or float64 arrays (a non-contiguous array is copied first; any other
dtype raises :class:`~needle.errors.DTypeError`), all of one dtype. A call with NumPy inputs
returns a NumPy array (the result is downloaded); a call with Needle Tensors returns a
Tensor on their device (nothing is downloaded). ``device`` (a Needle device or its name)
defaults to the Tensors' device, else the default device (cpu); ``"auto"`` runs NumPy
inputs where this machine was measured to run them faster, the cpu for small ones
(:mod:`.crossover`). The ``*_into`` forms write
into ``out`` (a NumPy array, or a Tensor on the device), whose shape and dtype must be the
result's exactly: a mismatch raises :class:`~needle.errors.ShapeError` or
:class:`~needle.errors.DTypeError` naming both.

Layouts are NumPy's and PyTorch's: ``conv2d`` takes NCHW input and OIHW weights (Needle's
own convolution weights are (kh, kw, c_in, c_out): they are transposed here, on the host).

Example:
    >>> import numpy as np, needle.runtime as rt
    >>> a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    >>> rt.matmul2d(a, b)
    array([[3., 3., 3., 3.],
           [3., 3., 3., 3.]], dtype=float32)
"""
import numpy as np

from .. import ops
from ..autograd import Tensor, no_grad
from ..backend_ndarray.device import BackendDevice, default_device, device as device_named
from ..errors import DTypeError, ShapeError
from .trace import record

_FLOATS = ("float32", "float64")


def _placed(name, arrays, device, run):
    """``device``, or for ``"auto"`` where this call runs: where the Tensors given are, else
    the crossover's choice for these NumPy arrays (:mod:`.crossover`; ``run(dev)`` computes
    the call on ``dev``)."""
    if not (isinstance(device, str) and device == "auto"):
        return device
    if any(isinstance(a, Tensor) for a in arrays):
        return None
    from . import crossover  # noqa: PLC0415
    return crossover.choose(name, [np.asarray(a) for a in arrays], run)


def _device_of(arrays, device):
    tensors = [a for a in arrays if isinstance(a, Tensor)]
    if device is None:
        return tensors[0].device if tensors else default_device()
    return device if isinstance(device, BackendDevice) else device_named(device)


def _inputs(name, arrays, dev):
    """``(Tensors on dev, whether the caller gave Tensors)``; dtypes checked first (a dtype
    the device cannot hold is refused by the device, naming both)."""
    dtypes = []
    for i, a in enumerate(arrays):
        if isinstance(a, Tensor):
            if a.device != dev:
                raise ValueError(f"{name}: input {i} is on {a.device}, the call runs on {dev}")
            dtypes.append(a.dtype)
            continue
        kind = np.asarray(a).dtype.name
        if kind not in _FLOATS:
            raise DTypeError(f"{name}: input {i} is {kind}; NumPy-level ops take float32 or "
                             f"float64 arrays (convert it first)")
        dtypes.append(kind)
    if len(set(dtypes)) > 1:
        raise DTypeError(f"{name}: inputs of several dtypes ({', '.join(sorted(set(dtypes)))}); "
                         f"give them one")
    tensors = [a.detach() if isinstance(a, Tensor) else
               Tensor(np.ascontiguousarray(a), device=dev, dtype=dtypes[0]) for a in arrays]
    return tensors, any(isinstance(a, Tensor) for a in arrays)


def _shape_of(name, what, x, rank):
    if len(x.shape) != rank:
        raise ShapeError(f"{name}: {what} must be {rank}-D, got shape {tuple(x.shape)}")
    return tuple(x.shape)


def _result(y, as_tensor):
    return y if as_tensor else y.numpy()


def _into(name, y, out):
    """Write result ``y`` (a Tensor) into ``out`` after checking its shape and dtype."""
    shape, dtype = tuple(y.shape), y.dtype
    got_shape = tuple(out.shape)
    got_dtype = out.dtype if isinstance(out, Tensor) else np.asarray(out).dtype.name
    if got_shape != shape:
        raise ShapeError(f"{name}: out has shape {got_shape}, the result has shape {shape}")
    if got_dtype != dtype:
        raise DTypeError(f"{name}: out is {got_dtype}, the result is {dtype}")
    if isinstance(out, Tensor):
        if out.device != y.device:
            raise ValueError(f"{name}: out is on {out.device}, the result on {y.device}")
        with no_grad():
            out[...] = y
    else:
        if not out.flags.writeable:
            raise ValueError(f"{name}: out is a read-only array")
        out[...] = y.numpy()
    return out


# -- matmul ---------------------------------------------------------------------------------
def _matmul(a, b, device):
    device = _placed("matmul2d", (a, b), device, lambda dev: _result(*_matmul(a, b, dev)))
    dev = _device_of((a, b), device)
    (ta, tb), as_tensor = _inputs("matmul2d", (a, b), dev)
    (m, k), (k2, n) = _shape_of("matmul2d", "a", ta, 2), _shape_of("matmul2d", "b", tb, 2)
    if k != k2:
        raise ShapeError(f"matmul2d: a is {(m, k)} and b is {(k2, n)}: inner sizes differ")
    with no_grad():
        return ta @ tb, as_tensor


@record
def matmul2d(a, b, device=None):
    """``a @ b`` of (m, k) and (k, n) arrays."""
    y, as_tensor = _matmul(a, b, device)
    return _result(y, as_tensor)


@record
def matmul2d_into(a, b, out, device=None):
    """:func:`matmul2d` written into ``out`` (m, n); returns ``out``."""
    return _into("matmul2d_into", _matmul(a, b, device)[0], out)


# -- attention ------------------------------------------------------------------------------
def _attention(q, k, v, causal, device):
    device = _placed("attention2d", (q, k, v), device,
                     lambda dev: _result(*_attention(q, k, v, causal, dev)))
    dev = _device_of((q, k, v), device)
    (tq, tk, tv), as_tensor = _inputs("attention2d", (q, k, v), dev)
    (sq, d), (sk, dk), (sv, dv) = (_shape_of("attention2d", n, t, 2)
                                   for n, t in (("q", tq), ("k", tk), ("v", tv)))
    if dk != d or (sv, dv) != (sk, d):
        raise ShapeError(f"attention2d: q {(sq, d)}, k {(sk, dk)} and v {(sv, dv)} must share "
                         f"the head dim, and k and v the sequence")
    with no_grad():
        four = [ops.reshape(t, (1, 1) + tuple(t.shape)) for t in (tq, tk, tv)]
        y = ops.scaled_dot_product_attention(*four, causal=causal)
        return ops.reshape(y, (sq, d)), as_tensor


@record
def attention2d(q, k, v, causal=False, device=None):
    """``softmax(q kᵀ / sqrt(dim)) v`` of (seq, dim) arrays; ``causal`` masks keys after
    each query (aligned to the last key when q is shorter)."""
    y, as_tensor = _attention(q, k, v, causal, device)
    return _result(y, as_tensor)


@record
def attention2d_into(q, k, v, out, causal=False, device=None):
    """:func:`attention2d` written into ``out`` (seq_q, dim); returns ``out``."""
    return _into("attention2d_into", _attention(q, k, v, causal, device)[0], out)


# -- convolution ----------------------------------------------------------------------------
def _conv(x, w, bias, stride, padding, relu, device):
    name = "conv2d_relu" if relu else "conv2d"
    arrays = (x, w) + ((bias,) if bias is not None else ())
    device = _placed(name, arrays, device,
                     lambda dev: _result(*_conv(x, w, bias, stride, padding, relu, dev)))
    dev = _device_of(arrays, device)
    tensors, as_tensor = _inputs(name, arrays, dev)
    tx, tw = tensors[:2]
    (n, c, h, wd), (co, ci, kh, kw) = _shape_of(name, "x", tx, 4), _shape_of(name, "w", tw, 4)
    if ci != c or kh != kw:
        raise ShapeError(f"{name}: x {(n, c, h, wd)} (NCHW) and w {(co, ci, kh, kw)} (OIHW, "
                         f"square kernels) do not fit: w's in-channels must be x's channels")
    if bias is not None and tuple(tensors[2].shape) != (co,):
        raise ShapeError(f"{name}: bias has shape {tuple(tensors[2].shape)}, not ({co},)")
    with no_grad():
        y = ops.conv(tx, ops.permute(tw, (2, 3, 1, 0)), stride, padding, channels_first=True)
        if bias is not None:
            y = y + ops.broadcast_to(ops.reshape(tensors[2], (1, co, 1, 1)), y.shape)
        if relu:
            y = ops.relu(y)
        return y, as_tensor


@record
def conv2d(x, w, bias=None, stride=1, padding=1, device=None):
    """The 2-D convolution of NCHW ``x`` with OIHW ``w`` (square kernels), zero
    ``padding`` on each side, plus ``bias`` (c_out,) if given; NCHW out."""
    y, as_tensor = _conv(x, w, bias, stride, padding, False, device)
    return _result(y, as_tensor)


@record
def conv2d_relu(x, w, bias=None, stride=1, padding=1, device=None):
    """``relu(conv2d(x, w, bias, ...))``."""
    y, as_tensor = _conv(x, w, bias, stride, padding, True, device)
    return _result(y, as_tensor)


@record
def conv2d_into(x, w, out, bias=None, stride=1, padding=1, relu=False, device=None):
    """:func:`conv2d` (with ``relu``, :func:`conv2d_relu`) written into ``out``; returns
    ``out``."""
    return _into("conv2d_into", _conv(x, w, bias, stride, padding, relu, device)[0], out)

