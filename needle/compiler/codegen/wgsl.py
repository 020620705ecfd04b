"""A :class:`~.group.Group` as one WGSL compute kernel, for the webgpu device.

Every op is spelled with the functions of ``wgsl/math.wgsl`` (``needle_unary``,
``needle_binary``, ``needle_max``, ...), the ones the hand-written kernels run, so a
generated kernel computes what the members did one dispatch each (up to the FMAs a Vulkan
driver may contract, see :attr:`WgslGroupKernel.bitwise`). Where the executor
composes an op the contract lacks, the kernel uses the same composition (sign) or WGSL's
exact builtin (trunc and floor: the executor's ``(a + 2**23) - 2**23`` rounding could be
reassociated away inside one shader).
Values are float32 (the device holds nothing else); index arithmetic is in i32 with the
inputs' strides baked in and their offsets passed as parameters. A group needing more
storage bindings than the adapter allows runs member by member.
"""
import hashlib
import math
import struct
import sys

import numpy as np

from ...backend_ndarray import NDArray
from .group import IDENTITY, Emitter, Group, RunsMembers, Unsupported

_UNARY = {"negate": "UNARY_NEG", "exponential": "UNARY_EXP", "log": "UNARY_LOG",
          "tanh": "UNARY_TANH", "logistic": "UNARY_SIGMOID", "sqrt": "UNARY_SQRT",
          "abs": "UNARY_ABS", "sine": "UNARY_SIN", "cosine": "UNARY_COS"}
_BINARY = {"add": "BINARY_ADD", "subtract": "BINARY_SUB", "multiply": "BINARY_MUL",
           "maximum": "BINARY_MAXIMUM", "minimum": "BINARY_MINIMUM", "or": "BINARY_MAXIMUM",
           "and": "BINARY_MUL"}
_COMPARE = {"EQ": "BINARY_EQ", "NE": "BINARY_NE", "LT": "BINARY_LT", "LE": "BINARY_LE",
            "GT": "BINARY_GT", "GE": "BINARY_GE"}
THREADS = 256


def literal(x):
    """An exact f32 of ``x`` (as bits: WGSL has no NaN or infinity literal)."""
    bits = struct.unpack("<I", struct.pack("<f", np.float32(x)))[0]
    return f"bitcast<f32>({bits:#010x}u)"


class _Emitter(Emitter):
    """The group in WGSL (see :class:`~.group.Emitter`); indices are i32."""

    VAR, LET = "var", "let"

    def __init__(self, group, strides):
        super().__init__(group, strides)
        self.read_inputs = set()  # only they are bound

    def declare(self, name, expr, value):
        return f"let {name} = {expr};"

    def read(self, k, v, terms):
        self.read_inputs.add(k)
        return f"i{k}[{' + '.join([f'p.off{k}'] + terms)}]"

    def constant(self, x, v):
        return literal(x)

    def op(self, node, args, v):
        return self._op(node, args)

    def _op(self, node, a):
        op, x = node.op, node.inputs[0]
        integer = x.dtype in ("int32", "int64")
        if op in _UNARY:
            return f"needle_unary({_UNARY[op]}, {a[0]})"
        if op in _BINARY:
            return f"needle_binary({_BINARY[op]}, {a[0]}, {a[1]})"
        if op == "divide":
            q = self.let(f"needle_binary(BINARY_DIV, {a[0]}, {a[1]})")
            return self._trunc(q) if integer else q
        if op == "power":
            q = self.let(f"needle_binary(BINARY_POW, {a[0]}, {a[1]})")
            return self._trunc(q) if integer else q
        if op == "remainder":
            q = self._trunc(self.let(f"needle_binary(BINARY_DIV, {a[0]}, {a[1]})"))
            return f"{a[0]} - {self.let(f'{q} * {a[1]}')}"
        if op == "rsqrt":  # the executor's x ** -0.5
            return f"needle_binary(BINARY_POW, {a[0]}, -0.5)"
        if op == "not":
            return f"1.0 - {a[0]}"
        if op == "compare":
            return f"needle_binary({_COMPARE[node.attrs['comparison_direction']]}, {a[0]}, {a[1]})"
        if op == "select":  # the backend's select: a NaN predicate picks the true branch
            return f"select({a[2]}, {a[1]}, {a[0]} != 0.0 || needle_isnan({a[0]}))"
        if op == "clamp":
            return f"needle_min(needle_max({a[1]}, {a[0]}), {a[2]})"
        if op == "sign":
            return self._sign(a[0])
        if op == "floor":
            return f"select(floor({a[0]}), {a[0]}, !needle_isfinite({a[0]}))"
        if op == "convert":
            if node.output.dtype == "bool":
                return f"needle_binary(BINARY_NE, {a[0]}, 0.0)"
            if node.output.dtype in ("int32", "int64") and x.dtype == "float32":
                return self._trunc(a[0])
            return a[0]
        raise Unsupported(f"{op} in a WGSL kernel")

    def _sign(self, x):
        """((x > 0) - (x < 0)) + min(|x|, 0), as the executor composes it."""
        gt = self.let(f"needle_binary(BINARY_GT, {x}, 0.0)")
        lt = self.let(f"needle_binary(BINARY_LT, {x}, 0.0)")
        return f"({gt} - {lt}) + needle_min(abs({x}), 0.0)"

    def _trunc(self, x):
        """Round toward zero: WGSL's trunc, exact on finite values as the executor's
        composition is (which a shader compiler may reassociate away inside one kernel),
        with NaN and the infinities passed through."""
        return self.let(f"select(trunc({x}), {x}, !needle_isfinite({x}))")


