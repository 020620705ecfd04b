"""A :class:`~.group.Group` as one CUDA C kernel, and the executor step that launches it.

The source includes ``common.cuh`` and spells every op with its functions and functors, the
ones the hand-written kernels use, so a generated kernel computes what the members did one
kernel each: it is compiled without contracting multiplies and adds into FMAs, and the
elementwise results are the same bit for bit (a reduction sums in its own order). Each
kernel is specialised on its inputs' strides (the executor's views are strided NDArrays)
and on every size, so its only parameters are the output and input addresses. Sources go
through the backend's NVRTC cache (:meth:`~needle.backend_ndarray.cuda.compiler.KernelCache.generated`),
keyed by the text.
"""
import hashlib
import math
import sys
import warnings

import numpy as np

from ...backend_ndarray import NDArray
from ...backend_ndarray.ndarray import compact_strides
from .group import IDENTITY, Emitter, Group, RunsMembers, Unsupported

CTYPE = {"float32": "float", "float64": "double"}
THREADS = 256
#: column reductions: a block is COLUMN_TILE outputs wide and COLUMN_TEAMS lanes deep
COLUMN_TILE, COLUMN_TEAMS = 32, 8
COMBINE = {"add": "Add", "max": "Maximum", "min": "Minimum", "multiply": "Mul"}
_COMPARE = {"EQ": "==", "NE": "!=", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}
_BITS = {("float", "nan"): "__int_as_float(0x7fc00000)",
         ("float", "inf"): "__int_as_float(0x7f800000)",
         ("float", "-inf"): "__int_as_float(0xff800000)",
         ("double", "nan"): "__longlong_as_double(0x7ff8000000000000LL)",
         ("double", "inf"): "__longlong_as_double(0x7ff0000000000000LL)",
         ("double", "-inf"): "__longlong_as_double((long long)0xfff0000000000000ULL)"}


def literal(x, ctype):
    """An exact C literal of ``x`` in ``ctype`` (hexadecimal floats; bit patterns for
    NaN and the infinities)."""
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return _BITS[ctype, "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")]
    if ctype == "float":
        return f"{float(np.float32(x)).hex()}f"
    return x.hex()


def _is_int(v):
    return v.dtype in ("int32", "int64")


def elementwise(node, a, T):
    """The C expression of elementwise ``node`` on operand names ``a``, of C type ``T``;
    the semantics of :mod:`needle.compiler.executor` (integers and booleans held as
    floats)."""
    op, x = node.op, node.inputs[0]
    zero, one = f"({T})0", f"({T})1"
    binary = {"add": "+", "subtract": "-", "multiply": "*"}
    if op in binary:
        return f"{a[0]} {binary[op]} {a[1]}"
    if op == "divide":
        q = f"{a[0]} / {a[1]}"
        return f"n_trunc({q})" if _is_int(x) else q
    if op == "power":
        p = f"n_pow({a[0]}, {a[1]})"
        return f"n_trunc({p})" if _is_int(x) else p
    if op == "remainder":
        return f"{a[0]} - n_trunc({a[0]} / {a[1]}) * {a[1]}"
    functors = {"maximum": "Maximum", "minimum": "Minimum", "or": "Maximum"}
    if op in functors:
        return f"{functors[op]}()({a[0]}, {a[1]})"
    if op == "and":
        return f"{a[0]} * {a[1]}"
    calls = {"exponential": "n_exp", "log": "n_log", "tanh": "n_tanh", "sqrt": "n_sqrt",
             "abs": "n_abs", "sine": "n_sin", "cosine": "n_cos", "floor": "n_floor"}
    if op in calls:
        return f"{calls[op]}({a[0]})"
    if op == "negate":
        return f"-({a[0]})"
    if op == "logistic":
        return f"Sigmoid()({a[0]})"
    if op == "rsqrt":  # the executor's x ** -0.5
        return f"n_pow({a[0]}, ({T})-0.5)"
    if op == "sign":
        return (f"({T})({a[0]} > {zero}) - ({T})({a[0]} < {zero}) + "
                f"Minimum()(n_abs({a[0]}), {zero})")
    if op == "not":
        return f"{one} - {a[0]}"
    if op == "compare":
        return f"({T})({a[0]} {_COMPARE[node.attrs['comparison_direction']]} {a[1]})"
    if op == "select":
        return f"{a[0]} != 0 ? {a[1]} : {a[2]}"
    if op == "clamp":
        return f"Minimum()(Maximum()({a[1]}, {a[0]}), {a[2]})"
    if op == "convert":
        dst = node.output.dtype
        if dst == "bool":
            return f"({T})({a[0]} != 0)"
        if dst in ("int32", "int64") and x.dtype in CTYPE:
            return f"({T})n_trunc({a[0]})"
        return f"({T}){a[0]}"
    raise AssertionError(f"no C expression for {op}")  # Group._check admits no other op


