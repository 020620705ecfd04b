"""Lazy kernel compilation: NVRTC -> cubin, cached in memory and on disk, loaded by CuPy.

Nothing compiles at import. The first launch of a kernel compiles its whole source file
(``kernels/<file>.cu`` with its ``#include "..."`` headers inlined) for this GPU's exact
architecture, stores the cubin under ``$NEEDLE_CACHE_DIR/cuda`` (default
``~/.cache/needle/cuda``) and loads it with ``cupy.RawModule(path=...)``. Beside the cubin
goes ``<same name>.params.json``: each kernel's parameter types, read from the PTX of the
same compile, which :mod:`.launch` needs to lay out the arguments of a launch.

The cache key is a SHA-256 over everything that changes the binary: the full source text
after inlining headers, the NVRTC options, the GPU architecture (compute capability), the
NVRTC version and Needle's version. A stale cubin can therefore never be loaded.

Environment switches:
  NEEDLE_DEBUG=1           log each compile and cache hit to stderr (a comma list with
                           other switches works too: NEEDLE_DEBUG=ir,1)
  NEEDLE_DEBUG=2           also dump the numbered source when a compile fails
  NEEDLE_CUDA_NO_COMPILE=1 raise instead of compiling (to prove a run is fully cached)
  NEEDLE_CACHE_DIR=path    cache root (the cubins go to path/cuda)
"""
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from . import launch, nvrtc

KERNEL_DIR = Path(__file__).with_name("kernels")
CACHE_FORMAT = 2  # 2: a .params.json beside each cubin
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
_PRAGMA_ONCE = re.compile(r"^\s*#\s*pragma\s+once\s*$")


def debug_level():
    """The number in ``NEEDLE_DEBUG``, a comma list that may also name other switches
    (``NEEDLE_DEBUG=ir,2``: the compiler's ``ir`` and this level 2); 0 without one."""
    words = os.environ.get("NEEDLE_DEBUG", "").split(",")
    return max([int(w) for w in (w.strip() for w in words) if w.isdigit()] or [0])


def load_source(filename, text=None):
    """The text of ``kernels/<filename>`` (or ``text``, a generated source called
    ``filename``) with local includes from ``kernels/`` inlined once each.

    ``#line`` markers keep compiler messages pointing at the original file and line.
    """
    seen = set()

    def expand(name, text=None):
        if name in seen:
            return ""
        seen.add(name)
        out = [f'#line 1 "{name}"']
        text = (KERNEL_DIR / name).read_text() if text is None else text
        for lineno, line in enumerate(text.splitlines(), 1):
            match = _INCLUDE.match(line)
            if match:
                out += [expand(match.group(1)), f'#line {lineno + 1} "{name}"']
            elif not _PRAGMA_ONCE.match(line):
                out.append(line)
        return "\n".join(out)

    return expand(filename, text) + "\n"


def options(arch):
    """NVRTC options for compute capability ``arch`` (e.g. ``"90"``): a cubin for that GPU.

    Precise math (no fast-math): results must match NumPy within float rounding.
    """
    return [f"--gpu-architecture=sm_{arch}", "--std=c++17", "--fmad=true"]


def needle_version():
    return getattr(sys.modules.get("needle"), "__version__", "unknown")


