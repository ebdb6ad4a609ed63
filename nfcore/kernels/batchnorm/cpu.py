"""CPU batch-norm ops (the MAF paper's batch-normalisation bijector), one column at a time.

Forward map, with m, v the batch's (training) or the running (evaluation) statistics and
s = sqrt(v + eps):  z = (x - m) / s * exp(lg) + b,  log|det| = sum_d (lg_d - log s_d).
The affine part itself runs through ``diag_affine`` with ``batchnorm_coeffs``'s
log-scale and shift; the VJP lives here because with batch statistics every sample's output
depends on every input.
"""



from ..registry import cpu_kernel
from .math import batchnorm_coeffs_element, batchnorm_column_bwd, mean_var_column


@cpu_kernel
def col_mean_var(x, mean, var):
    """mean[j], var[j] = the mean and biased variance of column j of x (N, D), two-pass."""
    for j in range(x.shape[1]):
        mean_var_column(x, mean, var, j)


@cpu_kernel
def batchnorm_coeffs(mean, var, log_gamma, beta, eps, logscale, loc):
    """logscale = lg - 0.5 log(var + eps); loc = beta - mean * exp(logscale) (the diag_affine form)."""
    for j in range(mean.shape[0]):
        batchnorm_coeffs_element(mean, var, log_gamma, beta, eps, logscale, loc, j)


@cpu_kernel
def batchnorm_bwd(dout, dlogdet, y, mean, var, log_gamma, eps, batch_stats, sign, din, dlog_gamma, dbeta):
    """VJP of the batch-norm map (see ``batchnorm_column_bwd`` above); accumulates dlog_gamma, dbeta."""
    g = 0.0
    for i in range(dlogdet.shape[0]):
        g += dlogdet[i]
    for j in range(dout.shape[1]):
        batchnorm_column_bwd(dout, g, y, mean, var, log_gamma, eps, batch_stats, sign, din, dlog_gamma, dbeta, j)


