"""CUDA mixture-of-Gaussians ops: one thread per row, running the CPU twin's row bodies."""


import numpy as np
from numba import cuda, float64

from .. import launch as _launch
from .._scalar import device_maths
from ..registry import cuda_op
from . import math as _maths

_maths = device_maths(_maths)



#: most mixture components a thread's local scratch holds
MAX_COMPONENTS = 32


@cuda.jit(cache=True)
def _logprob_kernel(z, h, ncomp, bound, out):
    i = cuda.grid(1)
    if i < z.shape[0]:
        a = cuda.local.array(MAX_COMPONENTS, float64)
        _maths.mog_logprob_row(z, h, ncomp, bound, out, a, i)


@cuda.jit(cache=True)
def _bwd_kernel(dlp, z, h, ncomp, bound, dz, dh):
    i = cuda.grid(1)
    if i < z.shape[0]:
        a = cuda.local.array(MAX_COMPONENTS, float64)
        _maths.mog_logprob_bwd_row(dlp, z, h, ncomp, bound, dz, dh, a, i)


@cuda.jit(cache=True)
def _sample_kernel(h, ncomp, bound, unif, eps, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        _maths.mog_sample_row(h, ncomp, bound, unif, eps, out, i)


@cuda.jit(cache=True)
def _logsumexp_kernel(a, out, resp):
    j = cuda.grid(1)
    if j < a.shape[1]:
        _maths.logsumexp_column(a, out, resp, j)


def _check(ncomp):
    if ncomp > MAX_COMPONENTS:
        raise ValueError(f"the CUDA mixture kernels hold at most {MAX_COMPONENTS} components, got {ncomp}")


@cuda_op
def mog_logprob(z, h, ncomp, bound, out):
    """out[n] = sum_d log sum_c w_c N(z_nd; mu_c, s_c); h (N, 3 K D) as laid out in ``kernels.mixture._mog_terms``."""
    _check(ncomp)
    _logprob_kernel[_launch.grid(z.shape[0])](z, h, int(ncomp), np.dtype(z.dtype).type(bound), out)


@cuda_op
def mog_logprob_bwd(dlp, z, h, ncomp, bound, dz, dh):
    """VJP of mog_logprob: dz (its direct part) and dh, both written."""
    _check(ncomp)
    _bwd_kernel[_launch.grid(z.shape[0])](dlp, z, h, int(ncomp), np.dtype(z.dtype).type(bound), dz, dh)


@cuda_op
def mog_sample(h, ncomp, bound, unif, eps, out):
    """out[n, d] = mu_c + s_c eps[n, d] with c drawn from the weights by unif[n, d]."""
    _sample_kernel[_launch.grid(out.shape[0])](h, int(ncomp), np.dtype(out.dtype).type(bound), unif, eps, out)


@cuda_op
def logsumexp_cols(a, out, resp):
    """out[n] = log sum_k exp a[k, n] for a (K, N); resp[k, n] = exp(a[k, n] - out[n])."""
    _logsumexp_kernel[_launch.grid(a.shape[1])](a, out, resp)


def parity_cases(c):
    """The mixture ops' parity inputs (``nfcore.kernels.parity``): one and three components."""
    r, nan = c.r, c.nan
    n, d = c.n, c.d
    return {
        "mog_logprob": [(f"k={k}", [r(n, d), r(n, 3 * k * d), k, 2.0, nan(n)], [4]) for k in (1, 3)],
        "mog_logprob_bwd": [(f"k={k}", [r(n), r(n, d), r(n, 3 * k * d), k, 2.0, nan(n, d), nan(n, 3 * k * d)], [5, 6])
                            for k in (1, 3)],
        "mog_sample": [(f"k={k}", [r(n, 3 * k * d), k, 2.0, c.u(n, d), r(n, d), nan(n, d)], [5]) for k in (1, 3)],
        "logsumexp_cols": [(f"k={k}", [r(k, n, scale=3.0), nan(n), nan(k, n)], [1, 2]) for k in (1, 4)],
    }
