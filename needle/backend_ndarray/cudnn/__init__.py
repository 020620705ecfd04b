"""The ``cudnn`` device: the cuda device's buffers and kernels, with matmul on cuBLASLt and
convolution and attention on cuDNN (see backend.py)."""
from .backend import CudnnBackend

__all__ = ["CudnnBackend"]
