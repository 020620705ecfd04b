"""Where and with what a run happened: hardware, driver, library versions, date, commit.
Recorded in every output file. Nothing here imports a GPU library that is not already
loaded by the run, and every probe is allowed to fail (it then records None)."""
import datetime
import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
import sys

LIBRARIES = ("numpy", "torch", "triton", "jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin",
             "cupy-cuda13x", "cupy-cuda12x", "nvmath-python", "nvidia-cudnn-frontend", "wgpu",
             "matplotlib", "tqdm")


def _run(cmd, cwd=None):
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        name = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if name:
            return name
    return platform.processor() or platform.machine() or None


def gpus():
    """[{name, driver, memory}] from nvidia-smi; [] where there is none."""
    if not shutil.which("nvidia-smi"):
        return []
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader"])
    result = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            result.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return result


def git_commit():
    """``$NEEDLE_BENCH_COMMIT`` when set (a copied tree may carry a stale .git), else HEAD."""
    here = os.path.dirname(os.path.abspath(__file__))
    return (os.environ.get("NEEDLE_BENCH_COMMIT")
            or _run(["git", "rev-parse", "HEAD"], cwd=here) or None)


def versions():
    out = {"python": platform.python_version()}
    try:
        import needle
        out["needle"] = getattr(needle, "__version__", None)
    except ImportError:
        out["needle"] = None
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def torch_info():
    """CUDA/cuDNN versions as PyTorch sees them, if PyTorch is already imported."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    info = {"torch_cuda": torch.version.cuda, "torch_threads": torch.get_num_threads()}
    try:
        if torch.cuda.is_available():
            info["torch_gpu"] = torch.cuda.get_device_name(0)
            info["cudnn"] = torch.backends.cudnn.version()
    except Exception:  # a broken driver must not break the report
        pass
    return info


def needle_devices():
    try:
        import needle
    except ImportError:
        return {}
    out = {}
    for d in needle.all_devices():
        try:
            out[d.name] = "enabled" if d.enabled() else d.unavailable_reason()
        except Exception as e:  # a backend that fails to load must not break the report
            out[d.name] = f"{type(e).__name__}: {e}"
    return out


def collect(argv=None, settings=None):
    now = datetime.datetime.now().astimezone()
    gpu_list = gpus()
    meta = {
        "date": now.isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_list[0]["name"] if gpu_list else None,
        "gpus": gpu_list,
        "driver": gpu_list[0]["driver"] if gpu_list else None,
        "git_commit": git_commit(),
        "versions": versions(),
        "needle_devices": needle_devices(),
        "command": "needle-bench " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    meta.update(torch_info())
    if meta["gpu"] is None and meta.get("torch_gpu"):
        meta["gpu"] = meta["torch_gpu"]
    if settings is not None:
        meta["settings"] = settings
    return meta


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "host"


def default_out_dir(meta):
    """bench/out/<gpu-or-host>-<date-time>"""
    name = meta.get("gpu") or meta.get("host") or "host"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("bench", "out", f"{slug(name)}-{stamp}")


def one_line(meta):
    """A short summary for plot footers and the terminal."""
    v = meta.get("versions", {})
    libs = ", ".join(f"{k} {v[k]}" for k in ("needle", "torch", "jax", "numpy") if v.get(k))
    hw = f"GPU {meta['gpu']} (driver {meta['driver']})" if meta.get("gpu") else "no GPU"
    commit = (meta.get("git_commit") or "unknown")[:10]
    return f"{hw} | CPU {meta.get('cpu')} x{meta.get('cpu_count')} | {libs} | " \
           f"{meta.get('date')} | commit {commit}"
