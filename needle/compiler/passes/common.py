"""What the passes share: renaming values (a value's uses, in later nodes and the graph's
outputs, become another value of the same type), use counts, and reading splat constants.

Every pass mutates its graph in place and returns it. Graph inputs are never touched;
``graph.outputs`` keeps its length and positions (an output is only renamed to a value of
the same type), so ``graph.aliases`` stays valid.
"""
import numpy as np


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
