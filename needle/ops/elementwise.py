"""Elementwise ops: arithmetic with tensors and scalars, and unary math.

Binary tensor ops broadcast their operands NumPy-style: the broadcast is an explicit
``broadcast_to`` node, so its gradient (a sum over the repeated axes) comes for free.
"""
import numbers

from ..autograd import Tensor, TensorOp
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
        a = node.inputs[0]
        return out_grad * self.scalar * a ** (self.scalar - 1)


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
        mask = node.inputs[0].realize_cached_data() > 0
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


class Maximum(TensorOp):
    """Elementwise maximum; at ties the gradient goes to the first operand."""

    def compute(self, a, b):
        return a.maximum(b)

    def gradient(self, out_grad, node):
        a, b = (x.realize_cached_data() for x in node.inputs)
        mask = a >= b
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
negate = lambda a: Negate()(a)
exp = lambda a: Exp()(a)
log = lambda a: Log()(a)
relu = lambda a: ReLU()(a)
tanh = lambda a: Tanh()(a)
sigmoid = lambda a: Sigmoid()(a)
sqrt = lambda a: Sqrt()(a)


class _MaxScalar(TensorOp):
    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a.maximum(self.scalar)

    def gradient(self, out_grad, node):
        return out_grad * Tensor.make_const(node.inputs[0].realize_cached_data() >= self.scalar)
