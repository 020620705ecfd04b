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

Usage: python tools/check_cuda_kernels.py [--arch 80 --arch 90] [--resources]
  --resources  print registers / shared memory / spills of each kernel (ptxas -v)
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
    args = parser.parse_args(argv)
    try:
        major, minor = nvrtc.version()
    except nvrtc.NvrtcError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"NVRTC {major}.{minor} from {nvrtc.library()._needle_path}")
    errors = []
    for arch in args.arch or ["80", "90"]:
        for filename in kernels.ENTRY_POINTS:
            errors += check(filename, arch, args.resources)
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
