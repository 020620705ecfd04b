"""Dead code elimination: keep the nodes that the graph's outputs need, drop the rest.

A node is live when one of its outputs is a graph output or an input of a live node (a
node with several outputs stays whole when any of them is used). Every op of the IR is
pure, so nothing else keeps a node alive. A composite's decomposition is its own graph and
is left as it is.
"""


def dce(graph):
    """Drop the nodes whose outputs nothing needs; in place, returns ``graph``."""
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if any(v in live for v in node.outputs):
            kept.append(node)
            live.update(node.inputs)
    graph.nodes = kept[::-1]
    return graph
