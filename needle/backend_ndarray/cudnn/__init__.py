"""The ``cudnn`` device (cuBLASLt matmul, cuDNN conv/attention/norms) is not built yet.

It exists so that ``needle.cudnn()`` is a device object like the others; it reports itself
unavailable, and ``needle.cuda()`` runs on the same GPUs with Needle's own kernels.
"""
from ..contract import Backend


class CudnnBackend(Backend):
    name = "cudnn"

    def unavailable_reason(self):
        return "the cudnn backend is not implemented yet; use needle.cuda() on NVIDIA GPUs"
