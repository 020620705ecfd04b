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
import numbers
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


_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "pow": "**", "floordiv": "//",
            "mod": "%", "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


def source(expr, slots="s"):
    """``expr`` as Python source over the list named ``slots`` (what :func:`evaluate`
    computes, without interpreting the tree on every call)."""
    kind = expr[0]
    if kind == "slot":
        return f"{slots}[{expr[1]}]"
    if kind == "const":  # (parenthesised: -2.0 ** x is -(2.0 ** x))
        value = expr[1]
        if isinstance(value, bool):
            return repr(value)
        if isinstance(value, numbers.Integral):
            return f"({int(value)!r})"
        value = float(value)
        return f"({value!r})" if math.isfinite(value) else f"float({str(value)!r})"
    args = [source(e, slots) for e in expr[1:]]
    if kind in _SYMBOLS:
        return f"({args[0]} {_SYMBOLS[kind]} {args[1]})"
    if kind == "neg":
        return f"(-{args[0]})"
    if kind in ("abs", "int", "float", "bool"):
        return f"{kind}({args[0]})"
    raise ValueError(f"unknown scalar expression {kind!r}")


def expression(x):
    """The expression of a Scalar, or a constant for a plain number."""
    return x.expr if isinstance(x, _Traced) else ("const", x)


class _Traced:
    """A traced number: its value, its expression, and the trace's guard list.

    Deliberately *not* a float or int subclass: C code reads a subclass's raw value without
    asking it (``math.sqrt``, NumPy), which would freeze the number silently. Here every
    such read goes through ``__float__`` / ``__int__`` / ``__index__``, which record a
    guard, and arithmetic goes through the operators, which record an expression."""

    __slots__ = ("value", "expr", "guards")
    #: NDArray passes a number with this mark to the backend as is (not through float())
    _traced = True

    def __init__(self, value, expr, guards):
        self.value, self.expr, self.guards = value, expr, guards

    def _wrap(self, value, expr):
        if isinstance(value, bool):
            return value
        cls = IntScalar if isinstance(value, int) else Scalar
        return cls(value, expr, self.guards)

    def _binary(self, other, op, reflected=False):
        if not isinstance(other, (int, float, _Traced)):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        value = _BINARY[op](plain(a), plain(b))
        return self._wrap(value, (op, expression(a), expression(b)))

    def _decide(self, kind, value, *operands):
        """A Python decision made on this value: the graph is valid while it repeats."""
        self.guards.append(((kind,) + tuple(expression(o) for o in operands), value))
        return value

    def __bool__(self):
        return self._decide("bool", self.value != 0, self)

    def __float__(self):
        return self._decide("float", float(self.value), self)

    def __int__(self):
        return self._decide("int", int(self.value), self)

    def __index__(self):
        return self.__int__()

    def __hash__(self):
        return hash(self.value)

    def __repr__(self):
        return f"{type(self).__name__}({self.value!r})"


def _arith(op):
    return (lambda self, other: self._binary(other, op),
            lambda self, other: self._binary(other, op, reflected=True))


def _compare(op):
    def fn(self, other):
        if not isinstance(other, (int, float, _Traced)):
            return NotImplemented
        return self._decide(op, _COMPARE[op](plain(self), plain(other)), self, other)
    return fn


for _op in _BINARY:
    _forward, _reflected = _arith(_op)
    setattr(_Traced, f"__{_op}__", _forward)
    setattr(_Traced, f"__r{_op}__", _reflected)
for _op in _COMPARE:
    setattr(_Traced, f"__{_op}__", _compare(_op))
_Traced.__neg__ = lambda self: self._wrap(-self.value, ("neg", self.expr))
_Traced.__abs__ = lambda self: self._wrap(abs(self.value), ("abs", self.expr))
_Traced.__pos__ = lambda self: self
_Traced.__round__ = lambda self, n=None: round(float(self), n)
_Traced.__trunc__ = lambda self: math.trunc(float(self))


class Scalar(_Traced):
    """A float traced through a compiled step (see the module docstring)."""

    __slots__ = ()


class IntScalar(_Traced):
    """An int traced through a compiled step (an optimizer's step count)."""

    __slots__ = ()


numbers.Real.register(Scalar)
numbers.Integral.register(IntScalar)


def plain(x):
    """A traced number's value as a plain float or int (other values unchanged)."""
    return x.value if isinstance(x, _Traced) else x


def is_traced(x):
    return isinstance(x, _Traced)
