"""Producer–consumer fusion: groups of elementwise ops (and their reduction) that one kernel
can run become one ``composite`` node each, ``{"name": "needle.fusion", "kind": "loop"}``
or ``"kind": "reduction"``, whose decomposition is the group (its inputs the values the
group reads from outside, its outputs the values used outside it or returned by the
graph). A backend without a fused kernel for a group runs its members one by one.

A group grows in node order:

* an elementwise node joins the groups of its elementwise producers of its own shape (all
  the elementwise members of a group have one shape, so one loop runs them), the first of
  them first;
* a ``reduce`` whose operand a group makes closes that group (``"reduction"``): nothing
  joins it afterwards, and a group has one reduce at most;
* a join that would make a cycle is skipped: a path that leaves the group and comes back
  (through other nodes or groups) would need the group to run both before and after it.

Then each group takes the ``broadcast_in_dim`` and ``reshape`` nodes that feed it alone
(the group indexes their operands itself), and every splat it reads
(:func:`~.common.splat`, a reduce's constant init value too) is rebuilt inside as a scalar
``constant`` and its broadcast, so that it is an immediate, not a buffer. Values made by
other ops (dot_general, convolution, gather, scatter, composites, transposes, ...) are
inputs: fusion never crosses them. A group becomes a composite when that saves a launch:
when its decomposition holds two nodes or more that launch device work
(:func:`~.common.launched_work`).

Nodes keep their order, each composite placed where its first member was, later when its
inputs need it: the pass is deterministic. The results are the same bit for bit (a
composite computes what its members did); feeders and splats left without uses are
:mod:`.dce`'s.
"""
import heapq

import numpy as np

from ..ir import Graph, Node, TensorType
from ..ops import opdef
from .common import launched_work, rename, splat

NAME = "needle.fusion"

#: ops a group takes in when they feed it alone
FEEDERS = ("broadcast_in_dim", "reshape")
#: groups a cycle check visits before it gives up and keeps the two groups apart
CYCLE_SEARCH = 64


def _elementwise(node):
    definition = opdef(node.op)
    return definition is not None and definition.group == "elementwise"


def _computes(members):
    return any(_elementwise(n) or n.op == "reduce" for n in members)


class _Groups:
    """A partition of a graph's nodes, grown in node order: ``of[node]`` is a group id,
    ``members[id]`` its nodes, ``closed`` the ids of groups with a reduce."""

    def __init__(self, graph):
        self.index = {node: i for i, node in enumerate(graph.nodes)}
        self.users = graph.users()
        self.of = dict(self.index)
        self.members = {i: [node] for node, i in self.index.items()}
        self._readers = {i: [u for v in node.outputs for u in self.users.get(v, ())]
                         for node, i in self.index.items()}
        self.closed = set()

    def readers(self, g):
        """The nodes outside group ``g`` that read its values."""
        self._readers[g] = [u for u in self._readers[g] if self.of[u] != g]
        return self._readers[g]

    def merge(self, a, b):
        """Join groups ``a`` and ``b`` (the smaller one's nodes move); returns its id."""
        if len(self.members[a]) < len(self.members[b]):
            a, b = b, a
        for node in self.members[b]:
            self.of[node] = a
        self.members[a] += self.members.pop(b)
        self._readers[a] += self._readers.pop(b)
        if b in self.closed:
            self.closed.add(a)
        return a

    def makes_cycle(self, a, b, last):
        """Whether joining groups ``a`` and ``b`` makes a path that leaves the joined group
        come back into it (through other nodes or groups). Nodes from ``last`` (the
        latest member) on are not grouped yet and come after every member: no such path
        goes through them. A search that reaches more than :data:`CYCLE_SEARCH` groups
        answers yes: the two are far apart (a backward op and the forward value it
        reads), where a join rarely holds and the search would make the pass quadratic."""
        seen, stack = {a, b}, [a, b]
        while stack:
            if len(seen) > CYCLE_SEARCH:
                return True
            g = stack.pop()
            for user in self.readers(g):
                h = self.of[user]
                if h in (a, b):
                    if g not in (a, b):
                        return True
                elif h not in seen and self.index[user] < last:
                    seen.add(h)
                    stack.append(h)
        return False

    def join(self, node, producer):
        """Join ``node``'s group and ``producer``'s unless they are one, the producer's is
        closed or joining makes a cycle; returns whether it did."""
        a, b = self.of[node], self.of[producer]
        if a == b or b in self.closed or self.makes_cycle(a, b, self.index[node]):
            return False
        self.merge(a, b)
        return True


