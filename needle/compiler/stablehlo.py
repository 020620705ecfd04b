"""Export a Needle IR :class:`~needle.compiler.ir.Graph` as StableHLO MLIR text, and check
it with jaxlib: its MLIR bindings parse and verify the text, its reference interpreter
(``stablehlo.eval_module``) runs it -- an oracle no one here wrote.

Example:
    >>> from needle.compiler.ir import Graph, TensorType
    >>> g = Graph(); x = g.add_input(TensorType((2,), "float32"))
    >>> g.outputs = [g.add("exponential", [x], [x.type]).output]
    >>> print(export(g))                                      # doctest: +NORMALIZE_WHITESPACE
    module @main {
      func.func public @main(%arg0: tensor<2xf32>) -> (tensor<2xf32>) {
        %0 = "stablehlo.exponential"(%arg0) : (tensor<2xf32>) -> tensor<2xf32>
        return %0 : tensor<2xf32>
      }
    }

Every op is printed in MLIR's generic form, ``%r = "stablehlo.op"(%a, %b) <{properties}>
({regions}) : (operand types) -> result type``: one template for every op, so an op's entry
in the table below only says how its attributes are spelled (``str(parse_and_verify(text))``
gives jaxlib's pretty form). The IR's attribute names are StableHLO's, so most entries are
one line.

The interpreter can abort its process on an op it does not support, so :func:`evaluate`
runs it in a subprocess that loads this file alone, arrays passed as ``.npy`` files. jaxlib
is imported only by the functions that need it.

jaxlib 0.10.2 quirks, found by the tests:
  * its interpreter writes a ``scatter``'s result into the operand's buffer, so another
    reader of that operand (or a returned argument) sees the update; the exported text is
    right (XLA copies), only interpreter results of such programs are off;
  * ``eval_module`` raises a bare "interpreter failed": :func:`evaluate` reports the
    diagnostics it printed instead (a wrong argument type, for example);
  * ``stablehlo.composite`` is supported by the parser, the verifier and the interpreter
    (which runs the decomposition).
"""
import os
import re
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import numpy as np

# ----------------------------------------------------------------------------- spelling
#: IR dtype -> MLIR element type (the one place types are spelled)
ELEMENT_TYPES = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16",
                 "bool": "i1", "complex64": "complex<f32>", "complex128": "complex<f64>",
                 **{f"{kind}{b}": f"{'u' if kind == 'uint' else ''}i{b}"
                    for kind in ("int", "uint") for b in (2, 4, 8, 16, 32, 64)},
                 "float8_e4m3fn": "f8E4M3FN", "float8_e5m2": "f8E5M2",
                 "float8_e4m3fnuz": "f8E4M3FNUZ", "float8_e5m2fnuz": "f8E5M2FNUZ",
                 "float8_e4m3b11fnuz": "f8E4M3B11FNUZ", "float8_e3m4": "f8E3M4",
                 "float8_e4m3": "f8E4M3", "float4_e2m1fn": "f4E2M1FN", "float6_e2m3fn": "f6E2M3FN",
                 "float6_e3m2fn": "f6E3M2FN"}
_NUMPY = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
          "int32": np.int32, "int64": np.int64, "int8": np.int8, "int16": np.int16,
          "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
          "bool": np.bool_, "complex64": np.complex64, "complex128": np.complex128}
try:  # (as reference.NP_DTYPES; this file also runs alone, in the interpreter's subprocess)
    import ml_dtypes as _ml_dtypes
except ImportError:
    pass
else:
    _NUMPY.update({n: getattr(_ml_dtypes, n) for n in ELEMENT_TYPES
                   if n not in _NUMPY and hasattr(_ml_dtypes, n)})
_NUMPY_TO_IR = {np.dtype(v).name: k for k, v in _NUMPY.items()}


def tensor_type(t):
    """``TensorType((2, 3), "float32")`` -> ``"tensor<2x3xf32>"`` (a scalar: ``tensor<f32>``)."""
    return "tensor<" + "".join(f"{d}x" for d in t.shape) + ELEMENT_TYPES[t.dtype] + ">"


def _scalar_type(dtype):
    return f"tensor<{ELEMENT_TYPES[dtype]}>"


def _i64s(xs):
    """A dense i64 array attribute: ``array<i64: 1, 2>`` (``array<i64>`` when empty)."""
    xs = [int(x) for x in xs]
    return "array<i64: " + ", ".join(map(str, xs)) + ">" if xs else "array<i64>"


