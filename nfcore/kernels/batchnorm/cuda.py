"""CUDA batch-norm ops: one thread per column, running the CPU twin's column bodies
(``batchnorm.math``). Columns are independent, so nothing is shared between threads."""


import numpy as np
from numba import cuda

from .. import launch as _launch
from .._scalar import device_maths
from ..registry import cuda_op
from . import math as _maths

_maths = device_maths(_maths)



@cuda.jit(cache=True)
def _mean_var_kernel(x, mean, var):
    j = cuda.grid(1)
    if j < x.shape[1]:
        _maths.mean_var_column(x, mean, var, j)


@cuda.jit(cache=True)
def _coeffs_kernel(mean, var, log_gamma, beta, eps, logscale, loc):
    j = cuda.grid(1)
    if j < mean.shape[0]:
        _maths.batchnorm_coeffs_element(mean, var, log_gamma, beta, eps, logscale, loc, j)


@cuda.jit(cache=True)
def _bwd_kernel(dout, dlogdet, y, mean, var, log_gamma, eps, batch_stats, sign, din, dlog_gamma, dbeta):
    j = cuda.grid(1)
    if j < dout.shape[1]:
        g = 0.0
        for i in range(dlogdet.shape[0]):  # each column's thread sums the log-det cotangent itself
            g += dlogdet[i]
        _maths.batchnorm_column_bwd(dout, g, y, mean, var, log_gamma, eps, batch_stats, sign, din, dlog_gamma, dbeta, j)


@cuda_op
def col_mean_var(x, mean, var):
    """mean[j], var[j] = the mean and biased variance of column j of x (N, D), two-pass."""
    _mean_var_kernel[_launch.grid(x.shape[1])](x, mean, var)


@cuda_op
def batchnorm_coeffs(mean, var, log_gamma, beta, eps, logscale, loc):
    """logscale = lg - 0.5 log(var + eps); loc = beta - mean * exp(logscale) (the diag_affine form)."""
    _coeffs_kernel[_launch.grid(mean.shape[0])](mean, var, log_gamma, beta, np.dtype(mean.dtype).type(eps), logscale,
                                               loc)


@cuda_op
def batchnorm_bwd(dout, dlogdet, y, mean, var, log_gamma, eps, batch_stats, sign, din, dlog_gamma, dbeta):
    """VJP of the batch-norm map (see ``_maths.batchnorm_column_bwd``); accumulates dlog_gamma, dbeta."""
    _bwd_kernel[_launch.grid(dout.shape[1])](dout, dlogdet, y, mean, var, log_gamma, np.dtype(dout.dtype).type(eps),
                                           int(batch_stats), int(sign), din, dlog_gamma, dbeta)


def parity_cases(c):
    """The batch-norm ops' parity inputs (``nfcore.kernels.parity``): moments over several chunks
    and over two rows; the backward with batch statistics (both directions) and running ones."""
    r, nan, s = c.r, c.nan, c.s
    n, d = c.n, c.d
    return {
        "col_mean_var": [(f"rows={rows}", [r(rows, d), nan(d), nan(d)], [1, 2]) for rows in (s.rows, 2)],
        "batchnorm_coeffs": [("", [r(d), np.abs(r(d)) + 0.1, r(d), r(d), 1e-5, nan(d), nan(d)], [5, 6])],
        "batchnorm_bwd": [
            (f"batch={bs},sign={sg}",
             [r(n, d), r(n), r(n, d), r(d), np.abs(r(d)) + 0.1, r(d), 1e-5, bs, sg, nan(n, d), r(d), r(d)],
             [9, 10, 11])
            for bs, sg in ((1, 1), (0, 1), (0, -1))],
    }
