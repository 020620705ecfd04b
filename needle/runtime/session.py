"""Resident sessions: data uploaded once, calls that only launch, one download at the end.

    with needle.runtime.session("cuda") as s:
        a, b = s.put(a_host), s.put(b_host)      # uploaded once
        for _ in range(100):
            c = s.matmul2d(a, b)                 # launches only: no sync, no download
        result = s.get(c)                        # the one download (and sync)

A session's ops are the NumPy-level ops of :mod:`needle.runtime.ops` on its device, taking
and returning device-resident arrays (Needle Tensors). ``sync="end"`` (the default) leaves
the device's queue alone until :meth:`Session.get` or the end of the block; ``sync="always"``
synchronises after every call (a call's time is then its own, as Lightning Core's resident
start/run/finish measures). A repeated call on the same shapes reuses the device's pooled
buffers: nothing is allocated from the driver after the first.
"""
import numpy as np

from ..autograd import Tensor
from ..backend_ndarray.device import BackendDevice, default_device, device as device_named
from . import ops

_SYNC = ("end", "always")


class Session:
    """See :func:`session`."""

    def __init__(self, device=None, sync="end"):
        if sync not in _SYNC:
            raise ValueError(f"session: sync must be one of {_SYNC}, got {sync!r}")
        dev = default_device() if device is None else device
        self.device = device_named(dev) if not isinstance(dev, BackendDevice) else dev
        self.sync, self.open = sync, True

    def put(self, array):
        """``array`` (float32 or float64 NumPy) uploaded to the session's device, once."""
        self._check_open()
        array = np.asarray(array)
        return Tensor(np.ascontiguousarray(array), device=self.device, dtype=array.dtype.name)

    def get(self, value):
        """``value`` (a session result) downloaded as a NumPy array (this synchronises)."""
        self._check_open()
        return value.numpy()

    def _call(self, fn, *args, bias=None, **kwargs):
        self._check_open()
        for i, a in enumerate(args + ((bias,) if bias is not None else ())):
            if not isinstance(a, Tensor):
                raise TypeError(f"session.{fn.__name__}: argument {i} is a "
                                f"{type(a).__name__}; put it on the session first "
                                f"(s.put(array)), so it is uploaded once")
        if bias is not None:
            kwargs["bias"] = bias
        out = fn(*args, device=self.device, **kwargs)
        if self.sync == "always":
            self.device.synchronize()
        return out

    def matmul2d(self, a, b):
        return self._call(ops.matmul2d, a, b)

    def attention2d(self, q, k, v, causal=False):
        return self._call(ops.attention2d, q, k, v, causal=causal)

    def conv2d(self, x, w, bias=None, stride=1, padding=1):
        return self._call(ops.conv2d, x, w, bias=bias, stride=stride, padding=padding)

    def conv2d_relu(self, x, w, bias=None, stride=1, padding=1):
        return self._call(ops.conv2d_relu, x, w, bias=bias, stride=stride, padding=padding)

    def _check_open(self):
        if not self.open:
            raise RuntimeError("this needle.runtime session has ended (its block exited)")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.open:
            self.device.synchronize()
        self.open = False
        return False

    def __repr__(self):
        return f"<needle.runtime session on {self.device}, sync={self.sync!r}>"


def session(device=None, sync="end"):
    """A :class:`Session` on ``device`` (a Needle device or its name; default cpu), used as
    ``with needle.runtime.session(device) as s: ...``."""
    return Session(device, sync)
