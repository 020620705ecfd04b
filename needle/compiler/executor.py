"""Run a graph on a Needle device through the NDArray API, with a static memory plan.

:class:`Executor` turns a :class:`~needle.compiler.ir.Graph` into a list of steps, one per
node, each a function of :data:`OPS` applied to NDArrays; it works on every device (cpu,
cuda, cudnn, webgpu) because it only uses what the backend contract offers. The reference
semantics are :mod:`needle.compiler.reference`; this module is tested against it.

Dtypes: Needle devices hold float32 and float64 only. A ``float32`` / ``float64`` value is
stored as itself; ``int32``, ``int64`` and ``bool`` values are stored as floats of the
graph's float dtype (float64 if the graph has a float64 value, else float32), booleans as
1.0 / 0.0 (what the backend's comparisons produce). Integers are exact up to 2**24 in
float32 (2**53 in float64); integer ``divide`` truncates the float quotient, so it is exact
where the quotient is not within one float32 rounding of an integer.

Memory plan: the last use of every value is known before the first call; a step drops its
references to values whose last use it was, so their buffers go back to the device's pool
right away. ``info["planned_peak_bytes"]`` is the largest total of the bytes of the values
alive at once (inputs until their last use, cached constants always, outputs to the end),
each value counted at its own size in its stored dtype (views of another value count as
if they were copies).

Example:
    >>> import needle
    >>> from needle.compiler.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input(TensorType((2,), "int32"))
    >>> g.outputs = [g.add("multiply", [x, x], [x.type]).output]
    >>> ex = Executor(g, needle.cpu())
    >>> ex.numpy(ex(np.array([3, -4])))       # NumPy (or NDArrays) in, NDArrays out
    [array([ 9, 16], dtype=int32)]
    >>> ex.info["planned_peak_bytes"]         # x and x * x, stored as 2 float32 each
    16
"""
import math

import numpy as np

from ..backend_ndarray import NDArray, concatenate, full
from ..backend_ndarray.ndarray import compact_strides
from ..backend_ndarray import where as nd_where
from ..backend_ndarray.device import device as lookup_device
from ..errors import ShapeError
from ..ops.attention import fused_attention_fits
from . import reference
from .codegen import Unsupported
from .passes.common import splat
from .reference import NP_DTYPES

FLOAT_DTYPES = ("float32", "float64")


