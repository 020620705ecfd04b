"""A minimal ctypes binding to NVRTC, CUDA's run-time compiler: source -> cubin.

Used by the backend (through :mod:`.compiler`) and by ``tools/check_cuda_kernels.py``,
which runs in CI with neither a GPU nor CuPy: only the NVRTC shared library, from the
``nvidia-cuda-nvrtc`` wheel or a CUDA toolkit.
"""
import ctypes
import glob
import os
import sys


class NvrtcError(RuntimeError):
    """NVRTC could not be loaded, or a compilation failed (``log`` holds the compiler log)."""

    def __init__(self, message, log=""):
        super().__init__(message + (f"\n{log}" if log else ""))
        self.log = log


def _candidates():
    """Where libnvrtc may be, most specific first."""
    if os.environ.get("NEEDLE_NVRTC_PATH"):
        yield os.environ["NEEDLE_NVRTC_PATH"]
    # a library already loaded in this process (CuPy's) is found by its soname
    yield from ("libnvrtc.so.13", "libnvrtc.so.12")
    for base in sys.path:  # pip wheels: nvidia-cuda-nvrtc (CUDA 13), -cu12
        yield from sorted(glob.glob(os.path.join(base, "nvidia", "cu13", "lib", "libnvrtc.so.*")))
        yield from sorted(glob.glob(os.path.join(base, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.*")))
    for root in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root:
            yield from sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")))
    yield "libnvrtc.so"


_lib = None


def library():
    """The loaded NVRTC library; raises :class:`NvrtcError` saying where it looked."""
    global _lib
    if _lib is None:
        tried = []
        for path in _candidates():
            if "builtins" in os.path.basename(path):
                continue
            try:
                lib = ctypes.CDLL(path)
                lib.nvrtcVersion  # noqa: B018 - make sure it really is NVRTC
            except (OSError, AttributeError):
                tried.append(path)
                continue
            lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            lib._needle_path = path
            _lib = lib
            break
        else:
            raise NvrtcError("libnvrtc was not found (pip install nvidia-cuda-nvrtc, or set "
                             f"NEEDLE_NVRTC_PATH); tried: {', '.join(tried)}")
    return _lib


def version():
    """NVRTC's (major, minor) version."""
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(library().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def _check(result, what):
    if result != 0:
        raise NvrtcError(f"{what} failed: {library().nvrtcGetErrorString(result).decode()}")


def compile_cubin(source, name, options):
    """Compile CUDA C++ ``source`` to a cubin (``options`` must name an ``sm_XX`` arch).

    Returns ``(cubin_bytes, ptx_text, log)``: the PTX the cubin was assembled from comes
    with it, and holds each kernel's parameter list. Raises :class:`NvrtcError` with the
    log on errors.
    """
    lib = library()
    prog = ctypes.c_void_p()
    _check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None,
                                  None), "nvrtcCreateProgram")
    try:
        opts = [o.encode() for o in options]
        result = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        log = _output(prog, "ProgramLog").rstrip(b"\0").decode(errors="replace").strip()
        if result != 0:
            raise NvrtcError(f"NVRTC could not compile {name} "
                             f"({lib.nvrtcGetErrorString(result).decode()})", log)
        return _output(prog, "CUBIN"), _output(prog, "PTX").rstrip(b"\0").decode(), log
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _output(prog, what):
    """One output of a compiled program: ``nvrtcGet<what>Size`` then ``nvrtcGet<what>``."""
    lib, size = library(), ctypes.c_size_t()
    _check(getattr(lib, f"nvrtcGet{what}Size")(prog, ctypes.byref(size)), f"nvrtcGet{what}Size")
    out = ctypes.create_string_buffer(size.value)
    _check(getattr(lib, f"nvrtcGet{what}")(prog, out), f"nvrtcGet{what}")
    return out.raw