def _list(xs):
    return "[" + ", ".join(str(int(x)) for x in xs) + "]"


def _i64(x):
    return f"{int(x)} : i64"


def _element(v, dtype):
    """One element of a dense literal, exactly: shortest round-trip decimal for finite
    floats, the bit pattern in hex for inf and nan (MLIR's spelling, as jax prints them)."""
    if dtype == "bool":
        return "true" if v else "false"
    if dtype.startswith(("int", "uint")):
        return str(int(v))
    if dtype.startswith("complex"):
        part = "float32" if dtype == "complex64" else "float64"
        return f"({_element(np.real(v), part)}, {_element(np.imag(v), part)})"
    v = _NUMPY[dtype](v)
    if not np.isfinite(np.float64(v)):
        bits = np.array(v).view(f"u{np.dtype(_NUMPY[dtype]).itemsize}")
        return f"0x{int(bits):0{2 * bits.itemsize}X}"
    s = str(v)  # NumPy prints the shortest decimal that reads back to the same float
    return s.replace("e", ".0e") if "e" in s and "." not in s else s


def _nested(a, dtype):
    if a.ndim == 0:
        return _element(a[()], dtype)
    return "[" + ", ".join(_nested(x, dtype) for x in a) + "]"


#: float constants with more elements than this are written as one hex blob of their bytes
#: (``dense<"0x...">``, exact and compact); smaller ones stay readable
HEX_ABOVE = 16


def dense(array, type):
    """``dense<...> : tensor<...>`` holding ``array`` (cast to ``type``) bit for bit."""
    a = np.ascontiguousarray(np.broadcast_to(np.asarray(array).astype(_NUMPY[type.dtype]),
                                             type.shape))
    bits = a.reshape(-1).view(np.uint8).reshape(a.size, a.itemsize)  # compare bits: -0.0
    if a.size and (bits == bits[0]).all():  # is not 0.0, NaN payloads differ
        body = _element(a.flat[0], type.dtype)  # a splat
    elif type.dtype.startswith("float") and a.size > HEX_ABOVE:
        body = '"0x' + a.astype(a.dtype.newbyteorder("<")).tobytes().hex().upper() + '"'
    else:
        body = _nested(a, type.dtype)
    return f"dense<{body}> : {tensor_type(type)}"


def attribute(v):
    """A Python value as an MLIR attribute (for ``composite_attributes``): bool, int (i64),
    float (f64), str, a list of ints (``array<i64: ...>``), other lists, dicts, NumPy arrays."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return _i64(v)
    if isinstance(v, (float, np.floating)):
        return f"{_element(v, 'float64')} : f64"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, np.ndarray):
        if v.dtype.name not in _NUMPY_TO_IR:
            raise TypeError(f"no MLIR element type for a {v.dtype} array")
        return dense(v, SimpleNamespace(shape=v.shape, dtype=_NUMPY_TO_IR[v.dtype.name]))
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {attribute(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v):
            return _i64s(v)
        return "[" + ", ".join(attribute(x) for x in v) + "]"
    if v is None:
        return "unit"
    raise TypeError(f"no MLIR attribute for {type(v).__name__} {v!r}")


def _key(k):
    return k if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$.]*", k) else attribute(k)


def _indent(text):
    return "".join(f"  {line}\n" for line in text.splitlines())


def _symbol(name):
    """``name`` as a bare MLIR symbol (other characters become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9_$.]", "_", name)
    return name if re.match(r"[A-Za-z_]", name) else "_" + name


# ------------------------------------------------------------------------------ op table
# Each entry maps a node to its properties {name: attribute text}; the template is shared.
UNARY = ("negate", "exponential", "log", "tanh", "logistic", "sqrt", "rsqrt", "abs", "sine",
         "cosine", "sign", "floor", "not")
BINARY = ("add", "subtract", "multiply", "divide", "power", "maximum", "minimum", "remainder",
          "and", "or")
_COMPARE_TYPE = {"float32": "FLOAT", "float64": "FLOAT", "int32": "SIGNED", "int64": "SIGNED",
                 "bool": "UNSIGNED"}


def _struct(kind, attrs, lists, ints=("index_vector_dim",)):
    """``#stablehlo.kind<a = [..], b = n>`` from a node's attributes; empty lists are left
    out, as jax prints them."""
    parts = [f"{k} = {_list(attrs[k])}" for k in lists if len(attrs.get(k, ()))]
    parts += [f"{k} = {int(attrs[k])}" for k in ints]
    return f"#stablehlo.{kind}<" + ", ".join(parts) + ">"