class Executor:
    """A graph bound to a device: ``executor(*arrays)`` runs it and returns its outputs.

    Args:
        graph: a :class:`~needle.compiler.ir.Graph`.
        device: a Needle device (or its name).
        index_dtype: the float dtype that stores int and bool values (default: float64 if
            the graph holds a float64 value, else float32).
        fused_kernels: run each composite that has a fused op of the device's backend
            (:data:`FUSED`) as that op, not as its decomposition (equal to float32
            round-off: a kernel sums in its own order); every other composite, and all of
            them without this, runs its decomposition.
        generator: a kernel generator (:func:`~needle.compiler.codegen.generator_for`):
            each composite without a fused op, and each optimizer update, runs as one
            kernel generated from its decomposition where the generator can write one.
        host_scalars: whether an optimizer update kernel may take its scalars from the
            host copy of the scalar vector (False for a call replayed as a recorded
            device graph, which must read them on the device every time).

    Attributes:
        info: the static plan: ``planned_peak_bytes``, ``constant_bytes``,
            ``max_live_values`` (the most values alive at once) and ``last_use``
            (``{value: step}``; graph outputs map to ``len(graph.nodes)``),
            ``fused_kernels`` (the composites run as one backend op each); after a call,
            ``max_live_values_run``, the most values the call actually held.
    """

    def __init__(self, graph, device, index_dtype=None, fused_kernels=False, generator=None,
                 host_scalars=True):
        self.graph, self.device = graph, lookup_device(device)
        self.host_scalars = host_scalars
        self.index_dtype = index_dtype or ("float64" if _has_float64(graph) else "float32")
        self._constants = {}  # constant / iota outputs: uploaded once, at build time
        self._host = {}  # their host values (static gather and scatter indices)
        self._static = {}  # node -> host positions a gather or scatter computed once
        self._sub = {}  # composite node -> Executor of its decomposition
        self._regions = {}  # while / case node -> an Executor per region
        self._fused = {}  # composite node -> the FUSED function that runs it as one kernel
        for node in graph.nodes:
            if node.op not in OPS:
                raise NotImplementedError(f"the executor has no op {node.op!r}")
            if node.op in ("constant", "iota"):
                value = reference.run_node(node, [])[0]
                self._host[node.output] = value
                self._constants[node.output] = self.upload(value, node.output)
            elif node.regions is not None:
                self._regions[node] = [Executor(region, self.device, self.index_dtype,
                                                fused_kernels, generator, host_scalars)
                                       for region in node.regions]
            elif node.op == "composite":
                kernel = self._kernel(node) if fused_kernels or \
                    node.attrs["name"] in ALWAYS_FUSED else None
                if generator is not None and (kernel is None or node.attrs["name"] in UPDATES):
                    kernel = self._generated(node, generator) or kernel
                if kernel is not None:
                    self._fused[node] = kernel
                elif node.decomposition is None:
                    raise NotImplementedError(f"composite {node.attrs.get('name')!r} has no "
                                              f"decomposition to run")
                else:
                    decomposition = node.decomposition
                    if generator is not None and node.attrs["name"] != "needle.fusion":
                        decomposition = _fused_copy(decomposition)  # its groups, generated
                    self._sub[node] = Executor(decomposition, self.device,
                                               self.index_dtype, fused_kernels, generator,
                                               host_scalars)
        self._plan()
        self._into = self._destinations()
        self._batch_loops(generator)
        self._given_now = ()
        self.info["fused_kernels"] = len(self._fused)
        self.info["outputs_in_place"] = sum(len(d) for d in self._into.values())
        self.info["generated_kernels"] = sum(getattr(k, "generated", False) for k in
                                             self._fused.values()) + \
            sum(sub.info["generated_kernels"] for sub in self._sub.values())
        self._checked = False
        self._host_inputs, self._given = {}, []  # of the current call (see __call__)
        self._constant_outputs = [i for i, v in enumerate(graph.outputs) if v in self._constants]

    def _kernel(self, node):
        """The :data:`FUSED` function that runs composite ``node`` as one kernel of this
        device's backend, or ``None``: no kernel by that name, an attribute it reads
        missing, the backend without the op for the dtype, values of several storage
        dtypes or an empty one (the ops layer runs no kernel on those either)."""
        if node.attrs["name"] in UPDATES:
            return self._update_kernel(node)
        entry = FUSED.get(node.attrs["name"])
        if entry is None:
            return None
        op, attrs, fn = entry
        values = node.inputs + node.outputs
        dtypes = {self.storage(v) for v in values}
        if any(k not in node.attrs for k in attrs) or len(dtypes) != 1 or \
                not all(math.prod(v.shape) for v in values):
            return None
        backend = self.device.backend
        if op.startswith("attention") and not fused_attention_fits(backend,
                                                                   node.inputs[0].shape[-1]):
            return None
        return fn if backend.supports(op, dtypes.pop()) else None

    def _destinations(self):
        """``{node: {output position: graph input}}``: composite outputs that become an
        aliased graph output (a gradient a step leaves on ``p.grad``) and are written
        straight into that input's buffer, not copied there at the end. Only for kernels
        that take destinations, and only where nothing from the node on reads the input's
        old value (nor a view of it) and no other output is a view of it."""
        graph, out = self.graph, {}
        position = {node: k for k, node in enumerate(graph.nodes)}
        for o, i in graph.aliases.items():
            v, target = graph.outputs[o], graph.inputs[i]
            while v.producer is not None and v.producer.op == "reshape":
                v = v.producer.inputs[0]
            node = v.producer
            kernel = self._fused.get(node)
            if not getattr(kernel, "takes_destinations", False) or \
                    self.storage(v) != self.storage(target) or \
                    math.prod(v.shape) != math.prod(target.shape):
                continue
            views = _views_of(graph, target)
            later = {x for n in graph.nodes[position[node]:] for x in n.inputs}
            others = {w for k, w in enumerate(graph.outputs) if k != o}
            if views & later or views & others:
                continue
            out.setdefault(node, {})[node.outputs.index(v)] = i
        return out

    def destinations(self, node):
        """The NDArrays ``node``'s kernel writes its outputs into this call (see
        :meth:`_destinations`), as ``{output position: array}``."""
        given = self._given_now
        return {k: given[i].reshape(node.outputs[k].shape)
                for k, i in self._into[node].items() if given[i].is_compact()}

    def _batch_loops(self, generator):
        """Runs of consecutive steps whose kernels are independent generated loops become
        one step that launches one kernel (``generator.batch``, where the generator has
        one): in a recorded graph an optimizer step's parameter updates are one node."""
        batcher = getattr(generator, "batch", None)
        if batcher is None:
            return
        steps, run, views = [], [], []  # views: movement steps met inside the run

        def close():
            if len(run) > 1:
                members = [node for _, node, _ in run]
                kernel = batcher([self._fused[m] for m in members])
                # the views first (they read nothing the batch makes), their frees after it
                steps.extend((fn, node, []) for fn, node, _ in views)
                steps.append((lambda ex, batch, *args: kernel(batch, *args), _Batch(members),
                              [v for _, _, free in run + views for v in free]))
            else:
                steps.extend(sorted(run + views, key=lambda step: order[step[1]]))
            run.clear()
            views.clear()

        order = {node: i for i, node in enumerate(self.graph.nodes)}
        for step in self._steps:
            node, kernel = step[1], self._fused.get(step[1])
            made = {v for _, m, _ in run for v in m.outputs}
            if run and node.op in _VIEW_OPS and node.op != "convert" and \
                    not made.intersection(node.inputs):
                views.append(step)  # (an NDArray view: no kernel, it may run before)
                continue
            if getattr(kernel, "batch", None) is not batcher or kernel.group.kind != "loop" \
                    or node in self._into:
                close()
                steps.append(step)
                continue
            pointers = len(node.inputs) + len(node.outputs)
            if run and (not self._independent([m for _, m, _ in run], node) or
                        8 * (pointers + sum(len(m.inputs) + len(m.outputs)
                                            for _, m, _ in run)) > BATCH_PARAMETER_BYTES):
                close()
            run.append(step)
        close()
        self._steps = steps

    def _independent(self, members, node):
        """Whether ``node`` may run at the same time as ``members``: it reads none of their
        outputs, and no kernel writes in place a buffer another one reads."""
        if {v for m in members for v in m.outputs}.intersection(node.inputs):
            return False
        reads, mine = {v for m in members for v in m.inputs}, set(node.inputs)

        def written(n):
            return [n.inputs[i] for i in self._fused[n].in_place.values()]
        return not any(_views_of(self.graph, x) & reads for x in written(node)) and \
            not any(_views_of(self.graph, x) & mine for m in members for x in written(m))

    def _generated(self, node, generator):
        """Composite ``node`` as one generated kernel, or ``None`` where the generator has
        none for its decomposition. An optimizer update writes its tensors in place under
        the conditions of :meth:`_updates_in_place`."""
        if node.decomposition is None:
            return None
        in_place = None
        if node.attrs["name"] in UPDATES and self._updates_in_place(
                node, UPDATES[node.attrs["name"]][1](node.attrs)):
            # output 0 is the parameter (input 0), output j the buffer at input j + 1
            in_place = {j: (0 if j == 0 else j + 1) for j in range(len(node.outputs))}
        try:
            return generator(node.decomposition, self, in_place)
        except Unsupported:
            return None

    def _update_kernel(self, node):
        """An optimizer-update composite as the backend's in-place update (on copies), when
        each of its scalars is a constant or an element of a graph input: the caller passes
        that input as a NumPy array (the runtime scalar vector), so its host values are
        known without a device read."""
        op, tensors = UPDATES[node.attrs["name"]]
        count = tensors(node.attrs)
        sources = [self._scalar_source(v) for v in node.inputs[count:]]
        if not self.host_scalars and any(s is None or s[0] != "const" for s in sources):
            return None
        dtypes = {self.storage(v) for v in node.inputs[:count] + node.outputs}
        if None in sources or len(dtypes) != 1 or \
                not self.device.backend.supports(op, dtypes.pop()):
            return None
        run, inplace = _UPDATE_KERNELS[op], self._updates_in_place(node, count)
        return lambda node, *args: run(node, [self._host_scalar(s) for s in sources],
                                       inplace, *args[:count])

    def _updates_in_place(self, node, count):
        """Whether the update may write its tensor inputs themselves: each is a graph input
        that nothing reads after this node — neither itself nor a view of its buffer (the
        movement ops run as NDArray views) — whose new value (this node's output) is the
        graph output aliased to it. Then ``_finish`` has nothing to copy back (eager's
        in-place step)."""
        graph, position = self.graph, self.graph.nodes.index(node)
        later = {v for n in graph.nodes[position + 1:] for v in n.inputs} | set(graph.outputs)
        tensors = node.inputs[:count]
        outputs = [node.outputs[0]] + node.outputs[1:]
        # which output updates which input: the param first, then the buffers in order
        pairs = [(tensors[0], outputs[0])] + list(zip(tensors[2:], outputs[1:]))
        for x, y in pairs:
            if x not in graph.inputs or _views_of(graph, x) & later:
                return False
            i = graph.inputs.index(x)
            if not any(graph.aliases.get(o) == i for o, v in enumerate(graph.outputs) if v is y):
                return False
        return len(pairs) == len(outputs)

    def _scalar_source(self, value):
        """``("const", x)`` or ``(graph input, flat index)`` for a rank-0 value sliced (and
        reshaped or converted) from an input, or from a constant; else None."""
        index = 0
        while value.producer is not None and value.producer.op in ("reshape", "convert",
                                                                   "slice"):
            node = value.producer
            if node.op == "slice":
                index += node.attrs["start_indices"][0] if node.inputs[0].shape else 0
            value = node.inputs[0]
        if value in self._host:
            return ("const", float(np.asarray(self._host[value]).reshape(-1)[index]))
        if value.producer is None and value in self.graph.inputs and len(value.shape) <= 1:
            return (value, index)
        return None

    def _host_scalar(self, source):
        where, index = source
        if where == "const":
            return index
        host = self._host_inputs.get(where)
        if host is None:  # given on the device: one read (the api passes NumPy)
            host = self._given[self.graph.inputs.index(where)].numpy()
        return float(np.asarray(host).reshape(-1)[index])

    # -- dtypes and transfers ---------------------------------------------------------------
    def storage(self, value):
        """The device dtype that holds ``value``."""
        return value.dtype if value.dtype in FLOAT_DTYPES else self.index_dtype

    def nbytes(self, value):
        return math.prod(value.shape) * np.dtype(self.storage(value)).itemsize

    def upload(self, array, value):
        """A host array holding ``value``'s elements as an NDArray in its storage dtype."""
        data = np.asarray(np.asarray(array, dtype=NP_DTYPES[value.dtype]),
                          dtype=self.storage(value), order="C")  # (ascontiguousarray: 0-d -> 1-d)
        return NDArray(data, device=self.device, dtype=self.storage(value))

    def _bring(self, array, value, i):
        if isinstance(array, NDArray):
            if array.device != self.device:
                array = array.to(self.device)
            if array.dtype != self.storage(value):
                array = array.astype(self.storage(value))
        else:
            array = self.upload(array, value)
        if array.shape != value.shape:
            raise ShapeError(f"input {i} of {self.graph.name}: expected shape {value.shape}, "
                             f"got {array.shape}")
        return array

    def numpy(self, arrays, values=None):
        """NDArrays this executor produced, as NumPy arrays in their values' IR dtypes
        (integers rounded from their float storage, booleans from 1.0 / 0.0)."""
        values = self.graph.outputs if values is None else values
        return [to_host(a, v) for a, v in zip(arrays, values)]

    def host(self, value, array):
        """``value``'s elements on the host in its IR dtype: the build-time copy of a
        constant, else a device-to-host read of ``array``."""
        if value in self._host:
            return self._host[value]
        return to_host(array, value)

    def constant(self, value):
        """``value``'s elements as a host array if a constant or iota node makes it."""
        return self._host.get(value)

    # -- the plan ---------------------------------------------------------------------------
    def _plan(self):
        graph, end = self.graph, len(self.graph.nodes)
        last = {v: -1 for v in graph.inputs}  # unused inputs are dropped before step 0
        for i, node in enumerate(graph.nodes):
            for v in node.outputs:
                last[v] = i  # an output no one reads is dropped right after its step
            for v in node.inputs:
                last[v] = i
        for v in graph.outputs:
            last[v] = end
        self._drop_first = [v for v in graph.inputs if last[v] == -1]
        self._steps = [(_scalar_form(node) or OPS[node.op], node, []) for node in graph.nodes]
        for v, i in last.items():
            if 0 <= i < end and v not in self._constants:
                self._steps[i][2].append(v)
        # simulate the plan: the bytes and the number of values alive during each step
        constant_bytes = sum(self.nbytes(v) for v in self._constants) + sum(
            sub.info["constant_bytes"] for sub in self._sub.values())
        live = {v for v in graph.inputs if last[v] >= 0}
        live_bytes = sum(self.nbytes(v) for v in live)  # (kept as values come and go)
        peak_bytes, peak_values = constant_bytes + live_bytes, len(live)
        for node, (_, _, free) in zip(graph.nodes, self._steps):
            for v in node.outputs:
                if v not in self._constants and v not in live:
                    live.add(v)
                    live_bytes += self.nbytes(v)
            inner = 0
            if node in self._sub:  # a decomposition's own temporaries, beyond its in/outputs
                sub = self._sub[node]
                inner = max(0, sub.info["planned_peak_bytes"] - sub.info["constant_bytes"] - sum(
                    sub.nbytes(v) for v in set(sub.graph.inputs) | set(sub.graph.outputs)))
            peak_bytes = max(peak_bytes, constant_bytes + inner + live_bytes)
            peak_values = max(peak_values, len(live) + len(self._constants))
            for v in free:
                if v in live:
                    live.remove(v)
                    live_bytes -= self.nbytes(v)
        self.info = {"planned_peak_bytes": peak_bytes, "constant_bytes": constant_bytes,
                     "max_live_values": peak_values, "last_use": last, "nodes": end}

    # -- running ----------------------------------------------------------------------------
    def __call__(self, *arrays):
        """Run the graph on ``arrays`` (NDArrays, or anything NumPy takes, one per input).

        Returns the list of output NDArrays on this executor's device, in their storage
        dtypes (see :meth:`numpy`). An output aliased to an input (``graph.aliases``) is
        written into that input's NDArray, which is returned in its place (an input given
        as a NumPy array has nothing to update: its output comes back as a new NDArray).
        """
        graph = self.graph
        if len(arrays) != len(graph.inputs):
            raise ValueError(f"{graph.name} takes {len(graph.inputs)} inputs, got {len(arrays)}")
        given = [self._bring(a, v, i) for i, (a, v) in enumerate(zip(arrays, graph.inputs))]
        # host copies of inputs given as NumPy: an optimizer kernel reads its scalars there
        self._host_inputs = {v: a for a, v in zip(arrays, graph.inputs)
                             if isinstance(a, np.ndarray)}
        self._given = given
        for o, i in graph.aliases.items():
            if isinstance(arrays[i], NDArray) and arrays[i] is not given[i]:
                raise ValueError(f"output {o} of {graph.name} updates input {i} in place: pass "
                                 f"an NDArray on {self.device} of dtype "
                                 f"{self.storage(graph.inputs[i])}, not {arrays[i].dtype} on "
                                 f"{arrays[i].device}")
        try:
            return self._finish(self.execute(given), given, arrays)
        finally:
            self._host_inputs, self._given = {}, []  # keep nothing of the call alive

    def execute(self, given):
        """Run the steps on ``given`` (NDArrays already on this device, in the inputs'
        storage dtypes and shapes): the outputs, aliased ones not yet written back. What
        ``__call__`` does after its checks, and a parent graph's composite step."""
        env = dict(self._constants)
        env.update(zip(self.graph.inputs, given))
        for v in self._drop_first:
            env.pop(v, None)
        self._given_now = given  # (destinations are inputs no step reads: see _destinations)
        most, check = len(env), not self._checked
        for fn, node, free in self._steps:
            out = fn(self, node, *[env[v] for v in node.inputs])
            outs = out if isinstance(out, list) else [out]
            for v, o in zip(node.outputs, outs):
                if check and (o.shape != v.shape or o.dtype != self.storage(v)):
                    raise RuntimeError(f"executor {node.op}: made {o.dtype}{list(o.shape)} "
                                       f"for {v.type}")
                env[v] = o
            most = max(most, len(env))
            for v in free:
                del env[v]
        self._checked = True  # every step made its value's type once: the plan is sound
        self._given_now = ()
        self.info["max_live_values_run"] = most
        return [env[v] for v in self.graph.outputs]

    def _finish(self, outputs, given, arrays):
        """Aliased outputs written into their inputs; outputs that share a buffer with an
        input or a cached constant copied, so the caller owns every buffer it gets."""
        graph = self.graph
        # copies first, writes second: an output may read an input another one overwrites
        kept = {id(a._handle) for a in given} | {id(a._handle) for a in self._constants.values()}
        for o, a in enumerate(outputs):
            unchanged = o in graph.aliases and _same_view(a, given[graph.aliases[o]])
            if id(a._handle) in kept and not unchanged:
                outputs[o] = NDArray(a)
        for o, i in graph.aliases.items():
            if not _same_view(outputs[o], given[i]):
                given[i][...] = outputs[o]
                outputs[o] = given[i]
        return outputs


