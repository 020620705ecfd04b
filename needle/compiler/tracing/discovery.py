"""What a compiled function can touch: the modules and optimizers it reaches.

A training step usually closes over its model and optimizer (or reads them as globals, or
gets them as arguments). The tracer needs them for three things: optimizer numbers become
runtime scalars (:mod:`.scalars`), every state tensor gets a name for error messages and an
identity guard, and the modules' ``training`` flags and numeric attributes are guards.
"""
import functools
import types

from ...autograd import Tensor
from ...nn.module import Module
from ...optim.optimizer import Optimizer

_SKIP = (types.ModuleType, type, str, bytes, int, float, bool, complex, type(None))


def _code_names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _function_roots(fn):
    roots = []
    if isinstance(fn, types.MethodType):
        roots.append(fn.__self__)
        fn = fn.__func__
    if isinstance(fn, functools.partial):
        return roots + _function_roots(fn.func) + list(fn.args) + list(fn.keywords.values())
    if not isinstance(fn, types.FunctionType):  # a callable object
        return roots + [fn]
    for cell in fn.__closure__ or ():
        try:
            roots.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    g = fn.__globals__
    roots += [g[n] for n in sorted(_code_names(fn.__code__)) if n in g]
    return roots


def discover(fn, args, kwargs, depth=3):
    """``(modules, optimizers, tensors, objects)`` reachable from ``fn`` (its closure, the
    globals its code names, a bound method's object, a partial's function and arguments),
    its arguments, and the attributes of plain objects among those, ``depth`` levels deep.
    ``tensors`` maps ``id(tensor)`` to ``(name, tensor)`` for every tensor of a module, an
    optimizer's parameters and any tensor found on the way; ``objects`` lists ``(name,
    object)`` for the plain objects (a config, a trainer)."""
    modules, optimizers, tensors, objects = {}, {}, {}, []
    seen = set()
    frontier = [(name, v) for name, v in
                [(f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())]
    frontier += [("", r) for r in _function_roots(fn)]
    for level in range(depth + 1):
        nxt = []
        for name, value in frontier:
            if id(value) in seen or isinstance(value, _SKIP):
                continue
            seen.add(id(value))
            if isinstance(value, Tensor):
                tensors.setdefault(id(value), (name or "a tensor", value))
            elif isinstance(value, Module):
                for sub_name, sub in value.named_modules(name or type(value).__name__):
                    modules.setdefault(id(sub), sub)
                for t_name, t in value._named(name or type(value).__name__):
                    if isinstance(t, Tensor):
                        tensors.setdefault(id(t), (t_name, t))
            elif isinstance(value, Optimizer):
                optimizers.setdefault(id(value), value)
                for i, p in enumerate(value.params):
                    tensors.setdefault(id(p), (f"{name or 'optimizer'}.params[{i}]", p))
            elif isinstance(value, (list, tuple)):
                nxt += [(f"{name}[{i}]", v) for i, v in enumerate(value)]
            elif isinstance(value, dict):
                nxt += [(f"{name}[{k!r}]", v) for k, v in value.items()]
            elif isinstance(value, (types.FunctionType, types.MethodType)):
                nxt += [("", r) for r in _function_roots(value)]
            elif isinstance(value, functools.partial):
                nxt += [("", r) for r in _function_roots(value)]
            elif hasattr(value, "__dict__"):  # a plain object: a trainer holding a model
                objects.append((name or type(value).__name__, value))
                nxt += [(f"{name}.{k}" if name else k, v) for k, v in vars(value).items()]
        frontier = nxt
        if not frontier or level == depth:
            break
    return list(modules.values()), list(optimizers.values()), tensors, objects
