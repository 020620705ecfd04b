"""Elementwise ops: arithmetic with tensors and scalars, and unary math.

Binary tensor ops broadcast their operands NumPy-style: the broadcast is an explicit
``broadcast_to`` node, so its gradient (a sum over the repeated axes) comes for free.
"""
import numbers

import numpy as np

from ..autograd import Tensor, TensorOp, no_grad
from ..backend_ndarray import broadcast_shapes
from .movement import broadcast_to


def _broadcast_pair(a, b):
    if a.shape == b.shape:
        return a, b
    shape = broadcast_shapes(a.shape, b.shape)
    return broadcast_to(a, shape), broadcast_to(b, shape)


def _binary(tensor_op, scalar_op):
    """The public function for a binary op: dispatch on scalar vs tensor, then broadcast."""
    def apply(a, b):
        if isinstance(b, numbers.Number):
            return scalar_op(b)(a)
        if not isinstance(b, Tensor):
            raise TypeError(f"expected a needle.Tensor or a Python number, got {type(b).__name__}")
        return tensor_op()(*_broadcast_pair(a, b))
    return apply


class EWiseAdd(TensorOp):
    def compute(self, a, b):
        return a + b

    def gradient(self, out_grad, node):
        return out_grad, out_grad


class AddScalar(TensorOp):
    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a + self.scalar

    def gradient(self, out_grad, node):
        return out_grad


class EWiseSub(TensorOp):
    def compute(self, a, b):
        return a - b

    def gradient(self, out_grad, node):
        return out_grad, -out_grad


class EWiseMul(TensorOp):
    def compute(self, a, b):
        return a * b

    def gradient(self, out_grad, node):
        a, b = node.inputs
        return out_grad * b, out_grad * a


class MulScalar(TensorOp):
    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a * self.scalar

    def gradient(self, out_grad, node):
        return out_grad * self.scalar


class EWiseDiv(TensorOp):
    def compute(self, a, b):
        return a / b

    def gradient(self, out_grad, node):
        a, b = node.inputs
        return out_grad / b, -out_grad * a / (b * b)


class DivScalar(TensorOp):
    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a / self.scalar

    def gradient(self, out_grad, node):
        return out_grad / self.scalar


class PowerScalar(TensorOp):
    """``a ** scalar`` for a Python-number exponent."""

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a ** self.scalar

    def gradient(self, out_grad, node):
        if self.scalar == 0:  # d(a**0)/da is 0 everywhere, also at a = 0 (0 * inf is NaN)
            return out_grad * 0
        a = node.inputs[0]
        return out_grad * self.scalar * a ** (self.scalar - 1)


class EWisePow(TensorOp):
    """``a ** b`` elementwise for two tensors."""

    def compute(self, a, b):
        return a ** b

    def gradient(self, out_grad, node):
        a, b = node.inputs
        av, bv = a.realize_cached_data(), b.realize_cached_data()
        # PyTorch's conventions at the edges: d/da is 0 where b == 0 (also at a == 0), and
        # d/db is 0 where a == 0 and b >= 0 (the limit of a**b * log(a))
        grad_a = grad_b = None
        if a.requires_grad:
            grad_a = out_grad * b * a ** (b - 1 + Tensor.make_const(bv == 0))
        if b.requires_grad:
            zero_limit = (av == 0) * (bv >= 0)
            grad_b = out_grad * node.detach() * log(a + Tensor.make_const(zero_limit))
        return grad_a, grad_b


class Negate(TensorOp):
    def compute(self, a):
        return -a

    def gradient(self, out_grad, node):
        return -out_grad


class Exp(TensorOp):
    def compute(self, a):
        return a.exp()

    def gradient(self, out_grad, node):
        return out_grad * node


class Log(TensorOp):
    def compute(self, a):
        return a.log()

    def gradient(self, out_grad, node):
        return out_grad / node.inputs[0]


class ReLU(TensorOp):
    def compute(self, a):
        return a.relu()

    def gradient(self, out_grad, node):
        # relu(x) > 0 exactly where x > 0; reading the output leaves the pre-activation
        # with one reader, so needle.compile fuses a Linear and its ReLU into one kernel
        mask = node.realize_cached_data() > 0
        return out_grad * Tensor.make_const(mask)


class Tanh(TensorOp):
    def compute(self, a):
        return a.tanh()

    def gradient(self, out_grad, node):
        return out_grad * (1 - node * node)


class Sigmoid(TensorOp):
    def compute(self, a):
        return a.sigmoid()

    def gradient(self, out_grad, node):
        return out_grad * node * (1 - node)


class Sqrt(TensorOp):
    def compute(self, a):
        return a.sqrt()

    def gradient(self, out_grad, node):
        return out_grad / (node * 2)


class Abs(TensorOp):
    def compute(self, a):
        return a.abs()

    def gradient(self, out_grad, node):
        # sign(a), 0 at 0 as in PyTorch
        a = node.inputs[0].realize_cached_data()
        return out_grad * Tensor.make_const((a > 0) - (a < 0))


