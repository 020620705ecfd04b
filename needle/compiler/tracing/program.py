"""One traced call of a function, turned into a graph and the plan that binds it to Python.

:func:`trace_call` runs the function once with every backend recording
(:mod:`.recorder`), optimizer numbers as :class:`~.scalars.Scalar` slots, and returns the
call's real result together with a :class:`Program`: the graph, where each of its inputs
comes from (an argument's buffer, a state buffer, the vector of runtime scalars), where
each output goes (the returned structure, a state buffer updated in place) and the
Python-side updates (step counts) and guards a replay must respect.
"""
import gc
import numbers
import sys
import weakref

import numpy as np

from ... import _trace_state
from ...autograd import Tensor
from ...backend_ndarray import NDArray
from ...backend_ndarray.device import all_devices
from ...errors import CompileError
from ..ir import Graph, TensorType
from ..passes.common import rename
from . import views
from .discovery import discover
from .recorder import RecordingBackend, Trace
from .scalars import IntScalar, Scalar, evaluate, is_traced, plain


class Program:
    """A traced call: ``graph`` and how to bind it (see the module docstring).

    Attributes:
        graph: inputs are the buffers, in ``sources`` order, then the scalar vector (when
            ``scalars`` is not empty); outputs the returned tensors, then the state
            buffers (aliased to their inputs).
        sources: per buffer input, ``("arg", position)`` or ``("state", buffer)``.
        scalars: the expression of each entry of the scalar vector.
        slots: ``(container, key, is_attribute)`` of each value the expressions read.
        updates: ``(slot index, expression)``: the Python values a call writes back.
        guards: ``(expression, value)``: decisions the trace made on slot values.
        identity: ``(name, tensor, buffer)``: state that must still be where it was.
        result: the returned structure with ``("out", k)`` where tensors were.
        device: the device the graph runs on.
    """

    def __init__(self):
        self.graph = None
        self.sources, self.scalars, self.slots, self.updates = [], [], [], []
        self.guards, self.identity, self.result, self.device = [], [], None, None
        self._new_ids = set()  # ids of state buffers the trace itself made
        self.grads = []        # (parameter, its gradient tensor) to put back after a call

    def signature(self):
        """What two traces must share for the graph to be the same program."""
        from ..printer import as_text
        return (as_text(self.graph, digest=True),
                tuple((kind, ref) if kind == "arg" else
                      (kind, "new" if id(ref) in self._new_ids else id(ref))
                      for kind, ref in self.sources),
                tuple(map(repr, self.scalars)), tuple(repr(u) for u in self.updates),
                tuple(repr(g) for g in self.guards), repr(self.result))

    def read_slots(self):
        return [getattr(c, k) if attr else c[k] for c, k, attr in self.slots]

    def bind(self, given, slot_values, state=None):
        """The graph's inputs for a call with arguments ``given`` (:func:`call_arguments`):
        a flat NDArray over each argument's and state buffer (``state`` maps a source's
        position to one made already), then the runtime scalars as a NumPy vector."""
        inputs = []
        for i, (kind, ref) in enumerate(self.sources):
            if kind == "arg":
                data = given[ref].realize_cached_data()
                inputs.append(flat_view(data._handle, data.device))
            else:
                inputs.append(state[i] if state is not None else flat_view(ref, self.device))
        if self.scalars:
            inputs.append(np.array([evaluate(e, slot_values) for e in self.scalars],
                                   dtype=self.scalar_dtype))
        return inputs


def flat_view(buf, device):
    """A backend buffer as the rank-1 NDArray a graph input of its size reads."""
    return NDArray._make((buf.size,), None, device, buf, 0, np.dtype(buf.dtype).name)


def call_arguments(args, kwargs):
    """A call's arguments in the order graphs number them: positional ones, then keyword
    ones sorted by name (as the cache key has them: ``f(x=a, y=b)`` and ``f(y=b, x=a)`` are
    one call)."""
    return list(args) + [kwargs[k] for k in sorted(kwargs)]


def _flatten(value, tensors):
    """The returned structure with each Tensor replaced by ``("out", k)``; the Tensors are
    appended to ``tensors``."""
    if isinstance(value, Tensor):
        tensors.append(value)
        return ("out", len(tensors) - 1)
    if isinstance(value, (list, tuple)):
        items = [_flatten(v, tensors) for v in value]
        return ("list" if isinstance(value, list) else "tuple", items)
    if isinstance(value, dict):
        return ("dict", [(k, _flatten(v, tensors)) for k, v in value.items()])
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("const", plain(value))
    raise CompileError(f"needle.compile: the function returned a {type(value).__name__}; "
                       f"return Tensors, numbers, None, or lists/tuples/dicts of them")


