"""Pattern fusion (O3) of a Linear layer's backward: ``dW = Xᵀ G``, ``dX = G Wᵀ`` and
``db = Σ_rows G`` become one ``needle.linear_backward`` composite, which an executor with
the backend's ``linear_backward`` runs as one call (on ``cudnn``: two cuBLASLt GEMMs, the
bias gradient in the second one's epilogue; no transposed copies).

The traced backward of ``x @ w + b`` (after canonicalisation) is::

    dW = dot_general(X, G)  contracting lhs [0], rhs [0]       X (m, k), G (m, n)
    dX = dot_general(G, W)  contracting lhs [1], rhs [1]       W (k, n)      [if needed]
    db = reduce(transpose(G, [1, 0]), [1], add, 0)  (or reduce(G, [0], add, 0))  [if a bias]

The composite's inputs are ``G, X`` and ``W`` when dX is there; its outputs ``dX`` (when
there), ``dW``, ``db`` (when there); attributes ``dx`` and ``bias`` say which. Its
decomposition is the matched nodes, so run by decomposition nothing changes.
"""
from ..ir import Graph, Node
from ..ops import add_node
from .common import is_splat, rename, use_counts


def _is_dot(node, lhs_contract, rhs_contract):
    a = node.attrs
    return (node.op == "dot_general" and len(node.inputs[0].shape) == 2
            and len(node.inputs[1].shape) == 2
            and list(a["lhs_batching_dimensions"]) == [] == list(a["rhs_batching_dimensions"])
            and list(a["lhs_contracting_dimensions"]) == [lhs_contract]
            and list(a["rhs_contracting_dimensions"]) == [rhs_contract])


def _column_sum(reader, g, counts, readers):
    """The nodes of ``Σ_rows g`` starting at ``reader`` (a node reading g): a reduce-add of g
    over axis 0, or a transpose of g read only by a reduce-add over axis 1; else None."""
    node = reader
    if reader.op == "transpose" and len(readers.get(reader.output, ())) == 1:
        node = readers[reader.output][0]
    init = node.inputs[1].producer if node.op == "reduce" else None
    if init is None or init.op != "constant" or node.attrs.get("computation") != "add" or \
            not is_splat(node.inputs[1], 0):
        return None
    operand, dims = node.inputs[0], list(node.attrs["dimensions"])
    if operand is g and dims == [0]:
        return [node]
    t = operand.producer
    if dims == [1] and t is not None and t.op == "transpose" and t.inputs[0] is g and \
            list(t.attrs["permutation"]) == [1, 0] and counts[operand] == 1:
        return [t, node]
    return None


def fuse_linear_backward(graph):
    """Fuse every Linear backward in ``graph`` (in place); returns ``graph``."""
    counts = use_counts(graph)
    position = {node: i for i, node in enumerate(graph.nodes)}
    defined = {v: -1 for v in graph.inputs}
    for node in graph.nodes:
        for v in node.outputs:
            defined[v] = position[node]
    readers = {}
    for node in graph.nodes:
        for v in node.inputs:
            readers.setdefault(v, []).append(node)
    taken, fused = set(), []
    for dw in graph.nodes:
        if dw in taken or not _is_dot(dw, 0, 0):
            continue
        x, g = dw.inputs
        k, n = x.shape[1], g.shape[1]
        dx = next((r for r in readers.get(g, []) if r not in taken and r.inputs[0] is g
                   and _is_dot(r, 1, 1) and r.inputs[1].shape == (k, n)), None)
        db = next((s for s in (_column_sum(r, g, counts, readers) for r in readers.get(g, [])
                              if r not in taken) if s and not taken.intersection(s)), None)
        inputs = [g, x] + ([dx.inputs[1]] if dx is not None else [])
        nodes = ([dx] if dx is not None else []) + [dw] + (db or [])
        first = min(position[n_] for n_ in nodes)
        if any(defined[v] >= first for v in inputs):
            continue  # an input made after a member: no single place for the composite
        taken.update(nodes)
        fused.append((first, nodes, inputs, dx is not None, db is not None))
    if not fused:
        return graph
    mapping, placed = {}, {}
    for first, nodes, inputs, has_dx, has_db in fused:
        composite = _composite(nodes, inputs, has_dx, has_db)
        results = ([nodes[0].output] if has_dx else []) + \
            [nodes[1 if has_dx else 0].output] + ([nodes[-1].output] if has_db else [])
        mapping.update(zip(results, composite.outputs))
        placed[first] = composite
    gone = set().union(*(set(nodes) for _, nodes, *_ in fused))
    out = []
    for i, node in enumerate(graph.nodes):
        if i in placed:
            out.append(placed[i])
        if node not in gone:
            out.append(node)
    graph.nodes = out
    return rename(graph, mapping)


def _composite(nodes, inputs, has_dx, has_db):
    """One ``needle.linear_backward`` node whose decomposition re-emits ``nodes``."""
    inner = Graph(name="needle.linear_backward")
    env = {v: inner.add_input(v.type) for v in inputs}
    for node in nodes:
        args = []
        for v in node.inputs:
            if v not in env:  # the reduce's zero: a constant of the decomposition
                const = v.producer
                env[v] = add_node(inner, const.op, [], const.attrs).output
            args.append(env[v])
        env[node.output] = add_node(inner, node.op, args, node.attrs).output
    results = ([nodes[0].output] if has_dx else []) + [nodes[1 if has_dx else 0].output] + \
        ([nodes[-1].output] if has_db else [])
    inner.outputs = [env[v] for v in results]
    return Node("composite", inputs, [v.type for v in inner.outputs],
                {"name": "needle.linear_backward", "dx": has_dx, "bias": has_db}, inner)
