"""The Python a replay runs, generated once per graph: a replay's host time is its budget.

:func:`compile_replay` turns a :class:`~.program.Program`'s slot reads, state-identity
checks, scalar guards, runtime-scalar vector and Python updates into two functions of
straight-line code (no interpretation of expression trees, every object a local):

* ``check()`` reads the slots and checks that each state buffer is still its tensor's and
  that each Python decision on an optimizer value comes out the same; it returns the list
  of slot values, or a string saying what changed;
* ``after(s)`` writes the Python updates (step counts) for slot values ``s``.

and ``scalars(s)``, the runtime-scalar vector for slot values ``s`` (a NumPy array).
"""
import numpy as np

from .guards import plain_name
from .scalars import source


def compile_replay(program):
    env, names = {"np": np}, {}

    def bind(obj):
        if id(obj) not in names:
            names[id(obj)] = f"_o{len(names)}"
            env[names[id(obj)]] = obj
        return names[id(obj)]

    reads = ", ".join(f"{bind(c)}.{k}" if attr and plain_name(k) else
                      (f"getattr({bind(c)}, {bind(k)})" if attr else f"{bind(c)}[{bind(k)}]")
                      for c, k, attr in program.slots)
    check = ["def check():", f"    s = [{reads}]"]
    for name, tensor, buf in program.identity:
        t, b = bind(tensor), bind(buf)
        why = bind(f"{name} holds a new tensor")
        check += [f"    d = {t}.cached_data",
                  f"    if d is None or d._handle is not {b}: return {why}"]
    for expr, value in program.guards:
        why = bind(f"a Python decision on an optimizer value changed ({expr[0]})")
        check.append(f"    if ({source(expr)}) != {bind(value)}: return {why}")
    check.append("    return s")
    dtype = bind(np.dtype(program.scalar_dtype)) if program.scalars else None
    scalars = ["def scalars(s):",
               f"    return np.array([{', '.join(source(e) for e in program.scalars)}], "
               f"dtype={dtype})" if program.scalars else "    return None"]
    after = ["def after(s):"]
    for k, expr in program.updates:
        container, key, attr = program.slots[k]
        target = f"{bind(container)}.{key}" if attr and plain_name(key) else \
            (None if attr else f"{bind(container)}[{bind(key)}]")
        value = source(expr)
        after.append(f"    {target} = {value}" if target else
                     f"    setattr({bind(container)}, {bind(key)}, {value})")
    after.append("    return None")
    exec(compile("\n".join(check + scalars + after), "<needle.compile replay>", "exec"), env)
    return env["check"], env["scalars"], env["after"]