#: a batched launch's parameters (a pointer per member input and output) stay within the
#: 4 KiB every CUDA driver takes (12.1 and later take 32 KiB)
BATCH_PARAMETER_BYTES = 4096


class _Batch:
    """Steps run as one (:meth:`Executor._batch_loops`): its members' inputs and outputs,
    concatenated in step order."""

    op = "batch"

    def __init__(self, members):
        self.members = members
        self.inputs = [v for n in members for v in n.inputs]
        self.outputs = [v for n in members for v in n.outputs]


def _same_view(a, b):
    """Whether NDArrays ``a`` and ``b`` are the same elements of the same buffer."""
    return a is b or (a._handle is b._handle and a.shape == b.shape and
                      a.strides == b.strides and a.offset == b.offset)


def run(graph, *arrays, device):
    """Run ``graph`` once on ``device``: ``Executor(graph, device)(*arrays)``."""
    return Executor(graph, device)(*arrays)


def to_host(array, value):
    """The NDArray that holds ``value``, as a NumPy array of the value's IR dtype."""
    a = array.numpy()
    if value.dtype == "bool":
        return a != 0
    if value.dtype in ("int32", "int64"):
        return np.rint(a).astype(NP_DTYPES[value.dtype])
    return a


def _fused_copy(graph):
    """A copy of a composite's decomposition with its elementwise groups fused (the passes
    leave decompositions as recorded, for export and for backends that run them)."""
    from .parser import parse
    from .passes import FUSION
    from .printer import as_text

    copy = parse(as_text(graph))
    for p in FUSION:
        copy = p(copy)
    return copy