def unflatten(spec, outputs):
    kind, body = spec
    if kind == "out":
        return outputs[body]
    if kind == "const":
        return body
    if kind == "dict":
        return {k: unflatten(v, outputs) for k, v in body}
    items = [unflatten(v, outputs) for v in body]
    return items if kind == "list" else tuple(items)


class _Slots:
    """Optimizer numbers replaced by Scalars for the trace, and put back after it."""

    def __init__(self, optimizers, guards):
        self.entries = []  # (container, key, is_attribute, original, scalar)
        for opt in optimizers:
            for key, value in list(vars(opt).items()):
                if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
                    self._install(opt, key, True, value, guards)  # (NumPy numbers too)
            for state in opt.state.values():
                if isinstance(state.get("step"), numbers.Integral):
                    self._install(state, "step", False, state["step"], guards)

    def _install(self, container, key, attr, value, guards):
        k = len(self.entries)
        integral = isinstance(value, numbers.Integral)
        value = int(value) if integral else float(value)
        scalar = (IntScalar if integral else Scalar)(value, ("slot", k), guards)
        self.entries.append((container, key, attr, value, scalar))
        if attr:
            setattr(container, key, scalar)
        else:
            container[key] = scalar

    def restore(self):
        """Put plain values back; returns the ``(slot, expression)`` updates the call made
        and the names of attributes the function assigned (an error)."""
        updates, assigned = [], []
        for k, (c, key, attr, original, scalar) in enumerate(self.entries):
            now = getattr(c, key) if attr else c.get(key)
            if now is scalar:
                value = original
            elif attr:  # a scheduler's arithmetic could hide Python state of its own
                assigned.append(f"{type(c).__name__}.{key}")
                value = plain(now)
            elif is_traced(now):  # a step count: step + 1
                updates.append((k, now.expr))
                value = plain(now)
            else:
                value = now
            if attr:
                setattr(c, key, value)
            else:
                c[key] = value
        return updates, assigned


def trace_call(fn, args, kwargs, modules, optimizers, tensors):
    """Run ``fn(*args, **kwargs)`` once, recording it; returns ``(result, Program)``. The
    result holds new Tensors (without history) with the call's values."""
    arg_handles, data_args = {}, []
    for i, a in enumerate(call_arguments(args, kwargs)):
        if isinstance(a, Tensor):
            arg_handles.setdefault(id(a.realize_cached_data()._handle), i)
            if a.requires_grad:  # arguments are data: no gradient accumulates on them
                data_args.append(a)
                a.requires_grad = False
    graph = Graph(name="main")
    trace = Trace(graph, arg_handles)
    slots = _Slots(optimizers, trace.guards)
    devices = [d for d in all_devices() if d._backend is not None]
    for d in devices:
        d._backend = RecordingBackend(d._backend, trace, d)
    _trace_state.ACTIVE = trace
    try:
        result = fn(*args, **kwargs)
    finally:
        _trace_state.ACTIVE = None
        for a in data_args:
            a.requires_grad = True
        for d in devices:
            d._backend = d._backend.real
        updates, assigned = slots.restore()
    if assigned:
        raise CompileError(f"needle.compile: the function assigned {', '.join(assigned)}; "
                           f"a replay would not, so change it between calls (e.g. call the "
                           f"lr scheduler after the compiled step)")
    program = Program()
    program.device = trace.device
    returned = []
    program.result = _flatten(result, returned)
    result = None  # its history would keep every buffer of the step alive
    outputs = [_returned_view(trace, t) for t in returned]
    caller = unflatten(program.result, [Tensor.make_const(NDArray(t.realize_cached_data()))
                                        for t in returned])
    returned.clear()
    after = discover(fn, args, kwargs)[2]
    _bind_state(program, trace, graph, outputs, tensors, after)
    _pack_scalars(program, trace, graph)
    program.slots = [(c, key, attr) for c, key, attr, _, _ in slots.entries]
    program.updates = updates
    program.guards = list(trace.guards)
    program.identity = _identity_guards(program, tensors)
    # gradients the step left on parameters, in buffers it made: a replay writes those
    # buffers and puts the tensors back (a reset_grad() between calls took them away)
    program.grads = [(t, t.grad) for _, t in after.values()
                     if t.grad is not None and t.grad.cached_data is not None
                     and id(t.grad.cached_data._handle) in program._new_ids]
    return caller, program


