"""CPU kernel of the fast sequential pass of an affine autoregressive layer (MAF sampling,
IAF density): every MADE unit computed exactly once, the moment its inputs are final.

Per tile of rows, for each position k of the order: the variable's (mu, raw alpha) from the
last hidden layer's units of degree <= k; its value through the affine map; then, layer by
layer, the units of degree k + 1 from the (final) units below them. Units are sorted by
degree, so "every unit final by now" is a prefix of each (transposed) weight row and every
inner product runs over contiguous memory; the rows of a tile share each weight row while it
sits in L1. FLOPs: one masked forward pass. Threads: tiles are independent (prange), and no
BLAS runs inside, so no thread pools compete.
"""



import numpy as np
from numba import njit, prange

from .._scalar import act_fwd
from ..mixture.math import mog_sample_row
from ..registry import cpu_op
from .math import ar_affine_element

TILE = 8  # rows per tile: they share each weight row while it sits in L1


# reassoc lets LLVM vectorise the inner products (a strict left-to-right sum cannot be, and the
# unit-major alternative without it is slower); nothing here is differentiated,
# and no flag that assumes away NaN or inf is set
@cpu_op
@njit(cache=True, nogil=True, error_model="numpy", parallel=True, fastmath={"reassoc", "contract"})
def ar_sequential(y, order, w_all, b_all, counts, codes, alphas, ctx_part, wo, bo, bound, mode, unif, eps, out,
                  logdet):
    """out, logdet of a sequential pass. mode 0: out = (y - mu) e^-a (IAF density); 1: out = y e^a
    + mu (MAF sampling); 2: out = a draw from the variable's Gaussian mixture with the noise
    unif, eps (the autoregressive prior's sampling; y unused, logdet 0).

    y, out: (N, D); order: (D,) variables in order; w_all: (L, H_max, K_max) masked weights,
    padded, with w_all[l, s, :K_l] unit s's weights, units sorted by degree (layer 0's inputs in
    order position); b_all: (L, H_max) sorted biases; counts: (L, D + 1) units of degree <= m;
    codes, alphas: activations per layer; ctx_part: (N, H_0) the context's share of layer 0 (or
    (0, 0)); wo: (D, P, H_L) output weights per position (P = 2: mu, raw alpha; P = 3K: logits,
    means, raw log-scales of the K components); bo: (D, P); unif, eps: (N, D) noise (mode 2) or
    (0, 0). The CUDA twin (``autoregressive.cuda``) takes the same arguments.
    """
    n, d = y.shape
    n_layers, hmax = b_all.shape
    use_ctx = ctx_part.shape[0] > 0
    n_tiles = (n + TILE - 1) // TILE
    for t in prange(n_tiles):
        r0 = t * TILE
        nr = min(n, r0 + TILE) - r0
        h = np.zeros((n_layers, nr, hmax), dtype=y.dtype)
        xp = np.zeros((nr, d), dtype=y.dtype)
        acc_ld = np.zeros(nr)
        npar = wo.shape[1]
        par = np.empty((1, npar), dtype=y.dtype)
        for k in range(d):
            v = order[k]
            last = counts[n_layers - 1, k]
            for r in range(nr):
                hr = h[n_layers - 1, r]
                if npar == 2:  # affine: both sums in one sweep over the units
                    w0, w1 = wo[k, 0], wo[k, 1]
                    acc0, acc1 = bo[k, 0], bo[k, 1]
                    for j in range(last):
                        acc0 += hr[j] * w0[j]
                        acc1 += hr[j] * w1[j]
                    par[0, 0] = acc0
                    par[0, 1] = acc1
                else:
                    for p in range(npar):
                        wp = wo[k, p]
                        acc = bo[k, p]
                        for j in range(last):
                            acc += hr[j] * wp[j]
                        par[0, p] = acc
                if mode == 2:
                    mog_sample_row(par, npar // 3, bound, unif[r0 + r : r0 + r + 1, v : v + 1],
                                   eps[r0 + r : r0 + r + 1, v : v + 1], xp[r : r + 1, k : k + 1], 0)
                    continue
                val, lda = ar_affine_element(y[r0 + r, v], par[0, 0], par[0, 1], bound, mode == 1)
                xp[r, k] = val
                acc_ld[r] += lda
            for li in range(n_layers):
                s0 = counts[li, k]
                s1 = counts[li, k + 1]
                w = w_all[li]
                b = b_all[li]
                kin = k + 1 if li == 0 else counts[li - 1, k + 1]
                code = codes[li]
                alpha = alphas[li]
                s = s0
                while s < s1:
                    if s + 4 <= s1:
                        # four units per sweep over the inputs: each input loaded once for four sums
                        w0, w1, w2, w3 = w[s], w[s + 1], w[s + 2], w[s + 3]
                        for r in range(nr):
                            below = xp[r] if li == 0 else h[li - 1, r]
                            z0, z1, z2, z3 = b[s], b[s + 1], b[s + 2], b[s + 3]
                            for j in range(kin):
                                bj = below[j]
                                z0 += bj * w0[j]
                                z1 += bj * w1[j]
                                z2 += bj * w2[j]
                                z3 += bj * w3[j]
                            if li == 0 and use_ctx:
                                z0 += ctx_part[r0 + r, s]
                                z1 += ctx_part[r0 + r, s + 1]
                                z2 += ctx_part[r0 + r, s + 2]
                                z3 += ctx_part[r0 + r, s + 3]
                            h[li, r, s] = act_fwd(z0, code, alpha)
                            h[li, r, s + 1] = act_fwd(z1, code, alpha)
                            h[li, r, s + 2] = act_fwd(z2, code, alpha)
                            h[li, r, s + 3] = act_fwd(z3, code, alpha)
                        s += 4
                    else:
                        ws = w[s]
                        for r in range(nr):
                            below = xp[r] if li == 0 else h[li - 1, r]
                            z = b[s]
                            for j in range(kin):
                                z += below[j] * ws[j]
                            if li == 0 and use_ctx:
                                z += ctx_part[r0 + r, s]
                            h[li, r, s] = act_fwd(z, code, alpha)
                        s += 1
        for r in range(nr):
            for k in range(d):
                out[r0 + r, order[k]] = xp[r, k]
            logdet[r0 + r] = acc_ld[r]
