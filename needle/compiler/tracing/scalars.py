"""Python numbers that stay live in a compiled step: optimizer hyperparameters and step counts.

While a step is traced, ``opt.lr``, ``opt.momentum``, ... and every ``opt.state[p]["step"]``
are :class:`Scalar` objects: floats (or ints) with their traced value, which also remember
how they were computed from *slots* — the places the values live (an attribute of the
optimizer, a key of a state dict). Arithmetic on them gives Scalars, so ``1 - beta1 ** t``
stays an expression of the slots ``beta1`` and ``step``.

A Scalar handed to a backend op becomes a runtime input of the graph: each call evaluates
the expression on the host from the slots' current values (a scheduler's new ``lr`` takes
effect, nothing recompiles) and passes the result in the graph's scalar vector. A Scalar
used by Python control flow (``if self.momentum:``, ``float(x)``) records a *guard*: the
graph holds only while that decision comes out the same, and a call where it does not
traces again.
"""
import math
import operator

#: expression nodes: ("slot", k), ("const", c) or (op name, operand expressions...)
_BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
           "truediv": operator.truediv, "pow": operator.pow, "floordiv": operator.floordiv,
           "mod": operator.mod}
_UNARY = {"neg": operator.neg, "abs": abs, "int": int, "float": float}
_COMPARE = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
            "eq": operator.eq, "ne": operator.ne}


def evaluate(expr, slots):
    """The value of ``expr`` given the slots' current values (a list)."""
    kind = expr[0]
    if kind == "slot":
        return slots[expr[1]]
    if kind == "const":
        return expr[1]
    args = [evaluate(e, slots) for e in expr[1:]]
    if kind in _BINARY:
        return _BINARY[kind](*args)
    if kind in _UNARY:
        return _UNARY[kind](*args)
    if kind == "bool":
        return bool(args[0])
    if kind in _COMPARE:
        return _COMPARE[kind](*args)
    raise ValueError(f"unknown scalar expression {kind!r}")


def expression(x):
    """The expression of a Scalar, or a constant for a plain number."""
    return x.expr if isinstance(x, (Scalar, IntScalar)) else ("const", x)


class _Traced:
    """The behaviour Scalar (a float) and IntScalar (an int) share."""

    def _wrap(self, value, expr):
        if isinstance(value, bool):
            return value
        cls = IntScalar if isinstance(value, int) else Scalar
        return cls.make(value, expr, self.guards)

    def _binary(self, other, op, reflected=False):
        if not isinstance(other, (int, float)):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        value = _BINARY[op](self._plain(a), self._plain(b))
        return self._wrap(value, (op, expression(a), expression(b)))

    @staticmethod
    def _plain(x):
        if isinstance(x, Scalar):
            return float.__float__(x)
        if isinstance(x, IntScalar):
            return int.__int__(x)
        return x

    def _decide(self, kind, value, *operands):
        """A Python decision made on this value: the graph is valid while it repeats."""
        self.guards.append(((kind,) + tuple(expression(o) for o in operands), value))
        return value

    def __bool__(self):
        return self._decide("bool", self._plain(self) != 0, self)

    def __float__(self):
        return self._decide("float", float(self._plain(self)), self)

    def __int__(self):
        return self._decide("int", int(self._plain(self)), self)

    def __index__(self):
        return self.__int__()

    def __hash__(self):
        return hash(self._plain(self))


def _arith(op):
    return (lambda self, other: self._binary(other, op),
            lambda self, other: self._binary(other, op, reflected=True))


def _compare(op):
    def fn(self, other):
        if not isinstance(other, (int, float)):
            return NotImplemented
        return self._decide(op, _COMPARE[op](self._plain(self), self._plain(other)), self, other)
    return fn


def _install(cls):
    for op in _BINARY:
        forward, reflected = _arith(op)
        setattr(cls, f"__{op}__", forward)
        setattr(cls, f"__r{op}__", reflected)
    for op in _COMPARE:
        setattr(cls, f"__{op}__", _compare(op))
    cls.__neg__ = lambda self: self._wrap(-self._plain(self), ("neg", self.expr))
    cls.__abs__ = lambda self: self._wrap(abs(self._plain(self)), ("abs", self.expr))
    cls.__pos__ = lambda self: self
    cls.__round__ = lambda self, n=None: round(float(self), n)
    cls.__trunc__ = lambda self: math.trunc(float(self))
    return cls


@_install
class Scalar(_Traced, float):
    """A float traced through a compiled step (see the module docstring)."""

    @classmethod
    def make(cls, value, expr, guards):
        s = float.__new__(cls, value)
        s.expr, s.guards = expr, guards
        return s

    def __repr__(self):
        return f"Scalar({float.__repr__(self)})"


@_install
class IntScalar(_Traced, int):
    """An int traced through a compiled step (an optimizer's step count)."""

    @classmethod
    def make(cls, value, expr, guards):
        s = int.__new__(cls, value)
        s.expr, s.guards = expr, guards
        return s

    def __repr__(self):
        return f"IntScalar({int.__repr__(self)})"


def plain(x):
    """A Scalar's value as a plain float or int (other values unchanged)."""
    return _Traced._plain(x)