def cache_key(source, opts, arch, nvrtc_version):
    """SHA-256 of everything that determines the cubin."""
    blob = json.dumps([CACHE_FORMAT, source, list(opts), str(arch), list(nvrtc_version),
                       needle_version()])
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_dir():
    root = os.environ.get("NEEDLE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                               "needle")
    return Path(root) / "cuda"


def dump_source(name, source, stream=sys.stderr):
    width = len(str(source.count("\n") + 1))
    stream.write(f"---- {name} (as compiled) ----\n")
    for i, line in enumerate(source.splitlines(), 1):
        stream.write(f"{i:>{width}} {line}\n")
    stream.flush()


#: options of generated kernels beyond :func:`options`: no FMA contraction, so a fused
#: group rounds as its members did one kernel each
GENERATED_OPTIONS = ("--fmad=false",)


def compile_file(filename, arch, extra_options=(), text=None):
    """Compile one kernel source for ``sm_<arch>``: returns ``(cubin, params, log)``, where
    ``params`` is ``{kernel: its PTX parameter types}`` (:func:`.launch.entry_params`).
    ``text`` is a generated source to compile under the name ``filename``.
    Raises :class:`~.nvrtc.NvrtcError` with the compiler log on errors. Used by the CI
    check and the tests too."""
    source = load_source(filename, text)
    try:
        cubin, ptx, log = nvrtc.compile_cubin(source, filename, options(arch) + list(extra_options))
    except nvrtc.NvrtcError:
        if debug_level() >= 2:
            dump_source(filename, source)
        raise
    return cubin, launch.entry_params(ptx), log


def _log(msg):
    if debug_level() >= 1:
        print(f"[needle.cuda] {msg}", file=sys.stderr, flush=True)


class KernelCache:
    """Compiled kernels of one GPU architecture: file -> CuPy module, name -> launch.Kernel."""

    def __init__(self, arch):
        self.arch = str(arch)
        self._modules = {}  # file -> CuPy RawModule
        self._params = {}  # file -> {kernel: PTX parameter types}
        self._kernels = {}
        self._from_cubin = set()  # files loaded from our cubin (CuPy compile as fallback)

    def kernel(self, filename, name):
        """The :class:`~.launch.Kernel` ``name`` of ``kernels/<filename>``, ready to launch."""
        kernel = self._kernels.get(name)
        if kernel is None:
            function = self._function(filename, name)
            kernel = self._kernels[name] = launch.Kernel(name, self._params[filename][name],
                                                         function)
        return kernel

    def generated(self, name, text):
        """The :class:`~.launch.Kernel` ``name`` of a generated source ``text`` (compiled
        with :data:`GENERATED_OPTIONS`, cached on disk like the files)."""
        kernel = self._kernels.get(name)
        if kernel is None:
            filename = f"{name}.cu"
            self._modules[filename] = self._load(filename, text)
            function = self._modules[filename].get_function(name).kernel
            kernel = self._kernels[name] = launch.Kernel(name, self._params[filename][name],
                                                         function)
        return kernel

    def _function(self, filename, name):
        """CuPy's ``Function`` of kernel ``name`` (``RawModule.get_function`` gives a
        ``RawKernel``; its ``.kernel`` is the Function of the current device)."""
        if filename not in self._modules:
            self._modules[filename] = self._load(filename)
        try:
            return self._modules[filename].get_function(name).kernel
        except Exception as e:  # noqa: BLE001 - e.g. a driver older than our NVRTC
            if filename not in self._from_cubin:
                raise
            self._from_cubin.discard(filename)
            _log(f"loading the cached cubin failed ({e}); compiling {filename} through CuPy")
            self._modules[filename] = self._cupy_module(filename)
            return self._modules[filename].get_function(name).kernel

    def _load(self, filename, text=None):
        """The CuPy module of ``filename`` (or of the generated ``text``) from the disk
        cache, compiling it on a miss; records its kernels' parameter types in
        ``self._params``."""
        import cupy

        source = load_source(filename, text)
        extra = GENERATED_OPTIONS if text is not None else ()
        opts = options(self.arch) + list(extra)
        version = nvrtc.version()  # the parameter lists come from our NVRTC's PTX
        path = cache_dir() / f"{Path(filename).stem}-{cache_key(source, opts, self.arch, version)[:40]}.cubin"
        params_path = path.with_suffix(".params.json")
        if path.exists() and params_path.exists():
            _log(f"cache hit {path}")
            params = json.loads(params_path.read_text())
        else:
            if os.environ.get("NEEDLE_CUDA_NO_COMPILE") == "1":
                raise RuntimeError(f"NEEDLE_CUDA_NO_COMPILE=1 but {filename} is not cached ({path})")
            start = time.perf_counter()
            cubin, params, _ = compile_file(filename, self.arch, extra, text)
            _log(f"compiled {filename} for sm_{self.arch} with NVRTC {version[0]}.{version[1]} "
                 f"in {time.perf_counter() - start:.2f} s -> {path}")
            _write_atomic(params_path, json.dumps(params).encode())
            _write_atomic(path, cubin)
        self._params[filename] = params
        self._from_cubin.add(filename)
        return cupy.RawModule(path=str(path))

    def _cupy_module(self, filename):
        """Fallback: CuPy compiles the same source itself (and caches in its own directory).
        The parameter lists of our own compile still hold: they follow from the source."""
        import cupy

        return cupy.RawModule(code=load_source(filename), options=tuple(options(self.arch)[1:]))


def _write_atomic(path, data):
    """Write then rename, so a concurrent reader never sees half a cubin."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