class _Emitter(Emitter):
    """The group in C (see :class:`~.group.Emitter`)."""

    VAR, LET = "i64", "const i64"

    def __init__(self, group, strides, storage, prefix=""):
        super().__init__(group, strides)
        self.graph, self.storage = group.graph, storage
        self.prefix = prefix  # (of the parameter names)

    def ctype(self, v):
        return CTYPE[self.storage(v)]

    def declare(self, name, expr, value):
        return f"const {'i64' if value is None else self.ctype(value)} {name} = {expr};"

    def read(self, k, v, terms):
        return f"{self.prefix}i{k}[{' + '.join(terms) or 0}]"

    def parameters(self):
        """One pointer per graph output (written compact), then one per input (at its
        first element)."""
        graph, p = self.graph, self.prefix
        return [f"{self.ctype(v)}* {p}o{j}" for j, v in enumerate(graph.outputs)] + \
            [f"const {self.ctype(v)}* {p}i{k}" for k, v in enumerate(graph.inputs)]

    def constant(self, x, v):
        return literal(x, self.ctype(v))

    def op(self, node, args, v):
        return elementwise(node, args, self.ctype(v))


def source(group, name, strides, storage):
    """CUDA C of ``group`` as kernel ``name``: ``strides[k]`` are the element strides of
    input ``k``; ``storage(value)`` names a value's device dtype. Parameters: one pointer
    per graph output (written compact), then one per input (at its first element)."""
    em = _Emitter(group, strides, storage)
    body = _loop(group, em) if group.kind == "loop" else _reduction(group, em)
    return _kernel_text(name, em.parameters(), body)


def batch_source(members, name):
    """CUDA C of independent loop groups as kernel ``name``, one range of blocks each:
    ``members`` are ``(group, strides, storage, blocks)``; the parameters are each
    member's (as :func:`source`'s), in order."""
    params, body, first = [], [], 0
    for m, (group, strides, storage, blocks) in enumerate(members):
        em = _Emitter(group, strides, storage, prefix=f"g{m}")
        params += em.parameters()
        body += [f"  if (blockIdx.x < {first + blocks}) {{",
                 f"    for (i64 i = (i64)(blockIdx.x - {first}) * {THREADS} + threadIdx.x; "
                 f"i < {group.n_out}; i += {blocks * THREADS}) {{"]
        body += [f"      {line}" for line in em.element(group)] + ["    }", "    return;", "  }"]
        first += blocks
    return _kernel_text(name, params, body)


def _kernel_text(name, params, body):
    head = ['#include "common.cuh"', "using namespace needle;", "",
            f'extern "C" __global__ void {name}({", ".join(params)}) {{']
    return "\n".join(head + body + ["}", ""])


def _loop(group, em):
    return [f"  for (i64 i = global_thread(); i < {group.n_out}; i += grid_threads()) {{"] + \
        [f"    {line}" for line in em.element(group)] + ["  }"]


def _reduction(group, em):
    """Row or column reduction: the operand and the elementwise outputs at every element,
    each output element's values combined by its team of lanes."""
    node, graph = group.reduce, group.graph
    acc_t = em.ctype(node.output)
    op = COMBINE[group.computation]
    identity = literal(IDENTITY[group.computation], acc_t)
    kept_lines, inner, value, init = em.reduction(group)
    inner = inner + [f"acc = {op}()(acc, {value});"]
    init_lines, result = ([], "acc") if init is None else \
        (init[0], f"{op}()(acc, ({acc_t}){init[1]})")
    out = graph.outputs.index(node.output)
    final = init_lines + [f"o{out}[o] = {result};"]
    if group.kind == "row":
        tpr = row_lanes(group.n_red)
        per_block = THREADS // tpr
        return ([f"  const int lane = threadIdx.x % {tpr};",
                 f"  for (i64 o = (i64)blockIdx.x * {per_block} + threadIdx.x / {tpr}; "
                 f"o < {group.n_out}; o += (i64)gridDim.x * {per_block}) {{"]
                + [f"    {line}" for line in kept_lines]
                + [f"    {acc_t} acc = {identity};",
                   f"    for (i64 r = lane; r < {group.n_red}; r += {tpr}) {{"]
                + [f"      {line}" for line in inner]
                + ["    }", f"    acc = group_reduce<{tpr}, {op}>(acc);", "    if (lane == 0) {"]
                + [f"      {line}" for line in final] + ["    }", "  }"])
    return ([f"  __shared__ {acc_t} part[{COLUMN_TEAMS}][{COLUMN_TILE + 1}];",
             f"  for (i64 base = (i64)blockIdx.x * {COLUMN_TILE}; base < {group.n_out}; "
             f"base += (i64)gridDim.x * {COLUMN_TILE}) {{",
             "    const i64 o = base + threadIdx.x;",
             f"    {acc_t} acc = {identity};",
             f"    if (o < {group.n_out}) {{"]
            + [f"      {line}" for line in kept_lines]
            + [f"      for (i64 r = threadIdx.y; r < {group.n_red}; r += {COLUMN_TEAMS}) {{"]
            + [f"        {line}" for line in inner]
            + ["      }", "    }", "    part[threadIdx.y][threadIdx.x] = acc;", "    __syncthreads();",
               f"    if (threadIdx.y == 0 && o < {group.n_out}) {{",
               f"      for (int y = 1; y < {COLUMN_TEAMS}; ++y) acc = {op}()(acc, part[y][threadIdx.x]);"]
            + [f"      {line}" for line in final] + ["    }", "    __syncthreads();", "  }"])


