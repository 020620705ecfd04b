"""The ops of :data:`~.ops.IMPORTED_OPS`: the StableHLO ops an imported program
(``needle.stablehlo``) may hold beyond the compiler's own op table. The reference
interpreter runs them (on the cpu device); the executor, the fusion passes and the exporter
do not know them yet. Their shape rules; ``needle.compiler`` imports this module, which
registers them."""
import math

import numpy as np

from .ir import TensorType
from .ops import (BOOL, COMPLEX, DTYPE, FLOATS, INEXACT, INT, INTEGERS, INTS, PADDING, SHAPE,
                  VARIADIC, _REAL, _binary, _check_dtype, _check_scalar, _fail, _imported,
                  _unary, one_of)


def _complex_part(types, attrs):
    (x,) = types
    _check_dtype(x, INEXACT)
    return [TensorType(x.shape, _REAL.get(x.dtype, x.dtype))]


def _complex(types, attrs):
    x, y = types
    if x != y or x.dtype not in ("float32", "float64"):
        _fail(f"complex takes two float32 or float64 operands of one type, got {x} and {y}")
    return [TensorType(x.shape, "complex64" if x.dtype == "float32" else "complex128")]


def _triangular_solve(types, attrs):
    a, b = types
    _check_dtype(a, INEXACT)
    if a.dtype != b.dtype or a.shape[:-2] != b.shape[:-2] or len(a.shape) < 2 or \
            a.shape[-1] != a.shape[-2] or len(b.shape) != len(a.shape) or \
            a.shape[-1] != b.shape[-2 if attrs["left_side"] else -1]:
        _fail(f"triangular_solve: a {a} (batch of square matrices) does not fit b {b}")
    return [b]


