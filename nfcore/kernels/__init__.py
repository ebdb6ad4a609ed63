"""nfcore's op API: kernels organised by family, and the two backends built from them.

Each family (``dense``, ``elementwise``, ``coupling``, ``autoregressive``, ``image``,
``residual``, ``mixture``, ``batchnorm``, ``adam``, ``array``) is a package holding its element
maths with their derivatives (plain ``@njit`` functions, written once), its CPU loops, and in
``<family>/cuda.py`` its CUDA launches, which call the same element maths. Ops are recorded by
name and backend where they are defined (``registry.cpu_op`` / ``registry.cuda_op``).

Layer code asks ``backend_of(array)`` for the backend that owns an array and calls its ops
(``matmul``, ``bias_act``, ``affine_map``, ...). Both backends expose the same ops
with the same signatures: inputs first, preallocated outputs last, in place. The CUDA modules
are imported only when a device array (or ``get_backend("cuda")``) asks for them, so
``import nfcore`` never touches a GPU.
"""

import numpy as np

from ..errors import DeviceError

__all__ = ["backend_of", "get_backend", "is_device_array", "cuda_available", "cpu"]


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


_cuda = None


def get_backend(device):
    """The backend for ``"cpu"`` or ``"cuda"``."""
    global _cuda
    if device == "cpu":
        return cpu
    if device == "cuda":
        if not cuda_available():
            raise DeviceError(
                "device 'cuda' was asked for but numba.cuda finds no GPU; "
                "use device='cpu', or set NUMBA_ENABLE_CUDASIM=1 before importing numba to simulate"
            )
        if _cuda is None:
            _cuda = registry.build("cuda")
        return _cuda
    raise DeviceError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")


def backend_of(a):
    """The backend that owns array ``a``."""
    if is_device_array(a):
        return get_backend("cuda")
    return cpu


from . import registry  # noqa: E402  (the families import is_device_array from here)

#: the CPU backend: every CPU op of every family
cpu = registry.build("cpu")
