"""Kernels generated at run time for the fusion groups the passes form.

:mod:`.group` reads a group's decomposition (elementwise ops, the broadcasts, reshapes and
slices that feed them, at most one reduce) into a :class:`~.group.Group`, the same for
every target; :mod:`.cuda` writes a Group as one CUDA C kernel from the scalar functions
of ``common.cuh``, :mod:`.wgsl` as one WGSL kernel from ``math.wgsl``. The executor runs a composite through a generated kernel where the
device has a generator (:func:`generator_for`), else member by member.
"""
from .group import Group, Unsupported


def generator_for(device):
    """The kernel generator of ``device`` (a class taking a composite's decomposition and
    the executor), or ``None`` where Needle generates no kernels for it."""
    kind = getattr(device.backend, "generated_kernels", None)
    if kind == "cuda":
        from .cuda import CudaGroupKernel
        return CudaGroupKernel
    if kind == "wgsl":
        from .wgsl import WgslGroupKernel
        return WgslGroupKernel
    return None


__all__ = ["Group", "Unsupported", "generator_for"]
