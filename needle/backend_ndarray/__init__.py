"""Arrays on devices: NDArray views, the device registry and the backend contract."""
from .contract import (ACTIVATIONS, BINARY_OPS, FUSED_OPS, LAYER_OPS, LINEAR_ACTIVATIONS,
                       REDUCE_OPS, UNARY_OPS, Backend, Declined)
from .device import (Device, all_devices, canonical_dtype, cpu, cuda, cudnn, default_device,
                     device, webgpu)
from .ndarray import (NDArray, broadcast_shapes, compact_strides, concatenate, empty,
                      full, prod, split, stack)
