"""CPU image ops (channels last): squeeze, im2col/col2im, the logit map, the LU-composed 1x1 weight.

Layouts (every array C-contiguous):

* images are ``(N, H, W, C)``;
* ``squeeze2x2``: ``out[n, i, j, (2 a + b) C + c] = x[n, 2 i + a, 2 j + b, c]`` (a, b in {0, 1}):
  the four pixels of a 2x2 block become four channel groups, top-left first, row by row;
* ``im2col``: for a k x k 'same' convolution (k odd, zero padding p = k // 2),
  ``col[(n H + i) W + j, (a k + b) C + c] = x[n, i + a - p, j + b - p, c]`` (0 outside), so that
  a convolution is one GEMM ``col @ weight`` with ``weight`` of shape ``(k k C_in, C_out)``;
* ``col2im_acc`` is its adjoint: each ``dx`` element sums its (at most k^2) ``dcol`` entries
  (a gather, so no two iterations write the same element: no race, and the CUDA twin needs no
  atomics).
"""

import math

from numba import njit

from .._scalar import element
from ..registry import cpu_kernel, cpu_op

# -- element maths, shared with the CUDA kernels (``for_cuda``) --------------------


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


# -- CPU loops --------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _squeeze_loops(x, out, inverse):
    n, h2, w2, c4 = x.shape if inverse else out.shape
    for s in range(n):
        for i in range(h2):
            for j in range(w2):
                for q in range(c4):
                    squeeze_element(x, out, inverse, s, i, j, q)


@cpu_op
def squeeze2x2(x, out):
    """(N, H, W, C) -> (N, H/2, W/2, 4C), channel group 2a+b holds pixel (2i+a, 2j+b)."""
    _squeeze_loops(x, out, False)


@cpu_op
def unsqueeze2x2(z, out):
    """The inverse of squeeze2x2: (N, H/2, W/2, 4C) -> (N, H, W, C)."""
    _squeeze_loops(z, out, True)


@cpu_kernel
def im2col(x, k, col):
    """col[(n H + i) W + j, (a k + b) C + c] = x[n, i + a - k//2, j + b - k//2, c] (0 outside).

    For a tap row a, the k taps b are k neighbouring pixels, i.e. k C contiguous values of
    the input row and of the col row: copied as one run where the pixel is away from the
    left and right edges (the inner loop then vectorises).
    """
    n, h, w, c = x.shape
    p = k // 2
    kc = k * c
    xf = x.reshape((n, h, w * c))
    zero = x[0, 0, 0, 0] - x[0, 0, 0, 0]  # a typed zero
    for s in range(n):
        for i in range(h):
            for a in range(k):
                ii = i + a - p
                base = a * kc
                for j in range(w):
                    r = (s * h + i) * w + j
                    if ii < 0 or ii >= h:
                        for m in range(kc):
                            col[r, base + m] = zero
                        continue
                    j0 = j - p
                    if j0 >= 0 and j0 + k <= w:
                        src = j0 * c
                        for m in range(kc):
                            col[r, base + m] = xf[s, ii, src + m]
                    else:
                        for b in range(k):
                            jj = j0 + b
                            for q in range(c):
                                col[r, base + b * c + q] = x[s, ii, jj, q] if 0 <= jj < w else zero


@cpu_kernel
def col2im_acc(dcol, k, dx):
    """dx += im2col^T dcol: dx[n, y, x, c] += sum over taps (a, b) of dcol[row(y-a+p, x-b+p), (a k + b) C + c]."""
    n, h, w, _ = dx.shape
    for s in range(n):
        for y in range(h):
            for xx in range(w):
                col2im_pixel(dcol, k, dx, s, y, xx)


@cpu_kernel
def logit_map(x, alpha, sign, out, logdet):
    """Rows of (N, D). sign=+1: out = logit(u), u = alpha + (1 - 2 alpha) x;
    sign=-1: out = (sigmoid(x) - alpha) / (1 - 2 alpha). logdet[n] = sign * sum_d log((1-2a) / (u (1-u)))."""
    for i in range(x.shape[0]):
        logit_row(x, alpha, sign, out, logdet, i)


@cpu_kernel
def logit_map_bwd(dout, dlogdet, y, alpha, sign, din):
    """VJP of logit_map given the data-side values y (forward input or inverse output), u = a + (1-2a) y.

    sign=+1: din = dout (1-2a) / (u (1-u)) + dlogdet (1-2a) (2u - 1) / (u (1-u));
    sign=-1 (input z, u = sigmoid(z)): din = dout u (1-u) / (1-2a) + dlogdet (1 - 2u).
    """
    for i in range(dout.shape[0]):
        for j in range(dout.shape[1]):
            logit_bwd_element(dout, dlogdet, y, alpha, sign, din, i, j)


@cpu_kernel
def lu_compose(lower, upper, logs, sign, perm, w):
    """w[i, j] = sum_k L[perm[i], k] U'[k, j]: W = P L U'.

    L = I + strict_lower(lower) and U' = strict_upper(upper) + diag(sign e^logs).
    Entries of ``lower`` / ``upper`` outside their triangles are ignored.
    """
    c = w.shape[0]
    for i in range(c):
        for j in range(c):
            lu_compose_element(lower, upper, logs, sign, perm, w, i, j)


@cpu_kernel
def lu_compose_bwd(dw, lower, upper, logs, sign, perm, dlogdet, rows_per_sample, dlower, dupper, dlogs):
    """Accumulate the VJP of lu_compose plus the log-det term: logdet[n] = rows_per_sample * sum(logs).

    With dA[perm[i]] = dW[i]: dL = strict_lower(dA U'^T), dU' = L^T dA, dU = strict_upper(dU'),
    dlogs = diag(dU') sign e^logs + rows_per_sample * sum_n dlogdet.
    """
    c = dw.shape[0]
    inv = perm.copy()
    for i in range(c):
        inv[perm[i]] = i
    for r in range(c):
        for q in range(c):
            lu_compose_bwd_element(dw, lower, upper, logs, sign, inv, dlogdet, rows_per_sample, dlower, dupper, dlogs,
                                   r, q)
