"""The runtime trace: one event per eager Tensor op, compiled call and NumPy-level op.

    from needle.runtime import trace
    trace.enable()            # gpu_times=True also times each op on CUDA devices' events
    ...                       # run anything
    trace.disable()
    trace.events()            # [{"kind", "op", "device", "engine", "shapes", "dtype",
                              #   "host_us", "gpu_us", "bytes", "start_us"}, ...]
    print(trace.timeline())   # grouped by kind, op and device, most time first
    trace.export_chrome_trace("trace.json")   # for Perfetto or chrome://tracing

Disabled, it costs nothing: :func:`enable` swaps timed versions in for
``Tensor.make_from_op`` (which every eager op's value goes through) and for compiled
functions' ``__call__``, and :func:`disable` puts the originals back.

- ``kind``: ``"eager"`` (a Tensor op), ``"compiled"`` (a ``needle.compile`` call) or
  ``"runtime"`` (a :mod:`needle.runtime` op; the Tensor ops it runs are events too).
- ``host_us``: the host's time in the call (for eager ops on a GPU: issuing the work).
- ``gpu_us``: with ``gpu_times=True`` on the cuda devices, the time between CUDA events
  recorded around the call (read when :func:`events` is called, which synchronises);
  otherwise None.
- ``bytes``: the bytes of the inputs read and outputs written (as stored).
"""
import json
import time

_state = {"enabled": False, "gpu_times": False, "originals": []}
_events = []
_T0 = time.perf_counter()


def enable(gpu_times=False):
    """Start recording (again; :func:`clear` forgets what was recorded)."""
    if _state["enabled"]:
        return
    from ..autograd import Value  # noqa: PLC0415
    from ..compiler.api import Compiled  # noqa: PLC0415
    _state.update(enabled=True, gpu_times=gpu_times)
    # every eager op's value (Tensor or TensorTuple) is made by Value.make_from_op, the ops'
    # fast paths included
    original = Value.__dict__["make_from_op"]
    _state["originals"].append((Value, "make_from_op", original))
    timed = _timed(original.__func__, "eager")
    Value.make_from_op = classmethod(lambda cls, op, inputs: timed(cls, op, inputs))
    original = Compiled.__dict__["__call__"]
    _state["originals"].append((Compiled, "__call__", original))
    Compiled.__call__ = _timed(original, "compiled")


def disable():
    """Stop recording; the events stay until :func:`clear`."""
    for cls, name, original in _state["originals"]:
        setattr(cls, name, original)
    _state.update(enabled=False, originals=[])


def clear():
    _events.clear()


def _arrays(values):
    """The Tensors and NumPy arrays among ``values`` (lists and tuples searched)."""
    import numpy as np  # noqa: PLC0415
    from ..autograd import Tensor  # noqa: PLC0415
    out = []
    for v in values:
        if isinstance(v, (Tensor, np.ndarray)):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out += _arrays(v)
    return out


def _nbytes(a):
    import numpy as np  # noqa: PLC0415
    return int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize


def _describe(kind, fn, args, kwargs, result):
    from ..autograd import Tensor  # noqa: PLC0415
    # eager: (class, op, inputs); compiled: (the Compiled, *arguments); runtime: arguments
    inputs = _arrays(args[2] if kind == "eager" else args[1:] if kind == "compiled" else args)
    outputs = _arrays(result if isinstance(result, (list, tuple)) else [result])
    tensors = [a for a in inputs + outputs if isinstance(a, Tensor)]
    if tensors:
        device = tensors[0].device
    else:
        from ..backend_ndarray.device import default_device, device as named  # noqa: PLC0415
        device = kwargs.get("device") or (args[-1] if kind == "runtime" and args and
                                          isinstance(args[-1], str) else None)
        if device == "auto":  # where the crossover placed the call
            from .crossover import last  # noqa: PLC0415
            device = last[0]
        device = device or default_device()
        device = named(device) if isinstance(device, str) else device
    if kind == "eager":
        name = type(args[1]).__name__
    elif kind == "compiled":
        name = getattr(getattr(args[0], "fn", None), "__name__", "compiled")
    else:
        name = fn.__name__
    first = (inputs + outputs)[:1]
    return {"kind": kind, "op": name, "device": str(device),
            "engine": getattr(device, "name", str(device)),
            "shapes": [tuple(a.shape) for a in inputs],
            "dtype": str(first[0].dtype) if first else None,
            "bytes": sum(_nbytes(a) for a in inputs + outputs)}


