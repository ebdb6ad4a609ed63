"""Element maths of batch norm, written once: ``@element`` functions (inlined) that the
CPU loops (``cpu``) and the CUDA threads (``cuda``, through ``device_maths``) both call."""

import math

from .._scalar import element


@element
def mean_var_column(x, mean, var, j):
    """Column j: mean and biased variance (two passes: no cancellation)."""
    n = x.shape[0]
    acc = 0.0
    for i in range(n):
        acc += x[i, j]
    m = acc / n
    acc = 0.0
    for i in range(n):
        dev = x[i, j] - m
        acc += dev * dev
    mean[j] = m
    var[j] = acc / n


@element
def batchnorm_coeffs_element(mean, var, log_gamma, beta, eps, logscale, loc, j):
    """Element j: logscale = lg - 0.5 log(var + eps); loc = beta - mean * exp(logscale)."""
    ls = log_gamma[j] - 0.5 * math.log(var[j] + eps)
    logscale[j] = ls
    loc[j] = beta[j] - mean[j] * math.exp(ls)


@element
def batchnorm_column_bwd(dout, g, y, mean, var, log_gamma, eps, batch_stats, sign, din, dlog_gamma, dbeta, j):
    """Column j of the batch-norm VJP; g = sum_n dlogdet_n (the log-det is the same for all n).

    sign = +1, z = xh e + b with xh = (x - m) / s, e = exp(lg), y = x (the input):
        db += A; dlg += e B + g, where A = sum_n dz, B = sum_n dz xh;
        batch statistics:  dx = (e / s) (dz - A / N - xh B / N) - g xh / (N s)
        (the last term is the log-det's -log s through the batch variance);
        fixed statistics:  dx = dz e / s.
    sign = -1 (fixed statistics), x = (z - b) s / e + m, y = x (the output):
        dz = dx s / e; db -= sum_n dx s / e; dlg -= sum_n dx (x - m) + g.
    """
    n = dout.shape[0]
    s = math.sqrt(var[j] + eps)
    e = math.exp(log_gamma[j])
    m = mean[j]
    if sign > 0:
        a = 0.0
        b = 0.0
        for i in range(n):
            a += dout[i, j]
            b += dout[i, j] * (y[i, j] - m) / s
        dbeta[j] += a
        dlog_gamma[j] += e * b + g
        if batch_stats:
            for i in range(n):
                xh = (y[i, j] - m) / s
                din[i, j] = (e / s) * (dout[i, j] - a / n - xh * b / n) - g * xh / (n * s)
        else:
            for i in range(n):
                din[i, j] = dout[i, j] * e / s
    else:
        a = 0.0
        b = 0.0
        for i in range(n):
            din[i, j] = dout[i, j] * s / e
            a += dout[i, j]
            b += dout[i, j] * (y[i, j] - m)
        dbeta[j] -= a * s / e
        dlog_gamma[j] -= b + g


