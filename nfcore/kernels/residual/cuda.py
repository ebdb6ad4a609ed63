"""CUDA twins of the residual ops (``nfcore.kernels.residual``): one thread per element."""


from numba import cuda

from .. import launch as _launch
from .._scalar import device_maths
from ..registry import cuda_op
from . import math as _maths

_maths = device_maths(_maths)



@cuda.jit(cache=True)
def _act2_kernel(h, code, beta, a, d1, d2):
    t = cuda.grid(1)
    if t < h.size:
        i, j = t // h.shape[1], t % h.shape[1]
        _maths.act2_element(h, code, beta, a, d1, d2, i, j)


@cuda_op
def act2(h, code, beta, a, d1, d2):
    """a = phi(h), d1 = phi'(h), d2 = phi''(h) (see the CPU twin)."""
    _act2_kernel[_launch.grid(h.size)](h, code, beta, a, d1, d2)


@cuda.jit(cache=True)
def _lipswish_dbeta_kernel(h, beta, p, q):
    t = cuda.grid(1)
    if t < h.size:
        i, j = t // h.shape[1], t % h.shape[1]
        _maths.lipswish_dbeta_element(h, beta, p, q, i, j)


@cuda_op
def lipswish_dbeta(h, beta, p, q):
    """p = d phi/d beta, q = d phi'/d beta of LipSwish (see the CPU twin)."""
    _lipswish_dbeta_kernel[_launch.grid(h.size)](h, beta, p, q)


@cuda.jit(cache=True)
def _scale_rows_kernel(a, s, out):
    t = cuda.grid(1)
    if t < a.size:
        i, j = t // a.shape[1], t % a.shape[1]
        out[i, j] = s[i] * a[i, j]


@cuda_op
def scale_rows(a, s, out):
    """out[n, :] = s[n] * a[n, :]."""
    _scale_rows_kernel[_launch.grid(a.size)](a, s, out)


@cuda.jit(cache=True)
def _rowdot_kernel(a, b, c, out):
    i = cuda.grid(1)
    if i < a.shape[0]:
        acc = 0.0
        for j in range(a.shape[1]):
            acc += a[i, j] * b[i, j]
        out[i] += c * acc


@cuda_op
def rowdot_acc(a, b, c, out):
    """out[n] += c * sum_j a[n, j] b[n, j]."""
    _rowdot_kernel[_launch.grid(a.shape[0])](a, b, c, out)


def parity_cases(c):
    """The residual ops' parity inputs (``nfcore.kernels.parity``): both smooth activations."""
    r, nan = c.r, c.nan
    n, d = c.n, c.d
    return {
        "act2": [(f"code={code}", [r(n, d, scale=2.0), code, r(d, scale=1.5), nan(n, d), nan(n, d), nan(n, d)],
                  [3, 4, 5]) for code in (4, 6)],
        "lipswish_dbeta": [("", [r(n, d, scale=2.0), r(d, scale=1.5), nan(n, d), nan(n, d)], [2, 3])],
        "scale_rows": [("", [r(n, d), r(n), nan(n, d)], [2])],
        "rowdot_acc": [("", [r(n, d), r(n, d), -0.7, r(n)], [3])],
    }