_DOT = ("lhs_batching_dimensions", "rhs_batching_dimensions", "lhs_contracting_dimensions",
        "rhs_contracting_dimensions")
_GATHER = ("offset_dims", "collapsed_slice_dims", "operand_batching_dims",
           "start_indices_batching_dims", "start_index_map")
_SCATTER = ("update_window_dims", "inserted_window_dims", "input_batching_dims",
            "scatter_indices_batching_dims", "scatter_dims_to_operand_dims")


def _conv_layout(dn):
    """dimension_numbers (a dict) -> ``[b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1]``."""
    get = dn.get if isinstance(dn, dict) else lambda k: getattr(dn, k)

    def one(prefix, a, b):
        spatial = list(get(f"{prefix}_spatial_dimensions"))
        labels = [None] * (2 + len(spatial))
        labels[get(f"{prefix}_{a[0]}_dimension")] = a[1]
        labels[get(f"{prefix}_{b[0]}_dimension")] = b[1]
        for i, d in enumerate(spatial):
            labels[d] = str(i)
        return "[" + ", ".join(labels) + "]"

    return (one("input", ("batch", "b"), ("feature", "f")) + "x"
            + one("kernel", ("input_feature", "i"), ("output_feature", "o")) + "->"
            + one("output", ("batch", "b"), ("feature", "f")))


def _convolution(n):
    a, spatial = n.attrs, n.inputs[0].type.shape[2:]  # any layout: rank - 2 spatial dims
    k = len(spatial)
    padding = [tuple(p) for p in a.get("padding", [(0, 0)] * k)]
    props = {"dimension_numbers": f"#stablehlo.conv<{_conv_layout(a['dimension_numbers'])}>",
             "window_strides": _i64s(a.get("window_strides", [1] * k)),
             "lhs_dilation": _i64s(a.get("lhs_dilation", [1] * k)),
             "rhs_dilation": _i64s(a.get("rhs_dilation", [1] * k)),
             "feature_group_count": _i64(a.get("feature_group_count", 1)),
             "batch_group_count": _i64(a.get("batch_group_count", 1))}
    if padding:
        props["padding"] = f"dense<{[list(map(int, p)) for p in padding]}> : tensor<{k}x2xi64>"
    return props


PROPERTIES = {
    **{op: lambda n: {} for op in UNARY + BINARY + ("select", "clamp", "reshape", "convert")},
    "compare": lambda n: {
        "comparison_direction":
            f"#stablehlo<comparison_direction {n.attrs['comparison_direction']}>",
        "compare_type": f"#stablehlo<comparison_type {_COMPARE_TYPE[n.inputs[0].dtype]}>"},
    "constant": lambda n: {"value": dense(n.attrs["value"], n.outputs[0].type)},
    "iota": lambda n: {"iota_dimension": _i64(n.attrs["iota_dimension"])},
    "broadcast_in_dim": lambda n: {
        "broadcast_dimensions": _i64s(n.attrs["broadcast_dimensions"])},
    "transpose": lambda n: {"permutation": _i64s(n.attrs["permutation"])},
    "slice": lambda n: {"start_indices": _i64s(n.attrs["start_indices"]),
                        "limit_indices": _i64s(n.attrs["limit_indices"]),
                        "strides": _i64s(n.attrs.get("strides",
                                                     [1] * len(n.attrs["start_indices"])))},
    "reverse": lambda n: {"dimensions": _i64s(n.attrs["dimensions"])},
    "pad": lambda n: {k: _i64s(n.attrs.get(k, [0] * len(n.inputs[0].shape)))
                      for k in ("edge_padding_low", "edge_padding_high", "interior_padding")},
    "concatenate": lambda n: {"dimension": _i64(n.attrs["dimension"])},
    "reduce": lambda n: {"dimensions": _i64s(n.attrs["dimensions"])},
    "dot_general": lambda n: {"dot_dimension_numbers": _struct("dot", n.attrs, _DOT, ())},
    "convolution": _convolution,
    "gather": lambda n: {"dimension_numbers": _struct("gather", n.attrs, _GATHER),
                         "slice_sizes": _i64s(n.attrs["slice_sizes"]),
                         "indices_are_sorted": "false"},
    "scatter": lambda n: {"scatter_dimension_numbers": _struct("scatter", n.attrs, _SCATTER),
                          "indices_are_sorted": "false", "unique_indices": "false"},
}

