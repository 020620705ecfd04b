"""Where one benchmark step spends its time, on the lent GPU: host time to issue a step,
time with the device synchronised, the Python functions that cost most (cProfile) and the
kernels that cost most (CUPTI through torch.profiler, which also sees kernels other
libraries launch in the process).

    python tools/profile_step.py needle-cudnn:resnet9/b64 torch-cuda:resnet9/b64 ...

Each argument is BACKEND:CASE with a needle-bench backend and case label.
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
    case = next(c for c in suites.cases(suite) if c.label == label)
    return backend, case


def _per_step(fn, n):
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e3


def profile(spec, steps=50):
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
    for spec in sys.argv[1:]:
        try:
            profile(spec)
        except Exception as e:  # keep profiling the others
            print(f"== {spec}: failed: {type(e).__name__}: {e}")
        sys.stdout.flush()
