"""Deciding whether a backend computed the right thing before it is timed.

Each check compares an output with its reference by the normwise relative error
``||out - ref|| / ||ref||`` in float64; NaN or Inf anywhere, or a shape that differs, is an
infinite error. A row is valid only if every check is within its tolerance; otherwise it is
marked ``mismatch: rel err X (what)`` and not timed.
"""
import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Check:
    name: str
    out: object
    ref: object
    tol: float
    floor: float = 0.0  # added to ||ref||, for references that may be ~0


def rel_err(out, ref, floor=0.0):
    """``||out - ref|| / (||ref|| + floor)`` in float64; ``inf`` for NaN/Inf or a shape
    mismatch."""
    try:
        out = np.asarray(out, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
    except (TypeError, ValueError):
        return math.inf
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return math.inf
    denom = float(np.linalg.norm(ref)) + floor
    diff = float(np.linalg.norm(out - ref))
    if denom == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / denom


@dataclass
class Verdict:
    ok: bool
    rel_err: float   # the error of the worst check (largest err / tol)
    tol: float
    what: str        # that check's name

    @property
    def status(self):
        return "ok" if self.ok else f"mismatch: rel err {self.rel_err:.2e} ({self.what}, tol {self.tol:.0e})"


def validate(checks):
    """Run ``checks`` (a list of Check); the verdict reports the worst one."""
    worst = None
    for c in checks:
        err = rel_err(c.out, c.ref, c.floor)
        ratio = err / c.tol if c.tol > 0 else (0.0 if err == 0 else math.inf)
        if worst is None or ratio > worst[0] or (math.isnan(ratio)):
            worst = (ratio, err, c)
    if worst is None:
        return Verdict(True, 0.0, 0.0, "nothing")
    ratio, err, c = worst
    return Verdict(bool(ratio <= 1.0), err, c.tol, c.name)
