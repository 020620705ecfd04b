"""A fusion group as one kernel, independent of the target language.

A group (the decomposition of a ``needle.fusion`` composite, or of an optimizer update) is
a small graph of elementwise ops on values of one *loop shape*, fed by broadcasts,
reshapes, transposes and slices of its inputs and by scalar constants, with at most one
``reduce`` over that shape. One kernel runs it: each thread evaluates the elementwise
members at the coordinates it owns, reading every input at the position the feeders map
those coordinates to (:meth:`Group.operand_coordinates`), and a reduction's threads
combine their values (*row* kernels when the innermost axis is reduced, so a team of
lanes reads a contiguous row; *column* kernels otherwise, a lane per output).
"""
import math

import numpy as np

from ...backend_ndarray import NDArray
from ..ops import OPS

#: ops that only move elements: an emitter maps coordinates through them
MOVEMENT = ("broadcast_in_dim", "reshape", "transpose", "slice")
#: reduce computations a kernel combines with (and/or on 1.0/0.0 booleans are min/max)
COMPUTATIONS = {"add": "add", "max": "max", "maximum": "max", "min": "min", "minimum": "min",
                "multiply": "multiply", "and": "min", "or": "max"}
IDENTITY = {"add": 0.0, "max": -math.inf, "min": math.inf, "multiply": 1.0}
DTYPES = ("float32", "float64", "int32", "int64", "bool")


class Unsupported(Exception):
    """The group holds something a generated kernel does not run; it runs member by member."""


class Group:
    """The kernel structure of a group's graph.

    Attributes:
        graph: the decomposition.
        shape: the loop shape (the reduce operand's shape for a reduction).
        reduce: the reduce node or ``None``; then ``computation`` (add/max/min/multiply),
            ``dims`` (reduced axes, sorted), ``kept`` (the others), ``kind`` ("row" or
            "column") and ``n_out`` / ``n_red`` (output and reduced element counts).
        kind: "loop", "row" or "column".
    """

    def __init__(self, graph):
        self.graph = graph
        for v in list(graph.inputs) + [v for n in graph.nodes for v in n.outputs]:
            if v.dtype not in DTYPES:
                raise Unsupported(f"a {v.dtype} value")
        reduces = [n for n in graph.nodes if n.op == "reduce"]
        for node in graph.nodes:
            self._check(node)
        if len(reduces) > 1:
            raise Unsupported("more than one reduce")
        self.reduce = reduces[0] if reduces else None
        if self.reduce is None:
            shapes = {v.shape for v in graph.outputs}
            if len(shapes) != 1:
                raise Unsupported(f"outputs of several shapes {sorted(shapes)}")
            self.shape, self.kind = shapes.pop(), "loop"
            self.n_out, self.n_red = math.prod(self.shape), 1
            return
        node = self.reduce
        if any(node.output in n.inputs for n in graph.nodes):
            raise Unsupported("a reduce result read inside the group")
        if graph.outputs.count(node.output) != 1:
            raise Unsupported("a reduce result that is not one output of the group")
        self.shape = node.inputs[0].shape
        for v in graph.outputs:
            if v is not node.output and v.shape != self.shape:
                raise Unsupported(f"an output of shape {v.shape} beside a reduce of {self.shape}")
        self.computation = COMPUTATIONS[node.attrs.get("computation", "add")]
        self.dims = sorted(node.attrs["dimensions"])
        self.kept = [d for d in range(len(self.shape)) if d not in self.dims]
        self.n_out = math.prod(self.shape[d] for d in self.kept)
        self.n_red = math.prod(self.shape[d] for d in self.dims)
        innermost = len(self.shape) - 1
        self.kind = "row" if innermost in self.dims else "column"

    @staticmethod
    def _check(node):
        op = node.op
        if op == "constant":
            if node.output.shape != ():
                raise Unsupported("a constant that is not a scalar")
        elif op == "reduce":
            computation = node.attrs.get("computation", "add")
            if computation not in COMPUTATIONS or len(node.inputs) != 2:
                raise Unsupported(f"reduce with computation {computation!r}")
            if computation in ("and", "or") and node.inputs[0].dtype != "bool":
                raise Unsupported(f"bitwise {computation}")
        elif op in ("and", "or", "not"):
            if node.inputs[0].dtype != "bool":
                raise Unsupported(f"bitwise {op}")
        elif op == "compare":
            if node.attrs.get("compare_type") == "TOTALORDER":
                raise Unsupported("compare with TOTALORDER")
        elif op not in MOVEMENT and OPS[op].group != "elementwise":
            raise Unsupported(f"op {op}")
        if len(node.outputs) != 1:
            raise Unsupported(f"{op} with {len(node.outputs)} outputs")

    @staticmethod
    def operand_coordinates(node, coords, index):
        """The coordinates of ``node``'s operand (a movement op) that hold the element of
        its result at ``coords`` (expressions, one per result axis, "0" for a constant).

        ``index(expression)`` names a linear index (a reshape's) so that it is written once.
        """
        x, out = node.inputs[0], node.output
        if node.op == "broadcast_in_dim":
            dims = node.attrs["broadcast_dimensions"]
            return tuple("0" if x.shape[j] == 1 else coords[d] for j, d in enumerate(dims))
        if node.op == "transpose":
            perm = node.attrs["permutation"]
            result = [None] * len(perm)
            for j, p in enumerate(perm):
                result[p] = coords[j]
            return tuple(result)
        if node.op == "slice":
            a = node.attrs
            steps = a.get("strides") or [1] * len(coords)
            return tuple(_affine(start, step, c)
                         for start, step, c in zip(a["start_indices"], steps, coords))
        # reshape: the row-major linear index, split by the operand's shape
        if math.prod(x.shape) == 1:
            return ("0",) * len(x.shape)
        if x.shape == out.shape:
            return tuple(coords)
        linear = index(linear_index(coords, out.shape))
        result, step = [], 1
        for d in reversed(x.shape):
            if d == 1:
                result.append("0")
            else:
                q = linear if step == 1 else f"({linear} / {step})"
                result.append(q if step * d == math.prod(x.shape) else f"({q} % {d})")
            step *= d
        return tuple(reversed(result))