def _has_float64(graph):
    values = list(graph.inputs)
    for node in graph.nodes:
        values += node.outputs
        if node.decomposition is not None and _has_float64(node.decomposition):
            return True
    return any(v.dtype == "float64" for v in values)


# -- helpers: what the contract lacks, composed from what it has ------------------------------
def _like(x, shape=None, value=0.0):
    return full(x.shape if shape is None else shape, value, dtype=x.dtype, device=x.device)


def _select(pred, on_true, on_false):
    """``pred ? on_true : on_false`` with pred 1.0 / 0.0: the backend's select (the branch
    not taken, NaN included, never reaches the result)."""
    return nd_where(pred, on_true, on_false)


def _sign(x):
    # (x > 0) - (x < 0), plus min(|x|, 0): 0 for every number, NaN for NaN
    return ((x > 0.0) - (x < 0.0)) + x.abs().minimum(0.0)


def _round_magnitude(a):
    """Round ``a >= 0`` to an integer (ties to even): adding 2**p (p = mantissa bits)
    leaves no fraction bits; values from 2**p on are integers already."""
    big = 2.0 ** (23 if a.dtype == "float32" else 52)
    return _select(a < big, (a + big) - big, a)


def _trunc(x):
    """Round toward zero (StableHLO's float-to-int convert, integer divide)."""
    a = x.abs()
    r = _round_magnitude(a)
    t = r - (r > a)  # floor(|x|); NaN and infinities come through unchanged
    return t * ((x > 0.0) - (x < 0.0))


def _floor(x):
    t = _trunc(x)
    return t - (x < t)


def _pad(x, value, low, high, interior):
    """StableHLO pad of an NDArray: ``value`` a float or a rank-0 NDArray."""
    if not any(low) and not any(high) and not any(interior):
        return x
    dilated = [d + (d - 1) * i if d else 0 for d, i in zip(x.shape, interior)]
    grown = tuple(max(lo, 0) + d + max(hi, 0) for d, lo, hi in zip(dilated, low, high))
    if isinstance(value, NDArray):
        out = NDArray(value.reshape((1,) * len(grown)).broadcast_to(grown))  # a new buffer
    else:
        out = _like(x, grown, value)
    if x.size:
        out[tuple(slice(max(lo, 0), max(lo, 0) + d, i + 1)
                  for d, lo, i in zip(dilated, low, interior))] = x
    if min(low + high, default=0) < 0:
        out = out[tuple(slice(-min(lo, 0), g + min(hi, 0)) for g, lo, hi in zip(grown, low, high))]
    return out


def _pad_value(ex, value, array):
    """A pad or init value as a float when a constant node makes it (a fill is cheaper
    than a broadcast copy), else the rank-0 NDArray."""
    host = ex.constant(value)
    return float(host) if host is not None else array


def _take(x, positions):
    """``x.flat[positions]`` shaped as ``positions`` (a host int64 array): one backend take."""
    out = NDArray.make(positions.shape, device=x.device, dtype=x.dtype)
    if out.size:
        x.device.backend.take(x.compact()._handle, np.ascontiguousarray(positions).reshape(-1),
                              out._handle)
    return out


# -- elementwise ---------------------------------------------------------------------------
def _is_int(value):
    return value.dtype in ("int32", "int64")


def _divide(ex, node, a, b):
    q = a / b
    return _trunc(q) if _is_int(node.inputs[0]) else q


def _power(ex, node, a, b):
    p = a ** b
    return _trunc(p) if _is_int(node.inputs[0]) else p  # a negative exponent: 0 unless |a| = 1


def _remainder(ex, node, a, b):
    # lhs - trunc(lhs / rhs) * rhs (fmod for floats up to the rounding of the quotient)
    return a - _trunc(a / b) * b


def _logical(op):
    def fn(ex, node, *args):
        if node.inputs[0].dtype != "bool":
            raise NotImplementedError(f"{node.op} of {node.inputs[0].dtype} values (bitwise): "
                                      f"Needle devices hold integers as floats")
        return op(*args)
    return fn


def _log1p(x):
    """log(1 + x) within a few ulps without a log1p kernel: the series where |x| < 0.1
    (degree 10 for float32, 18 for float64), where log(1 + x) would lose x's low digits
    (and a device's log may be off by 2**-21 near 1, as WGSL allows), else log(1 + x)."""
    top = 18 if np.dtype(x.dtype) == np.float64 else 10
    series = 0.0
    for n in range(top, 0, -1):  # x - x^2/2 + x^3/3 - ...: Horner from the top term
        series = x * ((1.0 if n % 2 else -1.0) / n) + (series * x if n < top else 0.0)
    return nd_where(x.abs() < 0.1, series, (x + 1.0).log())


def _expm1(x):
    """exp(x) - 1 within a few ulps: the series where |x| < 0.1 (degree 7 for float32, 13
    for float64), else exp(x) - 1 (no cancellation to speak of there)."""
    top = 13 if np.dtype(x.dtype) == np.float64 else 7
    series = x * (1.0 / top) + 1.0
    for n in range(top - 1, 0, -1):  # 1 + x/2 (1 + x/3 (... (1 + x/top)))
        series = series * x * (1.0 / n) + 1.0 if n > 1 else series * x
    return nd_where(x.abs() < 0.1, series, x.exp() - 1.0)


_UNARY = {
    "log_plus_one": _log1p, "exponential_minus_one": _expm1,
    "negate": lambda x: -x, "exponential": NDArray.exp, "log": NDArray.log,
    "tanh": NDArray.tanh, "logistic": NDArray.sigmoid, "sqrt": NDArray.sqrt,
    "rsqrt": lambda x: x ** -0.5, "abs": NDArray.abs, "sine": NDArray.sin,
    "cosine": NDArray.cos, "sign": _sign, "floor": _floor,
}

_BINARY = {
    "add": lambda a, b: a + b, "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b, "maximum": NDArray.maximum, "minimum": NDArray.minimum,
}

