"""Classic Needle's (CMU 10-414/714) array API on NDArrays: the module-level functions
course code calls as ``import needle.backend_ndarray as nd; nd.exp(a)``, and
``NDArray.flat`` (:class:`FlatView`), which its numerical gradient checks write through."""
import numbers
import operator

import numpy as np

from ..errors import ShapeError
from .ndarray import NDArray


def array(a, dtype="float32", device=None):
    """``NDArray(a, device=device, dtype=dtype)``: a new array holding a copy of ``a``."""
    return NDArray(a, device=device, dtype=dtype)


def broadcast_to(array, new_shape):
    return array.broadcast_to(new_shape)


def reshape(array, new_shape):
    return array.reshape(new_shape)


def maximum(a, b):
    return a.maximum(b)


def log(a):
    return a.log()


def exp(a):
    return a.exp()


def tanh(a):
    return a.tanh()


def sum(a, axis=None, keepdims=False):  # noqa: A001 - classic Needle's name
    return a.sum(axis=axis, keepdims=keepdims)


def flip(a, axes):
    return a.flip(axes)


class FlatView:
    """``NDArray.flat``: an array's elements in row-major order, readable and writable one
    by one on any device.

    ``flat[i]`` (``i`` an int, negative from the end) is a NumPy scalar; ``flat[i] = v``
    writes that element of the device buffer in place, so ``x.flat[i] += eps`` nudges one
    element (classic Needle's numerical gradient check does it to
    ``tensor.realize_cached_data()``). For a compact array ``i`` is the buffer position; for
    a view it is the row-major position in the view (the buffer element it maps to is
    written). Slices read as NumPy arrays and assign from a number or an array-like.
    Writing through a broadcast view raises ValueError: one element stands for several.
    ``len``, iteration and ``numpy()`` read the whole array once.
    """

    __slots__ = ("_array",)

    def __init__(self, array):
        self._array = array

    def __len__(self):
        return self._array.size

    def __iter__(self):
        return iter(self.numpy())

    def numpy(self):
        """A 1-D NumPy copy of the elements."""
        return self._array.numpy().reshape(-1)

    def __array__(self, dtype=None, copy=None):
        out = self.numpy()
        return out if dtype is None else out.astype(dtype)

    def __repr__(self):
        return f"FlatView({self.numpy()}, device={self._array.device})"

    def _position(self, i):
        """The buffer position of row-major element ``i`` of the view."""
        a, n = self._array, self._array.size
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"flat indices must be integers or slices, not "
                            f"{type(i).__name__}") from None
        if not -n <= i < n:
            raise IndexError(f"flat index {i} is out of bounds for an array of size {n}")
        i %= n
        pos = a._offset
        for d, s in zip(reversed(a._shape), reversed(a._strides)):
            i, r = divmod(i, d)
            pos += r * s
        return pos

    def _step(self):
        """The buffer stride between consecutive row-major elements when it is the same for
        all of them (compact arrays, 1-D slices), else None."""
        a = self._array
        dims = [(d, s) for d, s in zip(a._shape, a._strides) if d != 1]
        if not dims:
            return 1
        step = dims[-1][1]
        expect = step
        for d, s in reversed(dims):
            if s != expect:
                return None
            expect = s * d
        return step

    def _check_writable(self):
        a = self._array
        if any(s == 0 and d > 1 for d, s in zip(a._shape, a._strides)):
            raise ValueError(f"cannot write through .flat of a broadcast view (shape "
                             f"{a._shape}, strides {a._strides}): one buffer element stands "
                             f"for several; write to a compact() copy")

    def __getitem__(self, i):
        a = self._array
        if isinstance(i, slice):
            return self.numpy()[i]
        pos = self._position(i)
        return a._backend.to_numpy(a._handle, (1,), (1,), pos)[0]

    def __setitem__(self, i, value):
        a = self._array
        self._check_writable()
        if isinstance(value, NDArray):
            value = value.numpy()
        if not isinstance(i, slice):
            pos = self._position(i)
            value = np.asarray(value)
            if value.size != 1:
                raise ShapeError(f"flat[{i}] = value needs one value, got shape {value.shape}")
            a._backend.scalar_setitem(1, float(value.reshape(-1)[0]), a._handle, (1,), (1,), pos)
            return
        start, stop, step = i.indices(a.size)
        count = len(range(start, stop, step))
        if count == 0:
            return
        stride = self._step()
        if stride is None:  # no single stride: update a host copy, write the view back
            host = a.numpy()
            host.reshape(-1)[i] = value
            a[...] = NDArray(host, device=a.device, dtype=a.dtype)
            return
        view = a.as_strided((count,), (stride * step,), a._offset + start * stride)
        if isinstance(value, numbers.Number):
            view[...] = value
        else:
            values = np.broadcast_to(np.asarray(value, dtype=a.dtype), (count,))
            view[...] = NDArray(values, device=a.device, dtype=a.dtype)
