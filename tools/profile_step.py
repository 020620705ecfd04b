"""Where one benchmark step spends its time, on the lent GPU: host time to issue a step,
time with the device synchronised, the Python functions that cost most (cProfile) and the
kernels that cost most (CUPTI through torch.profiler, which also sees kernels other
libraries launch in the process).

    python tools/profile_step.py needle-cudnn:resnet9/b64 torch-cuda:resnet9/b64 ...

Each argument is BACKEND:CASE with a needle-bench backend and case label. With
``--breakdown``, Needle's hot host calls (cuDNN execute, kernel launch, allocation, ...) are
timed one by one instead, as microseconds per step: what is left is Python.
"""
import cProfile
import io
import pstats
import sys
import time

from needle.bench import suites
from needle.bench.backends import all_backends
from needle.bench.timing import gc_paused


def _find(backend_name, label):
    backend = next(b for b in all_backends() if b.name == backend_name)
    suite = label.split("/")[0]
    case = next(c for c in suites.cases(suite) + suites.cases(suite, quick=True)
                if c.label == label)
    return backend, case


def _per_step(fn, n):
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e3


#: (module, class, method) of the host calls ``--breakdown`` times
HOT_CALLS = [
    ("needle.autograd", "Value", "make_from_op"),
    ("needle.backend_ndarray.cudnn.graphs", "Graphs", "run"),
    ("needle.backend_ndarray.cudnn.cublaslt", "CublasLt", "gemm"),
    ("needle.backend_ndarray.cudnn.backend", "CudnnBackend", "_weight_packed"),
    ("needle.backend_ndarray.cuda.launch", "Kernel", "__call__"),
    ("needle.backend_ndarray.cuda.memory", "CudaBuffer", "__init__"),
]


def _timed(totals, key, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            entry = totals[key]
            entry[0] += 1
            entry[1] += time.perf_counter() - t0
    return wrapper


def breakdown(run, steps):
    """Microseconds per step in each of HOT_CALLS (outermost calls only for recursive ones)."""
    import importlib
    totals, saved = {}, []
    for module, cls_name, method in HOT_CALLS:
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError):
            continue
        fn = cls.__dict__[method]
        key = f"{cls_name}.{method}"
        totals[key] = [0, 0.0]
        saved.append((cls, method, fn))
        setattr(cls, method, classmethod(_timed(totals, key, fn.__func__))
                if isinstance(fn, classmethod) else _timed(totals, key, fn))
    try:
        run.sync()
        with gc_paused():
            t0 = time.perf_counter()
            for _ in range(steps):
                run.step()
            total = time.perf_counter() - t0
        run.sync()
    finally:
        for cls, method, fn in saved:
            setattr(cls, method, fn)
    print(f"   host per step (wrapped): {total / steps * 1e6:9.1f} us")
    for key, (calls, seconds) in totals.items():
        if calls:
            print(f"   {key:<28} {calls / steps:6.1f} calls {seconds / steps * 1e6:9.1f} us"
                  f"  ({seconds / calls * 1e6:.1f} us each)")


def profile(spec, steps=50, split=False):
    backend_name, label = spec.split(":")
    backend, case = _find(backend_name, label)
    reason = backend.unavailable_reason()
    if reason:
        print(f"== {spec}: unavailable: {reason}")
        return
    with backend.scope():
        run = backend.build(case, suites.make_data(case))
        for _ in range(5):
            run.step()
        run.sync()
        with gc_paused():  # as needle-bench times
            issue = _per_step(run.step, steps)  # host time; the queue may absorb GPU work
            run.sync()
            synced = _per_step(lambda: (run.step(), run.sync()), steps)
        print(f"== {spec}: {issue:.3f} ms/step issued, {synced:.3f} ms/step synchronised")
        if split:
            breakdown(run, steps)
            run.cleanup()
            return

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(steps):
            run.step()
        run.sync()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(22)
        print("\n".join(line for line in text.getvalue().splitlines()[6:] if line.strip()))

        import torch
        from torch.profiler import ProfilerActivity
        with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as kprof:
            for _ in range(10):
                run.step()
            run.sync()
        print(kprof.key_averages().table(sort_by="cuda_time_total", row_limit=18,
                                         max_name_column_width=70))
        run.cleanup()


if __name__ == "__main__":
    split = "--breakdown" in sys.argv
    for spec in [a for a in sys.argv[1:] if a != "--breakdown"]:
        try:
            profile(spec, split=split)
        except Exception as e:  # keep profiling the others
            print(f"== {spec}: failed: {type(e).__name__}: {e}")
        sys.stdout.flush()
