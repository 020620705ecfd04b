"""Algebraic simplification: a table of rewrites, applied to a fixed point.

:data:`RULES` lists ``(op, rewrite)``; ``rewrite(r, node, *inputs)`` returns the value that
replaces the node's (single) output, or ``None`` when it does not apply. It may build new
nodes with ``r.emit(op, inputs, attrs)`` (placed before the node) and ask whether a value
has one use only with ``r.single(value)``. A replacement must have the output's type (the
sweep checks), so ``x * 1`` becomes ``x`` only when ``x`` already has the product's shape.

"1" and "0" are splat constants: a constant whose elements are all bitwise equal, or a
``broadcast_in_dim`` / ``reshape`` of one (:func:`~.common.splat`).

Exact, except one case: ``x + 0`` (``0 + x``, ``x - (-0)``) returns ``x`` where IEEE gives
``+0.0`` for ``x = -0.0`` (the sign of a zero changes; XLA does the same). Not done, on
purpose: ``x * 0`` (NaN and inf times 0 are NaN), ``x - x``, ``x / x``. Composing two
movements into one (transpose, reshape, broadcast_in_dim pairs that do not cancel) is done
only when the inner one has no other use, so that nothing is computed twice; a pair that
cancels (gives ``x`` back) is always removed. The replaced nodes are dropped; nodes left
without uses are :mod:`.dce`'s.
"""
from .common import is_splat, made_by, rewrite_until_fixed


def _identity(perm):
    return list(perm) == list(range(len(perm)))


def _transpose(r, node, x):
    perm = list(node.attrs["permutation"])
    if _identity(perm):
        return x
    inner = made_by(x, "transpose")
    if inner is None:
        return None
    composed = [inner.attrs["permutation"][p] for p in perm]
    if _identity(composed):
        return inner.inputs[0]
    return r.emit("transpose", inner.inputs, {"permutation": composed}) if r.single(x) else None


def _broadcast(r, node, x):
    dims, shape = list(node.attrs["broadcast_dimensions"]), tuple(node.attrs["shape"])
    if _identity(dims) and shape == x.shape:
        return x
    inner = made_by(x, "broadcast_in_dim")
    if inner is None or not r.single(x):
        return None
    return r.emit("broadcast_in_dim", inner.inputs, {
        "broadcast_dimensions": [dims[d] for d in inner.attrs["broadcast_dimensions"]],
        "shape": list(shape)})


def _reshape_reshape(r, node, x):
    inner = made_by(x, "reshape")
    if inner is None or not r.single(x):
        return None
    return r.emit("reshape", inner.inputs, {"shape": list(node.attrs["shape"])})


def _full_slice(node, x):
    a = node.attrs
    return (all(s == 0 for s in a["start_indices"]) and tuple(a["limit_indices"]) == x.shape
            and all(s == 1 for s in a["strides"]))


#: (op, rewrite(r, node, *inputs) -> Value or None), tried in order
RULES = [
    ("multiply", lambda r, n, x, y: x if is_splat(y, 1) else None),          # x * 1 -> x
    ("multiply", lambda r, n, x, y: y if is_splat(x, 1) else None),          # 1 * x -> x
    ("add", lambda r, n, x, y: x if is_splat(y, 0) else None),               # x + 0 -> x
    ("add", lambda r, n, x, y: y if is_splat(x, 0) else None),               # 0 + x -> x
    ("subtract", lambda r, n, x, y: x if is_splat(y, 0) else None),          # x - 0 -> x
    ("divide", lambda r, n, x, y: x if is_splat(y, 1) else None),            # x / 1 -> x
    ("negate", lambda r, n, x: made_by(x, "negate") and x.producer.inputs[0]),  # --x -> x
    ("convert", lambda r, n, x: x if n.attrs["dtype"] == x.dtype else None),
    ("reshape", lambda r, n, x: x if tuple(n.attrs["shape"]) == x.shape else None),
    ("reshape", _reshape_reshape),                                 # reshape(reshape(x))
    ("transpose", _transpose),                          # identity; transpose(transpose(x))
    ("broadcast_in_dim", _broadcast),                    # identity; broadcast(broadcast(x))
    ("slice", lambda r, n, x: x if _full_slice(n, x) else None),
]

def simplify(graph, max_sweeps=100):
    """Apply :data:`RULES` until nothing changes; in place, returns ``graph``."""
    return rewrite_until_fixed(graph, RULES, max_sweeps)
