"""Compile every CUDA kernel source of the `cuda` backend with NVRTC, for sm_80 and sm_90.

Runs in CI, which has neither a GPU nor CuPy: only NVRTC's shared library is needed.
Install it with:

    pip install nvidia-cuda-nvrtc==13.*

(or point NEEDLE_NVRTC_PATH at a libnvrtc.so from a CUDA toolkit). The sources are
compiled exactly as the backend compiles them (same source expansion, same options), and
every entry point listed in needle/backend_ndarray/cuda/kernels.py must be in the
resulting cubin, with no unlisted `needle_*` kernel beside them, and every entry point's
parameter list (read from the PTX) must be one that launch.py can pack. Exits
non-zero with the compiler log on any error.

It also compiles the kernels ``needle.compile`` generates for the fusion groups of the
compile tests' models (tests/test_compile.py, opt levels 2 and 3): each model trains on the
CPU with a generator that records every group's CUDA source (needle/compiler/codegen).

Usage: python tools/check_cuda_kernels.py [--arch 80 --arch 90] [--resources] [--no-generated]
  --resources     print registers / shared memory / spills of each kernel (ptxas -v)
  --no-generated  skip the generated kernels
"""
import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from needle.backend_ndarray.cuda import compiler, kernels, nvrtc  # noqa: E402

_SYMBOL = re.compile(rb"^needle_\w+$")


def cubin_kernels(cubin):
    """Names of the needle_* symbols in a cubin (the ELF string tables)."""
    return {s.decode() for s in cubin.split(b"\0") if _SYMBOL.match(s)}


def check(filename, arch, resources):
    """Compile one file for one arch; returns a list of error strings."""
    start = time.perf_counter()
    try:
        cubin, params, log = compiler.compile_file(
            filename, arch, ["--ptxas-options=-v"] if resources else [])
    except (nvrtc.NvrtcError, ValueError) as e:  # ValueError: a parameter launch.py cannot pack
        return [f"{filename} sm_{arch}: {e}"]
    took = time.perf_counter() - start
    errors = []
    found, listed = cubin_kernels(cubin), set(kernels.ENTRY_POINTS[filename])
    for name in sorted(listed - found):
        errors.append(f"{filename} sm_{arch}: entry point {name} is listed in kernels.py "
                      "but not defined by the source")
    for name in sorted(found - listed):
        errors.append(f"{filename} sm_{arch}: kernel {name} is not listed in kernels.py")
    for name in sorted((listed & found) - set(params)):
        errors.append(f"{filename} sm_{arch}: no .entry parameter list for {name} in the PTX")
    warnings = [l for l in log.splitlines() if "warning" in l.lower()]
    print(f"ok   {filename:16s} sm_{arch}  {len(found):3d} kernels  {len(cubin) / 1024:7.1f} KiB"
          f"  {took:5.1f} s" if not errors else f"FAIL {filename} sm_{arch}")
    for w in warnings:
        print(f"     {w}")
    if resources:
        _print_resources(log)
    return errors


def generated_sources():
    """``{kernel name: CUDA source}`` of every fusion group of the compile tests' models,
    with the strides their inputs have in a run (recorded on the CPU)."""
    import numpy as np

    import needle
    from needle.compiler.codegen.cuda import recording_generator
    from needle.compiler.executor import Executor

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import test_compile
    from helpers import training_step

    sources, cpu = {}, needle.cpu()
    for make in test_compile.MODELS:
        for level in (2, 3):
            np.random.seed(0)
            model, opt, loss_fn, batches = make(cpu, np.random.default_rng(0))
            step = needle.compile(training_step(model, opt, loss_fn), opt_level=level)
            for x, y in batches[:3]:  # two traces, then a replay
                step(x, y)
            (entry,) = step._entries.values()
            ex = Executor(entry.graph, cpu, fused_kernels=level >= 3,
                          generator=recording_generator(sources))
            x, y = batches[3]
            program = entry.program
            ex(*program.bind([x, y], program.read_slots(), entry.state))
    return sources


def check_generated(arch, sources):
    errors = []
    start = time.perf_counter()
    for name, text in sources.items():
        try:
            cubin, params, _ = compiler.compile_file(f"{name}.cu", arch,
                                                     compiler.GENERATED_OPTIONS, text)
        except (nvrtc.NvrtcError, ValueError) as e:
            errors.append(f"generated {name} sm_{arch}: {e}\n{text}")
            continue
        if name not in cubin_kernels(cubin) or name not in params:
            errors.append(f"generated {name} sm_{arch}: the entry point is missing")
    print(f"{'ok  ' if not errors else 'FAIL'} {len(sources):3d} generated kernels   sm_{arch}"
          f"  {time.perf_counter() - start:5.1f} s")
    return errors


def _print_resources(log):
    """ptxas -v prints 'Compiling entry function X' then 'Used N registers, ...' lines."""
    name = None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
        elif name and ("spill" in line or "Used" in line):
            print(f"     {name}: {line.split(':', 1)[-1].strip()}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", action="append", help="compute capability, e.g. 90 (repeatable)")
    parser.add_argument("--resources", action="store_true", help="print ptxas resource usage")
    parser.add_argument("--no-generated", action="store_true",
                        help="skip the kernels needle.compile generates")
    args = parser.parse_args(argv)
    try:
        major, minor = nvrtc.version()
    except nvrtc.NvrtcError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"NVRTC {major}.{minor} from {nvrtc.library()._needle_path}")
    errors = []
    sources = {} if args.no_generated else generated_sources()
    for arch in args.arch or ["80", "90"]:
        for filename in kernels.ENTRY_POINTS:
            errors += check(filename, arch, args.resources)
        if sources:
            errors += check_generated(arch, sources)
    on_disk = {p.name for p in compiler.KERNEL_DIR.glob("*.cu")}
    for name in sorted(on_disk - set(kernels.ENTRY_POINTS)):
        errors.append(f"{name} is a kernel source that kernels.py does not list")
    if errors:
        print("\n".join(["", "CUDA kernel check FAILED:"] + errors), file=sys.stderr)
        return 1
    print("all CUDA kernels compile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
