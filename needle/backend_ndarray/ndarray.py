"""NDArray: a strided view (shape, strides, offset) over a flat device buffer.

Views are made here and only here. Every op first makes its operands compact (one
strided-copy call to the backend, skipped when already compact) and then calls one entry of
the backend op table on flat buffers.
"""
import functools
import math
import numbers
import operator

import numpy as np

from .. import _trace_state
from ..errors import DeviceMismatchError, DTypeError, ShapeError
from .device import canonical_dtype, default_device
from .device import device as lookup_device
from .numpy_backend import NumpyBackend


prod = math.prod  # of a shape (1 for ()); an alias, not a wrapper: it runs on every op


@functools.lru_cache(maxsize=4096)  # every new array asks: most shapes recur
def compact_strides(shape):
    """Row-major strides, in elements, of a compact array of ``shape``."""
    strides, acc = [], 1
    for dim in reversed(shape):
        strides.append(acc)
        acc *= dim
    return tuple(reversed(strides))


def _as_shape(shape, what):
    """``shape`` (an int or a sequence of ints, NumPy integers included) as a tuple of ints,
    or a TypeError naming it: ``(2.5, 2)`` must not be truncated to ``(2, 2)``."""
    if type(shape) is tuple:  # the common case, on every reshape: no ABC checks
        for d in shape:
            if type(d) is not int:
                break
        else:
            return shape
    if isinstance(shape, numbers.Integral):
        return (operator.index(shape),)
    try:
        return tuple([operator.index(d) for d in shape])
    except TypeError:
        raise TypeError(f"{what}: shape {shape!r} must be a tuple of integers") from None


# NumPy dtype kinds that convert to floats: float, signed and unsigned int, bool
_NUMERIC_KINDS = frozenset("fiub")
_KIND_NAMES = {"c": "complex", "O": "object", "U": "string", "S": "bytes", "V": "structured",
               "M": "datetime", "m": "timedelta"}


def _host_array(data, dtype):
    """``data`` as a C-contiguous NumPy array of ``dtype``; raises a TypeError naming what
    ``data`` is when it is not numbers (None, complex, objects, strings), instead of NaNs
    or silently dropped imaginary parts."""
    if data is None:
        raise TypeError("NDArray(None): expected array data (a number, a nested list of "
                        "numbers or a numpy array), got None")
    try:
        src = data if isinstance(data, np.ndarray) else np.asarray(data)
    except ValueError as e:  # ragged nested lists
        raise ShapeError(f"NDArray: the data is not a rectangular array ({e})") from None
    kind = src.dtype.kind
    if kind not in _NUMERIC_KINDS:
        what = _KIND_NAMES.get(kind, str(src.dtype))
        if kind == "O":
            if src.ndim == 0 and src.item() is None:
                raise TypeError("NDArray(None): expected array data (a number, a nested list "
                                "of numbers or a numpy array), got None")
            held = sorted({type(v).__name__ for v in src.reshape(-1)[:1000]})
            raise DTypeError(f"cannot make an NDArray from an object array (holding "
                             f"{', '.join(held) or 'nothing'}); Needle holds float32 / float64 "
                             f"numbers: convert the data first")
        if kind == "c":
            raise DTypeError(f"cannot make an NDArray from complex data ({src.dtype}): Needle "
                             f"holds float32 / float64; pass .real, .imag or abs() explicitly")
        raise DTypeError(f"cannot make an NDArray from {what} data ({src.dtype}); Needle "
                         f"holds float32 / float64 numbers")
    return np.asarray(src, dtype=dtype, order="C")  # (ascontiguousarray makes 0-d 1-d)


