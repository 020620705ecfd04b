"""WGSL sources and the pipeline cache.

Kernels live in ``wgsl/*.wgsl``. A file names the files it needs with ``// include: x.wgsl``
lines (each file is pasted once, before the first file that includes it), and the host
prepends ``const`` declarations for the constants a file expects (tile sizes, which op,
CHECKED, ...) and any extra parts (matmul's memory interface). WGSL has no preprocessor;
this is all of ours.

One :class:`Kernel` is one compute pipeline, created on first use and kept for the life of
the device, keyed by everything that goes into its source. Its bind-group layout is the
one WebGPU derives from the entry point (``layout="auto"``), so a kernel binds exactly the
buffers its entry point uses, by binding number.
"""
import re
from importlib import resources

_INCLUDE = re.compile(r"^// include: (\S+)\s*$", re.MULTILINE)
_FILES = {}


def _read(name):
    if name not in _FILES:
        _FILES[name] = resources.files(__package__).joinpath("wgsl", name).read_text()
    return _FILES[name]


def _wgsl_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}u"
    return str(value)  # a name declared in WGSL, e.g. "UNARY_EXP"


def assemble(name, consts=(), parts=(), aliases=None, text=None):
    """The WGSL source of file ``name``: constants, then parts and includes, then the file.

    ``aliases`` maps an included name to the file that provides it (how the host picks
    the subgroup or the shared-memory workgroup reduction). ``text``, if given, is the
    source itself (a generated kernel called ``name``), its includes honoured as a file's.
    """
    aliases = aliases or {}
    seen, chunks = set(), []

    def add(file, body=None):
        file = aliases.get(file, file)
        if file in seen:
            return
        seen.add(file)
        body = _read(file) if body is None else body
        for dep in _INCLUDE.findall(body):
            add(dep)
        chunks.append(f"// ---- {file}\n{body}")

    for part in parts:
        add(part)
    add(name, text)
    header = "".join(f"const {k} = {_wgsl_value(v)};\n" for k, v in sorted(dict(consts).items()))
    return header + "\n".join(chunks)


class Kernel:
    """One compiled entry point: its pipeline and bind-group layout."""

    def __init__(self, device, label, source, entry):
        self.label = label
        module = device.create_shader_module(label=label, code=source)
        self.pipeline = device.create_compute_pipeline(
            label=label, layout="auto", compute={"module": module, "entry_point": entry})
        self.layout = self.pipeline.get_bind_group_layout(0)


class KernelCache:
    """Pipelines by (file, entry, constants, parts); nothing compiles before first use."""

    def __init__(self, device, aliases):
        self._device = device
        self._aliases = aliases
        self._kernels = {}

    def get(self, file, entry, consts=None, parts=()):
        consts = tuple(sorted((consts or {}).items()))
        key = (file, entry, consts, tuple(parts))
        kernel = self._kernels.get(key)
        if kernel is None:
            source = assemble(file, consts, parts, self._aliases)
            label = f"needle_{entry}" + "".join(f"_{k}{v}" for k, v in consts)
            kernel = self._kernels[key] = Kernel(self._device, label, source, entry)
        return kernel

    def generated(self, name, text):
        """The kernel of generated WGSL ``text`` (entry point ``main``; its ``// include:``
        lines are honoured), compiled once per text."""
        key = ("<generated>", text)
        kernel = self._kernels.get(key)
        if kernel is None:
            source = assemble(name, aliases=self._aliases, text=text)
            kernel = self._kernels[key] = Kernel(self._device, name, source, "main")
        return kernel

    def __len__(self):
        return len(self._kernels)