def _fft(types, attrs):
    (x,) = types
    kind, length = attrs["fft_type"], list(attrs["fft_length"])
    if not 1 <= len(length) <= 3 or len(length) > len(x.shape):
        _fail(f"fft: fft_length {length} must name 1 to 3 trailing dims of {x}")
    tail = list(x.shape[len(x.shape) - len(length):])
    if kind == "RFFT":
        _check_dtype(x, ("float32", "float64"))
        if tail != length:
            _fail(f"fft: RFFT over {length}, operand {x}")
        out = "complex64" if x.dtype == "float32" else "complex128"
        return [TensorType(x.shape[:-1] + (length[-1] // 2 + 1,), out)]
    _check_dtype(x, COMPLEX)
    if kind == "IRFFT":
        if tail[:-1] != length[:-1] or tail[-1] != length[-1] // 2 + 1:
            _fail(f"fft: IRFFT to {length}, operand {x}")
        return [TensorType(x.shape[:-1] + (length[-1],), _REAL[x.dtype])]
    if tail != length:
        _fail(f"fft: {kind} over {length}, operand {x}")
    return [x]


def _bitcast_convert(types, attrs):
    (x,) = types
    out = TensorType(attrs["shape"], attrs["dtype"])

    def bits(t):  # (an i1 is one bit to StableHLO's bitcast)
        return math.prod(t.shape) * (1 if t.dtype == "bool" else
                                     8 * np.dtype(_np_dtype(t.dtype)).itemsize)
    if bits(x) != bits(out):
        _fail(f"bitcast_convert: {x} and {out} hold different numbers of bits")
    return [out]


def _np_dtype(name):
    from .reference import NP_DTYPES  # noqa: PLC0415 - (reference imports this module)
    return NP_DTYPES[name]


def _starts(types, first, what):
    for t in types[first:]:
        if t.shape != () or t.dtype not in INTEGERS:
            _fail(f"{what}: start indices must be integer scalars, got {t}")


def _dynamic_slice(types, attrs):
    x, sizes = types[0], list(attrs["slice_sizes"])
    if len(types) != 1 + len(x.shape) or len(sizes) != len(x.shape) or \
            any(not 0 <= s <= d for s, d in zip(sizes, x.shape)):
        _fail(f"dynamic_slice: {x} with {len(types) - 1} start indices and sizes {sizes}")
    _starts(types, 1, "dynamic_slice")
    return [TensorType(sizes, x.dtype)]


def _dynamic_update_slice(types, attrs):
    x, update = types[:2]
    if len(types) != 2 + len(x.shape) or update.dtype != x.dtype or \
            len(update.shape) != len(x.shape) or any(u > d for u, d in zip(update.shape, x.shape)):
        _fail(f"dynamic_update_slice: update {update} does not fit operand {x}")
    _starts(types, 2, "dynamic_update_slice")
    return [x]


def _same_types(types, attrs):
    shape = types[0].shape
    if any(t.shape != shape for t in types):
        _fail(f"operands must have one shape, got {', '.join(map(str, types))}")
    if not 0 <= attrs["dimension"] < max(len(shape), 1) or not 0 <= attrs["key"] < len(types):
        _fail(f"dimension {attrs['dimension']} or key {attrs['key']} out of range")
    return list(types)


def _window_shape(x, attrs):
    dims, strides = attrs["window_dimensions"], attrs["window_strides"]
    base = attrs.get("base_dilations") or [1] * len(x.shape)
    win = attrs.get("window_dilations") or [1] * len(x.shape)
    pad = attrs["padding"]
    if not len(dims) == len(strides) == len(base) == len(win) == len(pad) == len(x.shape):
        _fail(f"window attributes must have one entry per dim of {x}")
    out = []
    for d, w, s, b, wd, (lo, hi) in zip(x.shape, dims, strides, base, win, pad):
        padded = (d - 1) * b + 1 + lo + hi if d else lo + hi
        extent = (w - 1) * wd + 1
        out.append(0 if padded < extent else (padded - extent) // s + 1)
    return out


def _reduce_window(types, attrs):
    x, init = types
    _check_scalar(init, x.dtype, "init_value")
    return [TensorType(_window_shape(x, attrs), x.dtype)]


def _select_and_scatter(types, attrs):
    x, source, init = types
    _check_scalar(init, x.dtype, "init_value")
    expected = _window_shape(x, attrs)
    if list(source.shape) != expected or source.dtype != x.dtype:
        _fail(f"select_and_scatter: source {source} must be {x.dtype}{expected}")
    return [x]



for _name in ("tan", "exponential_minus_one", "log_plus_one"):
    _imported(_name, 1, _unary(INEXACT))
_imported("cbrt", 1, _unary(INEXACT))
for _name in ("round_nearest_even", "round_nearest_afz"):
    _imported(_name, 1, _unary(FLOATS))
for _name in ("popcnt", "count_leading_zeros"):
    _imported(_name, 1, _unary(INTEGERS))
_imported("atan2", 2, _binary(INEXACT))
for _name in ("shift_left", "shift_right_arithmetic", "shift_right_logical"):
    _imported(_name, 2, _binary(INTEGERS))
_imported("real", 1, _complex_part)
_imported("imag", 1, _complex_part)
_imported("complex", 2, _complex)

_imported("triangular_solve", 2, _triangular_solve,       # (a, b)
    {"left_side": BOOL, "lower": BOOL, "unit_diagonal": BOOL,
     "transpose_a": one_of("NO_TRANSPOSE", "TRANSPOSE", "ADJOINT")})
_imported("fft", 1, _fft, {"fft_type": one_of("FFT", "IFFT", "RFFT", "IRFFT"),
                                "fft_length": INTS})

_imported("bitcast_convert", 1, _bitcast_convert, {"shape": SHAPE, "dtype": DTYPE})
_imported("reduce_precision", 1, _unary(FLOATS),
    {"exponent_bits": INT, "mantissa_bits": INT})
_imported("dynamic_slice", VARIADIC, _dynamic_slice, {"slice_sizes": INTS})
_imported("dynamic_update_slice", VARIADIC, _dynamic_update_slice)

_imported("sort", VARIADIC, _same_types,  # (always stable, which satisfies is_stable)
          {"dimension": INT, "key": INT, "direction": one_of("LT", "GT"),
           "total_order": BOOL})  # (floats: -NaN < -inf < -0.0 < 0.0 < inf < NaN)
_imported("reduce_window", 2, _reduce_window,              # (operand, init_value)
    {"window_dimensions": INTS, "window_strides": INTS, "base_dilations": INTS,
     "window_dilations": INTS, "padding": PADDING,
     "computation": one_of("add", "max", "min", "multiply", "and", "or")})
_imported("select_and_scatter", 3, _select_and_scatter,    # (operand, source, init)
    {"window_dimensions": INTS, "window_strides": INTS, "padding": PADDING,
     "select": one_of("GE", "GT", "LE", "LT"), "computation": one_of("add", "max", "min")})
