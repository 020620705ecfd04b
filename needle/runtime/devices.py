"""What each Needle device can do on this machine: ``needle.runtime.capabilities(device=None)``
(the command line is :mod:`needle.runtime.capabilities`).

    python -m needle.runtime.capabilities            # a table on the terminal
    python -m needle.runtime.capabilities --markdown # docs/capabilities.md's text

Per device: whether its code is in this install (always), whether it is available here
(and why not), what it computes on, its memory statistics, whether it synchronises and
profiles with device events, whether a compiled call replays as one recorded graph (or one
submission), its dtypes, and the fused and layer ops its backend implements itself (the
rest the ops layer composes).
"""
import argparse
import platform
import sys
import time

from ..backend_ndarray.contract import FOREACH_OPS, FUSED_OPS, LAYER_OPS
from ..backend_ndarray.device import all_devices, device as device_named

def _compute(dev):
    backend = dev.backend
    if dev.name == "cpu":
        return f"NumPy on {platform.processor() or platform.machine()}"
    info = getattr(backend, "adapter_info", None)
    if info is not None:
        a = info()
        return f"{a.get('device') or a.get('name', '?')} through {a.get('backend', '?')}"
    rt = getattr(backend, "rt", None)
    if rt is not None:
        return f"CUDA sm_{rt.arch}, {rt.sm_count} SMs"
    return type(backend).__name__


def capabilities(device=None):
    """``{device name: {...}}`` for every device (or the one given), each with ``built``,
    ``available``, ``reason`` (why not, with the install command), and where available
    ``compute``, ``memory`` (the allocator's statistics, or None where Needle does not
    manage the memory), ``sync``, ``profiling`` (device events), ``graph_replay``,
    ``dtypes``, ``fused_ops`` and ``layer_ops``."""
    devices = [device if not isinstance(device, str) else device_named(device)] \
        if device is not None else all_devices()
    out = {}
    for dev in devices:
        reason = dev.unavailable_reason()
        # (built: the device's package is part of every install; what it may lack is its
        # extra, which ``reason`` names with the install command)
        entry = {"built": True, "available": reason is None, "reason": reason}
        if reason is None:
            backend = dev.backend
            try:
                memory = dev.memory_stats()
            except NotImplementedError:
                memory = None
            entry.update(
                compute=_compute(dev), memory=memory, sync=hasattr(backend, "synchronize"),
                profiling="CUDA events" if hasattr(backend, "rt") else "host clock",
                graph_replay=("one CUDA graph per call" if getattr(backend, "records_graphs",
                                                                  False)
                              else "one submission per call" if dev.name == "webgpu"
                              else "op by op"),
                dtypes=list(backend.dtypes),
                fused_ops=[op for op in FUSED_OPS + FOREACH_OPS if backend.supports(op)],
                layer_ops=[op for op in LAYER_OPS if backend.supports(op)])
        out[dev.name] = entry
    return out


def markdown(caps=None):
    """The capability matrix as the Markdown of docs/capabilities.md, saying where and when
    it was made."""
    caps = caps if caps is not None else capabilities()
    lines = ["# Capabilities of Needle's devices", "",
             f"Made by `python -m needle.runtime.capabilities --markdown` on "
             f"{platform.node() or 'this machine'} ({platform.machine()}, Python "
             f"{platform.python_version()}), {time.strftime('%Y-%m-%d')}. A device that is "
             f"not available here says why; run the command on your machine for its own "
             f"table.", "",
             "| device | available | compute | graph replay | profiling | dtypes | fused ops "
             "| layer ops |", "|---|---|---|---|---|---|---|---|"]
    for name, c in caps.items():
        if not c["available"]:
            lines.append(f"| `{name}` | no: {c['reason']} | | | | | | |")
            continue
        lines.append(f"| `{name}` | yes | {c['compute']} | {c['graph_replay']} | "
                     f"{c['profiling']} | {', '.join(c['dtypes'])} | "
                     f"{', '.join(c['fused_ops']) or '-'} | {', '.join(c['layer_ops']) or '-'} |")
    lines += ["", "Ops a device does not implement itself are composed by the ops layer from "
              "the ones it does, on that device (never silently moved to another).", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m needle.runtime.capabilities",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true",
                        help="print docs/capabilities.md's Markdown")
    args = parser.parse_args(argv)
    caps = capabilities()
    if args.markdown:
        sys.stdout.write(markdown(caps))
        return 0
    for name, c in caps.items():
        if not c["available"]:
            print(f"{name:8} unavailable: {c['reason']}")
            continue
        print(f"{name:8} {c['compute']}; {c['graph_replay']}; dtypes {', '.join(c['dtypes'])}")
        print(f"{'':8} fused: {', '.join(c['fused_ops']) or '-'}")
        print(f"{'':8} layers: {', '.join(c['layer_ops']) or '-'}")
    return 0