#: a ``computation`` attribute -> the StableHLO op its region applies (None: keep the update)
COMPUTATIONS = {"add": "add", "multiply": "multiply", "max": "maximum", "maximum": "maximum",
                "min": "minimum", "minimum": "minimum", "and": "and", "or": "or",
                "replace": None}
#: ops with a region: (which operand's element type the region's scalars have)
REGIONS = {"reduce": 0, "scatter": 2}


# ------------------------------------------------------------------------------ printing
class _Function:
    """Prints one ``func.func``: names values (``%argN`` inputs, ``%N`` the rest) and
    collects the private decomposition functions that ``keep`` composites need."""

    def __init__(self, module, graph, name, visibility):
        self.module, self.lines, self.count = module, [], 0
        self.names = {}
        args = []
        out_of = {i: o for o, i in graph.aliases.items()}
        for i, v in enumerate(graph.inputs):
            self.names[v] = f"%arg{i}"
            extra = ""
            if i in out_of:  # jax's spelling for a donated argument updated in place
                if graph.outputs[out_of[i]].type != v.type:
                    raise ValueError(f"alias output {out_of[i]} -> input {i}: types "
                                     f"{graph.outputs[out_of[i]].type} and {v.type} differ")
                extra = f" {{tf.aliasing_output = {out_of[i]} : i32}}"
            args.append(f"%arg{i}: {tensor_type(v.type)}{extra}")
        self.body(graph, self.names)
        outs = [self.name_of(self.names, v) for v in graph.outputs]
        results = ", ".join(tensor_type(v.type) for v in graph.outputs)
        self.lines.append(f"return {', '.join(outs)} : {results}" if outs else "return")
        self.text = (f"func.func {visibility} @{name}({', '.join(args)}) -> ({results}) {{\n"
                     + "".join(map(_indent, self.lines)) + "}")

    def fresh(self):
        self.count += 1
        return f"%{self.count - 1}"

    @staticmethod
    def name_of(names, v):
        if v not in names:
            raise ValueError(f"{v} is used before any node defines it")
        return names[v]

    def body(self, graph, names):
        for node in graph.nodes:
            ins = [self.name_of(names, v) for v in node.inputs]
            if node.op == "composite" and self.module.composites == "decompose":
                self.inline(node, ins, names)
                continue
            outs = [self.fresh() for _ in node.outputs]
            names.update(zip(node.outputs, outs))
            self.lines.append(self.op(node, ins, outs))

    def inline(self, node, ins, names):
        dec = node.decomposition
        if dec is None or len(dec.inputs) != len(ins) or len(dec.outputs) != len(node.outputs):
            raise ValueError(f"composite {node.attrs.get('name')} has no decomposition that "
                             f"matches its {len(ins)} inputs and {len(node.outputs)} outputs")
        inner = dict(zip(dec.inputs, ins))
        self.body(dec, inner)
        names.update((o, self.name_of(inner, v)) for o, v in zip(node.outputs, dec.outputs))

    def op(self, node, ins, outs):
        if node.op == "composite":
            props = self.module.composite(node)
        elif node.op in PROPERTIES:
            props = PROPERTIES[node.op](node)
        else:
            raise NotImplementedError(f"no StableHLO export for IR op {node.op!r}")
        text = f"{', '.join(outs)} = \"stablehlo.{node.op}\"({', '.join(ins)})"
        if props:
            text += " <{" + ", ".join(f"{k} = {v}" for k, v in sorted(props.items())) + "}>"
        if node.op in REGIONS:
            text += " " + self.region(node, node.inputs[REGIONS[node.op]].dtype)
        in_types = ", ".join(tensor_type(v.type) for v in node.inputs)
        out_types = [tensor_type(v.type) for v in node.outputs]
        return text + f" : ({in_types}) -> " + (
            out_types[0] if len(out_types) == 1 else "(" + ", ".join(out_types) + ")")

    def region(self, node, dtype):
        """The scalar combiner of reduce and scatter: ``(old, new) -> op(old, new)``."""
        computation = node.attrs.get("computation")
        if computation not in COMPUTATIONS:
            raise ValueError(f"{node.op}: unknown computation {computation!r}; "
                             f"one of {sorted(COMPUTATIONS)}")
        op, t = COMPUTATIONS[computation], _scalar_type(dtype)
        a, b = self.fresh(), self.fresh()
        lines = [f"^bb0({a}: {t}, {b}: {t}):"]
        if op is None:
            result = b
        else:
            result = self.fresh()
            lines.append(f"  {result} = \"stablehlo.{op}\"({a}, {b}) : ({t}, {t}) -> {t}")
        lines.append(f"  \"stablehlo.return\"({result}) : ({t}) -> ()")
        return "({\n" + "".join(map(_indent, lines)) + "})"


