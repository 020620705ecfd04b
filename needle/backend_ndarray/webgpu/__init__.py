"""needle.webgpu(): WGSL kernels through wgpu (Metal, Vulkan, DX12). Importing this package
needs no wgpu; the backend says why it cannot run when wgpu or an adapter is missing."""
from .backend import WebGPUBackend
from .context import DeviceLimitError

__all__ = ["WebGPUBackend", "DeviceLimitError"]
