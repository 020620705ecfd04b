"""What a backend is, and the list of all of them.

A backend has a name, an availability check (``None`` or why it cannot run here) and a
``build(case, data)`` that turns the shared NumPy weights and inputs into a ``Runnable``:
the output of its first execution (for validation), a step function (for timing) and any
extra fields of its row (the compiled Needle backends' compile time).
The framework modules (backends_needle, backends_torch, backends_jax) each provide one
build function per suite; this module only lists them.
"""
import contextlib
import fnmatch
from dataclasses import dataclass, field
from typing import Callable


class NotInSuite(Exception):
    """This backend has no variant for this suite (the row is reported as skipped)."""


def _nothing():
    return None


@dataclass
class Runnable:
    output: object                      # NumPy result of the first execution
    step: Callable[[], object]          # one more execution (what is timed)
    sync: Callable[[], None] = _nothing  # wait for queued device work
    timer: str = "host"                 # "host", "cuda-events" or "cupy-events" (timing.py)
    cleanup: Callable[[], None] = _nothing
    info: dict = field(default_factory=dict)  # extra fields of the row, e.g. compile_s


@dataclass
class Backend:
    name: str
    family: str                          # "needle", "torch" or "jax"
    build: Callable                      # (case, data) -> Runnable
    check: Callable[[], object]          # () -> None if available, else the reason
    note: str = ""
    scope: Callable = contextlib.nullcontext  # entered around build, validation and timing
    _reason: object = field(default=False, repr=False)

    def unavailable_reason(self):
        """None if this backend can run here, else why not (checked once)."""
        if self._reason is False:
            try:
                self._reason = self.check()
            except Exception as e:  # an import that fails in an unexpected way
                self._reason = f"{type(e).__name__}: {e}"
        return self._reason


def all_backends(opt_level=2):
    """Every backend in display order: each Needle device (eager, then compiled at
    ``opt_level``), PyTorch variants, JAX."""
    from . import backends_jax, backends_needle, backends_torch
    return (backends_needle.backends(opt_level) + backends_torch.backends()
            + backends_jax.backends())


def select(backends, patterns):
    """The backends whose names match any of ``patterns`` (exact names or shell globs such
    as ``torch-*``), in their original order; raises ValueError for a pattern that matches
    nothing."""
    if not patterns:
        return list(backends)
    names = [b.name for b in backends]
    for p in patterns:
        if not fnmatch.filter(names, p):
            raise ValueError(f"--backends: {p!r} matches no backend; known: {', '.join(names)}")
    return [b for b in backends if any(fnmatch.fnmatchcase(b.name, p) for p in patterns)]
