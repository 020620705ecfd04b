"""Timers and statistics.

Procedure for one row (see ``measure``), after the backend's first (validated) run:
  1. two synchronised steps on the host clock estimate the step time ``est``; if even the
     minimum number of iterations would exceed ``max_row_time``, the row is skipped
     (``TooSlow``) instead of hanging;
  2. warm-up steps (default: about 10% of the row's time, 2..50 steps), which also refine
     ``est``;
  3. timed samples until about ``row_time`` seconds are spent (at least ``min_iters``
     samples, at most ``max_samples``), or exactly ``iters`` steps when given.

Both timers take one sample as the mean of ``k`` back-to-back steps, with ``k`` chosen so
a sample lasts ~1 ms (``k = 1`` for steps of 1 ms or more, and when ``iters`` is given):
  * ``cuda-events`` (PyTorch on CUDA) and ``cupy-events`` (Needle's CUDA devices, whose
    work runs on CuPy's current stream): a CUDA event pair around the ``k`` steps, no host
    synchronisation between samples.
  * ``host``: ``sync(); t0 = perf_counter(); k steps; sync(); t1``.
Why ``k`` steps and not one: a host-bound step (a thin matmul, a small MLP) is as long as a
few event records, and the two libraries' ``Event.record`` differ in how much of their own
Python cost lands between the two GPU timestamps. Over ~1 ms of steps that cost, like the
host clock's synchronisation latency, is amortised, and a sample is the steady-state time
a loop of steps takes, the figure a user's training loop sees.

The timed samples run with Python's cyclic garbage collector paused (after a collection),
as ``timeit`` does: one process holds PyTorch, JAX and Needle, and a collection pass over
all their objects, triggered by whichever backend allocates many small objects, would
otherwise land at random in another backend's samples.
"""
import contextlib
import gc
import math
import time
from dataclasses import dataclass

import numpy as np

#: event timers -> the library whose CUDA events they record
EVENT_TIMERS = {"cuda-events": "torch", "cupy-events": "cupy"}
STAT_FIELDS = ("mean_ms", "std_ms", "min_ms", "median_ms", "p95_ms", "p99_ms")


def summarize(samples_s):
    """Statistics in milliseconds of per-step times given in seconds.

    ``std`` is the sample standard deviation (ddof=1; 0 for one sample); percentiles use
    linear interpolation (NumPy's default).
    """
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    if a.size == 0:
        raise ValueError("summarize: no samples")
    return {
        "mean_ms": float(a.mean()),
        "std_ms": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min_ms": float(a.min()),
        "median_ms": float(np.median(a)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
    }


@dataclass
class Settings:
    row_time: float = 0.3       # seconds of timed samples per row (adaptive mode)
    max_row_time: float = 5.0   # skip a row whose minimum iterations would take longer
    min_iters: int = 10
    max_samples: int = 2000
    chunk_s: float = 1e-3       # host timer: target duration of one sample
    iters: int = None           # fixed number of timed steps (disables adaptation)
    warmup: int = None          # fixed number of warm-up steps
    budget_name: str = "the per-row budget"  # what max_row_time is, for messages


class TooSlow(Exception):
    """The row would exceed its time budget; it is reported as skipped."""


def _host_time(fn, sync):
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def check_budget(est, settings):
    """Raise TooSlow if the minimum number of steps of ``est`` seconds would take longer
    than ``settings.max_row_time``."""
    min_n = settings.iters if settings.iters is not None else settings.min_iters
    if est * min_n > settings.max_row_time:
        raise TooSlow(f"too slow for {settings.budget_name}: one step took {est:.3g} s, "
                      f"{min_n} steps > {settings.max_row_time:.3g} s")


def warmup_steps(est, settings):
    """Warm-up steps: ``--warmup``, else ~10% of the row's time (2..50 steps, 1 for steps
    that are slow relative to the budget)."""
    if settings.warmup is not None:
        return settings.warmup
    n = int(min(50, max(2, math.ceil(0.1 * settings.row_time / max(est, 1e-7)))))
    return 1 if est * n > 0.25 * settings.max_row_time else n


def sample_plan(est, settings):
    """(samples, steps per sample) for a step of ``est`` seconds."""
    est = max(est, 1e-7)
    if settings.iters is not None:
        return settings.iters, 1
    inner = max(1, math.ceil(settings.chunk_s / est - 1e-9))
    samples = int(min(settings.max_samples,
                      max(settings.min_iters, round(settings.row_time / (est * inner)))))
    return samples, inner


@contextlib.contextmanager
def gc_paused():
    """Collect, then keep the cyclic GC off for the block (reference counting still frees)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_host(step, sync, samples, inner):
    out = []
    sync()
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        sync()
        out.append((time.perf_counter() - t0) / inner)
    return out


def _events(api):
    """(make an event, synchronize the device, elapsed ms between two events) of ``api``."""
    if api == "torch":
        import torch
        return (lambda: torch.cuda.Event(enable_timing=True), torch.cuda.synchronize,
                lambda start, end: start.elapsed_time(end))
    import cupy
    return (cupy.cuda.Event, lambda: cupy.cuda.get_current_stream().synchronize(),
            cupy.cuda.get_elapsed_time)


def time_cuda_events(step, samples, inner, api="torch"):
    """Per-step seconds, each the mean of ``inner`` back-to-back steps between two CUDA events
    recorded on ``api``'s (torch or cupy) current stream."""
    make, synchronize, elapsed_ms = _events(api)
    starts = [make() for _ in range(samples)]
    ends = [make() for _ in range(samples)]
    synchronize()
    for start, end in zip(starts, ends):
        start.record()
        for _ in range(inner):
            step()
        end.record()
    synchronize()
    return [elapsed_ms(s, e) * 1e-3 / inner for s, e in zip(starts, ends)]


def measure(runnable, settings):
    """Warm up and time ``runnable.step``; returns (per-step samples in s, info dict).
    Raises TooSlow when the row does not fit its budget."""
    events = runnable.timer in EVENT_TIMERS
    step, sync = runnable.step, runnable.sync
    # two synchronised steps estimate the step time (the first after the validation run
    # may still do one-off work, e.g. CUDA-graph recording in torch.compile)
    est = _host_time(step, sync)
    check_budget(est, settings)
    est = min(est, _host_time(step, sync))
    check_budget(est, settings)
    warmup = warmup_steps(est, settings)
    if warmup:
        sync()
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        sync()
        est = min(est, (time.perf_counter() - t0) / warmup)  # back-to-back steady state
    samples, inner = sample_plan(est, settings)
    with gc_paused():
        if events:
            times = time_cuda_events(step, samples, inner, EVENT_TIMERS[runnable.timer])
        else:
            times = time_host(step, sync, samples, inner)
    info = {"timer": runnable.timer, "warmup": warmup + 2, "samples": samples,
            "steps_per_sample": inner, "iters": samples * inner, "est_step_s": est}
    return times, info