def row_lanes(n_red):
    """Lanes that reduce one row: a warp, or the whole block for long rows."""
    return 32 if n_red < 4096 else THREADS


def launch_shape(group, max_blocks):
    """``(grid, block)`` for the group's kernel on a GPU allowing ``max_blocks`` blocks."""
    if group.kind == "loop":
        return (max(1, min(-(-group.n_out // THREADS), max_blocks)), 1, 1), (THREADS, 1, 1)
    if group.kind == "row":
        per_block = THREADS // row_lanes(group.n_red)
        return (max(1, min(-(-group.n_out // per_block), max_blocks)), 1, 1), (THREADS, 1, 1)
    return ((max(1, min(-(-group.n_out // COLUMN_TILE), max_blocks)), 1, 1),
            (COLUMN_TILE, COLUMN_TEAMS, 1))


def kernel_name(text):
    return "needle_gen_" + hashlib.sha256(text.encode()).hexdigest()[:16]


class CudaGroupKernel:
    """An executor step running a composite's decomposition as one generated kernel.

    Args:
        graph: the decomposition (raises :class:`~.group.Unsupported` if no kernel runs it).
        executor: the :class:`~needle.compiler.executor.Executor` that owns the step (its
            storage dtypes and device).
        in_place: ``{output: input}`` pairs the kernel may write into the input's own
            buffer (an optimizer update whose old value nothing reads afterwards); used
            when that input is compact.
    """

    generated = True  # (what Executor.info counts)
    takes_destinations = True  # (Executor.destinations)
    reductions = True
    bitwise = True  # loops equal their members bit for bit (compiled with --fmad=false)
    batch = None  # CudaLoopBatch (set below): how the executor merges independent loops

    def __init__(self, graph, executor, in_place=None):
        self.group = Group(graph)
        if not all(math.prod(v.shape) for v in list(graph.inputs) + list(graph.outputs)):
            raise Unsupported("an empty value")
        self.executor, self.in_place = executor, dict(in_place or {})
        self.outputs = [(v.shape, executor.storage(v)) for v in graph.outputs]
        self._in_place = {}  # input strides -> the outputs written into their inputs
        self._built = {}  # input strides -> (kernel, grid, block), built on first launch

    def source(self, args):
        """The kernel source for inputs ``args`` (NDArrays) and its name."""
        strides = [a.strides for a in args]
        body = source(self.group, "KERNEL", strides, self.executor.storage)
        name = kernel_name(body)
        return body.replace("KERNEL", name), name

    def _build(self, args):
        text, name = self.source(args)
        if "src" in _debug_flags():
            sys.stderr.write(f"---- generated {name} ({self.group.kind}, "
                             f"{len(self.group.graph.nodes)} nodes) ----\n{text}")
        backend = self.executor.device.backend
        grid, block = launch_shape(self.group, backend.max_blocks)
        return backend.generated_kernel(name, text), grid, block

    def __call__(self, node, *args, into=None):
        """Run on ``args``; ``into`` maps output positions to compact NDArrays to write."""
        outs, pointers = self.operands(args, into)
        key = tuple(a.strides for a in args)
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = self._build(args)
        self.executor.device.backend.launch_generated(*built, pointers)
        return outs if len(outs) > 1 else outs[0]

    def operands(self, args, into=None):
        """``(outputs, pointers)`` of a launch on ``args``: the output NDArrays (new,
        ``into``'s, or inputs updated in place where they are compact) and the kernel's
        arguments."""
        key = tuple(a.strides for a in args)
        in_place = self._in_place.get(key)
        if in_place is None:
            in_place = self._in_place[key] = {
                j: i for j, i in self.in_place.items()
                if args[i].strides == compact_strides(args[i].shape)}
        into, device = into or {}, self.executor.device
        outs = [into[j] if j in into else args[in_place[j]] if j in in_place else
                NDArray.make(shape, device=device, dtype=dtype)
                for j, (shape, dtype) in enumerate(self.outputs)]
        for j in set(in_place) | set(into):
            outs[j]._handle.wrote()
        return outs, [address(a) for a in outs] + [address(a) for a in args]


class CudaLoopBatch:
    """Loop kernels of consecutive, independent executor steps (an optimizer step's
    parameter updates) launched as one kernel: each member runs on a range of blocks of
    its own, as it would alone. A recorded graph then holds one node, not one per member:
    at ~1.2 µs a node, that is most of what small updates cost.

    Args:
        kernels: the members' :class:`CudaGroupKernel`, loop kind, in step order.
    """

    generated = True

    def __init__(self, kernels):
        self.kernels = kernels
        self._built = {}  # the members' input strides -> (kernel, grid)

    def __call__(self, batch, *args):
        """Run each member on its inputs (``batch.members``' inputs, concatenated in
        ``args``); the outputs, concatenated."""
        key = tuple(a.strides for a in args)
        built = self._built.get(key)
        if built is None:
            try:
                built = self._build(args, batch)
            except Exception as e:  # noqa: BLE001 - the members still run, one launch each
                built = None
                warnings.warn(f"needle.compile: a batch of {len(self.kernels)} loop kernels "
                              f"could not be built ({type(e).__name__}: {e}); they launch "
                              f"one by one", stacklevel=2)
            self._built[key] = built
        if built is None:
            return [o for kernel, member, mine in self._members(batch, args)
                    for o in _as_list(kernel(member, *mine))]
        outs, pointers = [], []
        for kernel, member, mine in self._members(batch, args):
            o, p = kernel.operands(mine)
            outs += o
            pointers += p
        self.kernels[0].executor.device.backend.launch_generated(built[0], built[1],
                                                                 (THREADS, 1, 1), pointers)
        return outs

    def _members(self, batch, args):
        """``(kernel, node, its input NDArrays)`` per member."""
        start = 0
        for kernel, member in zip(self.kernels, batch.members):
            yield kernel, member, args[start:start + len(member.inputs)]
            start += len(member.inputs)

    def source(self, args, batch, max_blocks):
        """The kernel source for the members' inputs ``args``, its name and its grid."""
        members = [(kernel.group, [a.strides for a in mine], kernel.executor.storage,
                    launch_shape(kernel.group, max_blocks)[0][0])
                   for kernel, _, mine in self._members(batch, args)]
        body = batch_source(members, "KERNEL")
        name = kernel_name(body)
        return body.replace("KERNEL", name), name, (sum(m[3] for m in members), 1, 1)

    def _build(self, args, batch):
        backend = self.kernels[0].executor.device.backend
        text, name, grid = self.source(args, batch, backend.max_blocks)
        if "src" in _debug_flags():
            sys.stderr.write(f"---- generated {name} (a batch of {len(self.kernels)} loops) "
                             f"----\n{text}")
        return backend.generated_kernel(name, text), grid


CudaGroupKernel.batch = CudaLoopBatch


def _as_list(out):
    return out if isinstance(out, list) else [out]


def address(a):
    """The device address of NDArray ``a``'s first element (a CUDA buffer's)."""
    return a._handle.ptr + a._offset * a._handle.dtype.itemsize


def _debug_flags():
    from ..passes import debug_flags
    return debug_flags()


def recording_generator(sources):
    """A generator for any device (the CPU too) that writes each group's CUDA source into
    ``sources`` (name -> text) on the group's first call, with the strides of that call,
    and runs the group member by member: what the CI check compiles with NVRTC on a
    machine without a GPU."""

    class RecordingBatch(CudaLoopBatch):
        def __call__(self, batch, *args):
            text, name, _ = self.source(args, batch, RECORDED_MAX_BLOCKS)
            sources.setdefault(name, text)
            return [o for kernel, member, mine in self._members(batch, args)
                    for o in _as_list(kernel(member, *mine))]

    class Recording(CudaGroupKernel, RunsMembers):
        takes_destinations = False
        batch = RecordingBatch

        def __call__(self, node, *args):
            text, name = self.source(args)
            sources.setdefault(name, text)
            return self.run_members(args)

    return Recording


#: the block limit the recorded batch sources assume (an H200's: 32 per multiprocessor)
RECORDED_MAX_BLOCKS = 32 * 132
