"""Reverse-mode automatic differentiation: Value, Tensor, TensorOp and backward.

A Tensor is a node of the op graph: it remembers the op that made it and its inputs, and
holds its value as an NDArray (``cached_data``). ``backward()`` walks the graph in reverse
topological order, asking each op for the gradients of its inputs.
"""
import contextlib
import numbers

import numpy as np

from . import backend_ndarray as nd
from .backend_ndarray import Device, NDArray
from .errors import DeviceMismatchError, DTypeError, ShapeError

_GRAD_ENABLED = [True]


class no_grad(contextlib.ContextDecorator):  # noqa: N801 - named like a function, as in PyTorch
    """Within this block (or decorated function), ops record no graph: inference, optimizer
    updates, backward. A class rather than a generator: entering costs ~0.3 us, not ~2."""

    def __enter__(self):
        _GRAD_ENABLED.append(False)
        return self

    def __exit__(self, *exc):
        _GRAD_ENABLED.pop()
        return False


def grad_enabled():
    return _GRAD_ENABLED[-1]


class Op:
    """An operation on Values: ``compute`` on NDArrays and ``gradient`` as Tensor ops."""

    def __call__(self, *args):
        raise NotImplementedError

    def compute(self, *args):
        """Forward on raw NDArrays; returns an NDArray (or a tuple for tuple ops)."""
        raise NotImplementedError

    def gradient(self, out_grad, node):
        """Gradients of the output w.r.t. each input, as Tensors, given ``out_grad``."""
        raise NotImplementedError

    def gradient_as_tuple(self, out_grad, node):
        grad = self.gradient(out_grad, node)
        return tuple(grad) if isinstance(grad, (tuple, list)) else (grad,)


class Value:
    """A node of the graph: an op, its inputs and its computed value. Values are computed
    eagerly, when made (``make_from_op``), so ``cached_data`` is always set."""

    op = None
    inputs = ()
    cached_data = None
    requires_grad = False
    #: ``[version]``, bumped by every in-place write (optimizer updates, ``.data =``,
    #: ``__setitem__``) and shared by the tensors that view one buffer (``detach()``,
    #: ``.data``, reshape, permute, slices...), as PyTorch's version counter
    _counter = None
    #: the versions of the inputs when this node was made; ``backward()`` compares them
    _input_versions = ()
    #: this node's own version when it was made (its gradient may read its own value)
    _own_version = 0

    @property
    def _version(self):
        return self._counter[0]

    @_version.setter
    def _version(self, value):
        self._counter[0] = value

    def realize_cached_data(self):
        if self.cached_data is None:
            self.cached_data = self.op.compute(*[x.realize_cached_data() for x in self.inputs])
        return self.cached_data

    def is_leaf(self):
        return self.op is None

    def _init_leaf(self, cached_data, requires_grad, counter=None):
        self.op, self.inputs = None, []
        self.cached_data, self.requires_grad = cached_data, requires_grad
        self._counter = [0] if counter is None else counter

    @classmethod
    def make_const(cls, data, requires_grad=False):
        value = cls.__new__(cls)
        value._init_leaf(data, requires_grad)
        return value

    @classmethod
    def make_from_op(cls, op, inputs):
        # runs on every op: plain loops, and no graph bookkeeping when nothing will
        # differentiate through the result
        device, dtype, data = None, None, []
        for x in inputs:
            try:
                d = x.cached_data  # inputs were computed when they were made
            except AttributeError:
                raise TypeError(f"{type(op).__name__}: expected needle Tensors, got "
                                f"{type(x).__name__}; wrap it with needle.Tensor(...)") from None
            data.append(d)
            if isinstance(x, Tensor):
                if device is None:
                    device, dtype = d._device, d._dtype
                elif d._device is not device and d._device != device:
                    raise DeviceMismatchError(
                        f"{type(op).__name__}: inputs are on different devices ({device} and "
                        f"{d._device}); move them with .to()")
                elif d._dtype != dtype:
                    raise DTypeError(f"{type(op).__name__}: inputs have different dtypes "
                                     f"({dtype} and {d._dtype}); convert one with .astype()")
        value = cls.__new__(cls)
        out = value.cached_data = op.compute(*data)
        try:  # (zero cost when nothing raises: TensorTuple ops have tuples here)
            shared = cls is Tensor and out._handle is data[0]._handle
        except IndexError:
            shared = False
        except AttributeError:  # an element taken from a TensorTuple: the tuple's counter, so
            # that a write into it reaches the op that made the tuple (LSTMLayer reads its
            # outputs in its gradient)
            shared = cls is Tensor and isinstance(data[0], tuple) and \
                any(out._handle is d._handle for d in data[0])
        if shared:
            # a view of the first input (reshape, permute, slice...): one buffer, one counter
            first = inputs[0]
            value._counter, value._own_version = first._counter, first._counter[0]
            if getattr(first, "is_mask", False):
                value.is_mask = True
        else:
            value._counter = [0]
        if _GRAD_ENABLED[-1]:
            for x in inputs:
                if x.requires_grad:
                    value.op, value.inputs, value.requires_grad = op, list(inputs), True
                    value._input_versions = [x._counter[0] for x in inputs]
                    break
        return value


