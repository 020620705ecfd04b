"""Canonicalisation: one spelling for computations that have several, chosen so that fusion
and pattern matching see fewer kinds of nodes. A table of rewrites (:data:`RULES`, driven
as :mod:`.simplify`'s), applied to a fixed point:

* a ``transpose`` feeding a ``dot_general`` is folded into its batching and contracting
  dimension numbers, when the operand's free dimensions keep their order (the result's
  layout is batch, lhs free, rhs free dimensions, each in operand order); otherwise the
  transpose stays and nothing is inserted;
* a ``transpose`` of a ``broadcast_in_dim`` is one ``broadcast_in_dim`` (its
  ``broadcast_dimensions`` permuted: StableHLO does not ask them to be sorted);
* a ``broadcast_in_dim`` of a ``reshape`` that only inserts or drops size-1 dimensions of
  an operand without size-1 dimensions is one ``broadcast_in_dim`` of that operand;
* a ``transpose``, ``reshape`` or ``broadcast_in_dim`` of a splat (:func:`~.common.splat`)
  is a ``broadcast_in_dim`` of its scalar ``constant``;
* a commutative binary op (add, multiply, maximum, minimum, and, or, compare EQ / NE)
  takes a splat operand second; a compare LT / LE / GT / GE with a splat first is swapped
  and its direction mirrored.

Exact, bit for bit: the contracting and batching pairs keep their order, so a dot_general
sums in the same order; an operand swap is skipped where IEEE leaves the choice to the
operand order: a NaN splat (which NaN's payload comes out of ``NaN + NaN``) and, for
maximum and minimum, a float zero splat (``max(-0.0, 0.0)``). Replaced nodes are dropped;
those left without uses (a folded transpose read elsewhere stays) are :mod:`.dce`'s.
"""
import numpy as np

from .common import made_by, rewrite_until_fixed, splat

COMMUTATIVE = ("add", "multiply", "maximum", "minimum", "and", "or")

#: a compare's direction with its operands swapped
MIRRORED = {"EQ": "EQ", "NE": "NE", "LT": "GT", "GT": "LT", "LE": "GE", "GE": "LE"}


def _fold_transposes(r, node, lhs, rhs):
    attrs, inputs = dict(node.attrs), [lhs, rhs]
    for i, side in enumerate(("lhs", "rhs")):
        t = made_by(inputs[i], "transpose")
        if t is None:
            continue
        perm = list(t.attrs["permutation"])  # operand dimension d is dimension perm[d] of x
        batch, contract = (list(attrs[f"{side}_{k}_dimensions"])
                           for k in ("batching", "contracting"))
        free = [perm[d] for d in range(len(perm)) if d not in batch + contract]
        if free != sorted(free):
            continue  # the result's free dimensions would come out in another order
        attrs[f"{side}_batching_dimensions"] = [perm[d] for d in batch]
        attrs[f"{side}_contracting_dimensions"] = [perm[d] for d in contract]
        inputs[i] = t.inputs[0]
    return r.emit("dot_general", inputs, attrs) if inputs != [lhs, rhs] else None


def _transpose_of_broadcast(r, node, x):
    b = made_by(x, "broadcast_in_dim")
    if b is None:
        return None
    perm = list(node.attrs["permutation"])
    position = {p: j for j, p in enumerate(perm)}  # dimension of x -> dimension of the result
    return r.emit("broadcast_in_dim", b.inputs, {
        "broadcast_dimensions": [position[d] for d in b.attrs["broadcast_dimensions"]],
        "shape": list(node.output.shape)})


def _broadcast_of_unit_reshape(r, node, x):
    reshape = made_by(x, "reshape")
    if reshape is None:
        return None
    operand = reshape.inputs[0]
    kept = [j for j, n in enumerate(x.shape) if n != 1]  # x's dimensions that are operand's
    if 1 in operand.shape or [x.shape[j] for j in kept] != list(operand.shape):
        return None
    dims = list(node.attrs["broadcast_dimensions"])
    return r.emit("broadcast_in_dim", [operand], {
        "broadcast_dimensions": [dims[j] for j in kept], "shape": list(node.output.shape)})


def _root(value):
    """The constant at the bottom of a chain of broadcast_in_dim and reshape nodes."""
    while value.producer.op in ("broadcast_in_dim", "reshape"):
        value = value.producer.inputs[0]
    return value


def _movement_of_splat(r, node, x):
    number = splat(x)
    if number is None or (node.op == "broadcast_in_dim" and x.shape == ()
                          and x.producer.op == "constant"):
        return None  # not a splat, or canonical already
    scalar = _root(x)
    if scalar.shape != ():
        scalar = r.emit("constant", [], {"value": np.asarray(number)})
    return r.emit("broadcast_in_dim", [scalar], {"broadcast_dimensions": [],
                                                 "shape": list(node.output.shape)})


def _swappable(op, number):
    if np.asarray(number).dtype.kind != "f":
        return True
    return not np.isnan(number) and not (op in ("maximum", "minimum") and number == 0)


def _splat_second(r, node, x, y):
    number = splat(x)
    if number is None or splat(y) is not None or not _swappable(node.op, number):
        return None
    return r.emit(node.op, [y, x], node.attrs)


def _compare_splat_second(r, node, x, y):
    if splat(x) is None or splat(y) is not None:
        return None
    direction = node.attrs["comparison_direction"]
    return r.emit("compare", [y, x], {**node.attrs, "comparison_direction": MIRRORED[direction]})


#: (op, rewrite(r, node, *inputs) -> Value or None), tried in order
RULES = [
    ("dot_general", _fold_transposes),
    ("transpose", _movement_of_splat),
    ("transpose", _transpose_of_broadcast),
    ("reshape", _movement_of_splat),
    ("broadcast_in_dim", _movement_of_splat),
    ("broadcast_in_dim", _broadcast_of_unit_reshape),
    *[(op, _splat_second) for op in COMMUTATIVE],
    ("compare", _compare_splat_second),
]


def canonicalize(graph):
    """Apply :data:`RULES` until nothing changes; in place, returns ``graph``."""
    return rewrite_until_fixed(graph, RULES)
