"""Arrays on a CUDA device: allocation, host <-> device transfer, views and element-wise
updates over flat views; the twins of ``array`` (``nfcore.kernels.array``).

Host <-> device copies happen only where the API says so: ``asarray`` of a host array,
``to_host``, and the single float that ``total`` and ``sumsq`` return.
"""

import numpy as np
from numba import cuda

from ...errors import ShapeError
from .. import is_device_array
from .. import launch as _launch
from ..registry import cuda_op

# -- allocation and transfer -----------------------------------------------------------------


@cuda_op
def empty(shape, dtype):
    """An uninitialised device array."""
    return cuda.device_array(shape, dtype=np.dtype(dtype))


@cuda_op
def zeros(shape, dtype):
    """A device array of zeros (filled on the device: no host buffer is copied)."""
    a = empty(shape, dtype)
    fill(a, 0)
    return a


@cuda_op
def asarray(a, dtype=None):
    """A device array: a host array is copied over (C-contiguous), a device array is returned as is.

    A device array of another ``dtype`` than asked is converted through the host (rare: layers
    never change dtype).
    """
    if is_device_array(a):
        if dtype is None or np.dtype(dtype) == np.dtype(a.dtype):
            return a
        return cuda.to_device(np.ascontiguousarray(a.copy_to_host(), dtype=dtype))
    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


@cuda_op
def to_host(a):
    """A numpy array with the contents of ``a`` (a copy for a device array)."""
    if is_device_array(a):
        return a.copy_to_host()
    return np.asarray(a)


@cuda_op
def copy(a):
    """A new device array with the contents of ``a`` (device-to-device copy)."""
    out = cuda.device_array(a.shape, dtype=a.dtype)
    out.copy_to_device(a)
    return out


@cuda_op
def reshape(a, shape):
    """A view of the contiguous device array ``a`` with a new shape (one entry may be -1)."""
    return a.reshape(shape)


# -- element-wise updates over flat views ----------------------------------------------------


@cuda.jit(cache=True)
def _fill_kernel(a, value):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] = value


@cuda.jit(cache=True)
def _iadd_kernel(a, b):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] += b[i]


@cuda.jit(cache=True)
def _add_scalar_kernel(a, c):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] += c


@cuda.jit(cache=True)
def _axpy_kernel(alpha, x, y):
    i = cuda.grid(1)
    if i < y.shape[0]:
        y[i] += alpha * x[i]


def _scalar(a, c):
    # numpy treats a Python scalar as "weak" (a float32 array stays float32): do the same
    return np.dtype(a.dtype).type(c)


@cuda_op
def fill(a, value):
    """a[...] = value."""
    f = _launch.flat(a)
    _fill_kernel[_launch.grid(f.shape[0])](f, _scalar(a, value))


@cuda_op
def iadd(a, b):
    """a += b (same shape)."""
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeError(f"iadd expects equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    fa = _launch.flat(a)
    _iadd_kernel[_launch.grid(fa.shape[0])](fa, _launch.flat(b))


@cuda_op
def add_scalar(a, c):
    """a += c (a Python float)."""
    f = _launch.flat(a)
    _add_scalar_kernel[_launch.grid(f.shape[0])](f, _scalar(a, c))


@cuda_op
def axpy(alpha, x, y):
    """y += alpha * x."""
    if tuple(x.shape) != tuple(y.shape):
        raise ShapeError(f"axpy expects equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    fy = _launch.flat(y)
    _axpy_kernel[_launch.grid(fy.shape[0])](_scalar(y, alpha), _launch.flat(x), fy)


def parity_cases(c):
    """The element-wise array ops' parity inputs (``nfcore.kernels.parity``); allocation, transfer
    and views are checked by the parity script's runs of them instead."""
    r, n, d, flat = c.r, c.n, c.d, c.s.flat
    return {
        "fill": [("", [r(n, d), 0.25], [0])],
        "iadd": [("", [r(n, d), r(n, d)], [0])],
        "add_scalar": [("", [r(flat), -0.75], [0])],
        "axpy": [("", [-0.3, r(n, d), r(n, d)], [2])],
    }
