"""The ``cuda`` device: Needle's own CUDA C++ kernels, compiled at run time with NVRTC.

CuPy provides device memory, streams and module loading; kernels launch through the CUDA
driver directly (``launch.py``), and every arithmetic operation of this device is one of
our kernels in ``kernels/*.cu``. Importing this package never imports CuPy or compiles
anything: ``CudaBackend().unavailable_reason()`` says whether this machine can run it.
"""
from .backend import CudaBackend

__all__ = ["CudaBackend"]
