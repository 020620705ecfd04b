"""Common subexpression elimination: merge nodes with the same op, the same inputs and
equal attributes (and, for a composite, the same decomposition); later uses read the first.

Attributes compare structurally with the op's defaults filled in; lists and tuples are the
same; ints, floats and bools are not (``1``, ``1.0`` and ``True`` differ); floats compare
by their bits (``0.0`` is not ``-0.0``, NaN equals the same NaN); arrays (constants) by
dtype, shape and bytes, so NaN payloads and signed zeros stay apart. A decomposition
compares by its text form, its large constants by a digest of their bytes (exact too).
"""
import struct

import numpy as np

from ..ops import opdef, with_defaults
from ..printer import as_text
from .common import rename


def freeze(value):
    """A hashable key of an attribute value that equals another's exactly when the two
    values mean the same."""
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return ("array", array.dtype.name, array.shape, array.tobytes())
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if isinstance(value, (int, np.integer)):
        return ("int", int(value))
    if isinstance(value, (float, np.floating)):
        return ("float", struct.pack("<d", float(value)))
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, (list, tuple)):
        return ("list",) + tuple(freeze(x) for x in value)
    if isinstance(value, dict):
        return ("dict",) + tuple(sorted((k, freeze(x)) for k, x in value.items()))
    if value is None:
        return ("none",)
    raise TypeError(f"cse cannot compare an attribute of type {type(value).__name__}")


def node_key(node):
    """What makes two nodes compute the same thing (their inputs as they are now)."""
    attrs = with_defaults(node.op, node.attrs) if opdef(node.op) is not None else node.attrs
    decomposition = (as_text(node.decomposition, digest=True)
                     if node.decomposition is not None else None)
    regions = tuple(as_text(r, digest=True) for r in node.regions or ())
    return (node.op, tuple(v.id for v in node.inputs), freeze(attrs), decomposition, regions)


def cse(graph):
    """Merge equal nodes into the first of them; in place, returns ``graph``."""
    seen, mapping, kept = {}, {}, []
    for node in graph.nodes:
        node.inputs = [mapping.get(v, v) for v in node.inputs]
        key = node_key(node)
        first = seen.get(key)
        if first is None or [v.type for v in first.outputs] != [v.type for v in node.outputs]:
            seen.setdefault(key, node)
            kept.append(node)
            continue
        mapping.update(zip(node.outputs, first.outputs))
    graph.nodes = kept
    return rename(graph, mapping)
