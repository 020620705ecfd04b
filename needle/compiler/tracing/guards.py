"""The Python state a compiled graph was traced under, checked before every replay.

A replay runs no Python, so everything Python decided while tracing must still hold: the
plain values the function can read (numbers, strings, ``None`` and tuples of them in its
closure, in the globals its code names, on the modules and plain objects it reaches) and
the *identity* of the objects that hold its state (each module's tensors and submodules,
the optimizer's parameter list, its ``state`` dicts and their buffers). Any change builds a
new graph. Optimizer numbers are not here: they are runtime inputs (:mod:`.scalars`).
"""
import functools
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
    else a sentence naming what changed."""

    def __init__(self, fn, roots, modules, optimizers):
        self.values = []      # (name, getter, value): compared with ==
        self.identities = []  # (name, getter, object): compared with is
        self._function(fn)
        for name, obj in roots:
            self._attributes(name, obj)
        for m in modules:
            self._module(m)
        for opt in optimizers:
            self._optimizer(opt)

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
            name = fn.__code__.co_freevars[i]
            if is_plain(value):
                self.values.append((name, lambda c=cell: c.cell_contents, value))
        g = fn.__globals__
        for name in sorted(_code_names(fn.__code__)):
            if name in g and is_plain(g[name]):
                self.values.append((name, lambda n=name: g.get(n), g[name]))

    def _attributes(self, name, obj):
        """Plain values on an object the function reaches (a config, a trainer)."""
        for key, value in vars(obj).items():
            if is_plain(value):
                self.values.append((f"{name}.{key}", lambda o=obj, k=key: getattr(o, k, None),
                                    value))

    def _module(self, m):
        label = type(m).__name__
        for key, value in vars(m).items():
            getter = lambda m=m, k=key: getattr(m, k, None)  # noqa: E731
            if is_plain(value):
                self.values.append((f"{label}.{key}", getter, value))
            elif isinstance(value, (Tensor, Module)):
                self.identities.append((f"{label}.{key}", getter, value))
            elif isinstance(value, (list, tuple)):  # Sequential's layers, ModuleList
                self.values.append((f"{label}.{key}", lambda m=m, k=key: _ids(getattr(m, k, ())),
                                    _ids(value)))

    def _optimizer(self, opt):
        label = type(opt).__name__
        self.identities.append((f"{label}.state", lambda: opt.state, opt.state))
        self.values.append((f"{label}.params", lambda: _ids(opt.params), _ids(opt.params)))
        self.values.append((f"{label}.state's parameters", lambda: _ids(opt.state),
                            _ids(opt.state)))
        for p, state in opt.state.items():
            self.identities.append((f"{label}.state[p]", lambda p=p: opt.state.get(p), state))
            self.values.append((f"{label}.state[p]'s keys", lambda s=state: tuple(s),
                                tuple(state)))
            for key, value in state.items():
                if key != "step":  # a runtime scalar
                    self.identities.append((f"{label}.state[p][{key!r}]",
                                            lambda s=state, k=key: s.get(k), value))

    def check(self):
        for name, getter, value in self.values:
            now = getter()
            if now is not value and (type(now) is not type(value) or now != value):
                return f"{name} changed"
        for name, getter, obj in self.identities:
            if getter() is not obj:
                return f"{name} is a new object"
        return None


def _ids(items):
    return tuple(id(x) for x in items)
