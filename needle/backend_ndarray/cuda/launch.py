"""Kernel launches straight through the CUDA driver: ``cuLaunchKernel`` called with ctypes.

Why: launching through CuPy (``kernel(grid, block, args)``) costs about 9 µs per launch
from Python, as it inspects and converts every argument on every call, and a training
step made of many small kernels is bound by that host time. Here each kernel's parameter
list is read once, from its PTX (``.entry name(.param .u64 ..., .param .f32 ...)``), and
becomes a ``struct.Struct`` that lays the parameters out as the kernel expects them: in
order, each aligned to its own size. A launch is then one ``pack_into`` of plain Python
ints and floats into a buffer allocated once per kernel, and one ctypes call to
``cuLaunchKernel`` that passes the buffer through its ``extra`` argument
(``CU_LAUNCH_PARAM_BUFFER_POINTER`` / ``CU_LAUNCH_PARAM_BUFFER_SIZE``): a few µs in all
(about 1 µs of Python for pack and call, plus the driver's own time, measured against
CuPy's launch path on an H100). Refilling the buffer for the next launch at once is safe:
the driver copies the parameters during the call.

CuPy still loads the modules and owns memory and streams; launches go to CuPy's current
stream, so they stay ordered with its copies (and a stream capture records them).
Importing this module needs no GPU: the driver is loaded when the first kernel is made.
"""
import ctypes
import re
import struct

import numpy as np

# PTX parameter type -> struct code. PTX keeps no signedness for integer parameters (an
# int64 is ".u64", as is a pointer), so integers pack signed: negative offsets and
# strides fit, and device addresses lie far below 2**63.
_CODES = {"u64": "q", "s64": "q", "b64": "q", "u32": "i", "s32": "i", "b32": "i",
          "f32": "f", "f64": "d"}
_ENTRY = re.compile(r"\.entry\s+(\w+)\s*\(([^)]*)\)")
# cuLaunchKernel's `extra` markers (cuda.h)
_END, _BUFFER_POINTER, _BUFFER_SIZE = 0, 1, 2


def entry_params(ptx):
    """``{kernel: (PTX type of each parameter, ...)}`` for every ``.entry`` of a PTX text.

    Raises ``ValueError`` for a parameter this module cannot pack (an aggregate, a type
    missing from ``_CODES``).

    Example:
        >>> entry_params(".visible .entry k(\\n.param .u64 k_param_0,\\n.param .f32 k_param_1\\n)")
        {'k': ('u64', 'f32')}
    """
    return {name: tuple(_param_type(name, decl) for decl in params.split(",") if decl.strip())
            for name, params in _ENTRY.findall(ptx)}


_AGGREGATE = re.compile(r"^\.param\s+\.align\s+(\d+)\s+\.b8\s+\w+\[(\d+)\]$")


def _param_type(kernel, decl):
    """``.param .u64 k_param_0`` -> ``"u64"``. NVVM may add pointer attributes after the
    type (``.param .u64 .ptr .global .align 4 k_param_0``): the layout is the same. A struct
    passed by value (``.param .align 8 .b8 k_param_0[1288]``) -> ``"b8[1288]@8"``: its
    bytes are given to the launch as one ``bytes`` value."""
    aggregate = _AGGREGATE.match(" ".join(decl.split()))
    if aggregate:
        return f"b8[{aggregate.group(2)}]@{aggregate.group(1)}"
    words = decl.split()
    kind = words[1][1:] if len(words) >= 3 and words[0] == ".param" else None
    if kind not in _CODES or "[" in decl:
        raise ValueError(f"{kernel}: cannot pack the kernel parameter {decl.strip()!r} "
                         f"(launch.py packs {', '.join(_CODES)} and structs of bytes)")
    return kind


def _code(kind):
    """A parameter's ``struct`` code and alignment."""
    if kind.startswith("b8["):
        size, align = kind[3:].split("]@")
        return f"{size}s", int(align)
    code = _CODES[kind]
    return code, struct.calcsize(code)


def pack_format(params):
    """The ``struct`` format of a parameter buffer: little-endian, each parameter at an
    offset that is a multiple of its alignment (a scalar's is its size), with explicit
    padding bytes and none at the end (the driver wants the exact size).

    Example:
        >>> pack_format(("u64", "f32", "u64", "s64", "s32"))
        '<qf4xqqi'
    """
    fmt, offset = "<", 0
    for kind in params:
        code, align = _code(kind)
        pad = -offset % align
        fmt += (f"{pad}x" if pad else "") + code
        offset += pad + struct.calcsize(code)
    return fmt