_COMPARE = {"EQ": lambda a, b: a == b, "NE": lambda a, b: a != b, "LT": lambda a, b: a < b,
            "LE": lambda a, b: a <= b, "GT": lambda a, b: a > b, "GE": lambda a, b: a >= b}


def _compare(ex, node, a, b):
    if node.attrs.get("compare_type") == "TOTALORDER":
        raise NotImplementedError("compare with compare_type TOTALORDER")
    return _COMPARE[node.attrs["comparison_direction"]](a, b).astype(ex.storage(node.output))


def _full_shape(x, shape, dtype):
    """A rank-0 operand (select's pred, clamp's bounds) broadcast to ``shape``."""
    x = x.astype(dtype)
    return x.reshape((1,) * len(shape)).broadcast_to(shape) if x.shape != tuple(shape) else x


def _select_op(ex, node, pred, on_true, on_false):
    return _select(_full_shape(pred, on_true.shape, on_true.dtype), on_true, on_false)


def _clamp(ex, node, lo, x, hi):
    return x.maximum(_full_shape(lo, x.shape, x.dtype)).minimum(_full_shape(hi, x.shape, x.dtype))


def _convert(ex, node, x):
    src, dst = node.inputs[0], node.output
    if dst.dtype == "bool":
        x = x != 0.0
    elif _is_int(dst) and src.dtype in FLOAT_DTYPES:
        x = _trunc(x)
    return x.astype(ex.storage(dst))


# -- movement ---------------------------------------------------------------------------------
def _broadcast_in_dim(ex, node, x):
    dims, shape = list(node.attrs["broadcast_dimensions"]), node.output.shape
    expanded = [1] * len(shape)
    for i, d in enumerate(dims):
        expanded[d] = x.shape[i]
    order = sorted(range(len(dims)), key=lambda i: dims[i])  # operand axes by target axis
    if order != list(range(len(dims))):
        x = x.permute(order)
    return x.reshape(tuple(expanded)).broadcast_to(shape)


def _reshape(ex, node, x):
    """A view: NDArray.reshape copies a view that does not start its buffer, which a
    contiguous one need not (a scalar sliced from the runtime-scalar vector)."""
    shape = node.output.shape
    if not x.is_compact() and x.strides == compact_strides(x.shape):
        return x.as_strided(shape, compact_strides(shape))
    return x.reshape(shape)


def _slice(ex, node, x):
    a = node.attrs
    strides = a.get("strides") or [1] * x.ndim
    return x[tuple(slice(s, e, st) for s, e, st in zip(a["start_indices"], a["limit_indices"],
                                                        strides))]


def _reverse(ex, node, x):
    dims = tuple(node.attrs["dimensions"])
    return x.flip(dims) if dims else x


def _pad_op(ex, node, x, value):
    a, zeros = node.attrs, [0] * x.ndim
    return _pad(x, _pad_value(ex, node.inputs[1], value),
                list(a.get("edge_padding_low", zeros)), list(a.get("edge_padding_high", zeros)),
                list(a.get("interior_padding", zeros)))


# -- reductions and contractions ----------------------------------------------------------------
_IDENTITY = {"add": 0.0, "max": -math.inf, "min": math.inf, "multiply": 1.0}
_ALIASES = {"maximum": "max", "minimum": "min"}
_BOOLEAN = {"and": ("min", 1.0), "or": ("max", 0.0)}  # on 1.0 / 0.0: (computation, identity)
_COMBINE = {"add": lambda a, b: a + b, "max": NDArray.maximum, "min": NDArray.minimum,
            "multiply": lambda a, b: a * b}


def _product(x, axes):
    """The product over ``axes`` (the contract has no product reduction): the reduced
    axes moved last and halved by elementwise multiplies, log2(size) steps."""
    kept = [d for d in range(x.ndim) if d not in axes]
    size = math.prod(x.shape[d] for d in axes)
    rows = x.permute(kept + list(axes)).reshape((math.prod(x.shape[d] for d in kept), size))
    if size == 0:
        return _like(x, (rows.shape[0],), 1.0)
    while rows.shape[1] > 1:
        half = rows.shape[1] // 2
        paired = rows[:, :half] * rows[:, half:2 * half]
        rows = concatenate([paired, rows[:, 2 * half:]], axis=1) if rows.shape[1] % 2 else paired
    return rows.reshape((rows.shape[0],))


def _reduce(ex, node, x, init):
    computation = node.attrs.get("computation", "add")
    computation = _ALIASES.get(computation, computation)
    if computation in _BOOLEAN and node.inputs[0].dtype != "bool":
        raise NotImplementedError(f"reduce with computation {computation!r} of "
                                  f"{node.inputs[0].dtype} values (bitwise) on the executor")
    computation, identity = _BOOLEAN.get(computation, (computation, _IDENTITY.get(computation)))
    if computation not in _COMBINE:
        raise NotImplementedError(f"reduce with computation {computation!r} on the executor")
    dims, shape = tuple(node.attrs["dimensions"]), node.output.shape
    size = math.prod(x.shape[d] for d in dims)
    if not dims:
        out = x
    elif size == 0:
        out = _like(x, shape, identity)
    elif computation == "add":
        out = x.sum(dims)
    elif computation == "max":
        out = x.max(dims)
    elif computation == "min":
        out = -((-x).max(dims))
    else:
        out = _product(x, dims)
    out = out.reshape(shape)
    init_host = ex.constant(node.inputs[1])
    if init_host is not None and float(init_host) == identity:
        return out  # the common case: nothing to combine
    return _COMBINE[computation](out, _full_shape(init, shape, out.dtype))


def _dot_general(ex, node, lhs, rhs):
    """Permute to (batch, m, k) @ (batch, k, n): the result is (batch, lhs free, rhs free)."""
    lb, lf, lc, rb, rc, rf = reference.dot_dimensions(node, lhs.ndim, rhs.ndim)
    size = lambda x, axes: math.prod(x.shape[d] for d in axes)  # noqa: E731
    b, m, k, n = size(lhs, lb), size(lhs, lf), size(lhs, lc), size(rhs, rf)
    left = lhs.permute(lb + lf + lc).reshape((b, m, k) if b != 1 else (m, k))
    right = rhs.permute(rb + rc + rf).reshape((b, k, n) if b != 1 else (k, n))
    return (left @ right).reshape(node.output.shape)