class Maximum(TensorOp):
    """Elementwise maximum; at ties the gradient goes to the first operand."""

    def compute(self, a, b):
        return a.maximum(b)

    def gradient(self, out_grad, node):
        a, b = (x.realize_cached_data() for x in node.inputs)
        mask = a >= b
        return out_grad * Tensor.make_const(mask), out_grad * Tensor.make_const(1 - mask)


class Minimum(TensorOp):
    """Elementwise minimum; at ties the gradient goes to the first operand."""

    def compute(self, a, b):
        return a.minimum(b)

    def gradient(self, out_grad, node):
        a, b = (x.realize_cached_data() for x in node.inputs)
        mask = a <= b
        return out_grad * Tensor.make_const(mask), out_grad * Tensor.make_const(1 - mask)


add_scalar = lambda a, scalar: AddScalar(scalar)(a)
mul_scalar = lambda a, scalar: MulScalar(scalar)(a)
divide_scalar = lambda a, scalar: DivScalar(scalar)(a)
power_scalar = lambda a, scalar: PowerScalar(scalar)(a)
add = _binary(EWiseAdd, AddScalar)
subtract = _binary(EWiseSub, lambda s: AddScalar(-s))
multiply = _binary(EWiseMul, MulScalar)
divide = _binary(EWiseDiv, DivScalar)
maximum = _binary(Maximum, lambda s: _MaxScalar(s))
minimum = _binary(Minimum, lambda s: _MinScalar(s))
negate = lambda a: Negate()(a)
exp = lambda a: Exp()(a)
log = lambda a: Log()(a)
relu = lambda a: ReLU()(a)
tanh = lambda a: Tanh()(a)
sigmoid = lambda a: Sigmoid()(a)
sqrt = lambda a: Sqrt()(a)
abs = lambda a: Abs()(a)  # noqa: A001 - Needle's public name, as torch.abs


def power(a, b):
    """``a ** b``: ``b`` a Python number (power_scalar) or a tensor (broadcast)."""
    if isinstance(b, numbers.Number) and not isinstance(b, bool):
        return PowerScalar(b)(a)
    if not isinstance(b, Tensor):
        raise TypeError(f"power: the exponent must be a needle.Tensor or a Python number, "
                        f"got {type(b).__name__}")
    return EWisePow()(*_broadcast_pair(a, b))


def clamp(a, min=None, max=None):  # noqa: A002 - PyTorch's argument names
    """Limit ``a`` to ``[min, max]`` (either may be None); the gradient passes where
    ``min <= a <= max``, as in PyTorch."""
    if min is None and max is None:
        raise ValueError("clamp needs min, max or both")
    if min is not None:
        a = maximum(a, min)
    return a if max is None else minimum(a, max)


class _MinScalar(TensorOp):
    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a.minimum(self.scalar)

    def gradient(self, out_grad, node):
        return out_grad * Tensor.make_const(node.inputs[0].realize_cached_data() <= self.scalar)


class _MaxScalar(TensorOp):
    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a.maximum(self.scalar)

    def gradient(self, out_grad, node):
        return out_grad * Tensor.make_const(node.inputs[0].realize_cached_data() >= self.scalar)


# -- comparisons and masks: elementwise 1.0 / 0.0 in the operands' dtype, no gradient --------
class Compare(TensorOp):
    """``op(a, b)`` for ``op`` in eq, ne, lt, le, gt, ge, with a tensor or number ``b``."""

    def __init__(self, op, scalar=None):
        self.op, self.scalar = op, scalar

    def compute(self, a, b=None):
        return a._binary(self.scalar if b is None else b, self.op)


def compare(a, b, op):
    """The elementwise comparison ``op`` of ``a`` and ``b`` (broadcast) as a 1.0 / 0.0 mask
    (marked as a mask, so indexing with it selects, as a bool tensor does in PyTorch).
    Returns NotImplemented for operands that are neither tensors nor numbers."""
    if isinstance(b, np.ndarray):  # elementwise, as PyTorch (not False by identity)
        b = Tensor(b, device=a.device, dtype=a.dtype, requires_grad=False)
    with no_grad():
        if isinstance(b, numbers.Number):
            out = Compare(op, b)(a)
        elif isinstance(b, Tensor):
            out = Compare(op)(*_broadcast_pair(a, b))
        else:
            return NotImplemented
    out.is_mask = True
    return out


def _truth(x):
    """``x != 0`` as a mask (a tensor), or a Python bool (a number)."""
    return compare(x, 0, "ne") if isinstance(x, Tensor) else float(bool(x))


def logical_and(a, b):
    with no_grad():
        out = multiply(_truth(a), _truth(b))
    out.is_mask = True
    return out


def logical_or(a, b):
    with no_grad():
        out = maximum(_truth(a), _truth(b))
    out.is_mask = True
    return out


def logical_not(a):
    return compare(a, 0, "eq")
