"""Where one benchmark step spends its time, on the lent GPU: host time to issue a step,
time with the device synchronised, the Python functions that cost most (cProfile) and the
kernels that cost most (CUPTI through torch.profiler, which also sees kernels other
libraries launch in the process).

    python tools/profile_step.py needle-cudnn:resnet9/b64 torch-cuda:resnet9/b64 ...

Each argument is BACKEND:CASE with a needle-bench backend and case label. With
``--breakdown``, the host's functions are timed instead: the calls, self and inclusive
microseconds per step of each autograd, NDArray and backend function (where the host cost
of a step goes).
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


#: (module, class, methods or None for all of its functions) that ``--breakdown`` times
TIMED = [("needle.autograd", "Tensor", ["backward"]),
         ("needle.autograd", "TensorOp", ["__call__"]),
         ("needle.autograd", "TensorTupleOp", ["__call__"]),
         ("needle.backend_ndarray.ndarray", "NDArray", None),
         ("needle.backend_ndarray.cuda.backend", "CudaBackend", None),
         ("needle.backend_ndarray.cudnn.backend", "CudnnBackend", None),
         ("needle.backend_ndarray.cudnn.cublaslt", "CublasLt", None),
         ("needle.backend_ndarray.cudnn.graphs", "Graphs", None),
         ("needle.backend_ndarray.cuda.launch", "Kernel", ["__call__"]),
         ("needle.backend_ndarray.cuda.memory", "CudaBuffer", ["__init__"])]


def _timed(stats, stack, key, fn):
    """``fn`` that adds its call, self and inclusive seconds to ``stats[key]``."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        stack.append(0.0)  # time spent in timed callees
        try:
            return fn(*args, **kwargs)
        finally:
            spent, inner = time.perf_counter() - start, stack.pop()
            if stack:
                stack[-1] += spent
            entry = stats.setdefault(key, [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += spent - inner
            entry[2] += spent
    return wrapper


def breakdown(run, steps, rows=28):
    """Per step: calls, self and inclusive microseconds of every function in TIMED."""
    import importlib
    import types
    stats, stack, saved = {}, [], []
    for module, cls_name, names in TIMED:
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError):
            continue
        for name, fn in list(vars(cls).items()):
            if isinstance(fn, types.FunctionType) and (
                    name in names if names is not None else not name.startswith("__")):
                saved.append((cls, name, fn))
                setattr(cls, name, _timed(stats, stack, f"{cls_name}.{name}", fn))
    try:
        run.sync()
        with gc_paused():
            t0 = time.perf_counter()
            for _ in range(steps):
                run.step()
            total = time.perf_counter() - t0
        run.sync()
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)
    print(f"   host per step (timed): {total / steps * 1e3:.2f} ms; per step: calls, self us, "
          f"inclusive us, self us per call")
    for key, (calls, own, inclusive) in sorted(stats.items(), key=lambda kv: -kv[1][1])[:rows]:
        print(f"   {key:<36} {calls / steps:7.1f} {own / steps * 1e6:9.1f} "
              f"{inclusive / steps * 1e6:9.1f} {own / calls * 1e6:7.1f}")


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