def _gpu_events(args):
    """A started CUDA event pair where ``gpu_times`` and the call is on a cuda device."""
    if not _state["gpu_times"]:
        return None
    from ..autograd import Tensor  # noqa: PLC0415
    tensors = [a for a in _arrays(args) if isinstance(a, Tensor)]
    if not tensors or not hasattr(tensors[0].device.backend, "rt"):
        return None
    import cupy  # noqa: PLC0415
    start = cupy.cuda.Event()
    start.record()
    return start


def _timed(call, kind):
    def timed(*args, **kwargs):
        start_event = _gpu_events(args)
        began = time.perf_counter()
        result = call(*args, **kwargs)
        host = (time.perf_counter() - began) * 1e6
        event = _describe(kind, call, args, kwargs, result)
        event.update(host_us=host, start_us=(began - _T0) * 1e6, gpu_us=None)
        if start_event is not None:
            import cupy  # noqa: PLC0415
            stop = cupy.cuda.Event()
            stop.record()
            event["_gpu"] = (start_event, stop)
        _events.append(event)
        return result
    timed.__wrapped__ = call
    timed.__name__ = getattr(call, "__name__", "call")
    return timed


def record(fn):
    """Decorator: ``fn`` (a NumPy-level op) makes a ``"runtime"`` event when tracing."""
    timed = _timed(fn, "runtime")

    def traced(*args, **kwargs):
        return timed(*args, **kwargs) if _state["enabled"] else fn(*args, **kwargs)
    traced.__name__, traced.__doc__, traced.__wrapped__ = fn.__name__, fn.__doc__, fn
    return traced


def events():
    """The events recorded so far (copies), in the order they started; the GPU times of
    events recorded with ``gpu_times`` are read now (a device synchronisation)."""
    out = []
    for e in _events:
        pair = e.pop("_gpu", None)
        if pair is not None:
            pair[1].synchronize()
            import cupy  # noqa: PLC0415
            e["gpu_us"] = cupy.cuda.get_elapsed_time(*pair) * 1e3
        out.append(dict(e))
    return sorted(out, key=lambda e: e["start_us"])  # (an outer call ends after its inner ops)


def timeline():
    """A text report: per (kind, op, device) the calls, total and mean host µs (and GPU µs
    where measured), the groups with the most host time first."""
    groups = {}
    for e in events():
        g = groups.setdefault((e["kind"], e["op"], e["device"]), [0, 0.0, 0.0, 0])
        g[0] += 1
        g[1] += e["host_us"]
        if e["gpu_us"] is not None:
            g[2] += e["gpu_us"]
            g[3] += 1
    lines = [f"{'kind':9} {'op':28} {'device':18} {'calls':>6} {'host us':>10} "
             f"{'mean us':>9} {'gpu us':>10}"]
    for (kind, op, device), (n, host, gpu, timed) in sorted(groups.items(),
                                                            key=lambda kv: -kv[1][1]):
        lines.append(f"{kind:9} {op[:28]:28} {str(device)[:18]:18} {n:6d} {host:10.1f} "
                     f"{host / n:9.2f} {gpu if timed else float('nan'):10.1f}")
    return "\n".join(lines)


def export_chrome_trace(path):
    """Write the events as a Chrome trace (``{"traceEvents": [...]}``, complete events in
    µs) that Perfetto and chrome://tracing open; returns ``path``."""
    trace_events = [{"name": e["op"], "cat": e["kind"], "ph": "X", "ts": e["start_us"],
                     "dur": e["host_us"], "pid": 1, "tid": e["kind"],
                     "args": {k: e[k] for k in ("device", "shapes", "dtype", "bytes", "gpu_us")}}
                    for e in events()]
    with open(path, "w") as f:
        json.dump({"traceEvents": trace_events, "displayTimeUnit": "ms"}, f, default=str)
    return path
