"""What the passes share: renaming values (a value's uses, in later nodes and the graph's
outputs, become another value of the same type), use counts, reading splat constants, the
driver of a table of rewrites (:func:`rewrite_until_fixed`) and the count of nodes that
launch device work (:func:`launched_work`).

Every pass mutates its graph in place and returns it. Graph inputs are never touched;
``graph.outputs`` keeps its length and positions (an output is only renamed to a value of
the same type), so ``graph.aliases`` stays valid.
"""
import numpy as np

from ..ir import Node
from ..ops import infer_types


def rename(graph, mapping):
    """Replace every use of a key of ``mapping`` by its value (chains followed), in the
    nodes' inputs and in ``graph.outputs``; the types must be equal."""
    if not mapping:
        return graph

    def target(v):
        while v in mapping:
            v = mapping[v]
        return v

    for old, new in mapping.items():
        if old.type != new.type:
            raise TypeError(f"cannot rename {old!r} to {new!r}: the types differ")
    for node in graph.nodes:
        node.inputs = [target(v) for v in node.inputs]
    graph.outputs = [target(v) for v in graph.outputs]
    return graph


def use_counts(graph):
    """``{value: number of uses}``: one per node input that reads it, one per graph output."""
    counts = {}
    for v in [v for n in graph.nodes for v in n.inputs] + list(graph.outputs):
        counts[v] = counts.get(v, 0) + 1
    return counts


def splat(value):
    """The scalar every element of ``value`` equals (bitwise), or ``None``: for a non-empty
    ``constant`` and the ``broadcast_in_dim`` / ``reshape`` of one."""
    node = value.producer
    while node is not None and node.op in ("broadcast_in_dim", "reshape"):
        node = node.inputs[0].producer
    if node is None or node.op != "constant":
        return None
    array = np.asarray(node.attrs["value"])
    if array.size == 0:
        return None
    flat = array.reshape(-1)
    bits = flat.view(np.uint8).reshape(flat.size, -1) if flat.dtype.kind == "f" else flat
    if not (bits == bits[0]).all():
        return None
    return flat[0]


def is_splat(value, number):
    """Whether every element of ``value`` is ``number`` (``0`` also matches ``-0.0``; NaN
    matches nothing)."""
    s = splat(value)
    return s is not None and bool(s == number)


def made_by(value, op):
    """The node making ``value`` when it is an ``op`` node, else ``None``."""
    node = value.producer
    return node if node is not None and node.op == op else None


class Rewriter:
    """One sweep of a table of rewrites: the new node list (:meth:`emit` appends to it, so
    a new node lands before the node it replaces) and the use counts (:meth:`single`)."""

    def __init__(self, graph):
        self.nodes, self.counts = [], use_counts(graph)

    def emit(self, op, inputs, attrs):
        """A new ``op`` node on ``inputs``, its type inferred; returns its output."""
        node = Node(op, inputs, infer_types(op, [v.type for v in inputs], attrs), attrs)
        self.nodes.append(node)
        for v in inputs:
            self.counts[v] = self.counts.get(v, 0) + 1
        return node.output

    def single(self, value):
        """Whether ``value`` has one use only."""
        return self.counts.get(value, 0) == 1


def _sweep(graph, by_op):
    r, mapping = Rewriter(graph), {}
    for node in graph.nodes:
        node.inputs = [mapping.get(v, v) for v in node.inputs]
        new = None
        if len(node.outputs) == 1:
            for rewrite in by_op.get(node.op, ()):
                new = rewrite(r, node, *node.inputs) or None
                if new is not None and new.type == node.output.type:
                    break
                new = None
        if new is None:
            r.nodes.append(node)
            continue
        r.counts[new] = r.counts.get(new, 0) + r.counts.get(node.output, 0)
        mapping[node.output] = new
    graph.nodes = r.nodes
    rename(graph, mapping)
    return bool(mapping)


def rewrite_until_fixed(graph, rules, max_sweeps=100):
    """Apply ``rules``, a list of ``(op, rewrite)``, to ``graph``'s one-output nodes until a
    sweep changes nothing; in place, returns ``graph``.

    ``rewrite(r, node, *inputs)`` returns the value that replaces the node's output (of its
    type, else it is ignored), or ``None``; it may build nodes with ``r.emit`` and ask
    ``r.single(value)`` (a :class:`Rewriter`). The first rule of a node's op that applies
    wins; replaced nodes are dropped, nodes left without uses are :mod:`.dce`'s.
    """
    by_op = {}
    for op, rewrite in rules:
        by_op.setdefault(op, []).append(rewrite)
    for _ in range(max_sweeps):
        if not _sweep(graph, by_op):
            break
    return graph


#: ops that launch no device work: constants and iotas are made once, when a graph is
#: bound to a device, and a reshape is a view of its operand
NO_WORK = frozenset({"constant", "iota", "reshape"})


def launches_work(node):
    """Whether running ``node`` launches device work (a composite does, once)."""
    return node.op not in NO_WORK


def launched_work(graph):
    """The number of top-level nodes of ``graph`` that launch device work: every node but
    ``constant``, ``iota`` and ``reshape``; a composite (a fused group) counts one, whatever
    its decomposition holds. Fusion lowers it; it is what a backend's launch count follows.

    Example:
        >>> from needle.compiler import Graph, TensorType, add_node
        >>> g = Graph()
        >>> x = g.add_input(TensorType((2, 3), "float32"))
        >>> r = add_node(g, "reshape", [add_node(g, "exponential", [x]).output], {"shape": [6]})
        >>> g.outputs = [add_node(g, "negate", [r.output]).output]
        >>> launched_work(g)
        2
    """
    return sum(launches_work(node) for node in graph.nodes)
