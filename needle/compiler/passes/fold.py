"""Constant folding: a node whose inputs are all known (``constant`` or ``iota`` nodes) is
replaced by ``constant`` nodes holding what :func:`~needle.compiler.reference.evaluate`
computes for it, so the folded graph gives the reference's results bit for bit.

Left alone: the sources themselves (a ``constant``, and an ``iota``: it is cheaper to make
than to store, though its values feed folding), nodes without inputs, nodes with an output
of more than :data:`MAX_ELEMENTS` elements (a broadcast of a scalar stays a broadcast rather
than a big literal), and ops the reference cannot run. A composite whose inputs are all
known folds through its decomposition.
"""
import math

from ..ir import Graph, Node
from ..reference import evaluate
from .common import rename

#: the largest output (in elements) that folding writes as a literal
MAX_ELEMENTS = 2 ** 16

#: ops that are values already
SOURCES = ("constant", "iota")


def known_value(value):
    """The array of a value made by a ``constant`` or ``iota`` node, else ``None``."""
    node = value.producer
    if node is None or node.op not in SOURCES:
        return None
    if node.op == "constant":
        return node.attrs["value"]
    return evaluate(Graph(nodes=[node], outputs=[value]))[0]


def _foldable(node):
    return (node.op not in SOURCES and node.inputs and node.outputs
            and all(v.producer is not None and v.producer.op in SOURCES for v in node.inputs)
            and all(math.prod(v.shape) <= MAX_ELEMENTS for v in node.outputs))


def evaluate_node(node):
    """The output arrays of ``node`` on its known inputs, through a one-node graph."""
    one = Graph()
    inputs = [one.add_input(v.type) for v in node.inputs]
    copy = one.add(node.op, inputs, [v.type for v in node.outputs], node.attrs,
                   node.decomposition, node.regions)
    one.outputs = list(copy.outputs)
    return evaluate(one, *[known_value(v) for v in node.inputs])


def fold_constants(graph):
    """Fold every node whose inputs are all constants; in place, returns ``graph``."""
    nodes, mapping = [], {}
    for node in graph.nodes:
        node.inputs = [mapping.get(v, v) for v in node.inputs]
        results = None
        if _foldable(node):
            try:
                results = evaluate_node(node)
            except NotImplementedError:
                results = None
        if results is None:
            nodes.append(node)
            continue
        for v, array in zip(node.outputs, results):
            constant = Node("constant", [], [v.type], {"value": array})
            nodes.append(constant)
            mapping[v] = constant.output
    graph.nodes = nodes
    return rename(graph, mapping)
