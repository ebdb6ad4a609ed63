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
def lu_diag(logs, sign, j):
    """U'[j, j] = sign_j e^logs_j."""
    return sign[j] * math.exp(logs[j])


@element
def lu_compose_element(lower, upper, logs, sign, perm, w, i, j):
    """w[i, j] = sum_k L[perm[i], k] U'[k, j], L = I + strict_lower(lower).

    The terms k < min(r, j) are a plain dot of ``lower`` and ``upper`` (no branch, no exp in the
    loop: a branch to the diagonal's exp inside it made the loop ~30x slower; the exp taken in a
    branch after it still ~4x); then k = j (the diagonal, when j < r), or L[r, r] = 1 times
    U'[r, j] (j >= r)."""
    r = perm[i]
    acc = 0.0
    for k in range(min(r, j)):
        acc += lower[r, k] * upper[k, j]
    d = lu_diag(logs, sign, j)
    if j < r:
        acc += lower[r, j] * d
    elif j == r:
        acc += d
    else:
        acc += upper[r, j]
    w[i, j] = acc


@element
def lu_lower_grad(dw, upper, d, inv, r, q):
    """dL[r, q] (q < r) = sum_(j >= q) dA[r, j] U'[q, j], with dA[r] = dW[inv[r]] (A = L U') and
    d = U'[q, q]: the diagonal, then strict_upper(upper)."""
    c = dw.shape[0]
    acc = dw[inv[r], q] * d
    for j in range(q + 1, c):
        acc += dw[inv[r], j] * upper[q, j]
    return acc


@element
def lu_upper_grad(dw, lower, inv, r, q):
    """dU'[r, q] (q >= r) = sum_(m >= r) L[m, r] dA[m, q], L = I + strict_lower(lower).

    The LU factors' gradient is these two values per entry (not one element that writes them:
    the CPU loop over such an element ran ~4x slower), and dlogs[r] = dU'[r, r] sign_r e^logs_r
    plus rows_per_sample * sum_n dlogdet[n]."""
    c = dw.shape[0]
    acc = dw[inv[r], q]
    for m in range(r + 1, c):
        acc += lower[m, r] * dw[inv[m], q]
    return acc