class TensorOp(Op):
    """An op whose output is a single Tensor."""

    def __call__(self, *args):
        return Tensor.make_from_op(self, args)


class TensorTupleOp(Op):
    """An op whose output is a tuple of Tensors (``split``)."""

    def __call__(self, *args):
        return TensorTuple.make_from_op(self, args)


class TensorTuple(Value):
    """A tuple of Tensors as one graph node (the input of stack/concatenate)."""

    def __len__(self):
        return len(self.realize_cached_data())

    def __getitem__(self, index):
        from .ops import tuple_get_item
        return tuple_get_item(self, index)

    def tuple(self):
        return tuple(self[i] for i in range(len(self)))

    @property
    def device(self):
        return self.realize_cached_data()[0].device

    def detach(self):
        return TensorTuple.make_const(self.realize_cached_data())

    def __repr__(self):
        return f"needle.TensorTuple({self.tuple()})"


class Tensor(Value):
    """An n-dimensional array that records the ops applied to it, for ``backward()``.

    Args:
        array: a Tensor, NDArray, numpy array, Python number or nested list.
        device: a Needle device (default: the array's device, else ``needle.default_device()``).
        dtype: ``"float32"`` or ``"float64"``; by default float32 for host data (lists,
            numpy arrays) and the source's dtype for a Tensor or NDArray.
        requires_grad: whether gradients flow to this tensor.

    Comparisons (``==``, ``<``, ...) are elementwise and give 1.0 / 0.0 masks without a
    gradient; tensors hash by identity, as in PyTorch, so they can be dict keys.

    Example:
        >>> x = needle.Tensor([[1.0, 2.0]], device=needle.cpu())
        >>> (x * x).sum().backward()
        >>> x.grad.numpy()
        array([[2., 4.]], dtype=float32)
    """

    grad = None
    #: set on the 1.0 / 0.0 results of comparisons: indexing with them selects (bool masks)
    is_mask = False
    #: NumPy defers to Tensor's reflected operators (``np.float32(2) * t`` is ``t * 2``)
    __array_ufunc__ = None
    __hash__ = Value.__hash__  # by identity, although == is elementwise

    def __init__(self, array, *, device=None, dtype=None, requires_grad=True):
        mask = False
        if isinstance(array, Tensor):
            array, mask = array.realize_cached_data(), array.is_mask
        elif isinstance(array, np.ndarray) and array.dtype == bool:
            mask = True  # bool data is a mask (1.0 / 0.0): indexing with it selects
        if isinstance(array, NDArray):
            data = array.to(device or array.device).astype(dtype or array.dtype)
            if data is array:
                data = NDArray(array)  # a Tensor never aliases its source's buffer
        elif array is None:
            raise TypeError("needle.Tensor(None): expected data (a number, nested list, "
                            "numpy array, Tensor or NDArray)")
        else:
            if isinstance(array, (list, tuple)):
                try:
                    array = np.asarray(array)
                    mask = array.dtype == bool
                except ValueError:  # ragged: NDArray names the problem
                    pass
            data = NDArray(array, device=device, dtype=dtype or "float32")
        self._init_leaf(data, requires_grad)
        if mask:
            self.is_mask = True

    @staticmethod
    def make_const(data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.realize_cached_data()
        return Value.make_const.__func__(Tensor, data, requires_grad)

    # -- data access ----------------------------------------------------------------------
    @property
    def data(self):
        """The value without its history: shares the buffer and the version counter, so a
        write through it counts as a write to this tensor (PyTorch's ``.data`` does not
        count; Needle's raises in ``backward()`` rather than give a wrong gradient)."""
        return self.detach()

    @data.setter
    def data(self, value):
        value = value.realize_cached_data() if isinstance(value, Tensor) else value
        if not isinstance(value, NDArray):
            raise TypeError(f"assigning {type(value).__name__} to .data: expected a needle "
                            f"Tensor or NDArray")
        if value.shape != self.shape or value.dtype != self.dtype:
            raise ValueError(f"assigning data of shape {value.shape} / {value.dtype} to a tensor "
                             f"of shape {self.shape} / {self.dtype}")
        # a new buffer: the views of the old one keep their counter, this tensor moves on
        self.cached_data, self._counter = value, [self._counter[0] + 1]

    def detach(self):
        """The value without its history: shares the buffer and its version counter."""
        out = Tensor.make_const(self.realize_cached_data())
        out._counter, out.is_mask = self._counter, self.is_mask
        return out

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place (leaves only) and return self."""
        if not self.is_leaf():
            raise RuntimeError("requires_grad_() changes leaves only; use detach() first")
        self.requires_grad = requires_grad
        return self

    # read on every op: straight to the NDArray's fields (a value is computed when made)
    shape = property(lambda self: self.cached_data._shape)
    dtype = property(lambda self: self.cached_data._dtype)
    device = property(lambda self: self.cached_data._device)
    ndim = property(lambda self: len(self.cached_data._shape))
    size = property(lambda self: self.cached_data.size)

    def numpy(self):
        return self.realize_cached_data().numpy()

    def tolist(self):
        return self.numpy().tolist()

    def to(self, *args, device=None, dtype=None):
        """A differentiable copy on another device and/or in another dtype, as PyTorch's:
        ``t.to(needle.cuda())``, ``t.to("float64")``, ``t.to(device, dtype)``. Returns self
        when nothing changes."""
        for arg in args:
            if isinstance(arg, str) and arg.split(":")[0] in _DEVICE_NAMES:
                device = nd.device(arg.split(":")[0])  # ("cuda:0": Needle uses one GPU)
            elif isinstance(arg, Device):
                device = arg
            else:
                dtype = arg
        out = self
        if dtype is not None:
            out = out.astype(dtype)
        if device is not None and nd.device(device) != out.device:
            out = _ops().to_device(out, nd.device(device))
        return out

    def astype(self, dtype):
        """A differentiable copy in ``dtype`` (self if it already has it)."""
        return _ops().astype(self, dtype)

    def float(self):
        """float32 (differentiable; PyTorch's ``Tensor.float()``)."""
        return self.astype("float32")

    def double(self):
        """float64 (differentiable)."""
        return self.astype("float64")

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.size != 1:
            raise ValueError(f"item(): only one-element tensors can be converted to a Python "
                             f"number, got shape {self.shape}")
        return self.numpy().item()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.size != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} is "
                               f"ambiguous; use .sum(), .max() or compare elementwise")
        return bool(self.item())

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self):
        body = np.array2string(self.numpy(), separator=", ", prefix="needle.Tensor(")
        return f"needle.Tensor({body}, dtype={self.dtype}, device={self.device})"

    def __str__(self):
        return str(self.numpy())

    # -- autograd -------------------------------------------------------------------------
    def backward(self, out_grad=None):
        """Accumulate d(self)/d(leaf) into ``.grad`` of every leaf that requires grad.

        ``out_grad`` defaults to ones, for a scalar loss and, as in classic Needle, for a
        non-scalar tensor too (PyTorch asks for it there). It must be a Tensor of self's
        shape, dtype and device. As in PyTorch, leaf gradients accumulate across calls (the
        optimizer's ``reset_grad()`` clears them), and a tensor the graph used that was
        changed in place since raises a RuntimeError.
        """
        if out_grad is None:
            out_grad = Tensor(nd.full(self.shape, 1.0, dtype=self.dtype, device=self.device),
                              requires_grad=False)
        elif not isinstance(out_grad, Tensor):
            raise TypeError(f"backward: out_grad must be a needle.Tensor, got "
                            f"{type(out_grad).__name__}; wrap it with needle.Tensor(..., "
                            f"device={self.device}, dtype={self.dtype!r})")
        elif out_grad.shape != self.shape:
            raise ShapeError(f"backward: out_grad shape {out_grad.shape} differs from the "
                             f"tensor's shape {self.shape}")
        elif out_grad.device != self.device:
            raise DeviceMismatchError(f"backward: out_grad is on {out_grad.device}, the tensor "
                                      f"on {self.device}")
        elif out_grad.dtype != self.dtype:
            raise DTypeError(f"backward: out_grad is {out_grad.dtype}, the tensor "
                             f"{self.dtype}")
        compute_gradient_of_variables(self, out_grad)

    # -- operators (implemented in needle.ops; imported lazily to avoid a cycle) ------------
    def __add__(self, other):
        return _ops().add(self, other)

    def __sub__(self, other):
        return _ops().subtract(self, other)

    def __rsub__(self, other):
        return _ops().add_scalar(_ops().negate(self), _number(other, "-"))

    def __mul__(self, other):
        return _ops().multiply(self, other)

    def __truediv__(self, other):
        return _ops().divide(self, other)

    def __rtruediv__(self, other):
        return _ops().mul_scalar(_ops().power_scalar(self, -1.0), _number(other, "/"))

    def __pow__(self, other):
        return _ops().power(self, other)

    def __rpow__(self, other):
        base = Tensor.make_const(nd.full(self.shape, _number(other, "**"), self.dtype,
                                         self.device))
        return _ops().power(base, self)

    def __neg__(self):
        return _ops().negate(self)

    def __abs__(self):
        return _ops().abs(self)

    def __matmul__(self, other):
        return _ops().matmul(self, other) if isinstance(other, Tensor) else NotImplemented

    def __getitem__(self, index):
        return _ops().get_item(self, index)

    def __setitem__(self, index, value):
        """``t[index] = value`` in place (value: a Tensor or number, broadcast to the
        selection; any index ``__getitem__`` takes). On a tensor with history, or with a
        value that requires grad, the write is recorded: gradients flow to the value and to
        the unwritten elements. A leaf that requires grad cannot be written (as PyTorch):
        write its ``.data`` or under ``needle.no_grad()``."""
        _ops().set_item_(self, index, value)

    __radd__ = __add__
    __rmul__ = __mul__

    # comparisons: elementwise 1.0 / 0.0 masks, no gradient
    def __eq__(self, other):
        return _ops().compare(self, other, "eq")

    def __ne__(self, other):
        return _ops().compare(self, other, "ne")

    def __lt__(self, other):
        return _ops().compare(self, other, "lt")

    def __le__(self, other):
        return _ops().compare(self, other, "le")

    def __gt__(self, other):
        return _ops().compare(self, other, "gt")

    def __ge__(self, other):
        return _ops().compare(self, other, "ge")

    # logical ops on 1.0 / 0.0 masks
    def __and__(self, other):
        return _ops().logical_and(self, other)

    def __or__(self, other):
        return _ops().logical_or(self, other)

    def __invert__(self):
        return _ops().logical_not(self)

    # -- reductions -----------------------------------------------------------------------
    def sum(self, axes=None, keepdims=False, *, axis=None, dim=None, keepdim=None):
        """Sum over ``axes`` (``axis=``, and PyTorch's ``dim=`` / ``keepdim=``, work too)."""
        return _ops().summation(self, _axes(axes, axis, dim), _keep(keepdims, keepdim))

    def max(self, axes=None, keepdims=False, *, axis=None, dim=None, keepdim=None):
        return _ops().max(self, _axes(axes, axis, dim), _keep(keepdims, keepdim))

    def min(self, axes=None, keepdims=False, *, axis=None, dim=None, keepdim=None):
        return _ops().min(self, _axes(axes, axis, dim), _keep(keepdims, keepdim))

    def mean(self, axes=None, keepdims=False, *, axis=None, dim=None, keepdim=None):
        return _ops().mean(self, _axes(axes, axis, dim), _keep(keepdims, keepdim))

    def argmax(self, axis=None, keepdims=False, *, dim=None):
        """Index of the first maximum (of the flattened tensor when ``axis`` is None), as a
        tensor of this dtype holding integers (Needle has no integer tensors yet)."""
        return _ops().argmax(self, dim if axis is None else axis, keepdims)

    def argmin(self, axis=None, keepdims=False, *, dim=None):
        return _ops().argmin(self, dim if axis is None else axis, keepdims)

    # -- shape ----------------------------------------------------------------------------
    def reshape(self, *shape):
        return _ops().reshape(self, _shape_arg(shape))

    def view(self, *shape):
        """``reshape`` (Needle views and copies as it needs; there is no stride contract)."""
        return _ops().reshape(self, _shape_arg(shape))

    def flatten(self, start_dim=0, end_dim=-1):
        return _ops().flatten(self, start_dim, end_dim)

    def unsqueeze(self, dim):
        return _ops().unsqueeze(self, dim)

    def squeeze(self, dim=None):
        return _ops().squeeze(self, dim)

    def transpose(self, *axes):
        """Swap two axes: ``t.transpose((i, j))`` (classic Needle) or ``t.transpose(i, j)``
        (PyTorch); the last two by default."""
        return _ops().transpose(self, axes[0] if len(axes) == 1 else (axes or None))

    def permute(self, *axes):
        return _ops().permute(self, _shape_arg(axes))

    def broadcast_to(self, shape):
        return _ops().broadcast_to(self, shape)

    @property
    def T(self):
        return _ops().transpose(self)

    # -- elementwise math -----------------------------------------------------------------
    def relu(self):
        return _ops().relu(self)

    def exp(self):
        return _ops().exp(self)

    def log(self):
        return _ops().log(self)

    def tanh(self):
        return _ops().tanh(self)

    def sigmoid(self):
        return _ops().sigmoid(self)

    def sqrt(self):
        return _ops().sqrt(self)

    def abs(self):
        return _ops().abs(self)

    # -- interop --------------------------------------------------------------------------
    def __dlpack__(self, **kwargs):
        """Share this tensor's memory through DLPack (cpu and cuda devices, zero-copy)."""
        from .dlpack import tensor_dlpack
        return tensor_dlpack(self, **kwargs)

    def __dlpack_device__(self):
        from .dlpack import tensor_dlpack_device
        return tensor_dlpack_device(self)