_COMBINE = {"add": "{a} + {b}", "max": "needle_max({a}, {b})", "min": "needle_min({a}, {b})",
            "multiply": "{a} * {b}"}


def source(group, strides):
    """WGSL of ``group`` (entry point ``main``) and the inputs it reads: binding 0 the
    parameters (element count, each input's offset), then one storage binding per output,
    then one per input read (WebGPU's derived layout has no unused binding).

    A loop runs a thread per element; a reduction a workgroup per output element, its
    lanes striding over the reduced elements and combining in workgroup memory."""
    graph, em = group.graph, _Emitter(group, strides)
    if group.kind == "loop":
        body = ["let i = i32(element(wid, nwg, lid));", f"if (i >= {group.n_out}) {{ return; }}"]
        body += em.element(group)
        shared = []
    else:
        body, shared = _reduction(group, em), [f"var<workgroup> part: array<f32, {THREADS}>;"]
    read = sorted(em.read_inputs)
    fields = ["n: i32"] + [f"off{k}: i32" for k in range(len(graph.inputs))]
    decls = [f"@group(0) @binding({1 + j}) var<storage, read_write> o{j}: array<f32>;"
             for j in range(len(graph.outputs))]
    decls += [f"@group(0) @binding({1 + len(graph.outputs) + b}) var<storage, read> i{k}: "
              f"array<f32>;" for b, k in enumerate(read)]
    return read, "\n".join(
        ["// include: math.wgsl", "", "struct Params { " + ", ".join(fields) + " }",
         "@group(0) @binding(0) var<uniform> p: Params;", *decls, *shared, "",
         f"@compute @workgroup_size({THREADS})",
         "fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: "
         "vec3<u32>, @builtin(local_invocation_index) lid: u32) {"]
        + [f"    {line}" for line in body] + ["}", ""])


