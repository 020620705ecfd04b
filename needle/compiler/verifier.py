"""Checks a Graph against the IR's rules; tests run it after every pass.

:func:`verify` checks that every node's op is known and its attributes are valid, that every
input is a graph input or an earlier node's output (SSA: no use before definition, nothing
defined twice), that the node's output types are the ones :func:`~.ops.infer_types`
re-infers, that the outputs are defined, that the aliases pair valid output and input
positions of equal types with no input aliased twice, and, recursively, that each
composite's decomposition and each control-flow region is valid and has the node's
signature.
"""
from .ir import Graph, TensorType, Value
from .ops import VerifyError, check_node


def _where(i, node):
    name = node.attrs.get("name") if node.op == "composite" else None
    return f"node {i} ({node.op}{' ' + name if isinstance(name, str) else ''})"


def _verify(graph, prefix):
    def fail(message):
        raise VerifyError(prefix + message)

    if not isinstance(graph, Graph):
        fail(f"expected a Graph, got {type(graph).__name__}")
    defined = set()
    for i, v in enumerate(graph.inputs):
        if not isinstance(v, Value) or not isinstance(v.type, TensorType):
            fail(f"input {i} is not a Value with a TensorType: {v!r}")
        if any(n < 0 for n in v.type.shape):
            fail(f"input {i} has a negative dimension: {v.type}")
        if v in defined:
            fail(f"input {i} is listed twice")
        if v.producer is not None:
            fail(f"input {i} is the output of a {v.producer.op} node, not a graph input")
        defined.add(v)
    later = {v: (j, n) for j, n in enumerate(graph.nodes) for v in n.outputs}
    for i, node in enumerate(graph.nodes):
        where = _where(i, node)
        for j, v in enumerate(node.inputs):
            if v in defined:
                continue
            if v in later:
                k, producer = later[v]
                fail(f"{where}: input {j} is used before it is defined (by node {k}, "
                     f"{producer.op})")
            fail(f"{where}: input {j} ({v!r}) is not defined in this graph: neither a graph "
                 f"input nor an earlier node's output")
        if node.decomposition is not None and node.op == "composite":
            _verify(node.decomposition, f"{prefix}{where}: decomposition: ")
        for r, region in enumerate(node.regions or ()):
            _verify(region, f"{prefix}{where}: region {r}: ")
        try:
            types = check_node(node.op, [v.type for v in node.inputs], node.attrs,
                               node.decomposition, node.regions)
        except VerifyError as e:
            fail(f"{where}: {e}")
        if len(types) != len(node.outputs):
            fail(f"{where}: has {len(node.outputs)} outputs, its op gives {len(types)}")
        for j, (v, t) in enumerate(zip(node.outputs, types)):
            if v.type != t:
                fail(f"{where}: output {j} has type {v.type}, but the op gives {t}")
            if v in defined:
                fail(f"{where}: output {j} is defined twice")
            if v.producer is not node or v.index != j:
                fail(f"{where}: output {j} does not record this node as its producer at "
                     f"position {j}")
            defined.add(v)
    for i, v in enumerate(graph.outputs):
        if v not in defined:
            fail(f"output {i} ({v!r}) is not defined in this graph")
    aliased = {}
    for out, inp in graph.aliases.items():
        if not isinstance(out, int) or not 0 <= out < len(graph.outputs):
            fail(f"alias {out}: {inp}: output position {out} out of range "
                 f"({len(graph.outputs)} outputs)")
        if not isinstance(inp, int) or not 0 <= inp < len(graph.inputs):
            fail(f"alias {out}: {inp}: input position {inp} out of range "
                 f"({len(graph.inputs)} inputs)")
        if graph.outputs[out].type != graph.inputs[inp].type:
            fail(f"alias {out}: {inp}: output {out} has type {graph.outputs[out].type} but "
                 f"input {inp} has {graph.inputs[inp].type}")
        if inp in aliased:
            fail(f"alias {out}: {inp}: input {inp} is already aliased by output {aliased[inp]}")
        aliased[inp] = out


def verify(graph):
    """Check ``graph`` (see the module docstring); returns it, so passes can chain.

    Args:
        graph: a :class:`~needle.compiler.ir.Graph`.

    Returns:
        ``graph``, unchanged.

    Raises:
        VerifyError: naming the node (its position and op; a path through composites'
            decompositions) and what is wrong.

    Example:
        >>> from needle.compiler.ir import Graph, TensorType
        >>> g = Graph()
        >>> x = g.add_input(TensorType((2,), "float32"))
        >>> g.outputs = g.add("exponential", [x], [TensorType((3,), "float32")]).outputs
        >>> verify(g)
        Traceback (most recent call last):
        ...
        needle.compiler.ops.VerifyError: node 0 (exponential): output 0 has type float32[3], but the op gives float32[2]
    """
    _verify(graph, "")
    return graph
