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


from numba import njit

from ..registry import cpu_kernel, cpu_op
from .math import (
    col2im_pixel,
    logit_bwd_element,
    logit_row,
    lu_compose_element,
    lu_diag,
    lu_lower_grad,
    lu_upper_grad,
    squeeze_element,
)


@njit(cache=True, nogil=True, error_model="numpy")
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
    dld = 0.0
    for s in range(dlogdet.shape[0]):
        dld += dlogdet[s]
    for r in range(c):
        for q in range(r):
            dlower[r, q] += lu_lower_grad(dw, upper, lu_diag(logs, sign, q), inv, r, q)
        dlogs[r] += lu_upper_grad(dw, lower, inv, r, r) * lu_diag(logs, sign, r) + rows_per_sample * dld
        for q in range(r + 1, c):
            dupper[r, q] += lu_upper_grad(dw, lower, inv, r, q)
