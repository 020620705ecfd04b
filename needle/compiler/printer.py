"""The text form of Needle's IR: readable, and read back exactly by :mod:`.parser`.

::

    func @main(%0: float32[64,784], %1: float32[784,128]) -> (float32[64,128]) aliases {0: 1} {
      %2 = dot_general %0, %1 {lhs_batching_dimensions = [], rhs_batching_dimensions = [], lhs_contracting_dimensions = [1], rhs_contracting_dimensions = [0]} : float32[64,128]
      %3 = constant {value = dense<float32[]>[0.0]} : float32[]
      %4:2 = composite %2, %3 {name = "needle.x"} : float32[64,128], float32[] {
        func @needle.x(%0: float32[64,128], %1: float32[]) -> (float32[64,128], float32[]) {
          return %0, %1
        }
      }
      return %4#0
    }

- Values are ``%N``, numbered densely per function: the inputs first, then one number per
  node; a node with several outputs defines ``%N:count`` and its outputs are ``%N#i``.
- A node is ``[%N =] op operands [{attributes}] : output types [{ decomposition }]``
  (``: ()`` for a node without outputs); a composite's decomposition is a nested ``func``,
  a ``while``'s or ``case``'s regions are nested ``func`` texts one after another.
- Attributes: in the op table's order (then any others, sorted), as ``name = value``: ints,
  floats (``repr``: ``1.0``, ``1e-05``, ``inf``, ``-inf``, ``nan``), ``"strings"`` (JSON),
  ``true``/``false``, ``[lists]``, ``{dicts}`` (keys sorted) and numpy arrays as
  ``dense<dtype[shape]>[v0, v1, ...]`` (row-major, every value) or
  ``dense<dtype[shape]>splat(v)`` when all are bitwise equal. A float element is its
  shortest decimal form when that reads back to the same bits, else its bit pattern in hex
  (``0x7FC00001``: NaN payloads, ``-nan``), so constants round-trip bit-exactly.
- ``aliases {out: in, ...}`` (only when there are any) maps output to input positions.
"""
import hashlib
import json
import re

import numpy as np

from .ir import TensorType
from .ops import opdef

_BITS = {"float32": np.uint32, "float64": np.uint64}
#: constants larger than this print as a digest in ``as_text(graph, digest=True)``
DIGEST_ELEMENTS = 64
_PLAIN = re.compile(r"[A-Za-z_][\w]*\Z")
_SYMBOL = re.compile(r"[\w.$-]+\Z")


def decode_scalars(texts, dtype):
    """The numpy 1-D array of ``dtype`` written as the element texts ``texts`` (shared with
    the parser, so what the printer checks is what the parser does)."""
    if dtype == "bool":
        if any(t not in ("true", "false") for t in texts):
            raise ValueError("bool elements must be true or false")
        return np.array([t == "true" for t in texts], dtype=bool)
    if dtype not in _BITS:
        return np.array([int(t) for t in texts], dtype=dtype)
    hexes = [i for i, t in enumerate(texts) if t[:2] in ("0x", "0X")]
    values = np.array([0.0 if t[:2] in ("0x", "0X") else float(t) for t in texts],
                      dtype=np.float64).astype(dtype)
    if hexes:
        values.view(_BITS[dtype])[hexes] = [int(texts[i], 16) for i in hexes]
    return values


def _element_texts(flat):
    """The texts of a 1-D array's elements, each reading back to the same bits."""
    dtype = flat.dtype.name
    if dtype == "bool":
        return ["true" if x else "false" for x in flat.tolist()]
    if dtype not in _BITS:
        return [str(x) for x in flat.tolist()]
    # float64: Python's repr is the shortest round-trip form; float32: numpy's str is
    texts = [repr(x) for x in flat.tolist()] if dtype == "float64" else [str(x) for x in flat]
    bits = flat.view(_BITS[dtype])
    for i in np.flatnonzero(decode_scalars(texts, dtype).view(_BITS[dtype]) != bits):
        texts[i] = f"0x{int(bits[i]):0{flat.itemsize * 2}X}"
    return texts


