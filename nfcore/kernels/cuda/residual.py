"""CUDA twins of ``nfcore.kernels.cpu.residual``: one thread per element."""

import sys

from numba import cuda

from .. import _rows
from .._scalar import for_cuda

act2_element = for_cuda(_rows.act2_element)
lipswish_dbeta_element = for_cuda(_rows.lipswish_dbeta_element)

__all__ = ["act2", "lipswish_dbeta", "scale_rows", "rowdot_acc"]

_pkg = sys.modules[__package__]


@cuda.jit(cache=True)
def _act2_kernel(h, code, beta, a, d1, d2):
    t = cuda.grid(1)
    m = h.shape[1]
    if t < h.shape[0] * m:
        act2_element(h, code, beta, a, d1, d2, t // m, t % m)


def act2(h, code, beta, a, d1, d2):
    """a = phi(h), d1 = phi'(h), d2 = phi''(h) (see the CPU twin)."""
    _act2_kernel[_pkg._grid(h.size)](h, code, beta, a, d1, d2)


@cuda.jit(cache=True)
def _lipswish_dbeta_kernel(h, beta, p, q):
    t = cuda.grid(1)
    m = h.shape[1]
    if t < h.shape[0] * m:
        lipswish_dbeta_element(h, beta, p, q, t // m, t % m)


def lipswish_dbeta(h, beta, p, q):
    """p = d phi/d beta, q = d phi'/d beta of LipSwish (see the CPU twin)."""
    _lipswish_dbeta_kernel[_pkg._grid(h.size)](h, beta, p, q)


@cuda.jit(cache=True)
def _scale_rows_kernel(a, s, out):
    t = cuda.grid(1)
    m = a.shape[1]
    if t < a.shape[0] * m:
        i = t // m
        out[i, t - i * m] = s[i] * a[i, t - i * m]


def scale_rows(a, s, out):
    """out[n, :] = s[n] * a[n, :]."""
    _scale_rows_kernel[_pkg._grid(a.size)](a, s, out)


@cuda.jit(cache=True)
def _rowdot_kernel(a, b, c, out):
    i = cuda.grid(1)
    if i < a.shape[0]:
        acc = 0.0
        for j in range(a.shape[1]):
            acc += a[i, j] * b[i, j]
        out[i] += c * acc


def rowdot_acc(a, b, c, out):
    """out[n] += c * sum_j a[n, j] b[n, j]."""
    _rowdot_kernel[_pkg._grid(a.shape[0])](a, b, c, out)