def _normalize_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for ax in axes:
        if not -ndim <= ax < max(ndim, 1):
            raise ShapeError(f"axis {ax} is out of range for an array of {ndim} dimensions")
        out.append(ax % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axis in {axis}")
    return tuple(out)


def broadcast_shapes(*shapes):
    """NumPy's broadcasting rule; raises :class:`ShapeError` naming both shapes."""
    ndim = max(len(s) for s in shapes)
    out = []
    for i in range(ndim):
        dims = {s[i - ndim + len(s)] for s in shapes if i - ndim + len(s) >= 0} - {1}
        if len(dims) > 1:
            raise ShapeError(f"shapes {' and '.join(map(str, shapes))} cannot be broadcast together")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


class NDArray:
    """An n-dimensional array on a Needle device.

    Args:
        other: an NDArray, a numpy array or anything ``numpy.asarray`` accepts.
        device: where to put it (default ``needle.default_device()``).
        dtype: ``"float32"`` (default) or ``"float64"``.

    Example:
        >>> a = NDArray(np.arange(6).reshape(2, 3), device=needle.cpu())
        >>> a.permute((1, 0)).numpy().shape
        (3, 2)
    """

    def __init__(self, other, device=None, dtype=None):
        if isinstance(device, str):
            device = lookup_device(device)
        if isinstance(other, NDArray):
            device = device or other.device
            dtype = canonical_dtype(dtype or other.dtype)
            if device == other.device and dtype == other.dtype:
                self._init(other.compact() if not other.is_compact() else other._copy())
            else:
                self._init(NDArray(other.numpy(), device=device, dtype=dtype))
            return
        device = device or default_device()
        dtype = device.check_dtype(dtype or "float32")
        array = _host_array(other, dtype)
        # a conversion made a new array nobody else sees: it can become the buffer itself
        fresh = array is not other and array.flags.owndata and \
            isinstance(other, (np.ndarray, list, tuple, numbers.Number))
        self._init(NDArray._from_owned_numpy(array, device) if fresh
                   else NDArray._from_numpy_copy(array, device, dtype))

    #: classic Needle's ``NDArray.compact_strides(shape)``
    compact_strides = staticmethod(compact_strides)

    def _init(self, other):
        self._shape, self._strides, self._offset = other._shape, other._strides, other._offset
        self._device, self._handle, self._dtype = other._device, other._handle, other._dtype
        self._compact = other._compact

    @staticmethod
    def _from_numpy_copy(array, device, dtype):
        """A new compact NDArray holding a copy of C-contiguous ``array`` (of ``dtype``)."""
        out = NDArray._make(array.shape, None, device, None, 0, dtype)
        if array.size:
            device.backend.from_numpy(array, out._handle)
        return out

    @staticmethod
    def _from_owned_numpy(array, device=None):
        """An NDArray holding ``array``, a C-contiguous NumPy array of a Needle dtype that the
        caller hands over (it must not use it afterwards). On the cpu the array itself
        becomes the buffer, with no copy; other devices allocate and copy (``from_numpy``).
        ``needle.init`` draws random tensors straight into such arrays."""
        device = device or default_device()
        dtype = device.check_dtype(array.dtype)
        if isinstance(device.backend, NumpyBackend) and array.flags.c_contiguous and \
                array.flags.writeable and array.dtype.isnative:
            return NDArray._make(array.shape, None, device, array.reshape(-1), 0, dtype)
        return NDArray._from_numpy_copy(np.asarray(array, order="C"), device, dtype)

    @staticmethod
    def make(shape, strides=None, device=None, handle=None, offset=0, dtype="float32"):
        """A new NDArray over ``handle`` (allocated if ``None``) with the given layout."""
        return NDArray._make(_as_shape(shape, "NDArray.make"),
                             None if strides is None else tuple(strides),
                             device or default_device(), handle, offset, canonical_dtype(dtype))

    @staticmethod
    def _make(shape, strides, device, handle, offset, dtype):
        """:meth:`make` for arguments already in canonical form (tuples of ints, a Device,
        a dtype name): every op allocates its output through here."""
        array = NDArray.__new__(NDArray)
        array._shape = shape
        array._strides = compact_strides(shape) if strides is None else strides
        array._offset, array._device, array._dtype = offset, device, dtype
        array._compact = None if strides is not None or handle is not None else True
        array._handle = device.backend.alloc(prod(shape), dtype) if handle is None else handle
        return array

    def _copy(self):
        out = self._new()
        if self.size:
            self._backend.compact(self._handle, out._handle, self._shape, self._strides, self._offset)
        return out

    # -- properties -----------------------------------------------------------------------
    shape = property(lambda self: self._shape)
    strides = property(lambda self: self._strides)
    offset = property(lambda self: self._offset)
    device = property(lambda self: self._device)
    dtype = property(lambda self: self._dtype)
    ndim = property(lambda self: len(self._shape))
    size = property(lambda self: prod(self._shape))
    _backend = property(lambda self: self._device.backend)

    def __repr__(self):
        return f"NDArray({self.numpy()}, device={self.device})"

    def __str__(self):
        return str(self.numpy())

    def __len__(self):
        return self._shape[0]

    @property
    def flat(self):
        """The elements in row-major order as a writable 1-D sequence (as ``numpy``'s
        ``ndarray.flat``): ``a.flat[i]`` reads element ``i`` as a NumPy scalar and
        ``a.flat[i] = v`` (or ``a.flat[i] += eps``, as classic Needle's numerical gradient
        checks do) writes it in place, on any device. See :class:`classic.FlatView`."""
        from .classic import FlatView
        return FlatView(self)

    def numpy(self):
        """A numpy copy of the array (the only device-to-host transfer)."""
        if self.size == 0:
            return np.empty(self._shape, dtype=self._dtype)
        return self._backend.to_numpy(self._handle, self._shape, self._strides, self._offset)

    def to(self, device):
        return self if device == self.device else NDArray(self, device=device)

    def astype(self, dtype):
        return self if canonical_dtype(dtype) == self.dtype else NDArray(self, dtype=dtype)

    def fill(self, value):
        """Set every element to ``value`` in place."""
        if self.is_compact():
            self._backend.fill(self._handle, value)
        else:
            self[...] = value

    # -- views ----------------------------------------------------------------------------
    def is_compact(self):
        """Row-major, offset 0 and covering its whole buffer: usable as a flat buffer."""
        if self._compact is None:  # a view's layout never changes: decide once
            self._compact = (self._offset == 0 and self._strides == compact_strides(self._shape)
                             and self.size == self._handle.size)
        return self._compact

    def memory_order(self):
        """The axis order ``p`` in which this array walks its whole buffer row-major (so
        ``self.permute(p)`` is compact, up to the strides of size-1 axes), or ``None``. A
        compact array gives ``(0, 1, ...)``;
        an NCHW view of a compact NHWC array gives ``(0, 2, 3, 1)``. Such *dense* arrays can
        be handed to elementwise kernels as flat buffers."""
        if self.is_compact():
            return tuple(range(len(self._shape)))
        if self._offset != 0 or self.size != self._handle.size:
            return None
        order = tuple(sorted(range(len(self._shape)), key=lambda a: -self._strides[a]))
        shape = tuple(self._shape[a] for a in order)
        strides = tuple(self._strides[a] for a in order)
        # size-1 axes may carry any stride: only the others must be compact
        if all(d == 1 or s == c for d, s, c in zip(shape, strides, compact_strides(shape))):
            return order
        return None

    def compact(self):
        """This array if compact, else a compact copy (one backend ``compact`` call)."""
        return self if self.is_compact() else self._copy()

    def as_strided(self, shape, strides, offset=None):
        """A view with an arbitrary layout over the same buffer (no bounds check)."""
        if len(shape) != len(strides):
            raise ShapeError(f"as_strided: shape {shape} and strides {strides} differ in length")
        return NDArray._make(tuple(shape), tuple(strides), self._device, self._handle,
                             self._offset if offset is None else offset, self._dtype)

    def reshape(self, new_shape):
        """A view with ``new_shape`` (one entry may be -1); copies first if not compact."""
        new_shape = _as_shape(new_shape, "reshape")
        if new_shape.count(-1) > 1:
            raise ShapeError(f"reshape: at most one -1 allowed in {new_shape}")
        if -1 in new_shape:
            known = prod(d for d in new_shape if d != -1)
            if known == 0 or self.size % known:
                raise ShapeError(f"cannot reshape array of shape {self._shape} into {new_shape}")
            new_shape = tuple(self.size // known if d == -1 else d for d in new_shape)
        if prod(new_shape) != self.size or any(d < 0 for d in new_shape):
            raise ShapeError(f"cannot reshape array of shape {self._shape} into {new_shape}")
        return self.compact().as_strided(new_shape, compact_strides(new_shape))

    def permute(self, new_axes):
        """A view with the axes reordered: ``new_axes[i]`` is the old axis placed at ``i``."""
        ndim = len(self._shape)
        axes = [a + ndim if a < 0 else a for a in new_axes]  # (lists: this runs on every conv)
        if sorted(axes) != list(range(ndim)):
            raise ShapeError(f"permute: {tuple(new_axes)} is not a permutation of {ndim} axes")
        return NDArray._make(tuple([self._shape[a] for a in axes]),
                             tuple([self._strides[a] for a in axes]), self._device,
                             self._handle, self._offset, self._dtype)

    def broadcast_to(self, new_shape):
        """A view repeating size-1 axes (and new leading axes) with stride 0."""
        new_shape = tuple(new_shape)
        lead = len(new_shape) - self.ndim
        if lead < 0 or any(d != n and d != 1 for d, n in zip(self._shape, new_shape[lead:])):
            raise ShapeError(f"cannot broadcast shape {self._shape} to {new_shape}")
        strides = (0,) * lead + tuple(
            0 if d == 1 and n != 1 else s
            for d, n, s in zip(self._shape, new_shape[lead:], self._strides))
        return self.as_strided(new_shape, strides)

    def flip(self, axes=None):
        """A view reversed along ``axes`` (all by default): negative strides."""
        axes = _normalize_axes(axes, self.ndim)
        offset, strides = self._offset, list(self._strides)
        for ax in axes:
            offset += (self._shape[ax] - 1) * strides[ax] if self._shape[ax] else 0
            strides[ax] = -strides[ax]
        return self.as_strided(self._shape, tuple(strides), offset)

    def _view_of(self, idxs):
        """The view selected by a NumPy-style basic index (ints, slices, ``...``, None)."""
        if not isinstance(idxs, tuple):
            idxs = (idxs,)
        for idx in idxs:
            if not (idx is None or idx is Ellipsis or isinstance(idx, (slice, numbers.Integral))):
                raise TypeError(f"NDArray supports int, slice, ... and None indices, not {idx!r}")
        if sum(idx is Ellipsis for idx in idxs) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        used = sum(idx is not None and idx is not Ellipsis for idx in idxs)
        if used > self.ndim:
            raise IndexError(f"too many indices ({used}) for an array of {self.ndim} dimensions")
        if Ellipsis in idxs:
            at = idxs.index(Ellipsis)
            idxs = idxs[:at] + (slice(None),) * (self.ndim - used) + idxs[at + 1:]
        else:
            idxs = idxs + (slice(None),) * (self.ndim - used)
        shape, strides, offset, axis = [], [], self._offset, 0
        for idx in idxs:
            if idx is None:
                shape.append(1)
                strides.append(0)
                continue
            dim, stride = self._shape[axis], self._strides[axis]
            if isinstance(idx, slice):
                start, stop, step = idx.indices(dim)
                length = len(range(start, stop, step))
                offset += start * stride if length else 0
                shape.append(length)
                strides.append(stride * step)
            else:
                if not -dim <= idx < dim:
                    raise IndexError(f"index {idx} is out of bounds for axis {axis} with size {dim}")
                offset += (idx % dim) * stride
            axis += 1
        return self.as_strided(tuple(shape), tuple(strides), offset)

    def __getitem__(self, idxs):
        return self._view_of(idxs)

    def __setitem__(self, idxs, other):
        view = self._view_of(idxs)
        if view.size == 0:
            return
        if isinstance(other, NDArray):
            self._check_compatible(other, "setitem")
            src = other.broadcast_to(view.shape).compact()
            self._backend.ewise_setitem(src._handle, self._handle, view.shape, view.strides,
                                        view.offset)
        else:
            value = other if getattr(other, "_traced", False) else float(other)
            self._backend.scalar_setitem(view.size, value, self._handle, view.shape,
                                         view.strides, view.offset)

    def pad(self, axes):
        """Zero padding: ``axes[i] = (before, after)`` for every axis."""
        if len(axes) != self.ndim or any(lo < 0 or hi < 0 for lo, hi in axes):
            raise ShapeError(f"pad needs one non-negative (before, after) pair per axis of "
                             f"{self._shape}, got {axes}")
        out = full(tuple(d + lo + hi for d, (lo, hi) in zip(self._shape, axes)), 0.0,
                   dtype=self.dtype, device=self.device)
        out[tuple(slice(lo, lo + d) for d, (lo, _) in zip(self._shape, axes))] = self
        return out

    # -- elementwise ----------------------------------------------------------------------
    def _check_compatible(self, other, op):
        if other.device != self.device:
            raise DeviceMismatchError(f"{op}: operands are on different devices "
                                      f"({self.device} and {other.device}); move one with .to()")
        if other.dtype != self.dtype:
            raise DTypeError(f"{op}: operands have different dtypes ({self.dtype} and {other.dtype})")

    def _new(self, shape=None):
        """A new compact array of this dtype on this device (``shape`` defaults to ours)."""
        return NDArray._make(self._shape if shape is None else tuple(shape), None, self._device,
                             None, 0, self._dtype)

    def _new_like(self, *others):
        """The output of an elementwise op on self (and ``others``, same shape): it takes
        self's layout when every operand shares a dense layout, so an op on, say, NCHW views
        of NHWC buffers runs on the flat buffers without compacting them. Returns the output
        and the operands to hand to the backend."""
        if self.is_compact() or self.memory_order() is None or \
                any(o._strides != self._strides or o.memory_order() is None for o in others):
            return self._new(), (self.compact(),) + tuple(o.compact() for o in others)
        handle = self._backend.alloc(self._handle.size, self._dtype)
        return NDArray._make(self._shape, self._strides, self._device, handle, 0,
                             self._dtype), (self,) + others

    def _binary(self, other, op):
        if isinstance(other, NDArray):
            self._check_compatible(other, op)
            if other.shape != self.shape:
                raise ShapeError(f"{op}: shapes {self.shape} and {other.shape} differ")
            out, (a, b) = self._new_like(other)
            if out.size:
                self._backend.binary(op, a._handle, b._handle, out._handle)
        elif isinstance(other, numbers.Number):
            out, (a,) = self._new_like()
            if out.size:
                # needle.compile's traced numbers (optimizer hyperparameters) pass as they are
                value = other if getattr(other, "_traced", False) else float(other)
                self._backend.scalar(op, a._handle, value, out._handle)
        else:
            return NotImplemented
        return out

    def unary(self, op):
        out, (a,) = self._new_like()
        if out.size:
            self._backend.unary(op, a._handle, out._handle)
        return out

    __add__ = __radd__ = lambda self, other: self._binary(other, "add")
    __sub__ = lambda self, other: self._binary(other, "sub")
    __rsub__ = lambda self, other: (-self)._binary(other, "add")
    __mul__ = __rmul__ = lambda self, other: self._binary(other, "mul")
    __truediv__ = lambda self, other: self._binary(other, "div")
    __rtruediv__ = lambda self, other: (self ** -1.0)._binary(other, "mul")
    __pow__ = lambda self, other: self._binary(other, "pow")
    __neg__ = lambda self: self.unary("neg")
    __eq__ = lambda self, other: self._binary(other, "eq")
    __ne__ = lambda self, other: self._binary(other, "ne")
    __lt__ = lambda self, other: self._binary(other, "lt")
    __le__ = lambda self, other: self._binary(other, "le")
    __gt__ = lambda self, other: self._binary(other, "gt")
    __ge__ = lambda self, other: self._binary(other, "ge")
    __hash__ = None
    maximum = lambda self, other: self._binary(other, "maximum")
    minimum = lambda self, other: self._binary(other, "minimum")
    exp = lambda self: self.unary("exp")
    log = lambda self: self.unary("log")
    tanh = lambda self: self.unary("tanh")
    sigmoid = lambda self: self.unary("sigmoid")
    sqrt = lambda self: self.unary("sqrt")
    relu = lambda self: self.unary("relu")
    abs = lambda self: self.unary("abs")
    sin = lambda self: self.unary("sin")
    cos = lambda self: self.unary("cos")

    # -- reductions -----------------------------------------------------------------------
    def _reduce(self, op, axis, keepdims):
        axes = _normalize_axes(axis, self.ndim)
        kept = tuple(a for a in range(self.ndim) if a not in axes)
        reduce_size = prod(self._shape[a] for a in axes)
        out_shape = tuple(1 if a in axes else d for a, d in enumerate(self._shape)) if keepdims \
            else tuple(self._shape[a] for a in kept)
        if reduce_size and 0 in self._strides:  # a broadcast view: never materialise it
            repeated = tuple(a for a, (d, s) in enumerate(zip(self._shape, self._strides))
                             if s == 0 and d > 1)
            if repeated and prod(out_shape):
                return self._reduce_broadcast(op, axes, repeated, out_shape)
        out = self._new(out_shape)
        if reduce_size == 0:
            if op == "max":
                raise ShapeError(f"max over a zero-size axis of shape {self._shape}")
            out.fill(0.0)
        elif out.size:
            src = self.permute(kept + axes).compact()
            self._backend.reduce(op, src._handle, out._handle, reduce_size)
        return out

    def _reduce_broadcast(self, op, axes, repeated, out_shape):
        """:meth:`_reduce` of a view whose ``repeated`` axes have stride 0: along them every
        element is the same one, so they are read once (the view at index 0 on those axes).
        A reduced repeated axis scales a sum by its size and leaves a max alone; a kept one
        is broadcast back onto the (small) result. ``broadcast_to(x, (2**31,)).sum()`` thus
        reads one element instead of copying 8 GiB."""
        shape = self._shape
        once = self.as_strided(tuple(1 if a in repeated else d for a, d in enumerate(shape)),
                               self._strides)
        out = once._reduce(op, axes, True)
        factor = prod(shape[a] for a in repeated if a in axes)
        if op == "sum" and factor != 1:
            out = out * float(factor)
        if any(a not in axes for a in repeated):
            out = out.broadcast_to(tuple(1 if a in axes else d for a, d in enumerate(shape)))
            out = out.compact()
        return out.reshape(out_shape)

    def sum(self, axis=None, keepdims=False):
        return self._reduce("sum", axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return self._reduce("max", axis, keepdims)

    # -- DLPack (needle.backend_ndarray.dlpack) -------------------------------------------
    def __dlpack__(self, stream=None, **kwargs):
        """A DLPack capsule sharing this array's memory (cpu and cuda/cudnn; no copy unless
        the view has negative strides, which DLPack consumers reject)."""
        from .dlpack import to_dlpack
        return to_dlpack(self, stream=stream, **kwargs)

    def __dlpack_device__(self):
        from .dlpack import dlpack_device
        return dlpack_device(self)

    # -- matmul and conv ------------------------------------------------------------------
    def __matmul__(self, other):
        """Matrix product of (..., m, k) and (..., k, n) arrays with equal batch shapes."""
        device, a_shape, b_shape = self._device, self._shape, other._shape
        if other._device is not device or other._dtype != self._dtype:  # (devices are unique)
            self._check_compatible(other, "matmul")
        if len(a_shape) < 2 or len(b_shape) < 2:
            raise ShapeError(f"matmul needs operands of at least 2 dimensions, got shapes "
                             f"{a_shape} and {b_shape}")
        (m, k), (k2, n), batch_shape = a_shape[-2:], b_shape[-2:], a_shape[:-2]
        if k != k2 or batch_shape != b_shape[:-2]:
            raise ShapeError(f"matmul: shapes {a_shape} and {b_shape} are not aligned")
        out = NDArray._make(batch_shape + (m, n), None, device, None, 0, self._dtype)
        batch = prod(batch_shape)
        if m and n and batch:
            if k == 0:
                out.fill(0.0)
            else:  # (_compact is None for a view not yet asked: compact() decides)
                a = self if self._compact else self.compact()
                b = other if other._compact else other.compact()
                device.backend.matmul(a._handle, b._handle, out._handle, batch, m, k, n)
        return out

    def conv2d(self, weight, stride=1):
        """Valid 2-D convolution of an NHWC array with (k, k, c_in, c_out) weights."""
        self._check_compatible(weight, "conv")
        if self.ndim != 4 or weight.ndim != 4:
            raise ShapeError(f"conv expects a 4-D NHWC input and (k, k, c_in, c_out) weight, "
                             f"got shapes {self.shape} and {weight.shape}")
        n, h, w, c = self.shape
        k, k2, c_in, c_out = weight.shape
        if k != k2 or c_in != c or k > h or k > w or stride < 1:
            raise ShapeError(f"conv: input {self.shape} (NHWC) does not fit weight "
                             f"{weight.shape} (k, k, c_in, c_out) with stride {stride}")
        out = self._new((n, (h - k) // stride + 1, (w - k) // stride + 1, c_out))
        if out.size:
            self._backend.conv2d(self.compact()._handle, weight.compact()._handle, out._handle,
                                 self.shape, k, c_out, stride)
        return out


# -- module-level array API (used by needle.ops) ------------------------------------------
def empty(shape, dtype="float32", device=None):
    return NDArray.make(tuple(shape), device=device or default_device(), dtype=dtype)


def full(shape, fill_value, dtype="float32", device=None):
    out = empty(shape, dtype=dtype, device=device)
    out.fill(fill_value)
    return out


def where(cond, a, b):
    """``a`` where ``cond`` is nonzero, else ``b``, element by element (``np.where``).

    A true select: a NaN or infinity in the element not chosen does not reach the result.
    ``cond`` holds masks (1.0 / 0.0, as comparisons make them) in the dtype of ``a`` and
    ``b``; all three share one device, dtype and shape (callers broadcast first). The result
    takes the layout of ``cond`` when all three share a dense one (see ``_new_like``).

    Example:
        >>> x = NDArray([1.0, -2.0, 3.0], device=needle.cpu())
        >>> where(x > 0, x, x * 0.0).numpy()
        array([1., 0., 3.], dtype=float32)
    """
    for other in (a, b):
        cond._check_compatible(other, "where")
        if other.shape != cond.shape:
            raise ShapeError(f"where: shapes {cond.shape}, {a.shape} and {b.shape} differ "
                             f"(broadcast them first)")
    out, (c, x, y) = cond._new_like(a, b)
    if out.size:
        cond._backend.select(c._handle, x._handle, y._handle, out._handle)
    return out


def stack(arrays, axis=0):
    """Join same-shape arrays along a new axis."""
    if not arrays:
        raise ValueError("stack needs at least one array")
    first = arrays[0]
    for a in arrays[1:]:
        first._check_compatible(a, "stack")
        if a.shape != first.shape:
            raise ShapeError(f"stack: all arrays need the same shape, got {first.shape} and {a.shape}")
    (axis,) = _normalize_axes(axis, first.ndim + 1)
    out = empty(first.shape[:axis] + (len(arrays),) + first.shape[axis:], first.dtype,
                first.device)
    for i, a in enumerate(arrays):
        out[(slice(None),) * axis + (i,)] = a
    return out


def split(a, axis=0):
    """The slices of ``a`` along ``axis``, each compact, with that axis removed."""
    (axis,) = _normalize_axes(axis, a.ndim)
    return [a[(slice(None),) * axis + (i,)].compact() for i in range(a.shape[axis])]


def concatenate(arrays, axis=0):
    if not arrays:
        raise ValueError("concatenate needs at least one array")
    first = arrays[0]
    (axis,) = _normalize_axes(axis, first.ndim)
    for a in arrays[1:]:
        first._check_compatible(a, "concatenate")
        if a.ndim != first.ndim or a.shape[:axis] + a.shape[axis + 1:] != \
                first.shape[:axis] + first.shape[axis + 1:]:
            raise ShapeError(f"concatenate along axis {axis}: shapes {first.shape} and "
                             f"{a.shape} do not match")
    total = sum(a.shape[axis] for a in arrays)
    out = empty(first.shape[:axis] + (total,) + first.shape[axis + 1:], first.dtype, first.device)
    start = 0
    for a in arrays:
        out[(slice(None),) * axis + (slice(start, start + a.shape[axis]),)] = a
        start += a.shape[axis]
    return out


def one_hot_host(index, n, dtype="float32"):
    """Rows ``index`` (an int64 array of labels in ``[0, n)``) of the ``n``-class identity,
    as a new host array of shape ``index.shape + (n,)``: the size of the result, never of
    the ``n x n`` identity."""
    out = np.zeros(np.shape(index) + (n,), dtype=canonical_dtype(dtype))
    np.put_along_axis(out, np.asarray(index)[..., None], 1, axis=-1)
    return out


RANDOM_CHUNK = 1 << 20  # elements drawn per NumPy call by random_host


def random_host(sample, shape, dtype="float32"):
    """A new C-contiguous host array of ``shape`` and ``dtype`` filled by ``sample(n)`` (a
    NumPy draw of ``n`` values, float64 or bool) in chunks of :data:`RANDOM_CHUNK`: the
    float64 draw never exists whole, so the peak is the result plus one chunk. NumPy's
    global legacy generator (``np.random.seed``) gives the same stream drawn in chunks as
    in one call, so the values are those of ``sample(size).astype(dtype)``."""
    shape = _as_shape(shape, "random")
    if _trace_state.ACTIVE is not None:
        _trace_state.ACTIVE.refuse("a random draw (init.rand / randn / randb, Dropout in "
                                   "training mode)", "it would be frozen into the graph")
    out = np.empty(prod(shape), dtype=canonical_dtype(dtype))
    for start in range(0, out.size, RANDOM_CHUNK):
        stop = min(start + RANDOM_CHUNK, out.size)
        out[start:stop] = sample(stop - start)
    return out.reshape(shape)