def _dense(array, digest=False):
    head = f"dense<{TensorType(array.shape, array.dtype.name)}>"
    flat = np.ascontiguousarray(array).reshape(-1)
    raw = flat.view(np.uint8).reshape(flat.size, flat.itemsize)
    if flat.size > 1 and (raw == raw[0]).all():
        return f"{head}splat({_element_texts(flat[:1])[0]})"
    if digest and flat.size > DIGEST_ELEMENTS:
        return f"{head}sha256({hashlib.sha256(raw.tobytes()).hexdigest()})"
    return f"{head}[{', '.join(_element_texts(flat))}]"


def _key(name):
    return name if _PLAIN.match(name) else json.dumps(name)


def attr_text(value, digest=False):
    """The text of one attribute value (``digest``: see :func:`as_text`)."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, np.ndarray):
        return _dense(value, digest)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(attr_text(v, digest) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {attr_text(value[k], digest)}"
                               for k in sorted(value)) + "}"
    raise TypeError(f"cannot print an attribute value of type {type(value).__name__}: {value!r}")


def _attrs_text(op, attrs, digest):
    """``{a = 1, b = [2, 3]}`` in the op table's order, then any other names sorted."""
    definition = opdef(op)
    order = definition.attr_names() if definition is not None else []
    keys = [k for k in order if k in attrs] + sorted(k for k in attrs if k not in order)
    return "{" + ", ".join(f"{_key(k)} = {attr_text(attrs[k], digest)}" for k in keys) + "}"


def _symbol(name):
    return "@" + (name if _SYMBOL.match(name) else json.dumps(name))


def _func(graph, indent, lines, digest):
    pad = "  " * indent
    names = {}

    def use(v):  # a value no one defined prints as %?id: the verifier says why
        return names.get(v, f"%?{v.id}")

    for i, v in enumerate(graph.inputs):
        names[v] = f"%{i}"
    args = ", ".join(f"{names[v]}: {v.type}" for v in graph.inputs)
    results = ", ".join(repr(v.type) for v in graph.outputs)
    aliases = ""
    if graph.aliases:
        pairs = sorted(graph.aliases.items())
        aliases = " aliases {" + ", ".join(f"{o}: {i}" for o, i in pairs) + "}"
    lines.append(f"{pad}func {_symbol(graph.name)}({args}) -> ({results}){aliases} {{")
    number = len(graph.inputs)
    for node in graph.nodes:
        line = f"{pad}  "
        if len(node.outputs) == 1:
            names[node.outputs[0]] = f"%{number}"
            line += f"%{number} = "
        elif node.outputs:
            names.update((v, f"%{number}#{i}") for i, v in enumerate(node.outputs))
            line += f"%{number}:{len(node.outputs)} = "
        number += bool(node.outputs)
        line += node.op
        if node.inputs:
            line += " " + ", ".join(use(v) for v in node.inputs)
        if node.attrs:
            line += " " + _attrs_text(node.op, node.attrs, digest)
        line += " : " + (", ".join(repr(v.type) for v in node.outputs) or "()")
        inner = [node.decomposition] if node.decomposition is not None else \
            list(node.regions or ())
        if not inner:
            lines.append(line)
        else:
            lines.append(line + " {")
            for graph_of_node in inner:
                _func(graph_of_node, indent + 2, lines, digest)
            lines.append(f"{pad}  }}")
    lines.append(f"{pad}  return" + (" " if graph.outputs else "")
                 + ", ".join(use(v) for v in graph.outputs))
    lines.append(f"{pad}}}")


def as_text(graph, digest=False):
    """The text form of ``graph`` (see this module's docstring); :func:`.parser.parse`
    reads it back.

    Args:
        graph: a :class:`~needle.compiler.ir.Graph`.
        digest: print a constant of more than :data:`DIGEST_ELEMENTS` elements that are
            not all equal as the SHA-256 of its bytes: a text that tells graphs apart
            (trace signatures, CSE keys) at a fraction of the cost, but not parseable.

    Returns:
        A string: one ``func`` with one line per node (no trailing newline).

    Example:
        >>> from needle.compiler.ir import Graph, TensorType
        >>> g = Graph()
        >>> x = g.add_input(TensorType((2,), "float32"))
        >>> g.outputs = g.add("exponential", [x], [x.type]).outputs
        >>> print(as_text(g))
        func @main(%0: float32[2]) -> (float32[2]) {
          %1 = exponential %0 : float32[2]
          return %1
        }
    """
    lines = []
    _func(graph, 0, lines, digest)
    return "\n".join(lines)


#: the printer's other name: "printing" a graph means producing its text
print_graph = as_text