_DEVICE_NAMES = ("cpu", "cuda", "cudnn", "webgpu")


def _number(value, op):
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return value
    raise TypeError(f"unsupported operand for {op}: {type(value).__name__} and needle.Tensor")


def _shape_arg(shape):
    """``f(2, 3)`` and ``f((2, 3))`` alike."""
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def _keep(keepdims, keepdim):
    return keepdims if keepdim is None else keepdim


def _axes(axes, axis, dim):
    given = [a for a in (axes, axis, dim) if a is not None]
    if len(given) > 1:
        raise TypeError("give the reduction axes once (axes, axis or dim)")
    return given[0] if given else None


_OPS = None


def _ops():
    """needle.ops (which imports this module), imported once: every Tensor operator asks."""
    global _OPS
    if _OPS is None:
        from . import ops
        _OPS = ops
    return _OPS


def find_topo_sort(node_list):
    """Nodes reachable from ``node_list`` in topological order (iterative post-order DFS)."""
    order, visited = [], set()
    for root in node_list:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            stack.extend((x, False) for x in reversed(node.inputs) if id(x) not in visited)
    return order


def compute_gradient_of_variables(output_tensor, out_grad):
    """Reverse-mode sweep from ``output_tensor``; sets ``.grad`` on nodes needing it."""
    grads = {id(output_tensor): [out_grad]}
    with no_grad():
        for node in reversed(find_topo_sort([output_tensor])):
            parts = grads.pop(id(node), None)
            if parts is None:
                continue
            grad = _sum_grads(parts)
            if node.is_leaf():
                if node.requires_grad:
                    node.grad = grad if node.grad is None else (node.grad + grad).detach()
                    node.grad = node.grad.detach()
                continue
            _check_versions(node)
            for inp, g in zip(node.inputs, node.op.gradient_as_tuple(grad, node)):
                if inp.requires_grad and g is not None:
                    grads.setdefault(id(inp), []).append(g)


