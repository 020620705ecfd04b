"""Profile one eager Needle step on a device: where the host time goes.

    python tools/profile_step.py --device cuda --suite mlp --case med-4L-512 [--steps 200]

Prints the median step time, then cProfile's top functions by own time (Needle, the
backend's Python, and the library calls under it)."""
import argparse
import cProfile
import pstats
import time

import numpy as np

import needle
from needle.bench import backends_needle as bn
from needle.bench import suites


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--suite", default="mlp", choices=["mlp", "resnet9"])
    p.add_argument("--case", default="med-4L-512")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    device = needle.device(args.device)
    cases = [c for c in suites.cases(args.suite) if c.name.startswith(args.case)]
    if not cases:
        p.error(f"no {args.suite} case starts with {args.case!r}; cases: "
                f"{', '.join(c.name for c in suites.cases(args.suite))}")
    case = cases[0]
    # the same step needle-bench times (built from the same shared weights and inputs)
    step = getattr(bn, args.suite)(device, case, suites.make_data(case)).step
    for _ in range(10):
        step()
    device.synchronize()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        device.synchronize()
        times.append(time.perf_counter() - t)
    print(f"{args.suite} {case.name} on {device}: median {np.median(times) * 1e3:.3f} ms/step "
          f"(synchronised each step)")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.steps):
        step()
    device.synchronize()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
