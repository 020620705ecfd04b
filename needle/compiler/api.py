"""``needle.compile``: trace a step once, replay its optimized graph on every later call.

A call whose arguments match a compiled graph (same shapes, dtypes, devices, layouts and
Python values) and whose guards hold replays the graph: no Python of the function runs.
Otherwise the function runs traced (:mod:`.tracing.program`): it executes for real and
is recorded. A graph is compiled when two traces in a row record the same program, so
state an optimizer makes on its first step (momentum buffers) exists before the graph is
fixed; a training step replays from its third call (its second for steps without such
state). See ``docs/compile.md``.
"""
import functools
import os
import time
import warnings

import numpy as np

from ..autograd import Tensor
from ..backend_ndarray import NDArray
from ..backend_ndarray.device import cpu
from ..errors import CompileError
from .codegen import generator_for
from .executor import Executor
from .passes import PIPELINES, debug_flags, run_passes
from .passes.common import launched_work
from .printer import as_text
from .replay import GraphReplay
from .tracing.discovery import discover
from .tracing.fastpath import compile_replay
from .tracing.guards import PythonState
from .tracing.program import call_arguments, flat_view, trace_call, unflatten

#: traces in a row that may disagree before the function is declared untraceable
MAX_TRACES = 4
#: graphs kept per compiled function; beyond it the oldest goes (with a warning, once):
#: an argument that changes every call (a float, a new shape) would otherwise grow it
MAX_GRAPHS = 32


def compile(fn=None, *, opt_level=2):
    """Compile ``fn`` (a training or inference step) into a graph replayed on every call.

    Use as ``step = needle.compile(train_step)``, ``@needle.compile`` or
    ``@needle.compile(opt_level=3)``. ``opt_level`` 0 runs the traced graph as recorded;
    1 adds dead-code and common-subexpression elimination, constant folding and algebraic
    simplification; 2 (the default) adds canonicalisation and elementwise fusion; 3 adds
    pattern fusion onto Needle's fused ops.

    Example:
        >>> model = needle.nn.Linear(4, 2)
        >>> opt = needle.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> @needle.compile
        ... def step(x, y):
        ...     opt.reset_grad()
        ...     loss = needle.nn.SoftmaxLoss()(model(x), y)
        ...     loss.backward()
        ...     opt.step()
        ...     return loss
    """
    if fn is None:
        return lambda f: Compiled(f, opt_level)
    return Compiled(fn, opt_level)


