"""Element maths of mixtures of Gaussians, written once: ``@element`` functions (inlined) that the
CPU loops (``cpu``) and the CUDA threads (``cuda``, through ``device_maths``) both call."""

import math

from .._scalar import element, softclamp, softclamp_grad

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@element
def _logit_max_sum(h, ncomp, dim, i, d):
    """(m, sum_c e^(logit_c - m)) of variable d's mixture logits in row i, m the largest logit."""
    m = h[i, d]
    for c in range(1, ncomp):
        m = max(m, h[i, c * dim + d])
    acc = 0.0
    for c in range(ncomp):
        acc += math.exp(h[i, c * dim + d] - m)
    return m, acc


@element
def _mog_terms(z, h, ncomp, bound, i, d, a):
    """a[c] = log w_c + log N(z; mu_c, s_c) for variable d of row i; returns (lse_logits, lse_a)."""
    dim = h.shape[1] // (3 * ncomp)
    m1, acc = _logit_max_sum(h, ncomp, dim, i, d)
    lse_w = m1 + math.log(acc)
    m2 = -math.inf
    for c in range(ncomp):
        ls = softclamp(h[i, (2 * ncomp + c) * dim + d], bound)
        u = (z[i, d] - h[i, (ncomp + c) * dim + d]) * math.exp(-ls)
        a[c] = h[i, c * dim + d] - lse_w - 0.5 * u * u - ls - _HALF_LOG_2PI
        m2 = max(m2, a[c])
    acc = 0.0
    for c in range(ncomp):
        acc += math.exp(a[c] - m2)
    return lse_w, m2 + math.log(acc)


@element
def mog_logprob_row(z, h, ncomp, bound, out, a, i):
    """out[i] = sum_d log sum_c w_c N(z_id; mu_c, s_c) (a: scratch of length ncomp)."""
    lp = 0.0
    for d in range(z.shape[1]):
        _, lse = _mog_terms(z, h, ncomp, bound, i, d, a)
        lp += lse
    out[i] = lp


@element
def mog_logprob_bwd_row(dlp, z, h, ncomp, bound, dz, dh, a, i):
    """Row i of the VJP, with responsibilities r_c and mixture weights w_c:
    d/dlogit_c = r_c - w_c; d/dmu_c = r_c (z - mu_c)/s_c^2; d/draw_c = r_c (u_c^2 - 1) softclamp';
    d/dz (direct) = -sum_c r_c (z - mu_c)/s_c^2; all times dlp[i]."""
    dim = z.shape[1]
    g = dlp[i]
    for d in range(dim):
        lse_w, lse = _mog_terms(z, h, ncomp, bound, i, d, a)
        gz = 0.0
        for c in range(ncomp):
            r = math.exp(a[c] - lse)
            w = math.exp(h[i, c * dim + d] - lse_w)
            ls = softclamp(h[i, (2 * ncomp + c) * dim + d], bound)
            inv_s = math.exp(-ls)
            u = (z[i, d] - h[i, (ncomp + c) * dim + d]) * inv_s
            dh[i, c * dim + d] = g * (r - w)
            dh[i, (ncomp + c) * dim + d] = g * r * u * inv_s
            dh[i, (2 * ncomp + c) * dim + d] = g * r * (u * u - 1.0) * softclamp_grad(ls, bound)
            gz -= r * u * inv_s
        dz[i, d] = g * gz


@element
def mog_sample_row(h, ncomp, bound, unif, eps, out, i):
    """Row i: component c of variable d chosen by inverse CDF of unif[i, d], then mu_c + s_c eps[i, d]."""
    dim = out.shape[1]
    for d in range(dim):
        m1, total = _logit_max_sum(h, ncomp, dim, i, d)
        target = unif[i, d] * total
        pick = ncomp - 1
        acc = 0.0
        for c in range(ncomp):
            acc += math.exp(h[i, c * dim + d] - m1)
            if target < acc:
                pick = c
                break
        ls = softclamp(h[i, (2 * ncomp + pick) * dim + d], bound)
        out[i, d] = h[i, (ncomp + pick) * dim + d] + math.exp(ls) * eps[i, d]


@element
def logsumexp_column(a, out, resp, j):
    """Column j of a (K, N): out[j] = log sum_k e^a[k, j] and resp[k, j] = e^(a[k, j] - out[j]).

    The maximum is taken out first, so no term overflows; a column of -inf gives out = -inf and
    responsibilities NaN (an impossible point), NaN propagates.
    """
    m = a[0, j]
    for k in range(1, a.shape[0]):
        m = max(m, a[k, j])
    acc = 0.0
    for k in range(a.shape[0]):
        acc += math.exp(a[k, j] - m)
    lse = m + math.log(acc)
    out[j] = lse
    for k in range(a.shape[0]):
        resp[k, j] = math.exp(a[k, j] - lse)