class Emitter:
    """Statements that evaluate a group's values at coordinates, each (value,
    coordinates) once per thread; a target's subclass spells them:

    * ``declare(name, expr, value)``: the statement naming ``expr`` (``value`` is the
      group value it holds, or ``None`` for an integer index);
    * ``read(k, value, terms)``: input ``k`` at the element offset ``terms`` (a sum);
    * ``constant(x, value)``: a scalar literal;
    * ``op(node, args, value)``: elementwise ``node`` on operand names ``args``;

    and ``VAR`` / ``LET`` are how it declares a mutable and a constant integer index;
    ``prefix`` starts the output names (``<prefix>o<j>``).
    """

    VAR = LET = None
    prefix = ""

    def __init__(self, group, strides):
        self.inputs = {v: k for k, v in enumerate(group.graph.inputs)}
        self.strides = strides
        self.lines, self.memo, self.count = [], {}, 0

    def let(self, expr, value=None, prefix="v"):
        name = f"{prefix}{self.count}"
        self.count += 1
        self.lines.append(self.declare(name, expr, value))
        return name

    def index(self, expr):
        return self.let(expr, None, "x")

    def at(self, v, coords):
        key = (v, coords)
        if key not in self.memo:
            self.memo[key] = self._value(v, coords)
        return self.memo[key]

    def unravel(self, name, shape, prefix):
        """Statements splitting the linear index ``name`` over ``shape`` into coordinates
        ``<prefix>0``, ...: ``(lines, coords)``, a size-1 axis getting "0"."""
        lines, coords = [f"{self.VAR} {prefix}_ = {name};"], []
        for j in reversed(range(len(shape))):
            if shape[j] == 1:
                coords.append("0")
                continue
            coords.append(f"{prefix}{j}")
            if any(d > 1 for d in shape[:j]):
                lines += [f"{self.LET} {prefix}{j} = {prefix}_ % {shape[j]};",
                          f"{prefix}_ /= {shape[j]};"]
            else:
                lines.append(f"{self.LET} {prefix}{j} = {prefix}_;")
        return lines, tuple(reversed(coords))

    def element(self, group):
        """The statements that compute a loop group's outputs at linear index ``i`` and
        write them (compact)."""
        lines, coords = self.unravel("i", group.shape, "c")
        self.lines = lines
        names = [self.at(v, coords) for v in group.graph.outputs]
        return lines + [f"{self.prefix}o{j}[i] = {x};" for j, x in enumerate(names)]

    def reduction(self, group):
        """What every target's reduction kernel evaluates, for output element ``o`` and
        reduced element ``r`` (index names in its source):

        ``kept_lines`` (o's coordinates), ``inner`` (at each reduced element: its
        coordinates, the operand, and the writes of the elementwise outputs), ``value`` (the
        operand's name), and ``init`` (``None`` when the init value is the computation's
        identity, else ``(lines, name)``, evaluated after the loop).
        """
        node, graph = group.reduce, group.graph
        kept_lines, kept = self.unravel("o", [group.shape[d] for d in group.kept], "k")
        red_lines, red = self.unravel("r", [group.shape[d] for d in group.dims], "r")
        coords = [None] * len(group.shape)
        for d, c in zip(group.kept, kept):
            coords[d] = c
        for d, c in zip(group.dims, red):
            coords[d] = c
        coords = tuple(coords)
        self.lines = list(red_lines)
        value = self.at(node.inputs[0], coords)
        inner = self.lines + [f"o{j}[{linear_index(coords, group.shape)}] = {self.at(v, coords)};"
                              for j, v in enumerate(graph.outputs) if v is not node.output]
        self.lines, self.memo = [], {}  # (after the loop: scalars only)
        source = node.inputs[1]
        if source.producer is not None and source.producer.op == "constant" and \
                float(np.asarray(source.producer.attrs["value"])) == IDENTITY[group.computation]:
            init = None
        else:
            name = self.at(source, ())
            init = (self.lines, name)
        return kept_lines, inner, value, init

    def _value(self, v, coords):
        if v in self.inputs:
            k = self.inputs[v]
            terms = [c if s == 1 else f"{c} * {s}"
                     for c, s in zip(coords, self.strides[k]) if s and c != "0"]
            return self.let(self.read(k, v, terms), v)
        node = v.producer
        if node.op in MOVEMENT:
            return self.at(node.inputs[0], Group.operand_coordinates(node, coords, self.index))
        if node.op == "constant":
            return self.constant(np.asarray(node.attrs["value"]).reshape(()), v)
        args = [self.at(x, () if x.shape == () else coords) for x in node.inputs]
        return self.let(self.op(node, args, v), v)


class RunsMembers:
    """For a generated-kernel step: the group run member by member on ``args`` (its
    executor made once), as the executor runs it without a generator; the outputs in new
    buffers. Needs ``self.group`` and ``self.executor``."""

    _member_executor = None

    def run_members(self, args):
        if self._member_executor is None:
            ex = self.executor
            self._member_executor = ex.__class__(self.group.graph, ex.device, ex.index_dtype)
        return [NDArray(o) for o in self._member_executor.execute(list(args))]


def linear_index(coords, shape):
    """The row-major linear index of ``coords`` in ``shape``, as an expression."""
    terms, step = [], 1
    for c, d in zip(reversed(coords), reversed(shape)):
        if c != "0":
            terms.append(c if step == 1 else f"{c} * {step}")
        step *= d
    return " + ".join(reversed(terms)) or "0"


def _affine(start, step, c):
    """``start + step * c`` as an expression that is safe to multiply (parenthesised)."""
    if c == "0":
        return str(start)
    term = c if step == 1 else f"{c} * {step}"
    return term if start == 0 and step == 1 else f"({term})" if start == 0 else \
        f"({start} + {term})"