def _conv_ungrouped(x, w, a):
    """One convolution with NDArray.conv2d: canonical NHWC input and HWIO weights, the
    dilations and padding applied by pad, a rectangular kernel zero-padded to a square
    (and the input as much at the high end, so the windows stay where they were),
    unequal strides as their gcd plus a strided slice. One spatial axis is made two."""
    dn = a["dn"]
    spatial, kspatial = list(dn["input_spatial_dimensions"]), list(dn["kernel_spatial_dimensions"])
    x = x.permute([dn["input_batch_dimension"]] + spatial + [dn["input_feature_dimension"]])
    w = w.permute(kspatial + [dn["kernel_input_feature_dimension"],
                              dn["kernel_output_feature_dimension"]])
    strides, rd, ld, padding = (list(a["window_strides"]), list(a["rhs_dilation"]),
                                list(a["lhs_dilation"]), list(a["padding"]))
    if len(spatial) == 1:  # (N, W, C) -> (N, 1, W, C); any stride fits the unit axis
        x = x.reshape((x.shape[0], 1) + x.shape[1:])
        w = w.reshape((1,) + w.shape)
        strides, rd, ld, padding = [strides[0]] + strides, [1] + rd, [1] + ld, [(0, 0)] + padding
    elif len(spatial) != 2:
        raise NotImplementedError(f"convolution with {len(spatial)} spatial dimensions on the "
                                  f"executor (NDArray.conv2d has 2)")
    if any(d > 1 for d in rd):  # a dilated kernel: zeros between its taps
        w = _pad(w, 0.0, [0] * 4, [0] * 4, [d - 1 for d in rd] + [0, 0])
    kh, kw = w.shape[:2]
    k = max(kh, kw)
    low = [0] + [lo for lo, _ in padding] + [0]
    high = [0, padding[0][1] + k - kh, padding[1][1] + k - kw, 0]
    x = _pad(x, 0.0, low, high, [0] + [d - 1 for d in ld] + [0])
    if k != kh or k != kw:
        w = _pad(w, 0.0, [0] * 4, [k - kh, k - kw, 0, 0], [0] * 4)
    n, h, wd, _ = x.shape
    ho, wo = reference.conv_output_sizes((h - (k - kh), wd - (k - kw)), (kh, kw), (1, 1), strides)
    if not (n and ho and wo and w.shape[-1]):
        out = _like(x, (n, ho, wo, w.shape[-1]))
    else:
        step = math.gcd(*strides)
        out = x.conv2d(w, stride=step)
        if strides != [step, step]:
            out = out[:, ::strides[0] // step, ::strides[1] // step, :]
        out = out[:, :ho, :wo, :]
    if len(spatial) == 1:
        out = out.reshape((out.shape[0],) + out.shape[2:])
    perm = [0] * out.ndim  # canonical (N, *spatial, F) -> the output layout
    perm[dn["output_batch_dimension"]] = 0
    for i, d in enumerate(dn["output_spatial_dimensions"]):
        perm[d] = 1 + i
    perm[dn["output_feature_dimension"]] = out.ndim - 1
    return out.permute(perm)


def _split(x, parts, axis):
    size = x.shape[axis] // parts
    return [x[(slice(None),) * axis + (slice(i * size, (i + 1) * size),)] for i in range(parts)]


def _convolution(ex, node, lhs, rhs):
    if any(node.attrs.get("window_reversal") or ()):
        raise NotImplementedError("convolution with window_reversal")
    join = lambda xs, axis: concatenate(xs, axis=axis) if len(xs) > 1 else xs[0]  # noqa: E731
    return reference.grouped_convolution(_conv_ungrouped, _split, join, lhs, rhs,
                                         reference.conv_attributes(node, lhs.ndim))


# -- gather and scatter: positions worked out on the host, one backend take / scatter_add ------
def _positions(ex, node, indices_value, indices, compute):
    """Host positions of a gather or scatter: computed once when the indices are a
    constant, else from a device-to-host read of the indices on every call (the contract's
    take and scatter_add take host index arrays)."""
    if node in ex._static:
        return ex._static[node]
    positions = compute(ex.host(indices_value, indices))
    if ex.constant(indices_value) is not None:
        ex._static[node] = positions
    return positions


def _gather(ex, node, operand, indices):
    positions = _positions(ex, node, node.inputs[1], indices,
                           lambda idx: reference.gather_positions(operand.shape, idx, node.attrs))
    return _take(operand, positions)


def _scatter(ex, node, operand, indices, updates):
    computation = node.attrs.get("computation", "add")
    if computation not in ("add", "replace"):
        raise NotImplementedError(f"scatter with computation {computation!r} on the executor "
                                  f"(add and replace are supported)")

    def plan(idx):
        targets = reference.scatter_positions(operand.shape, idx, updates.shape,
                                              node.attrs).reshape(-1)
        sources = np.flatnonzero(targets >= 0)
        if computation == "replace":  # repeated targets: the last update wins, as in reference
            last = targets.size - 1 - np.unique(targets[::-1], return_index=True)[1]
            sources = np.sort(last[targets[last] >= 0])
        return sources, targets[sources]

    sources, targets = _positions(ex, node, node.inputs[1], indices, plan)
    if computation == "replace":  # the targets zeroed: read from a zero past the end
        keep = np.arange(operand.size)
        keep[targets] = operand.size
        padded = concatenate([operand.compact().reshape((operand.size,)), _like(operand, (1,))])
        out = _take(padded, keep).reshape(operand.shape)
    else:
        out = NDArray(operand)  # a new buffer to add into
    if targets.size:
        values = updates if sources.size == updates.size else _take(updates, sources)
        out.device.backend.scatter_add(values.compact()._handle, targets, out._handle)
    return out


#: ops whose result may share its operand's buffer (views, a conversion to the same dtype)
_VIEW_OPS = frozenset({"reshape", "transpose", "slice", "broadcast_in_dim", "reverse",
                       "convert"})


def _views_of(graph, x):
    """``x`` and every value that may be a view of its buffer (through movement ops, and
    composites whose decomposition returns an input as is)."""
    views = {x}
    for node in graph.nodes:
        if node.op in _VIEW_OPS and node.inputs[0] in views:
            views.add(node.output)
        elif node.op == "composite" and views.intersection(node.inputs):
            inner = node.decomposition
            for out, inner_out in zip(node.outputs, inner.outputs):
                if inner_out in inner.inputs and \
                        node.inputs[inner.inputs.index(inner_out)] in views:
                    views.add(out)
    return views


#: binary ops whose NDArray form takes a Python number for its second operand
_SCALAR_BINARY = {"add": lambda a, s: a + s, "subtract": lambda a, s: a - s,
                  "multiply": lambda a, s: a * s, "divide": lambda a, s: a / s,
                  "maximum": NDArray.maximum, "minimum": NDArray.minimum,
                  "power": lambda a, s: a ** s}


def _scalar_form(node):
    """A step for a float binary op whose second operand is a splat constant: the backend's
    scalar op on the first (one kernel), not a broadcast copy and a binary op."""
    if node.op not in _SCALAR_BINARY or node.output.dtype not in FLOAT_DTYPES:
        return None
    value = splat(node.inputs[1])
    if value is None or node.inputs[0].shape != node.output.shape:
        return None
    fn, value = _SCALAR_BINARY[node.op], float(value)
    return lambda ex, node, a, b: fn(a, value)


def _composite(ex, node, *args):
    kernel = ex._fused.get(node)
    if kernel is not None:
        if node in ex._into:
            return kernel(node, *args, into=ex.destinations(node))
        return kernel(node, *args)
    sub = ex._sub[node]
    outs = sub.execute(list(args))
    for i in sub._constant_outputs:  # a cached constant handed out would be shared by calls
        outs[i] = NDArray(outs[i])
    return outs


def _region_outputs(sub, given):
    """A region's outputs on ``given``; its cached constants copied (calls would share them)."""
    outs = sub.execute(list(given))
    for i in sub._constant_outputs:
        outs[i] = NDArray(outs[i])
    return outs


def _while(ex, node, *args):
    """The loop on the host: each turn runs cond (and reads its bool back: a sync) and body."""
    cond, body = ex._regions[node]
    carried, captured = list(args[:len(node.outputs)]), list(args[len(node.outputs):])
    while float(_region_outputs(cond, carried + captured)[0].numpy()) != 0.0:
        carried = _region_outputs(body, carried + captured)
    return carried


def _case(ex, node, index, *captured):
    branches = ex._regions[node]
    i = int(round(float(index.numpy())))
    return _region_outputs(branches[i if 0 <= i < len(branches) else -1], captured)


# -- composites as fused backend ops (Executor(fused_kernels=True)) ---------------------------
def _new(like, shape):
    return NDArray.make(shape, device=like.device, dtype=like.dtype)


def _handles(*arrays):
    return [a.compact()._handle for a in arrays]


def _softmax_kernel(node, x):
    out = _new(x, node.output.shape)
    x.device.backend.softmax(*_handles(x), out._handle, node.attrs["rows"], node.attrs["cols"])
    return out


def _logsumexp_kernel(node, x):
    out = _new(x, node.output.shape)
    x.device.backend.logsumexp(*_handles(x), out._handle, node.attrs["rows"],
                               node.attrs["cols"])
    return out


def _layer_norm_kernel(node, x, weight, bias):
    a = node.attrs
    out, mean, rstd = _new(x, node.output.shape), _new(x, (a["rows"],)), _new(x, (a["rows"],))
    x.device.backend.layernorm(*_handles(x, weight, bias), out._handle, mean._handle,
                               rstd._handle, a["rows"], a["cols"], a["eps"])
    return out


def _batch_norm_kernel(node, x, mean, var, weight, bias, x_bias=None):
    a = node.attrs
    out = _new(x, node.output.shape)
    x.device.backend.batchnorm(
        *_handles(x), x_bias.compact()._handle if x_bias is not None else None,
        *_handles(mean, var, weight, bias), out._handle, a["channels"], a["inner"], a["eps"],
        a["activation"])
    return out


def _linear_kernel(node, x, w, bias):
    (m, k), n = x.shape, w.shape[1]
    out = _new(x, node.output.shape)
    x.device.backend.linear(*_handles(x, w, bias), out._handle, m, k, n,
                            node.attrs["activation"])
    return out


def _attention_kernel(node, q, k, v):
    """A matched attention pattern (its output) or a recorded attention op (also its
    row log-sum-exps, which a recorded gradient reads)."""
    if node.attrs["key_transposed"]:  # (.., dim, seq) -> the (.., seq, dim) the op takes
        k = k.permute(tuple(range(k.ndim - 2)) + (k.ndim - 1, k.ndim - 2))
    batch, (seq_q, dim), seq_k = math.prod(q.shape[:-2]), q.shape[-2:], k.shape[-2]
    out, stats = _new(q, node.outputs[0].shape), _new(q, (batch, seq_q))
    q.device.backend.attention(*_handles(q, k, v), out._handle, stats._handle, batch, seq_q,
                               seq_k, dim, node.attrs["scale"], node.attrs["causal"])
    return [out, stats.reshape(node.outputs[1].shape)] if len(node.outputs) == 2 else out


def _attention_backward_kernel(node, q, k, v, out, stats, grad):
    batch, seq_q, dim = q.shape
    dq, dk, dv = _new(q, q.shape), _new(k, k.shape), _new(v, v.shape)
    q.device.backend.attention_backward(*_handles(q, k, v, out, stats, grad), dq._handle,
                                        dk._handle, dv._handle, batch, seq_q, k.shape[1], dim,
                                        node.attrs["scale"], node.attrs["causal"])
    return [dq, dk, dv]


def _nhwc(x, channels_first):
    n, *rest = x.shape
    return (n, rest[1], rest[2], rest[0]) if channels_first else x.shape


def _conv_kernel(node, x, w):
    a = node.attrs
    out = _new(x, node.output.shape)
    x.device.backend.conv(*_handles(x, w), out._handle, _nhwc(x, a["channels_first"]),
                          w.shape[0], w.shape[3], a["stride"], a["padding"],
                          channels_first=a["channels_first"])
    return out


def _conv_backward_kernel(node, grad, x, w):
    a = node.attrs
    dx = _new(x, x.shape) if a["dx"] else None
    dw = _new(w, w.shape) if a["dw"] else None
    x.device.backend.conv_backward(
        *_handles(grad, x, w), dx._handle if dx is not None else None,
        dw._handle if dw is not None else None, _nhwc(x, a["channels_first"]), w.shape[0],
        w.shape[3], a["stride"], a["padding"], channels_first=a["channels_first"])
    return [d for d in (dx, dw) if d is not None]


def _batchnorm_train_kernel(node, x, weight, bias, *rest):
    a, rest = node.attrs, list(rest)
    outer, channels, inner = x.shape
    x_bias = rest.pop(0) if a["x_bias"] else None
    out = _new(x, x.shape)
    mean, var, rstd = (_new(weight, (channels,)) for _ in range(3))
    running = {}
    if a["running"]:  # updated on copies: the graph's input values must stay
        new_mean, new_var = NDArray(rest[0]), NDArray(rest[1])
        running = dict(running_mean=new_mean._handle, running_var=new_var._handle,
                       momentum=a["momentum"], unbiased=a["unbiased"])
    x.device.backend.batchnorm_train(
        *_handles(x, weight, bias), out._handle, mean._handle, var._handle, rstd._handle,
        channels, inner, a["eps"], a["act"],
        x_bias=x_bias.compact()._handle if x_bias is not None else None, **running)
    return [out, mean, var, rstd] + ([new_mean, new_var] if running else [])


def _batchnorm_train_backward_kernel(node, grad, x, weight, mean, rstd, *rest):
    a, rest = node.attrs, list(rest)
    outer, channels, inner = x.shape
    out = rest.pop(0) if a["relu"] else None
    x_bias = rest.pop(0) if a["x_bias"] else None
    dx, dw, db = _new(x, x.shape), _new(weight, (channels,)), _new(weight, (channels,))
    dxb = _new(weight, (channels,)) if x_bias is not None else None
    x.device.backend.batchnorm_train_backward(
        *_handles(grad, x, weight, mean, rstd), dx._handle, dw._handle, db._handle, channels,
        inner, "relu" if a["relu"] else "identity",
        out.compact()._handle if out is not None else None,
        x_bias.compact()._handle if x_bias is not None else None,
        dxb._handle if dxb is not None else None)
    return [dx, dw, db] + ([dxb] if dxb is not None else [])


def _cross_entropy_kernel(node, logits, labels):
    rows, cols = logits.shape
    loss, grad = _new(logits, (rows,)), _new(logits, (rows, cols))
    logits.device.backend.cross_entropy(*_handles(logits, labels), loss._handle, grad._handle,
                                        rows, cols)
    return [loss, grad]


def _embedding_kernel(node, weight, ids):
    (rows, dim), n = weight.shape, ids.size
    out = _new(weight, (n, dim))
    weight.device.backend.embedding(*_handles(weight, ids), out._handle, n, rows, dim)
    return out


def _embedding_backward_kernel(node, grad, ids):
    (n, dim), rows = grad.shape, node.attrs["rows"]
    out = _new(grad, (rows, dim))
    grad.device.backend.embedding_backward(*_handles(grad, ids), out._handle, n, rows, dim)
    return out


def _lstm_kernel(node, xp, w_hh, h0, c0):
    steps, batch, four = xp.shape
    hs, cs = _new(xp, (steps, batch, four // 4)), _new(xp, (steps, batch, four // 4))
    gates = _new(xp, xp.shape)
    xp.device.backend.lstm(*_handles(xp, w_hh, h0, c0), hs._handle, cs._handle, gates._handle,
                           steps, batch, four // 4)
    return [hs, cs, gates]


def _lstm_backward_kernel(node, dhs, dcs, w_hh, c0, cs, gates):
    steps, batch, hidden = cs.shape
    dz, dh0, dc0 = _new(cs, gates.shape), _new(cs, (batch, hidden)), _new(cs, (batch, hidden))
    cs.device.backend.lstm_backward(*_handles(dhs, dcs, w_hh, c0, cs, gates), dz._handle,
                                    dh0._handle, dc0._handle, steps, batch, hidden)
    return [dz, dh0, dc0]


def _written(a):
    """``a``, whose buffer a kernel is about to overwrite (data derived from it goes)."""
    wrote = getattr(a._handle, "wrote", None)
    if wrote is not None:
        wrote()
    return a


def _linear_backward_kernel(node, g, x, w=None, into=None):
    """``into``: the NDArrays to write outputs into (by output position; see
    :meth:`Executor.destinations`)."""
    (m, k), n = x.shape, g.shape[1]
    into, first = into or {}, 1 if node.attrs["dx"] else 0
    dx = _new(g, (m, k)) if node.attrs["dx"] else None
    dw, db = into.get(first), into.get(first + 1)
    dw = _new(g, (k, n)) if dw is None else _written(dw)
    db = _new(g, (n,)) if db is None else _written(db)  # (db written even without a bias)
    g.device.backend.linear_backward(*_handles(g, x), w.compact()._handle if w is not None
                                     else None, dx._handle if dx is not None else None,
                                     dw._handle, db._handle, m, k, n)
    return ([dx] if dx is not None else []) + [dw] + ([db] if node.attrs["bias"] else [])


_linear_backward_kernel.takes_destinations = True

#: composite name -> (the backend's fused op, the attributes it reads, function(node,
#: *input NDArrays) -> output NDArray or list). The composites are those of
#: :mod:`.passes.fuse_patterns` and the tracer's cross-entropy (a replay does not check the
#: labels as eager calls do: every backend's kernel gives a NaN loss for a label outside
#: [0, classes), never reading outside the row). Not here: needle.gelu (no backend op of
#: its own). The optimizer updates are in :data:`UPDATES`: their kernels take host floats.
FUSED = {
    "needle.softmax": ("softmax", ("rows", "cols"), _softmax_kernel),
    "needle.logsumexp": ("logsumexp", ("rows", "cols"), _logsumexp_kernel),
    "needle.layer_norm": ("layernorm", ("rows", "cols", "eps"), _layer_norm_kernel),
    "needle.batch_norm": ("batchnorm", ("channels", "inner", "eps", "activation"),
                          _batch_norm_kernel),
    "needle.linear": ("linear", ("activation",), _linear_kernel),
    "needle.linear_backward": ("linear_backward", ("dx", "bias"), _linear_backward_kernel),
    "needle.attention": ("attention", ("scale", "causal", "key_transposed"), _attention_kernel),
    "needle.attention_backward": ("attention_backward", ("scale", "causal"),
                                  _attention_backward_kernel),
    "needle.cross_entropy": ("cross_entropy", (), _cross_entropy_kernel),
    "needle.embedding": ("embedding", (), _embedding_kernel),
    "needle.embedding_backward": ("embedding_backward", ("rows",), _embedding_backward_kernel),
    "needle.lstm": ("lstm", (), _lstm_kernel),
    "needle.lstm_backward": ("lstm_backward", (), _lstm_backward_kernel),
    "needle.conv": ("conv", ("stride", "padding", "channels_first"), _conv_kernel),
    "needle.conv_backward": ("conv_backward", ("stride", "padding", "channels_first", "dx",
                                               "dw"), _conv_backward_kernel),
    "needle.batchnorm_train": ("batchnorm_train", ("eps", "act", "momentum", "unbiased",
                                                   "x_bias", "running"),
                               _batchnorm_train_kernel),
    "needle.batchnorm_train_backward": ("batchnorm_train_backward", ("relu", "x_bias"),
                                        _batchnorm_train_backward_kernel),
}
#: composites run as their kernel at every level where the backend has it: the embedding's
#: decompositions gather at data-dependent positions, which the executor reads on the host;
#: the LSTM layer's unroll its steps, which op by op cost what eager's per-step ops did
ALWAYS_FUSED = ("needle.embedding", "needle.embedding_backward", "needle.lstm",
                "needle.lstm_backward")


def _sgd_kernel(node, scalars, inplace, p, g, buf=None):
    a = node.attrs
    lr, rest = scalars[0], scalars[1:]
    momentum = rest.pop(0) if buf is not None else 0.0
    weight_decay = rest.pop(0) if a["weight_decay"] else 0.0
    copy = (lambda x: x) if inplace else NDArray  # else the graph's values must stay
    new_p = copy(p)
    new_buf = None
    if a["momentum_buffer"]:
        new_buf = copy(buf) if buf is not None else _new(p, p.shape)
    p.device.backend.sgd_update(new_p._handle, g.compact()._handle,
                                new_buf._handle if new_buf is not None else None, lr,
                                momentum, weight_decay, a["first_step"])
    return [new_p] + ([new_buf] if new_buf is not None else [])


def _adam_kernel(node, scalars, inplace, p, g, m, v):
    lr, beta1, _, beta2, _, _, _, eps = scalars[:8]
    weight_decay = scalars[8] if node.attrs["weight_decay"] else 0.0
    step = int(round(scalars[-1]))
    new_p, new_m, new_v = (p, m, v) if inplace else (NDArray(p), NDArray(m), NDArray(v))
    p.device.backend.adam_update(new_p._handle, g.compact()._handle, new_m._handle,
                                 new_v._handle, lr, beta1, beta2, eps, weight_decay, step)
    return [new_p, new_m, new_v]


#: optimizer composites -> (the backend op, how many of the inputs are tensors given the
#: attributes; the rest are scalars) — see :meth:`Executor._update_kernel`
UPDATES = {
    "needle.sgd_update": ("sgd_update",
                          lambda a: 3 if a["momentum_buffer"] and not a["first_step"] else 2),
    "needle.adam_update": ("adam_update", lambda a: 4),
}
_UPDATE_KERNELS = {"sgd_update": _sgd_kernel, "adam_update": _adam_kernel}


def _constant(ex, node):
    return ex._constants[node.output]


def _elementwise(fn):
    return lambda ex, node, *args: fn(*args)


#: op -> function(executor, node, *input NDArrays) -> output NDArray (or a list of them)
OPS = {
    **{op: _elementwise(f) for op, f in _UNARY.items()},
    **{op: _elementwise(f) for op, f in _BINARY.items()},
    "divide": _divide,
    "power": _power,
    "remainder": _remainder,
    "and": _logical(lambda a, b: a * b),
    "or": _logical(NDArray.maximum),
    "not": _logical(lambda a: 1.0 - a),
    "compare": _compare,
    "select": _select_op,
    "clamp": _clamp,
    "convert": _convert,
    "constant": _constant,
    "iota": _constant,
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape,
    "transpose": lambda ex, node, x: x.permute(node.attrs["permutation"]),
    "slice": _slice,
    "reverse": _reverse,
    "pad": _pad_op,
    "concatenate": lambda ex, node, *xs: concatenate(list(xs), axis=node.attrs["dimension"]),
    "reduce": _reduce,
    "dot_general": _dot_general,
    "convolution": _convolution,
    "gather": _gather,
    "scatter": _scatter,
    "composite": _composite,
    "while": _while,
    "case": _case,
}
