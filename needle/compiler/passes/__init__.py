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
* :func:`canonicalize`: one spelling per computation: transposes folded into dot_general's
  dimension numbers, a movement of a broadcast or of a splat as one broadcast, splat
  operands second (:mod:`.canonicalize`)
* :func:`fuse_elementwise`: groups of elementwise ops and their reduction as one
  ``needle.fusion`` composite each (:mod:`.fuse_elementwise`)

The pipelines, per level (:data:`PIPELINES`):

* O0: nothing;
* O1: ``dce, cse, fold_constants, simplify, dce``;
* O2: O1's, then ``canonicalize, simplify, cse, dce`` (what canonicalisation exposes:
  broadcast chains to compose, equal scalar constants, transposes no one reads), then
  ``fuse_elementwise, dce`` (the splats and feeders that groups rebuilt inside);
* O3: O2's with :data:`PATTERN_PASSES` (fusion of known patterns) before
  ``fuse_elementwise``, which fuses what they leave.

:func:`~.common.launched_work` counts the nodes that launch device work, the measure
fusion lowers.

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
from .canonicalize import canonicalize
from .common import launched_work
from .cse import cse
from .dce import dce
from .fold import fold_constants
from .fuse_elementwise import fuse_elementwise
from .fuse_linear_backward import fuse_linear_backward
from .fuse_patterns import fuse_patterns
from .simplify import simplify

O1 = [dce, cse, fold_constants, simplify, dce]
CANONICAL = [canonicalize, simplify, cse, dce]
#: O3's fusion of Needle's fused ops (softmax, LayerNorm, linear + bias + activation, ...),
#: run before fuse_elementwise so that it sees the patterns whole
PATTERN_PASSES = [fuse_patterns, fuse_linear_backward]
FUSION = [fuse_elementwise, dce]

#: opt level -> the passes it runs, in order (the module docstring says why each is there)
PIPELINES = {0: [], 1: O1, 2: O1 + CANONICAL + FUSION,
             3: O1 + CANONICAL + PATTERN_PASSES + FUSION}


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


__all__ = ["CANONICAL", "FUSION", "O1", "PATTERN_PASSES", "PIPELINES", "canonicalize", "cse", "fuse_linear_backward", "fuse_patterns",
           "dce", "debug_flags", "fold_constants", "fuse_elementwise", "launched_work",
           "run_passes", "simplify"]
