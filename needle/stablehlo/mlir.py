"""Reading jaxlib's MLIR objects: tensor types as IR dtypes and shapes, attributes as
Python values, dense literals as NumPy arrays, and the error that names an op Needle
cannot run (:class:`UnsupportedError`)."""
import re

import numpy as np

from ..compiler.reference import NP_DTYPES
from ..compiler.stablehlo import ELEMENT_TYPES
from ..errors import NeedleError

#: MLIR element type -> IR dtype (the exporter's spelling, read backwards)
DTYPES = {mlir: ir for ir, mlir in ELEMENT_TYPES.items()}
INT_BITS = {f"{kind}{b}": b for kind in ("int", "uint") for b in (2, 4, 8, 16, 32, 64)}


class UnsupportedError(NeedleError, NotImplementedError):
    """A StableHLO op, type or attribute Needle cannot run (yet); the message names the op,
    its location and its operand and result types."""


def _location(op):
    text = str(op.location)
    match = re.match(r'loc\((.*)\)$', text, re.S)
    return match.group(1) if match else text


def describe(op):
    operands = ", ".join(str(v.type) for v in op.operands)
    results = ", ".join(str(v.type) for v in op.results)
    return f"{op.name} at {_location(op)} ({operands}) -> ({results})"


def unsupported(op, why):
    raise UnsupportedError(f"{describe(op)}: {why}")


def tensor_type(op, mlir_type):
    """``(shape, dtype)`` of a ranked, static tensor type (or refuse it)."""
    from jaxlib.mlir import ir  # noqa: PLC0415 - jaxlib is optional
    try:
        t = ir.RankedTensorType(mlir_type)
    except (ValueError, TypeError):
        unsupported(op, f"type {mlir_type} is not a ranked tensor")
    if not t.has_static_shape:
        unsupported(op, f"type {mlir_type} has a dynamic shape")
    element = str(t.element_type)
    if element not in DTYPES:
        unsupported(op, f"element type {element} (Needle's IR has "
                        f"{', '.join(DTYPES)})")
    if DTYPES[element] not in NP_DTYPES:
        unsupported(op, f"element type {element} needs ml_dtypes (pip install ml_dtypes)")
    return tuple(t.shape), DTYPES[element]


# -- attributes --------------------------------------------------------------------------
def attr(op, name, default=None):
    attrs = op.attributes
    return attrs[name] if name in attrs else default


def ints(value):
    """A list of ints from a dense array or dense elements attribute."""
    from jaxlib.mlir import ir  # noqa: PLC0415
    if value is None:
        return []
    for cls in (ir.DenseI64ArrayAttr, ir.DenseI32ArrayAttr):
        try:
            return [int(x) for x in cls(value)]
        except (ValueError, TypeError):  # (not that kind of attribute)
            continue
    return [int(x) for x in np.array(ir.DenseElementsAttr(value)).reshape(-1)]


def integer(value, default=0):
    from jaxlib.mlir import ir  # noqa: PLC0415
    return default if value is None else int(ir.IntegerAttr(value).value)


def bools(value):
    from jaxlib.mlir import ir  # noqa: PLC0415
    return None if value is None else [bool(x) for x in ir.DenseBoolArrayAttr(value)]


def enum_value(value):
    """``#stablehlo<comparison_direction GT>`` -> ``"GT"``."""
    match = re.match(r"#stablehlo<\w+ (\w+)>", str(value))
    return match.group(1) if match else str(value)


def dense_array(text):
    """A dense elements attribute, ``dense<...> : tensor<...>`` as MLIR prints it, as a
    NumPy array of its type's IR dtype and shape.

    jaxlib converts most element types itself; bf16, complex and the sub-byte integers are
    read from the text (a splat, nested lists, ``(re, im)`` pairs, hex bit patterns for
    non-finite floats, or one hex string of the raw bytes). Call inside a jaxlib context."""
    from jaxlib.mlir import ir  # noqa: PLC0415
    body, type_text = text[text.index("<") + 1:text.rindex("> :")], text[text.rindex("> :") + 3:]
    shaped = ir.ShapedType(ir.Type.parse(type_text.strip()))
    element = str(shaped.element_type)
    if element not in DTYPES or DTYPES[element] not in NP_DTYPES:
        raise UnsupportedError(f"a constant of element type {element}")
    dtype, array = NP_DTYPES[DTYPES[element]], None
    try:  # (complex does not even parse as an attribute object: "Can't cast unknown ...")
        array = np.array(ir.DenseElementsAttr(ir.Attribute.parse(text)))
    except TypeError:
        pass
    if array is None or array.dtype == object:
        array = _literal(body, dtype)
    array, shape = np.asarray(array).astype(dtype), tuple(shaped.shape)
    if array.size == int(np.prod(shape)):
        return array.reshape(shape)
    return np.broadcast_to(array, shape).copy()  # a splat


def constant_text(op):
    """``dense<...> : tensor<...>`` of a constant op (from its printed form: jaxlib cannot
    hand out some attributes, complex ones, as objects)."""
    text = str(op)  # (printed in the pretty form: "%0 = stablehlo.constant dense<...> : t")
    return text[text.index("dense<"):].strip()


_TOKEN = re.compile(r'"0x[0-9A-Fa-f]*"|[\[\]()]|true|false|[-+]?0x[0-9A-Fa-f]+|'
                    r'[-+]?(?:inf|nan|\d+\.?\d*(?:[eE][-+]?\d+)?)')


def _literal(body, dtype):
    """The elements of a dense literal ``body`` (what ``dense<...>`` holds) as ``dtype``."""
    np_dtype = np.dtype(dtype)
    tokens = _TOKEN.findall(body)
    if not tokens:  # dense<> of an empty tensor
        return np.zeros(0, dtype=np_dtype)
    if len(tokens) == 1 and tokens[0].startswith('"0x'):  # raw little-endian bytes
        return np.frombuffer(bytes.fromhex(tokens[0][3:-1]), dtype=np_dtype)
    complex_ = np_dtype.kind == "c"
    part = np.dtype(np.float32 if np_dtype == np.complex64 else np.float64) if complex_ \
        else np_dtype

    def scalar(token):
        if token in ("true", "false"):
            return token == "true"
        if token.lstrip("+-").startswith("0x"):
            if part.kind in "fV" and part.name not in INT_BITS:  # a float's bit pattern
                bits = np.array(int(token, 16), dtype=f"u{part.itemsize}")
                return bits.view(part).item() if part.kind == "f" else \
                    float(bits.view(part).astype(np.float32))
            return int(token, 16)
        return float(token) if part.kind in "fcV" and part.name not in INT_BITS else \
            int(token)

    def parse(i):
        if tokens[i] in "[(":
            items, i, pair = [], i + 1, tokens[i] == "("
            while tokens[i] not in "])":
                item, i = parse(i)
                items.append(item)
            if pair:
                return complex(items[0], items[1]), i + 1
            return items, i + 1
        return scalar(tokens[i]), i + 1

    return np.array(parse(0)[0], dtype=object)