class _Module:
    def __init__(self, graph, composites):
        if composites not in ("decompose", "keep"):
            raise ValueError(f"composites={composites!r}: 'decompose' or 'keep'")
        self.composites, self.private, self.symbols = composites, [], {}
        functions = [_Function(self, graph, "main", "public").text] + self.private
        self.text = f"module @{_symbol(graph.name)} {{\n" + "".join(map(_indent, functions)) \
            + "}\n"

    def composite(self, node):
        """Properties of a kept ``stablehlo.composite``; prints its decomposition function."""
        attrs = dict(node.attrs)
        name = attrs.pop("name")
        version = attrs.pop("version", None)
        dec = node.decomposition
        if dec is None:
            raise ValueError(f"composite {name} has no decomposition")
        if id(dec) not in self.symbols:  # nodes sharing one decomposition share its function
            index = len(self.private)
            self.symbols[id(dec)] = symbol = f"{_symbol(name)}_{index}"
            self.private.append(None)  # reserve the number: nested composites take the next
            self.private[index] = _Function(self, dec, symbol, "private").text
        symbol = self.symbols[id(dec)]
        props = {"name": attribute(name), "decomposition": f"@{symbol}"}
        if attrs:
            props["composite_attributes"] = attribute(attrs)
        if version is not None:
            props["version"] = f"{int(version)} : i32"
        return props


def export(graph, composites="decompose"):
    """StableHLO MLIR text for ``graph``: a module whose ``func.func public @main`` takes the
    graph's inputs and returns its outputs.

    Args:
        graph: a :class:`~needle.compiler.ir.Graph`. Its ``aliases`` (output -> input)
            become ``tf.aliasing_output`` argument attributes, as ``jax.jit(...,
            donate_argnums=...)`` prints them.
        composites: ``"decompose"`` inlines each composite's decomposition; ``"keep"`` emits
            ``stablehlo.composite "needle.softmax"`` ops with ``composite_attributes`` and a
            private function ``@needle.softmax_N`` holding the decomposition (one per
            decomposition Graph; a ``version`` attribute becomes the op's ``version``).

    Returns:
        The module's text; :func:`parse_and_verify` checks it, :func:`evaluate` runs it.
    """
    return _Module(graph, composites).text


# ------------------------------------------------------------------------------ jaxlib
def context():
    """A jaxlib MLIR context with the func, StableHLO and CHLO dialects loaded."""
    from jaxlib.mlir import ir  # noqa: PLC0415 - jaxlib is optional
    from jaxlib.mlir._mlir_libs import _jax_mlir_ext  # noqa: PLC0415
    from jaxlib.mlir.dialects import chlo, stablehlo  # noqa: PLC0415
    ctx, registry = ir.Context(), ir.DialectRegistry()
    _jax_mlir_ext.register_dialects(registry)  # without it: "Dialect `func' not found"
    ctx.append_dialect_registry(registry)
    ctx.load_all_available_dialects()
    stablehlo.register_dialect(ctx)
    chlo.register_dialect(ctx)
    try:  # Shardy, whose attributes JAX writes on some programs (jaxlib >= 0.5)
        from jaxlib.mlir.dialects import sdy  # noqa: PLC0415
        sdy.register_dialect(ctx)
    except (ImportError, AttributeError):
        pass
    return ctx


def parse_and_verify(text):
    """Parses ``text`` with jaxlib's MLIR bindings and verifies it; returns the module
    (``str(module)`` is jaxlib's pretty form). Raises ``jaxlib.mlir.ir.MLIRError`` (with
    the diagnostics) on a parse or verification error."""
    from jaxlib.mlir import ir  # noqa: PLC0415
    with context():
        module = ir.Module.parse(text)
        if module.operation.verify() is False:  # older bindings return False, newer raise
            raise ValueError("the module does not verify")
    return module


