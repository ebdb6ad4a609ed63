"""CPU mixture-of-Gaussians ops for the autoregressive prior (the row bodies first, then the loops)."""

import math

import numpy as np

from ..registry import cpu_kernel
from .math import logsumexp_column, mog_logprob_bwd_row, mog_logprob_row, mog_sample_row

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@cpu_kernel
def mog_logprob(z, h, ncomp, bound, out):
    """out[n] = sum_d log sum_c w_c N(z_nd; mu_c, s_c); h (N, 3 K D) as laid out in ``_mog_terms``."""
    a = np.empty(ncomp)
    for i in range(z.shape[0]):
        mog_logprob_row(z, h, ncomp, bound, out, a, i)


@cpu_kernel
def mog_logprob_bwd(dlp, z, h, ncomp, bound, dz, dh):
    """VJP of mog_logprob: dz (its direct part) and dh, both written."""
    a = np.empty(ncomp)
    for i in range(z.shape[0]):
        mog_logprob_bwd_row(dlp, z, h, ncomp, bound, dz, dh, a, i)


@cpu_kernel
def mog_sample(h, ncomp, bound, unif, eps, out):
    """out[n, d] = mu_c + s_c eps[n, d] with c drawn from the weights by unif[n, d]."""
    for i in range(out.shape[0]):
        mog_sample_row(h, ncomp, bound, unif, eps, out, i)


@cpu_kernel
def logsumexp_cols(a, out, resp):
    """out[n] = log sum_k exp a[k, n] for a (K, N); resp[k, n] = exp(a[k, n] - out[n]) (a mixture's
    responsibilities when a[k] holds log w_k + log p_k)."""
    for j in range(a.shape[1]):
        logsumexp_column(a, out, resp, j)
