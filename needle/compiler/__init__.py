"""Needle's graph compiler (being built: ``needle.compile`` itself is not here yet): the IR
(:mod:`.ir`), its op table and shape rules (:mod:`.ops`), its text form (:mod:`.printer`,
:mod:`.parser`), the verifier (:mod:`.verifier`), a NumPy interpreter that is the IR's
executable specification (:mod:`.reference`), an executor that runs a graph on any Needle
device through the NDArray API (:mod:`.executor`), StableHLO export checked by jaxlib
(:mod:`.stablehlo`), and the passes with their per-level pipelines (:mod:`.passes`,
:func:`~.passes.run_passes`).

Example:
    >>> from needle.compiler import Graph, TensorType, add_node, as_text, parse, verify
    >>> g = Graph()
    >>> x = g.add_input(TensorType((2, 3), "float32"))
    >>> y = add_node(g, "tanh", [x]).output
    >>> g.outputs = [y]
    >>> as_text(parse(as_text(verify(g)))) == as_text(g)
    True
"""
from . import imported_ops  # noqa: F401 - registers ops.IMPORTED_OPS
from .executor import Executor, run
from .ir import DTYPES, Graph, Node, TensorType, Value
from .ops import ELEMENTWISE, OPS, OpDef, VerifyError, add_node, infer_types, with_defaults
from .parser import ParseError, parse
from .passes import PIPELINES, run_passes
from .printer import as_text, print_graph
from .reference import evaluate
from .verifier import verify

__all__ = ["DTYPES", "ELEMENTWISE", "Executor", "Graph", "Node", "OPS", "OpDef", "PIPELINES",
           "ParseError", "TensorType", "Value", "VerifyError", "add_node", "as_text", "evaluate",
           "infer_types", "parse", "print_graph", "run", "run_passes", "verify", "with_defaults"]
