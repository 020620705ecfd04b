"""Finding a WebGPU adapter and opening a device on it, with the limits Needle relies on.

Nothing here runs at import: ``wgpu`` itself is imported by :func:`open_context`, so Needle
imports (and reports why the device is unavailable) on machines without it.
"""
import os
from dataclasses import dataclass

from ...errors import NeedleError


class DeviceLimitError(NeedleError, ValueError):
    """A tensor or a launch is larger than this adapter allows."""


class Unavailable(Exception):
    """Why no WebGPU device could be opened (a sentence for ``unavailable_reason``)."""


@dataclass(frozen=True)
class Limits:
    """The adapter limits the kernels and the host-side splitting depend on (bytes)."""
    max_buffer: int          # largest buffer
    max_binding: int         # largest storage-buffer binding (a window of a buffer)
    storage_align: int       # binding offsets are multiples of this
    uniform_align: int
    max_groups: int          # workgroups per dispatch dimension
    max_storage_buffers: int
    max_workgroup_storage: int
    max_invocations: int


class Context:
    """An open wgpu device, its queue, its limits and whether kernels may use subgroups."""

    def __init__(self, wgpu, adapter, device, subgroups, limits):
        self.wgpu, self.adapter, self.device = wgpu, adapter, device
        self.queue = device.queue
        self.subgroups = subgroups
        self.limits = limits

    def info(self):
        """The adapter as a plain dict: name, vendor, backend (Metal/Vulkan/D3D12), ..."""
        info = self.adapter.info
        return {
            "name": info.get("device", ""),
            "vendor": info.get("vendor", ""),
            "backend": info.get("backend_type", ""),
            "adapter_type": info.get("adapter_type", ""),
            "architecture": info.get("architecture", ""),
            "description": info.get("description", ""),
            "vendor_id": info.get("vendor_id", 0),
            "device_id": info.get("device_id", 0),
            "subgroups": self.subgroups,
            "features": sorted(str(f) for f in self.device.features),
            "limits": dict(vars(self.limits)),
            "wgpu_version": getattr(self.wgpu, "__version__", "unknown"),
        }


def _choose_adapter(wgpu, name):
    if name:  # e.g. NEEDLE_WEBGPU_ADAPTER=llvmpipe to pick one of several
        adapters = wgpu.gpu.enumerate_adapters_sync()
        for adapter in adapters:
            if name.lower() in adapter.info.get("device", "").lower():
                return adapter
        found = ", ".join(repr(a.info.get("device", "?")) for a in adapters) or "none"
        raise Unavailable(f"no WebGPU adapter named like {name!r} (found: {found})")
    try:
        adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    except Exception as e:  # wgpu raises when no Vulkan/Metal/DX12 driver is present
        raise Unavailable(f"no WebGPU adapter found ({e})") from e
    if adapter is None:
        raise Unavailable("no WebGPU adapter found (wgpu returned none; is a Vulkan, "
                          "Metal or DX12 driver installed? on Linux without a GPU: "
                          "apt-get install mesa-vulkan-drivers)")
    return adapter


def open_context(adapter_name=None, subgroups=None, max_binding=None):
    """Open the device. Raises :class:`Unavailable` saying why not.

    Args:
        adapter_name: substring of the adapter's name (default: env NEEDLE_WEBGPU_ADAPTER,
            else wgpu's high-performance adapter).
        subgroups: use subgroup operations if the adapter has them (default: yes, unless
            env NEEDLE_WEBGPU_SUBGROUPS=0).
        max_binding: cap on the storage binding size in bytes (tests use a small one to
            exercise the splitting of large tensors).
    """
    try:
        import wgpu
    except ImportError as e:
        raise Unavailable("the wgpu package is not installed") from e
    adapter = _choose_adapter(wgpu, adapter_name or os.environ.get("NEEDLE_WEBGPU_ADAPTER"))
    if subgroups is None:
        subgroups = os.environ.get("NEEDLE_WEBGPU_SUBGROUPS", "1") != "0"
    subgroups = subgroups and "subgroup" in adapter.features
    try:
        # no required_limits: wgpu then asks for everything the adapter offers
        device = adapter.request_device_sync(
            label="needle", required_features=["subgroup"] if subgroups else [])
    except Exception as e:
        raise Unavailable(f"the WebGPU adapter {adapter.info.get('device', '?')!r} "
                          f"refused to open a device ({e})") from e
    lim = device.limits
    binding = lim["max-storage-buffer-binding-size"]
    limits = Limits(
        max_buffer=lim["max-buffer-size"],
        max_binding=min(binding, max_binding) if max_binding else binding,
        storage_align=lim["min-storage-buffer-offset-alignment"],
        uniform_align=lim["min-uniform-buffer-offset-alignment"],
        max_groups=lim["max-compute-workgroups-per-dimension"],
        max_storage_buffers=lim["max-storage-buffers-per-shader-stage"],
        max_workgroup_storage=lim["max-compute-workgroup-storage-size"],
        max_invocations=lim["max-compute-invocations-per-workgroup"],
    )
    return Context(wgpu, adapter, device, subgroups, limits)