class Compiled:
    """A compiled function: call it as the function; see :func:`compile`."""

    def __init__(self, fn, opt_level=2):
        if not callable(fn):
            raise TypeError(f"needle.compile needs a function, got {type(fn).__name__}")
        if opt_level not in PIPELINES:
            raise ValueError(f"opt_level must be one of {sorted(PIPELINES)}, got {opt_level!r}")
        functools.update_wrapper(self, fn)
        self.fn, self.opt_level = fn, opt_level
        self._entries = {}   # argument key -> _Entry
        self._pending = {}   # argument key -> (signature, attempts, seconds, reason) so far
        self._counts = {"calls": 0, "traces": 0, "cache_hits": 0, "recompiles": 0}
        self._built = []     # stats of every graph built, oldest first
        self._modules = ()   # the modules the last trace reached: their modes key graphs
        self._warned = False

    def __call__(self, *args, **kwargs):
        self._counts["calls"] += 1
        key = self._key(args, kwargs)
        entry = self._entries.get(key)
        reason = "new arguments" if not self._entries else "arguments changed"
        if entry is not None:
            failed = entry.check()
            if failed is None:
                self._counts["cache_hits"] += 1
                return entry.run(args, kwargs)
            del self._entries[key]
            self._counts["recompiles"] += 1
            reason = failed
        return self._trace(key, args, kwargs, reason)

    def _key(self, args, kwargs):
        # train() and eval() graphs are kept side by side: switching does not retrace
        return _key(args, kwargs) + (tuple(m.training for m in self._modules),)

    def _trace(self, key, args, kwargs, reason):
        start = time.perf_counter()
        modules, optimizers, tensors, objects = discover(self.fn, args, kwargs)
        if [id(m) for m in modules] != [id(m) for m in self._modules]:
            self._modules = tuple(modules)
            key = self._key(args, kwargs)
        # the state this trace starts from: a replay of its graph needs the same (state the
        # call itself makes, an optimizer's first-step buffers, fails it: the next call
        # traces again, from the state with them)
        python_state = PythonState(self.fn, objects, modules, optimizers)
        module_state = PythonState(None, [], modules, [])
        result, program = trace_call(self.fn, args, kwargs, modules, optimizers, tensors)
        changed = module_state.check()
        if changed is not None:  # a replay would not change it
            raise CompileError(f"needle.compile: the function changes a module ({changed}); "
                               f"a replay would not: change it between calls")
        self._counts["traces"] += 1
        signature = program.signature()
        seconds = time.perf_counter() - start
        last = self._pending.pop(key, None)
        if last is not None and last[0] == signature:
            # (why the first of the two traces was needed)
            entry = _Entry(program, python_state, self.opt_level, last[3], last[2] + seconds)
            if len(self._entries) >= MAX_GRAPHS:
                del self._entries[next(iter(self._entries))]
                if not self._warned:
                    self._warned = True
                    warnings.warn(f"needle.compile: {_name(self.fn)} has built more than "
                                  f"{MAX_GRAPHS} graphs (arguments with new shapes or Python "
                                  f"values on most calls?); the oldest are dropped",
                                  stacklevel=3)
            self._entries[key] = entry
            self._built.append(entry.stats)
            return result
        attempts = 1 if last is None else last[1] + 1
        if attempts >= MAX_TRACES:
            raise CompileError(f"needle.compile: {_name(self.fn)} recorded a different graph "
                               f"on each of {attempts} calls in a row; its Python must do the "
                               f"same work on every call (state read by Python control flow, "
                               f"a counter in the function?); the last two differ in "
                               f"{_difference(last[0], signature)}")
        if len(self._pending) >= MAX_GRAPHS:
            del self._pending[next(iter(self._pending))]
        self._pending[key] = (signature, attempts, (last[2] if last else 0.0) + seconds,
                              last[3] if last else reason)
        return result

    def lower(self, *args, **kwargs):
        """The optimized graph for these arguments (a :class:`Lowered`).

        If a compiled graph exists for them it is that one; otherwise the function is traced
        once from the current state, which is restored afterwards (the model and the
        optimizer are left as they were)."""
        entry = self._entries.get(self._key(args, kwargs))
        if entry is not None:
            return Lowered(entry.graph, entry.stats, entry.program)
        modules, optimizers, tensors, _ = discover(self.fn, args, kwargs)
        snapshot = _Snapshot(tensors, optimizers)
        try:
            _, program = trace_call(self.fn, args, kwargs, modules, optimizers, tensors)
        finally:
            snapshot.restore()
        graph, passes = run_passes(program.graph, self.opt_level, _verify())
        return Lowered(graph, {"opt_level": self.opt_level, "passes": passes}, program)

    def stats(self):
        """Counts (calls, traces, cache hits, recompiles), and per graph built: why, the node
        count before and after each pass, fused groups, kernels launched per call, planned
        peak bytes, compile seconds and the median host microseconds of a replay."""
        graphs = [dict(s) for s in self._built]
        out = dict(self._counts, graphs=graphs)
        out["compile_seconds"] = sum(s["compile_seconds"] for s in graphs)
        if graphs:
            last = graphs[-1]
            for k in ("passes", "launches_per_call", "generated_kernels", "planned_peak_bytes",
                      "replay_host_us", "device_graph", "graph_launches_per_call",
                      "graph_nodes"):
                out[k] = last.get(k)
        return out

    def __repr__(self):
        return f"needle.compile({_name(self.fn)}, opt_level={self.opt_level})"


