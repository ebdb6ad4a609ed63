"""Arrays on the CPU: allocation (through the caching pool of ``memory``), transfer, views and
in-place updates. Every op here has a CUDA twin of the same name in ``array.cuda``."""

import numpy as np

from ..registry import cpu_op
from .memory import pooled_empty


@cpu_op
def empty(shape, dtype):
    return pooled_empty(shape, dtype)


@cpu_op
def zeros(shape, dtype):
    a = pooled_empty(shape, dtype)
    a.fill(0)
    return a


@cpu_op
def asarray(a, dtype=None):
    """A C-contiguous host array (no copy when it already is one)."""
    return np.ascontiguousarray(a, dtype=dtype)


@cpu_op
def to_host(a):
    return np.asarray(a)


@cpu_op
def fill(a, value):
    a[...] = value


@cpu_op
def copy(a):
    return a.copy()


@cpu_op
def reshape(a, shape):
    return a.reshape(shape)


@cpu_op
def iadd(a, b):
    """a += b (same shape)."""
    a += b


@cpu_op
def add_scalar(a, c):
    """a += c (a Python float)."""
    a += c


@cpu_op
def axpy(alpha, x, y):
    """y += alpha * x."""
    y += alpha * x