_driver = None


def driver():
    """libcuda (already loaded by CuPy), set up for the calls we make.

    ``PyDLL`` keeps the GIL during a call: no other Python thread can refill a kernel's
    parameter buffer before the driver has copied it, and the call is a little cheaper.

    ``cuLaunchKernel`` gets no ``argtypes``, on purpose: converting 11 arguments through
    ``argtypes`` costs ~0.8 µs a call, three times the call itself. Without them ctypes
    passes a Python int as a C int (right for the ``unsigned int`` dimensions, which are
    below 2**31) and ctypes objects as what they are, so :meth:`Kernel.__call__` passes
    every pointer as a ctypes object: ``c_void_p`` for the function and the stream, the
    ``extra`` array, ``None`` for NULL. A plain int in a pointer's place would be cut to
    32 bits.
    """
    global _driver
    if _driver is None:
        lib = ctypes.PyDLL("libcuda.so.1")
        # CUresult cuLaunchKernel(CUfunction f, unsigned gridDimX, gridDimY, gridDimZ,
        #     blockDimX, blockDimY, blockDimZ, unsigned sharedMemBytes, CUstream hStream,
        #     void **kernelParams, void **extra)
        lib.cuLaunchKernel.restype = ctypes.c_int
        for fn in (lib.cuGetErrorName, lib.cuGetErrorString):
            fn.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
            fn.restype = ctypes.c_int
        _driver = lib
    return _driver


def error_text(code):
    """``"CUDA_ERROR_INVALID_VALUE (invalid argument)"`` for a CUresult."""
    name, text = ctypes.c_char_p(), ctypes.c_char_p()
    lib = driver()
    if (lib.cuGetErrorName(code, ctypes.byref(name))
            or lib.cuGetErrorString(code, ctypes.byref(text))):
        return f"CUresult {code}"  # a code this driver does not know
    return f"{name.value.decode()} ({text.value.decode()})"


class Kernel:
    """One kernel entry point, launched with plain Python ints and floats.

    Args:
        name: the entry point's name (for error messages).
        params: the PTX type of each parameter, in order (see :func:`entry_params`).
        function: CuPy's ``cupy.cuda.function.Function`` of the kernel. It is kept here
            because its module must stay loaded while we launch its ``ptr`` (a CUfunction).
    """

    __slots__ = ("name", "params", "function", "_handle", "_pack_into", "_buffer", "_size",
                 "_extra", "_launch")

    def __init__(self, name, params, function):
        layout = struct.Struct(pack_format(params))
        self.name, self.params, self.function = name, tuple(params), function
        self._handle = ctypes.c_void_p(function.ptr)
        self._pack_into = layout.pack_into
        self._buffer = ctypes.create_string_buffer(layout.size)
        self._size = ctypes.c_size_t(layout.size)
        self._extra = (ctypes.c_void_p * 5)(_BUFFER_POINTER, ctypes.addressof(self._buffer),
                                            _BUFFER_SIZE, ctypes.addressof(self._size), _END)
        self._launch = driver().cuLaunchKernel

    def __call__(self, grid, block, stream, args):
        """Launch on ``stream`` (a CUstream address; 0 is the default stream).

        ``grid`` and ``block`` are ``(x, y, z)``; ``args`` one value per parameter.
        """
        try:
            self._pack_into(self._buffer, 0, *args)
        except (struct.error, OverflowError) as e:
            self._pack_slowly(args, e)
        result = self._launch(self._handle, *grid, *block, 0, ctypes.c_void_p(stream), None,
                              self._extra)
        if result:
            raise RuntimeError(f"launching CUDA kernel {self.name} (grid {grid}, block {block}) "
                               f"failed: {error_text(result)}")

    def _pack_slowly(self, args, error):
        """A value ``pack_into`` refused. A float beyond float32's range becomes +-inf, as
        NumPy rounds it; anything else is a wrong call, reported with the kernel's
        parameter list."""
        if isinstance(error, OverflowError) and len(args) == len(self.params):
            args = [float(np.float32(a)) if kind == "f32" else a
                    for kind, a in zip(self.params, args)]
            try:
                return self._pack_into(self._buffer, 0, *args)
            except (struct.error, OverflowError) as e:
                error = e
        raise TypeError(f"CUDA kernel {self.name} takes ({', '.join(self.params)}); "
                        f"got {tuple(args)!r}: {error}") from None