def _grow(graph):
    """The groups of ``graph`` that compute (lists of nodes in node order, feeders
    included) and the graph's ``{value: users}``."""
    groups = _Groups(graph)
    for node in graph.nodes:
        if _elementwise(node):
            for v in node.inputs:
                p = v.producer
                if p is not None and _elementwise(p) and v.shape == node.output.shape:
                    groups.join(node, p)
        elif node.op == "reduce":
            p = node.inputs[0].producer
            if p is not None and _elementwise(p) and groups.join(node, p):
                groups.closed.add(groups.of[node])
    returned = set(graph.outputs)
    for node in reversed(graph.nodes):  # so a feeder joins before what feeds it
        if node.op not in FEEDERS or node.output in returned:
            continue
        readers = {groups.of[u] for u in groups.users.get(node.output, ())}
        if len(readers) == 1 and _computes(groups.members[min(readers)]):
            groups.merge(groups.of[node], min(readers))
    return [sorted(m, key=groups.index.get) for m in groups.members.values()
            if _computes(m)], groups.users


def _decomposition(members, returns):
    """The group as a Graph returning ``returns``, and the outer values it reads."""
    dec, inner, reads = Graph(name=NAME), {}, []
    inside = set(members)

    def value(v):
        if v not in inner:
            number = splat(v) if v.producer not in inside else None
            if number is not None:  # rebuilt inside: a scalar constant, broadcast
                inner[v] = dec.add("constant", [], [TensorType((), v.dtype)],
                                   {"value": np.asarray(number)}).output
                if v.shape != ():
                    inner[v] = dec.add("broadcast_in_dim", [inner[v]], [v.type],
                                       {"broadcast_dimensions": [],
                                        "shape": list(v.shape)}).output
            else:
                inner[v] = dec.add_input(v.type)
                reads.append(v)
        return inner[v]

    for node in members:
        copy = dec.add(node.op, [value(v) for v in node.inputs],
                       [v.type for v in node.outputs], node.attrs)
        inner.update(zip(node.outputs, copy.outputs))
    dec.outputs = [inner[v] for v in returns]
    return dec, reads


def _in_order(nodes, first):
    """``nodes`` in an order where every input is made before its use, as close to
    ``first[node]`` order as that allows (a stable topological sort)."""
    made_by = {v: node for node in nodes for v in node.outputs}
    waits = {node: {made_by[v] for v in node.inputs if v in made_by} for node in nodes}
    readers = {}
    for node, producers in waits.items():
        for p in producers:
            readers.setdefault(p, []).append(node)
    ready = [(first[n], i) for i, n in enumerate(nodes) if not waits[n]]
    heapq.heapify(ready)
    position = {n: i for i, n in enumerate(nodes)}
    out = []
    while ready:
        node = nodes[heapq.heappop(ready)[1]]
        out.append(node)
        for reader in readers.get(node, ()):
            waits[reader].discard(node)
            if not waits[reader]:
                heapq.heappush(ready, (first[reader], position[reader]))
    assert len(out) == len(nodes), "fusion made a cycle"
    return out


def fuse_elementwise(graph):
    """Fuse the groups of elementwise ops (see the module docstring) into composites; in
    place, returns ``graph``."""
    first = {node: i for i, node in enumerate(graph.nodes)}
    returned, fused, mapping = set(graph.outputs), set(), {}
    groups, users = _grow(graph)
    for members in groups:
        inside = set(members)
        returns = [v for n in members for v in n.outputs
                   if v in returned or any(u not in inside for u in users.get(v, ()))]
        dec, reads = _decomposition(members, returns)
        if not returns or launched_work(dec) < 2:
            continue
        kind = "reduction" if any(n.op == "reduce" for n in members) else "loop"
        node = Node("composite", reads, [v.type for v in returns],
                    {"name": NAME, "kind": kind}, dec)
        first[node] = first[members[0]]
        mapping.update(zip(returns, node.outputs))
        fused.update(members)
        graph.nodes.append(node)
    if fused:
        graph.nodes = [n for n in graph.nodes if n not in fused]
        rename(graph, mapping)  # composites read each other's outputs from here on
        graph.nodes = _in_order(graph.nodes, first)
    return graph
