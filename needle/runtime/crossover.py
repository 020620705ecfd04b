"""The CPU crossover of the NumPy-level ops: with ``device="auto"``, small inputs, where the
upload, the launches and the download cost more than NumPy's own work, run on the cpu.

Where to run is measured on this machine, per op, shapes and dtype, on the first such call:
the call (NumPy in, NumPy out, as the caller sees it) is timed on the cpu and on the
accelerator (the first available of cudnn, cuda and webgpu), best of a few runs after one
warm-up, and the faster is kept in the autotune cache (:mod:`.tune_cache`, under a key
naming the accelerator), so later calls and later processes skip the measurement. A call
whose inputs are Tensors already runs where they are; without an accelerator everything
runs on the cpu. The trace's events name the device taken.
"""
import time

from ..backend_ndarray.device import cpu, device as device_named
from . import tune_cache

#: the accelerators "auto" weighs against the cpu, the first available one
ACCELERATORS = ("cudnn", "cuda", "webgpu")
#: timed runs per candidate (after one warm-up); the best counts
RUNS = 3
#: the device the latest "auto" call was placed on (the trace names it)
last = [None]


def accelerator():
    """The device ``"auto"`` weighs against the cpu, or None."""
    for name in ACCELERATORS:
        dev = device_named(name)
        if dev.enabled():
            return dev
    return None


def _identity(dev):
    from .devices import _compute  # noqa: PLC0415 - the adapter / GPU it runs on
    return f"{dev.name} on {_compute(dev)}"


def _best_us(run):
    run()
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1e6


def choose(op, arrays, run):
    """The device to run ``op`` on for NumPy ``arrays``: the cached choice, else measured
    now with ``run(device)`` (which must compute the call's result there) and kept."""
    last[0] = dev = _choose(op, arrays, run)
    return dev


def _choose(op, arrays, run):
    acc = accelerator()
    if acc is None:
        return cpu()
    entry_key = tune_cache.key(f"crossover:{op}", _identity(acc),
                               [tuple(a.shape) for a in arrays], [str(a.dtype) for a in arrays])
    entry = tune_cache.lookup(entry_key)
    if entry is not None and entry["choice"] in ("cpu", acc.name):
        return device_named(entry["choice"])
    times = {dev.name: _best_us(lambda dev=dev: run(dev)) for dev in (cpu(), acc)}
    choice = min(times, key=times.get)
    tune_cache.store(entry_key, choice, times)
    return device_named(choice)
