"""Element maths of image ops, written once: ``@element`` functions (inlined) that the
CPU loops (``cpu``) and the CUDA threads (``cuda``, through ``device_maths``) both call."""

import math

from .._scalar import element


@element
def squeeze_element(x, out, inverse, s, i, j, q):
    """One entry of the 2x2 squeeze: (N, H, W, C) <-> (N, H/2, W/2, 4C), channel group 2a+b = pixel (2i+a, 2j+b).

    (i, j, q) index the squeezed array; ``inverse`` writes the unsqueezed one instead.
    """
    c4 = (x.shape[3] if inverse else out.shape[3])
    c = c4 // 4
    g = q // c
    k = q - g * c
    a = g // 2
    b = g - 2 * a
    if inverse:
        out[s, 2 * i + a, 2 * j + b, k] = x[s, i, j, q]
    else:
        out[s, i, j, q] = x[s, 2 * i + a, 2 * j + b, k]


@element
def col2im_pixel(dcol, k, dx, s, y, xx):
    """dx[s, y, xx, :] += the (at most k^2) im2col entries that copied that pixel's channels
    (a gather: no write conflicts; the channel loop innermost reads contiguous runs)."""
    h, w, c = dx.shape[1], dx.shape[2], dx.shape[3]
    p = k // 2
    for a in range(k):
        i = y - a + p
        if i < 0 or i >= h:
            continue
        for b in range(k):
            j = xx - b + p
            if j < 0 or j >= w:
                continue
            r = (s * h + i) * w + j
            base = (a * k + b) * c
            for q in range(c):
                dx[s, y, xx, q] += dcol[r, base + q]


@element
def logit_row(x, alpha, sign, out, logdet, i):
    """Row i: sign=+1: out = logit(u), u = alpha + (1 - 2 alpha) x; sign=-1: out = (sigmoid(x) - alpha)/(1 - 2 alpha);
    logdet[i] = sign * sum_j log((1 - 2 alpha) / (u (1 - u)))."""
    scale = 1.0 - 2.0 * alpha
    acc = 0.0
    for j in range(x.shape[1]):
        if sign > 0:
            u = alpha + scale * x[i, j]
            out[i, j] = math.log(u) - math.log1p(-u)
        else:
            t = x[i, j]
            if t >= 0:
                u = 1.0 / (1.0 + math.exp(-t))
            else:
                e = math.exp(t)
                u = e / (1.0 + e)
            out[i, j] = (u - alpha) / scale
        acc += math.log(scale) - math.log(u) - math.log1p(-u)
    logdet[i] = sign * acc


@element
def logit_bwd_element(dout, dlogdet, y, alpha, sign, din, i, j):
    """VJP of logit_row at (i, j) given the data-side value y, u = alpha + (1 - 2 alpha) y."""
    scale = 1.0 - 2.0 * alpha
    u = alpha + scale * y[i, j]
    q = u * (1.0 - u)
    if sign > 0:
        din[i, j] = (dout[i, j] * scale + dlogdet[i] * scale * (2.0 * u - 1.0)) / q
    else:
        din[i, j] = dout[i, j] * q / scale + dlogdet[i] * (1.0 - 2.0 * u)


@element
def _lu_upper(upper, logs, sign, k, j):
    """U'[k, j] = strict_upper(upper) + diag(sign e^logs)."""
    if k == j:
        return sign[j] * math.exp(logs[j])
    return upper[k, j] if k < j else 0.0


@element
def lu_compose_element(lower, upper, logs, sign, perm, w, i, j):
    """w[i, j] = sum_k L[perm[i], k] U'[k, j], L = I + strict_lower(lower)."""
    r = perm[i]
    acc = _lu_upper(upper, logs, sign, r, j)  # L[r, r] = 1
    for k in range(min(r, j + 1)):  # L[r, k] for k < r, U'[k, j] for k <= j
        acc += lower[r, k] * _lu_upper(upper, logs, sign, k, j)
    w[i, j] = acc


@element
def lu_compose_bwd_element(dw, lower, upper, logs, sign, inv, dlogdet, rows_per_sample, dlower, dupper, dlogs, r, q):
    """Entry (r, q) of the LU factors' gradient, with dA[r] = dW[inv[r]] (A = L U'):
    dL[r, q] (q < r) = sum_j dA[r, j] U'[q, j]; dU'[r, q] (q >= r) = sum_m L[m, r] dA[m, q];
    dlogs[r] gets dU'[r, r] sign e^logs plus rows_per_sample * sum_n dlogdet[n]."""
    c = dw.shape[0]
    if q < r:
        acc = 0.0
        for j in range(q, c):
            acc += dw[inv[r], j] * _lu_upper(upper, logs, sign, q, j)
        dlower[r, q] += acc
        return
    acc = dw[inv[r], q]
    for m in range(r + 1, c):
        acc += lower[m, r] * dw[inv[m], q]
    if q == r:
        dld = 0.0
        for s in range(dlogdet.shape[0]):
            dld += dlogdet[s]
        dlogs[r] += acc * sign[r] * math.exp(logs[r]) + rows_per_sample * dld
    else:
        dupper[r, q] += acc