def _returned_view(trace, tensor):
    data = tensor.realize_cached_data()
    return views.read_view(trace.b, trace.read(data._handle), data._handle.size, data.shape,
                           data.strides, data.offset)


def _bind_state(program, trace, graph, outputs, tensors, after):
    """Graph inputs and outputs for buffers: arguments, state read or written, and buffers
    the trace made that outlive it (a gradient kept on ``p.grad``)."""
    made = {i: weakref.ref(trace.buffers[i]) for i in trace.allocated}
    kept = {i: trace.buffers[i] for i in trace.buffers if i not in trace.allocated}
    trace.buffers.clear()
    gc.collect()
    escaped = [(i, made[i]()) for i in made if made[i]() is not None and i in trace.values]
    program._new_ids = {i for i, _ in escaped}
    by_id = {id(t.cached_data._handle): name for name, t in tensors.values()
             if t.cached_data is not None}
    sources, state_outputs = [], []
    inputs = []
    for i, value in trace.inputs.items():
        buf = kept[i]
        if i in trace.arg_of:
            sources.append(("arg", trace.arg_of[i]))
        else:
            sources.append(("state", buf))
        inputs.append(value)
        if i in trace.written:
            state_outputs.append((len(inputs) - 1, trace.values[i], buf))
    for i, buf in escaped:
        value = graph.add_input(TensorType((buf.size,), np.dtype(buf.dtype).name))
        inputs.append(value)
        sources.append(("state", buf))
        state_outputs.append((len(inputs) - 1, trace.values[i], buf))
    del kept
    _check_rebound(trace, sources, by_id, {id(t.cached_data._handle) for _, t in after.values()
                                           if t.cached_data is not None})
    graph.inputs = inputs + list(trace.scalars.values())
    graph.outputs = list(outputs)
    for position, value, buf in state_outputs:
        graph.aliases[len(graph.outputs)] = position
        graph.outputs.append(trace.b.reshape(value, (buf.size,)))
    program.sources = sources
    program.graph = graph


def _check_rebound(trace, sources, names, still_held):
    """A state buffer the trace read that its tensor no longer holds (or, for one that is
    not a module's or optimizer's, that no one holds) was *replaced* by the function
    (``self.x = f(self.x)``): a replay would read the stale one forever."""
    for kind, buf in sources:
        if kind == "state" and id(buf) not in trace.allocated:
            # held by: the sources' tuple, this loop, getrefcount's argument
            if id(buf) in names and id(buf) not in still_held or \
                    id(buf) not in names and sys.getrefcount(buf) <= 3:
                name = names.get(id(buf), f"a tensor of {buf.size} elements")
                raise CompileError(
                    f"needle.compile: the function replaced {name} with a new tensor instead "
                    f"of updating it in place; a replay would read the old value again. Update "
                    f"it in place (t[...] = new, or an optimizer step), or if it is a gradient "
                    f"accumulating across calls, call opt.reset_grad() inside the function")


def _pack_scalars(program, trace, graph):
    """The rank-0 scalar inputs become slices of one vector: one upload per call."""
    if not trace.scalars:
        return
    keys = list(trace.scalars)
    dtype = "float64" if all(d == "float64" for _, d in keys) else "float32"
    vector = TensorType((len(keys),), dtype)
    graph.inputs = [v for v in graph.inputs if v not in trace.scalars.values()]
    packed = graph.add_input(vector)
    start = len(graph.nodes)
    mapping = {}
    for k, (expr, want) in enumerate(keys):
        x = trace.b.emit("slice", [packed], start_indices=[k], limit_indices=[k + 1], strides=[1])
        x = trace.b.reshape(x, ())
        if want != dtype:
            x = trace.b.emit("convert", [x], dtype=want)
        mapping[trace.scalars[(expr, want)]] = x
    graph.nodes = graph.nodes[start:] + graph.nodes[:start]
    rename(graph, mapping)
    program.scalars = [expr for expr, _ in keys]
    program.scalar_dtype = dtype


def _identity_guards(program, tensors):
    """Each state buffer the graph reads must still be the one its tensor holds."""
    where = {}
    for name, t in tensors.values():
        if t.cached_data is not None:
            where.setdefault(id(t.cached_data._handle), (name, t))
    out = []
    for kind, buf in program.sources:
        if kind == "state" and id(buf) in where:
            name, t = where[id(buf)]
            out.append((name, t, buf))
    return out