class Lowered:
    """A graph after the passes: ``as_text()`` (Needle IR), ``as_stablehlo()`` (MLIR)."""

    def __init__(self, graph, stats, program):
        self.graph, self.stats, self._program = graph, stats, program

    def arguments(self, *args, **kwargs):
        """The graph's inputs for a call with these arguments, as NumPy arrays: each
        argument's buffer, the current state (parameters, optimizer buffers) and the
        runtime scalars. With them the exported StableHLO runs anywhere (tests run it on
        jaxlib's interpreter)."""
        program = self._program
        inputs = program.bind(call_arguments(args, kwargs), program.read_slots())
        return [a if isinstance(a, np.ndarray) else a.numpy() for a in inputs]

    def as_text(self):
        return as_text(self.graph)

    def as_stablehlo(self, composites="decompose"):
        """StableHLO MLIR text of the graph (a module with ``func.func @main``); composites
        are inlined (``"decompose"``) or kept as ``stablehlo.composite`` (``"keep"``)."""
        from .stablehlo import export
        return export(self.graph, composites=composites)

    def __repr__(self):
        return f"Lowered({self.graph!r})"


class _Entry:
    """A compiled graph for one argument key, with its guards and its bound executor."""

    def __init__(self, program, python_state, opt_level, reason, trace_seconds):
        start = time.perf_counter()
        self.program, self.python_state = program, python_state
        self.device = program.device or cpu()
        before = program.graph.count()
        self.graph, passes = run_passes(program.graph, opt_level, _verify())
        self.backend = self.device.backend
        self.state = {i: flat_view(ref, self.device)  # made once: replays reuse them
                      for i, (kind, ref) in enumerate(program.sources) if kind == "state"}
        self.returned = len(self.graph.outputs) - len(self.graph.aliases)
        options = {"fused_kernels": opt_level >= 3,
                   "generator": generator_for(self.device) if opt_level >= 2 else None}
        self._check_program, self._scalar_vector, self._after = compile_replay(program)
        self._args = [ref for kind, ref in program.sources if kind == "arg"]
        self.replay = None
        if getattr(self.backend, "records_graphs", False) and \
                os.environ.get("NEEDLE_DEVICE_GRAPHS", "1") != "0":
            self.replay = GraphReplay(self.graph, self.device, self.state, self.returned,
                                      **options)
            self.executor = self.replay.executor
        else:
            self.executor = Executor(self.graph, self.device, **options)
        self._host_us = []
        self.stats = {
            "reason": reason, "opt_level": opt_level, "nodes_traced": before,
            "passes": passes, "launches_per_call": launched_work(self.graph),
            "fused_groups": sum(n.op == "composite" for n in self.graph.nodes),
            "fused_kernels": self.executor.info["fused_kernels"],
            "generated_kernels": self.executor.info["generated_kernels"],
            "outputs_in_place": self.executor.info["outputs_in_place"],
            "planned_peak_bytes": self.executor.info["planned_peak_bytes"],
            "inputs": len(self.graph.inputs), "outputs": len(self.graph.outputs),
            "runtime_scalars": len(program.scalars),
            "compile_seconds": trace_seconds + time.perf_counter() - start,
            "replay_host_us": None}

    def check(self):
        """``None`` if the graph still applies, else why not."""
        changed = self.python_state.check()
        if changed is not None:
            return changed
        slots = self._check_program()  # (the slot values, or what changed)
        if isinstance(slots, str):
            return slots
        self._slots = slots
        return None

    def run(self, args, kwargs):
        start = time.perf_counter()
        program, slots = self.program, self._slots
        replay = self.replay
        if replay is not None and replay.recorded:
            given = call_arguments(args, kwargs)
            outputs = replay.launch([given[ref].realize_cached_data() for ref in self._args],
                                    self._scalar_vector(slots))
        else:
            # (the scalars as NumPy: the executor uploads them and keeps the host copy)
            inputs = program.bind(call_arguments(args, kwargs), slots, self.state)
            if replay is not None:
                outputs = replay(inputs)
                self.stats.update(replay.stats())
            else:
                with self.backend.one_submission():
                    outputs = self.executor(*inputs)
        self._after(slots)
        for tensor, grad in program.grads:
            tensor.grad = grad
        result = unflatten(program.result,
                           [Tensor.make_const(o) for o in outputs[:self.returned]])
        samples = self._host_us
        samples.append(time.perf_counter() - start)
        if len(samples) in (1, 8, 64):  # (a median per call would cost more than the call)
            self.stats["replay_host_us"] = float(np.median(samples)) * 1e6
            if len(samples) == 64:
                del samples[:]
        return result


