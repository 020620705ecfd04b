"""The Python state a compiled graph was traced under, checked before every replay.

A replay runs no Python, so everything Python decided while tracing must still hold: the
plain values the function can read (numbers, strings, ``None`` and tuples of them in its
closure, in the globals its code names, on the modules and plain objects it reaches) and
the *identity* of the objects that hold its state (each module's tensors and submodules,
the optimizer's parameter list, its ``state`` dicts and their buffers). Any change builds a
new graph. Optimizer numbers are not here: they are runtime inputs (:mod:`.scalars`).
"""
import functools
import keyword
import types

from ...autograd import Tensor
from ...nn.module import Module
from .discovery import _code_names

_PLAIN = (int, float, complex, str, bytes, bool, type(None))


def is_plain(value):
    if isinstance(value, tuple):
        return all(is_plain(v) for v in value)
    return isinstance(value, _PLAIN)


class PythonState:
    """``check()`` gives ``None`` while the watched state is as it was when this was made,
    else a sentence naming what changed.

    Each watched item is a Python expression over a few bound objects (``$0``, ``$1``, ...):
    all of them are compiled into one function (:func:`compile_checks`), which a replay
    calls before it launches anything.
    """

    def __init__(self, fn, roots, modules, optimizers):
        self.checks = []  # Check records, in order
        self._function(fn)
        for name, obj in roots:
            self._attributes(name, obj)
        for m in modules:
            self._module(m)
        for opt in optimizers:
            self._optimizer(opt)
        self._compiled = compile_checks(self.checks)

    def _value(self, name, expression, objects, value):
        self.checks.append(Check(name, expression, objects, "value", value))

    def _identity(self, name, expression, objects, obj):
        self.checks.append(Check(name, expression, objects, "identity", obj))

    def _function(self, fn):
        while isinstance(fn, functools.partial):
            fn = fn.func
        if isinstance(fn, types.MethodType):
            fn = fn.__func__
        if not isinstance(fn, types.FunctionType):
            return
        for i, cell in enumerate(fn.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if is_plain(value):
                self._value(fn.__code__.co_freevars[i], "$0.cell_contents", [cell], value)
        g = fn.__globals__
        for name in sorted(_code_names(fn.__code__)):
            if name in g and is_plain(g[name]):
                self._value(name, "$0.get($1)", [g, name], g[name])

    def _attributes(self, name, obj):
        """Plain values on an object the function reaches (a config, a trainer)."""
        for key, value in vars(obj).items():
            if is_plain(value):
                self._value(f"{name}.{key}", _attribute(key), [obj, key], value)

    def _module(self, m):
        label = type(m).__name__
        for key, value in vars(m).items():
            if is_plain(value):
                self._value(f"{label}.{key}", _attribute(key), [m, key], value)
            elif isinstance(value, (Tensor, Module)):
                self._identity(f"{label}.{key}", _attribute(key), [m, key], value)
            elif isinstance(value, (list, tuple)):  # Sequential's layers, ModuleList
                self._value(f"{label}.{key}", f"_ids({_attribute(key)})", [m, key], _ids(value))

    def _optimizer(self, opt):
        label = type(opt).__name__
        self._identity(f"{label}.state", "$0.state", [opt], opt.state)
        self._value(f"{label}.params", "_ids($0.params)", [opt], _ids(opt.params))
        self._value(f"{label}.state's parameters", "_ids($0.state)", [opt], _ids(opt.state))
        for p, state in opt.state.items():
            self._identity(f"{label}.state[p]", "$0.state.get($1)", [opt, p], state)
            self._value(f"{label}.state[p]'s keys", "tuple($0)", [state], tuple(state))
            for key, value in state.items():
                if key != "step":  # a runtime scalar
                    self._identity(f"{label}.state[p][{key!r}]", "$0.get($1)", [state, key],
                                   value)

    def check(self):
        return self._compiled()


class Check:
    """One watched item: ``expression`` (Python, over ``objects`` as ``$0``, ``$1``, ...)
    must still give ``expected``: an equal plain value (``kind`` "value") or the same
    object ("identity"). ``name`` says what it is, for the reason a graph is rebuilt."""

    __slots__ = ("name", "expression", "objects", "kind", "expected")

    def __init__(self, name, expression, objects, kind, expected):
        self.name, self.expression, self.objects = name, expression, objects
        self.kind, self.expected = kind, expected

    def reason(self):
        return f"{self.name} changed" if self.kind == "value" else f"{self.name} is a new object"


def compile_checks(checks, extra_globals=None):
    """One function of no arguments that evaluates every check in order and returns the
    reason of the first that fails (``None`` if all hold), with the bound objects and the
    expected values as its local constants: a replay's guards cost a few tens of
    nanoseconds each. An expression that raises (an attribute deleted) fails its check."""
    env = {"_ids": _ids, **(extra_globals or {})}
    lines, names = ["def check():", "    try:", "        pass"], {}

    def bind(obj):
        if id(obj) not in names:
            names[id(obj)] = f"_o{len(names)}"
            env[names[id(obj)]] = obj
        return names[id(obj)]

    for i, c in enumerate(checks):
        expr = c.expression
        for j in reversed(range(len(c.objects))):  # ($10 before $1)
            expr = expr.replace(f"${j}", bind(c.objects[j]))
        expected = bind(c.expected)
        if c.kind == "identity":
            lines.append(f"        if ({expr}) is not {expected}: return {i}")
        else:
            kind = bind(type(c.expected))
            lines += [f"        x = {expr}",
                      f"        if x is not {expected} and (type(x) is not {kind} "
                      f"or x != {expected}): return {i}"]
    lines += ["    except Exception:", "        return -1", "    return None"]
    exec(compile("\n".join(lines), "<needle.compile guards>", "exec"), env)
    fast = env["check"]

    def check():
        failed = fast()
        if failed is None:
            return None
        if failed >= 0:
            return checks[failed].reason()
        return _first_failing(checks)

    return check


def _first_failing(checks):
    """The reason of the first check that fails, one at a time (after the compiled check
    raised): an expression that raises fails."""
    for c in checks:
        env = {"_ids": _ids, **{f"_o{j}": o for j, o in enumerate(c.objects)}}
        expr = c.expression
        for j in reversed(range(len(c.objects))):
            expr = expr.replace(f"${j}", f"_o{j}")
        try:
            now = eval(expr, env)  # noqa: S307 - our own expressions over bound objects
        except Exception:  # noqa: BLE001 - e.g. an attribute deleted
            return c.reason()
        if c.kind == "identity":
            if now is not c.expected:
                return c.reason()
        elif now is not c.expected and (type(now) is not type(c.expected) or now != c.expected):
            return c.reason()
    return "a watched value could not be read"


def _attribute(key):
    """The expression reading attribute ``key`` (bound as ``$1``) of ``$0``."""
    return f"$0.{key}" if plain_name(key) else "getattr($0, $1)"


def plain_name(key):
    """Whether ``obj.<key>`` is valid source that reads attribute ``key``."""
    return isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key) and \
        not key.startswith("__")


def _ids(items):
    return tuple(map(id, items))
