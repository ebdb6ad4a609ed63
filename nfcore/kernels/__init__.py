"""nfcore's op API and its two backends.

Layer code asks ``backend_of(array)`` for the module that owns an array and calls its ops
(``matmul``, ``bias_act``, ``affine_coupling_fwd``, ...). Both backends expose the same
functions with the same signatures: inputs first, preallocated outputs last, in place.
The CUDA backend is imported only when a device array (or ``get_backend("cuda")``) asks
for it, so ``import nfcore`` never touches a GPU.
"""

import numpy as np

from ..errors import DeviceError
from . import cpu

__all__ = ["backend_of", "get_backend", "is_device_array", "cuda_available"]


def is_device_array(a):
    """True for a CUDA device array (real or simulated), False for host arrays."""
    if isinstance(a, np.ndarray):
        return False
    # the simulator's FakeCUDAArray has no __cuda_array_interface__, so look at the module too
    return hasattr(a, "__cuda_array_interface__") or type(a).__module__.startswith("numba.cuda")


def cuda_available():
    """True when numba.cuda finds a GPU or runs under NUMBA_ENABLE_CUDASIM=1."""
    try:
        from numba import cuda
    except Exception:  # numba-cuda missing or broken: no CUDA backend
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def get_backend(device):
    """The backend module for ``"cpu"`` or ``"cuda"``."""
    if device == "cpu":
        return cpu
    if device == "cuda":
        if not cuda_available():
            raise DeviceError(
                "device 'cuda' was asked for but numba.cuda finds no GPU; "
                "use device='cpu', or set NUMBA_ENABLE_CUDASIM=1 before importing numba to simulate"
            )
        from . import cuda as cuda_backend

        return cuda_backend
    raise DeviceError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")


def backend_of(a):
    """The backend that owns array ``a``."""
    if is_device_array(a):
        return get_backend("cuda")
    return cpu