def _check_versions(node):
    """Raise if an input of ``node`` was written in place after ``node`` was computed: its
    gradient would read the new values (PyTorch raises the same way). Stricter than
    PyTorch, every input counts, whether or not the op's gradient reads its value."""
    if node._counter[0] != node._own_version:
        raise RuntimeError(
            f"a tensor needed for gradient computation has been modified by an in-place "
            f"operation: the output of {type(node.op).__name__}, of shape {node.shape}, is at "
            f"version {node._counter[0]}; expected version {node._own_version}")
    for i, (x, seen) in enumerate(zip(node.inputs, node._input_versions)):
        if x._counter[0] != seen:
            raise RuntimeError(
                f"one of the tensors needed for gradient computation has been modified by an "
                f"in-place operation: input {i} of {type(node.op).__name__}, a tensor of shape "
                f"{x.shape}, is at version {x._version}; expected version {seen} (an "
                f"optimizer step, a .data assignment or t[...] = ... between the forward pass "
                f"and backward())")


class SparseTupleGrad:
    """The gradient of a TensorTuple from indexing it: only some entries are non-zero.

    Keeping it sparse until all contributions are summed avoids building a full tuple of
    zeros per index (quadratic for an RNN that splits a sequence into time steps)."""

    def __init__(self, entries, like):
        self.entries, self.like = entries, like


def _sum_grads(parts):
    if not any(isinstance(p, (SparseTupleGrad, TensorTuple)) for p in parts):
        grad = parts[0]
        for g in parts[1:]:
            grad = grad + g
        return grad
    from .ops import make_tuple
    entries, like = {}, None
    for p in parts:
        if isinstance(p, TensorTuple):
            p = SparseTupleGrad(dict(enumerate(p.tuple())), p)
        like = p.like
        for i, g in p.entries.items():
            entries[i] = g if i not in entries else entries[i] + g
    values = like.realize_cached_data()
    return make_tuple(*[entries[i] if i in entries else
                        Tensor.make_const(nd.full(v.shape, 0.0, v.dtype, v.device))
                        for i, v in enumerate(values)])
