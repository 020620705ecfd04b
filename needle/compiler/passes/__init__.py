"""The compiler's passes, one module each, and the ordered list of them per optimisation
level (:data:`PIPELINES`) that :func:`run_passes` runs.

A pass is a function ``pass(graph) -> graph`` that changes the graph **in place** and
returns it. It keeps the graph's inputs as they are, and its outputs' count, positions and
types (an output may be renamed to another value of its type), so ``graph.aliases`` stays
valid; its result passes :func:`~needle.compiler.verifier.verify` and computes what the
graph computed (see each module for the exact sense).

* :func:`dce`: drop nodes nothing needs (:mod:`.dce`)
* :func:`cse`: merge equal nodes (:mod:`.cse`)
* :func:`fold_constants`: evaluate nodes of constants (:mod:`.fold`)
* :func:`simplify`: algebraic rewrites, ``x * 1 -> x`` and the like (:mod:`.simplify`)

``NEEDLE_DEBUG`` (a comma list, e.g. ``NEEDLE_DEBUG=ir,src``) containing ``ir`` prints the
IR after every pass.

Example:
    >>> from needle.compiler import Graph, TensorType, add_node
    >>> g = Graph()
    >>> x = g.add_input(TensorType((3,), "float32"))
    >>> a, b = (add_node(g, "exponential", [x]).output for _ in range(2))
    >>> g.outputs = [add_node(g, "add", [a, b]).output]
    >>> run_passes(g, 1)[1]
    [('initial', 3), ('dce', 3), ('cse', 2), ('fold_constants', 2), ('simplify', 2), ('dce', 2)]
"""
import os

from ..ops import VerifyError
from ..printer import as_text
from ..verifier import verify
from .cse import cse
from .dce import dce
from .fold import fold_constants
from .simplify import simplify

O1 = [dce, cse, fold_constants, simplify, dce]

#: opt level -> the passes it runs, in order. Levels 2 and 3 run O1's passes for now: the
#: passes that are theirs (fusion, layout, memory planning) are not written yet.
PIPELINES = {0: [], 1: O1, 2: list(O1), 3: list(O1)}


def debug_flags():
    """The comma-separated words of ``NEEDLE_DEBUG``, lower-cased."""
    return {w.strip().lower() for w in os.environ.get("NEEDLE_DEBUG", "").split(",") if w.strip()}


def run_passes(graph, opt_level, verify_each=False):
    """Run the passes of ``PIPELINES[opt_level]`` on ``graph`` (in place).

    Args:
        graph: a :class:`~needle.compiler.ir.Graph`; it is changed.
        opt_level: a key of :data:`PIPELINES` (0 to 3).
        verify_each: verify the graph before the first pass and after every pass (tests
            do; a pass that breaks the IR is then named by the error).

    Returns:
        ``(graph, stats)``: stats is ``[("initial", node count), (pass name, node count
        after it), ...]``; counts are of the top-level nodes.
    """
    if opt_level not in PIPELINES:
        raise ValueError(f"unknown opt level {opt_level!r}; one of {sorted(PIPELINES)}")
    show = "ir" in debug_flags()
    if verify_each:
        verify(graph)
    stats = [("initial", graph.count())]
    for i, p in enumerate(PIPELINES[opt_level]):
        graph = p(graph)
        if verify_each:
            try:
                verify(graph)
            except VerifyError as e:
                raise VerifyError(f"after pass {i} ({p.__name__}): {e}") from e
        stats.append((p.__name__, graph.count()))
        if show:
            print(f"// ---- IR after pass {i} ({p.__name__}, O{opt_level}): "
                  f"{graph.count()} nodes ----")
            print(as_text(graph))
    return graph, stats


__all__ = ["O1", "PIPELINES", "cse", "dce", "debug_flags", "fold_constants", "run_passes",
           "simplify"]