def evaluate(text, *arrays, timeout=600):
    """Runs ``@main`` of ``text`` on ``arrays`` in jaxlib's StableHLO reference interpreter
    (in a subprocess); returns the list of outputs as NumPy arrays. Raises RuntimeError with
    the interpreter's message (or its stderr, if it aborted).

    Example:
        >>> evaluate(export(g), np.zeros(2, np.float32))          # doctest: +SKIP
        [array([1., 1.], dtype=float32)]
    """
    return evaluate_many([(text, arrays)], timeout=timeout)[0]


def evaluate_many(cases, errors="raise", timeout=600):
    """:func:`evaluate` for several ``(text, arrays)`` cases in one subprocess (each start
    costs about a second); returns one list of outputs per case. With ``errors="return"``
    a failed case's entry is its RuntimeError instead, and the other cases still run (a
    worker that aborts is restarted after the case that killed it)."""
    with tempfile.TemporaryDirectory(prefix="needle_stablehlo_") as folder:
        for i, (text, arrays) in enumerate(cases):
            with open(os.path.join(folder, f"{i}.mlir"), "w") as f:
                f.write(text)
            for j, a in enumerate(arrays):
                np.save(os.path.join(folder, f"{i}_in{j}.npy"), np.asarray(a))
        results, start = [], 0
        while start < len(cases):
            proc = subprocess.run([sys.executable, "-c", _RUN_WORKER, os.path.abspath(__file__),
                                   folder, str(start)], capture_output=True, text=True,
                                  timeout=timeout, cwd=folder)
            for i in range(start, len(cases)):
                start = i + 1
                done, err = os.path.join(folder, f"{i}.done"), os.path.join(folder, f"{i}.err")
                if os.path.exists(done):
                    with open(done) as f:
                        n = int(f.read())
                    results.append([np.load(os.path.join(folder, f"{i}_out{k}.npy"))
                                    for k in range(n)])
                    continue
                if os.path.exists(err):
                    with open(err) as f:
                        message = f.read()
                    results.append(RuntimeError(f"StableHLO interpreter, case {i}:\n{message}"))
                    continue
                results.append(RuntimeError(f"StableHLO interpreter died on case {i} (exit "
                                            f"code {proc.returncode}):\n{proc.stderr[-4000:]}"))
                break  # the worker is gone: restart it after this case
            if errors == "raise" and any(isinstance(r, Exception) for r in results):
                raise next(r for r in results if isinstance(r, Exception))
        return results


# The worker loads this file alone (not the needle package, so a half-edited sibling module
# cannot break the oracle) and needs only NumPy and jaxlib.
_RUN_WORKER = """if True:
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("_needle_stablehlo_worker", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module._worker(sys.argv[2], int(sys.argv[3]))
"""


def _worker(folder, start=0):
    """The subprocess: evaluates ``folder/{i}.mlir`` on ``{i}_in{j}.npy`` for i = start,
    start + 1, ..., writing ``{i}_out{k}.npy`` and ``{i}.done`` (the output count), or
    ``{i}.err`` (the traceback)."""
    import traceback  # noqa: PLC0415
    from jaxlib.mlir import ir  # noqa: PLC0415
    from jaxlib.mlir.dialects import stablehlo  # noqa: PLC0415
    i = start
    while os.path.exists(path := os.path.join(folder, f"{i}.mlir")):
        diagnostics = []  # eval_module raises a bare "interpreter failed": keep the reasons
        try:
            with open(path) as f:
                module = parse_and_verify(f.read())
            with module.context as ctx:
                ctx.attach_diagnostic_handler(
                    lambda d, out=diagnostics: out.append(f"{d.location}: {d.message}") or True)
                args, j = [], 0
                while os.path.exists(p := os.path.join(folder, f"{i}_in{j}.npy")):
                    # np.require, not ascontiguousarray: that one makes a 0-d array 1-d
                    array = np.require(np.load(p), requirements="C")
                    args.append(ir.DenseElementsAttr.get(array))
                    j += 1
                outs = [np.array(o) for o in stablehlo.eval_module(module, args)]
            for k, o in enumerate(outs):
                np.save(os.path.join(folder, f"{i}_out{k}.npy"), o)
            with open(os.path.join(folder, f"{i}.done"), "w") as f:
                f.write(str(len(outs)))
        except Exception:  # noqa: BLE001 - reported to the parent
            with open(os.path.join(folder, f"{i}.err"), "w") as f:
                f.write("\n".join(diagnostics + [traceback.format_exc()]))
        i += 1

