"""Needle's graph IR: SSA values with a shape and a dtype, and nodes named and attributed as
StableHLO ops, so that export is a printer and import a parser.

A :class:`Graph` is a function: its ``inputs`` are values no node produces, its ``nodes``
are in a valid execution order (every input of a node is a graph input or the output of an
earlier node), and its ``outputs`` are values it returns. ``aliases`` maps an output
position to the input position whose buffer it updates in place (a parameter, a gradient,
an optimizer buffer), as JAX's donated arguments.

Control flow (``while``, ``case``: imported StableHLO programs have it) keeps its regions as
graphs of their own on the node, ``node.regions``; the values a region reads from outside
are explicit inputs of the node and of the region's graph.

A fused op (softmax, layer_norm, linear + bias + activation, an optimizer update, ...) is a
``composite`` node: ``attrs["name"]`` names it (``"needle.softmax"``) and ``decomposition``
is a Graph of plain ops with the node's inputs and outputs, as ``stablehlo.composite``
carries one. A backend without the fused kernel runs the decomposition.

The op set, its attributes and its shape rules are in :mod:`needle.compiler.ops`.
"""
import itertools

#: element types: Needle's float dtypes, and the integer and boolean types that indices,
#: iota and comparisons need inside a graph (what needle.compile makes)
CORE_DTYPES = ("float32", "float64", "int32", "int64", "bool")
#: the other StableHLO element types an imported program may have (numpy / ml_dtypes
#: names; the cpu device holds them, see needle.stablehlo)
EXTRA_DTYPES = ("float16", "bfloat16", "int8", "int16", "uint8", "uint16", "uint32", "uint64",
                "int2", "int4", "uint2", "uint4", "complex64", "complex128") + \
    ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e4m3b11fnuz",
     "float8_e3m4", "float8_e4m3", "float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn")
DTYPES = CORE_DTYPES + EXTRA_DTYPES


class TensorType:
    """The type of a value: ``shape`` (a tuple of ints) and ``dtype`` (one of :data:`DTYPES`)."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        if dtype not in DTYPES:
            raise ValueError(f"unknown IR dtype {dtype!r}; one of {DTYPES}")
        self.shape, self.dtype = tuple(int(d) for d in shape), dtype

    def __eq__(self, other):
        return isinstance(other, TensorType) and (self.shape, self.dtype) == (other.shape, other.dtype)

    def __hash__(self):
        return hash((self.shape, self.dtype))

    def __repr__(self):
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


_IDS = itertools.count()


class Value:
    """An SSA value: its type, the node that makes it (``None`` for a graph input) and, for
    a node with several outputs, its position among them."""

    __slots__ = ("type", "producer", "index", "id")

    def __init__(self, type, producer=None, index=0):
        self.type, self.producer, self.index = type, producer, index
        self.id = next(_IDS)  # stable identity for printing and hashing

    shape = property(lambda self: self.type.shape)
    dtype = property(lambda self: self.type.dtype)

    def __repr__(self):
        return f"Value(%{self.id}: {self.type})"


class Node:
    """One op: ``op`` (a StableHLO name such as ``"add"`` or ``"dot_general"``), its input
    values, its output values (made here, one per entry of ``out_types``), its attributes
    (StableHLO's names and meanings), for a ``composite`` its ``decomposition``, and for
    control flow its ``regions``: a ``while``'s (cond, body), a ``case``'s branches (see
    :mod:`needle.compiler.ops`)."""

    __slots__ = ("op", "inputs", "outputs", "attrs", "decomposition", "regions")

    def __init__(self, op, inputs, out_types, attrs=None, decomposition=None, regions=None):
        self.op, self.inputs = op, list(inputs)
        self.attrs = dict(attrs or {})
        self.outputs = [Value(t, self, i) for i, t in enumerate(out_types)]
        self.decomposition = decomposition
        self.regions = tuple(regions) if regions is not None else None

    @property
    def output(self):
        """The single output of a one-output node."""
        if len(self.outputs) != 1:
            raise ValueError(f"{self.op} has {len(self.outputs)} outputs")
        return self.outputs[0]

    def __repr__(self):
        return f"Node({self.op}, {len(self.inputs)} in, {len(self.outputs)} out)"


class Graph:
    """A function of values: ``inputs``, ``nodes`` in execution order, ``outputs`` and the
    in-place ``aliases`` (output position -> input position)."""

    def __init__(self, inputs=None, nodes=None, outputs=None, aliases=None, name="main"):
        self.inputs = list(inputs or [])
        self.nodes = list(nodes or [])
        self.outputs = list(outputs or [])
        self.aliases = dict(aliases or {})
        self.name = name

    def add_input(self, type):
        value = Value(type)
        self.inputs.append(value)
        return value

    def add(self, op, inputs, out_types, attrs=None, decomposition=None, regions=None):
        """Append a node; returns it (its values are ``node.outputs``)."""
        node = Node(op, inputs, out_types, attrs, decomposition, regions)
        self.nodes.append(node)
        return node

    def users(self):
        """``{value: [nodes that read it]}`` (graph outputs are not nodes: see ``outputs``)."""
        out = {}
        for node in self.nodes:
            for v in node.inputs:
                out.setdefault(v, []).append(node)
        return out

    def walk(self):
        """Every node of the graph and, depth first, of its decompositions and regions."""
        for node in self.nodes:
            yield node
            for inner in ((node.decomposition,) if node.decomposition is not None else ()) + \
                    (node.regions or ()):
                yield from inner.walk()

    def count(self, recursive=False):
        """Number of nodes (with ``recursive``, composites count their decomposition's)."""
        if not recursive:
            return len(self.nodes)
        return sum(n.decomposition.count(True) if n.decomposition is not None else 1
                   for n in self.nodes)

    def __repr__(self):
        return f"Graph({self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, " \
               f"{len(self.outputs)} outputs)"
