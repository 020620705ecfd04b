"""needle.runtime: Lightning Core's runtime surface on Needle's devices.

So far: NumPy-level ops (:mod:`.ops`: ``matmul2d``, ``attention2d``, ``conv2d``,
``conv2d_relu`` and their ``*_into`` forms; ``device="auto"``'s CPU crossover is
:mod:`.crossover`), resident sessions (:mod:`.session`), the persisted autotune cache
(:mod:`.tune_cache`), the trace (:mod:`.trace`) and the capability matrix (:mod:`.devices`,
whose command line is ``python -m needle.runtime.capabilities``). docs/runtime.md says what
they do and what is still to come.
"""
from . import trace
from .devices import capabilities
from .ops import (attention2d, attention2d_into, conv2d, conv2d_into, conv2d_relu, matmul2d,
                  matmul2d_into)
from .session import Session, session

__all__ = ["trace", "capabilities", "session", "Session", "matmul2d", "matmul2d_into", "attention2d", "attention2d_into",
           "conv2d", "conv2d_relu", "conv2d_into"]