def _reduction(group, em):
    """The body of a reduction: workgroup ``o`` makes output element ``o`` (and writes the
    elementwise outputs at the elements it visits)."""
    node, graph = group.reduce, group.graph
    combine = _COMBINE[group.computation]
    kept_lines, inner, value, init = em.reduction(group)
    inner = inner + [f"acc = {combine.format(a='acc', b=value)};"]
    init_lines, result = ([], "part[0]") if init is None else \
        (init[0], combine.format(a="part[0]", b=init[1]))
    out = graph.outputs.index(node.output)
    # (o is the same for a whole workgroup: the early return keeps the barriers uniform)
    return (["let o = i32(group_index(wid, nwg));", f"if (o >= {group.n_out}) {{ return; }}"]
            + kept_lines
            + [f"var acc = {literal(IDENTITY[group.computation])};",
               f"for (var r = i32(lid); r < {group.n_red}; r = r + {THREADS}) {{"]
            + [f"    {line}" for line in inner]
            + ["}", "part[lid] = acc;", "workgroupBarrier();",
               f"for (var s = {THREADS // 2}u; s > 0u; s = s >> 1u) {{",
               f"    if (lid < s) {{ part[lid] = {combine.format(a='part[lid]', b='part[lid + s]')}; }}",
               "    workgroupBarrier();", "}", "if (lid == 0u) {"]
            + [f"    {line}" for line in init_lines] + [f"    o{out}[o] = {result};", "}"])


class WgslGroupKernel(RunsMembers):
    """An executor step running a group as one generated WGSL dispatch.

    Args: as :class:`~.cuda.CudaGroupKernel` (``in_place`` is not used: WebGPU refuses a
    buffer bound for reading and writing in one dispatch).
    """

    generated = True
    takes_destinations = True
    reductions = True
    #: WGSL cannot forbid contracting ``a * b + c`` into an FMA, and Vulkan drivers do it
    #: (NVIDIA's on the H200): loops agree with their members to a product's rounding, not bitwise
    bitwise = False
    batch = None  # (each group is a dispatch of its own)

    def __init__(self, graph, executor, in_place=None):
        self.group = Group(graph)
        values = list(graph.inputs) + list(graph.outputs)
        if not all(math.prod(v.shape) for v in values) or self.group.n_out >= 2 ** 31:
            raise Unsupported("an empty value, or one of 2**31 elements or more")
        if any(executor.storage(v) != "float32" for v in values):
            raise Unsupported("a value not held as float32")
        backend = executor.device.backend
        if len(values) > backend.max_storage_buffers:
            raise Unsupported(f"{len(values)} storage bindings (the adapter allows "
                              f"{backend.max_storage_buffers})")
        self.executor = executor
        self.outputs = [v.shape for v in graph.outputs]
        self._params = struct.Struct(f"<{1 + len(graph.inputs)}i")
        self._variants = {}  # input strides -> (kernel, the inputs it reads)

    def source(self, args):
        """The kernel source for inputs ``args``, its name, and the inputs it reads."""
        read, text = source(self.group, [a.strides for a in args])
        return text, "needle_gen_" + hashlib.sha256(text.encode()).hexdigest()[:16], read

    def _build(self, args):
        text, name, read = self.source(args)
        from ..passes import debug_flags
        if "src" in debug_flags():
            sys.stderr.write(f"---- generated {name} (WGSL loop, "
                             f"{len(self.group.graph.nodes)} nodes) ----\n{text}")
        return self.executor.device.backend.generated_kernel(name, text), read

    def __call__(self, node, *args, into=None):
        ex = self.executor
        limit = ex.device.backend.max_binding_elements
        if self.group.n_out > limit or any(a._handle.size > limit for a in args):
            outs = self.run_members(args)  # (a buffer larger than one binding)
            return outs if len(outs) > 1 else outs[0]
        key = tuple(a.strides for a in args)
        variant = self._variants.get(key)
        if variant is None:
            variant = self._variants[key] = self._build(args)
        kernel, read = variant
        # a destination must start its buffer (outputs are written from element 0) and
        # not be read by this dispatch too
        bound = {id(a._handle) for a in args}
        into = {j: a for j, a in (into or {}).items()
                if a._offset == 0 and id(a._handle) not in bound}
        outs = [into[j] if j in into else NDArray.make(shape, device=ex.device)
                for j, shape in enumerate(self.outputs)]
        params = self._params.pack(self.group.n_out, *[a._offset for a in args])
        groups = self.group.n_out if self.group.reduce is not None else \
            -(-self.group.n_out // THREADS)  # (a workgroup per output of a reduction)
        ex.device.backend.launch_generated(kernel, [o._handle for o in outs],
                                           [args[k]._handle for k in read], params, groups)
        return outs if len(outs) > 1 else outs[0]