def _verify():
    """``NEEDLE_DEBUG=verify``: the verifier checks every traced graph after every pass."""
    return "verify" in debug_flags()


def _name(fn):
    return getattr(fn, "__name__", None) or repr(fn)


def _difference(a, b):
    """Where two trace signatures first differ, in words (for the error)."""
    parts = ("the graph", "the graph's inputs", "the runtime scalars", "the Python updates",
             "the guards", "the returned structure")
    for name, x, y in zip(parts, a, b):
        if x != y:
            if name == "the graph":
                for i, (lx, ly) in enumerate(zip(x.splitlines(), y.splitlines())):
                    if lx != ly:
                        return f"the graph, line {i + 1}:\n  {lx[-300:]}\nthen\n  {ly[-300:]}"
                return "the graph's length"
            return f"{name}: {str(x)[:200]} then {str(y)[:200]}"
    return "nothing (a bug)"


def _key(args, kwargs):
    """What a graph is specialised on: each Tensor's layout, dtype and device, and the
    value of every other argument (objects by identity)."""
    parts, handles = [], {}
    for name, a in [(i, a) for i, a in enumerate(args)] + sorted(kwargs.items()):
        if isinstance(a, Tensor):
            d = a.realize_cached_data()
            parts.append((name, "tensor", d.shape, d.strides, d.offset, d._handle.size, d.dtype,
                          d.device.name, a.requires_grad, handles.setdefault(id(d._handle), name)))
        elif isinstance(a, np.ndarray):
            raise TypeError(f"needle.compile: argument {name} is a numpy array; pass a needle "
                            f"Tensor (needle.Tensor(array, device=...)): data made into a "
                            f"tensor inside the function would be frozen into the graph")
        elif a is None or isinstance(a, (bool, int, float, str)):
            parts.append((name, type(a).__name__, a))
        else:
            parts.append((name, "object", id(a)))
    return tuple(parts)


class _Snapshot:
    """The values of state tensors and optimizer state, to put back after a trace that
    must leave no trace (``lower``)."""

    def __init__(self, tensors, optimizers):
        self.tensors = [(t, t.cached_data, NDArray(t.cached_data), t.grad)
                        for _, t in tensors.values() if t.cached_data is not None]
        self.optimizers = [
            (opt, opt.state, {p: (s, dict(s), {k: NDArray(v) for k, v in s.items()
                                               if isinstance(v, NDArray)})
                              for p, s in opt.state.items()})
            for opt in optimizers]

    def restore(self):
        for t, data, copy, grad in self.tensors:
            t.cached_data = data
            data[...] = copy
            t.grad = grad
        for opt, state, saved in self.optimizers:
            opt.state = state
            for p in [p for p in state if p not in saved]:
                del state[p]
            for p, (s, contents, buffers) in saved.items():
                s.clear()
                s.update(contents)
                for k, copy in buffers.items():
                    s[k][...] = copy
