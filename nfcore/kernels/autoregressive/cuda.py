"""CUDA kernel of the fast sequential pass of an affine autoregressive layer (MAF sampling, IAF
density, the autoregressive prior's sampling): the twin of ``kernels.autoregressive``.

One block per sample (row). For each position k of the order, the block's threads first sum
the variable's parameters from the last hidden layer's units of degree <= k (strided partial
sums, finished by thread 0, which also applies the affine map or draws from the mixture), then,
layer by layer, compute the units of degree k + 1 (one thread per unit) from the units below
them, which are final by then; ``syncthreads`` separates the phases. One launch per layer
replaces the per-degree schedule of small GEMMs (D x (layers + 4) launches), and the FLOPs are
those of one masked forward pass, as on the CPU. Latency: D steps per block.

Weights come padded into one array per kind (units sorted by degree, inputs in order
position): ``w_all`` (L, H_max, K_max) with ``w_all[l, s, :K_l]`` unit s's weights, ``b_all``
(L, H_max); ``counts`` (L, D + 1) units of degree <= m; ``wo`` (D, P, H_L), ``bo`` (D, P) the
output layer per position (P = 2: mu, raw alpha; P = 3K: a mixture's logits, means, raw
log-scales). ``transforms.autoregressive.made_sequential`` builds them (for both backends).
"""


from numba import cuda

from .. import _scalar
from .. import launch as _launch
from .._scalar import device_maths
from ..array import cuda as _array
from ..mixture import math as _mixture
from ..registry import cuda_op
from . import math as _maths

_maths = device_maths(_maths)
_mixture = device_maths(_mixture)
_act = device_maths(_scalar)


_MAX_THREADS = 64  # a step computes ~H / D units per layer: wider blocks would idle


@cuda.jit(cache=True)
def _ar_kernel(y, order, w_all, b_all, counts, codes, alphas, ctx_part, use_ctx, wo, bo, bound, mode, unif, eps,
               h_buf, xp, part, par, out, logdet):
    r = cuda.blockIdx.x
    if r >= y.shape[0]:
        return
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    d = y.shape[1]
    n_layers = w_all.shape[0]
    top = n_layers - 1
    npar = wo.shape[1]
    zero = bo[0, 0] - bo[0, 0]  # the dtype's zero (a literal 0.0 would promote float32 math)
    if t == 0:
        logdet[r] = zero
    for k in range(d):
        v = order[k]
        last = counts[top, k]
        if npar == 2:  # affine: strided partial sums of mu and raw alpha, added up by thread 0
            a0 = zero
            a1 = zero
            j = t
            while j < last:
                hj = h_buf[r, top, j]
                a0 += hj * wo[k, 0, j]
                a1 += hj * wo[k, 1, j]
                j += nt
            part[r, 0, t] = a0
            part[r, 1, t] = a1
        else:  # a mixture: one parameter per thread
            p = t
            while p < npar:
                acc = bo[k, p]
                for j in range(last):
                    acc += h_buf[r, top, j] * wo[k, p, j]
                par[r, p] = acc
                p += nt
        cuda.syncthreads()
        if t == 0:
            if npar == 2:
                s0 = bo[k, 0]
                s1 = bo[k, 1]
                for q in range(nt):
                    s0 += part[r, 0, q]
                    s1 += part[r, 1, q]
                val, lda = _maths.ar_affine_element(y[r, v], s0, s1, bound, mode == 1)
                xp[r, k] = val
                logdet[r] += lda
            else:
                _mixture.mog_sample_row(par[r : r + 1], npar // 3, bound, unif[r : r + 1, v : v + 1],
                                eps[r : r + 1, v : v + 1], xp[r : r + 1, k : k + 1], 0)
        cuda.syncthreads()
        for li in range(n_layers):
            kin = k + 1 if li == 0 else counts[li - 1, k + 1]
            code = codes[li]
            alpha = alphas[li]
            s = counts[li, k] + t
            while s < counts[li, k + 1]:
                z = b_all[li, s]
                if li == 0:
                    for j in range(kin):
                        z += xp[r, j] * w_all[0, s, j]
                    if use_ctx:
                        z += ctx_part[r, s]
                else:
                    for j in range(kin):
                        z += h_buf[r, li - 1, j] * w_all[li, s, j]
                h_buf[r, li, s] = _act.act_fwd(z, code, alpha)
                s += nt
            cuda.syncthreads()
    j = t
    while j < d:
        out[r, order[j]] = xp[r, j]
        j += nt


@cuda_op
def ar_sequential(y, order, w_all, b_all, counts, codes, alphas, ctx_part, wo, bo, bound, mode, unif, eps, out,
                  logdet):
    """out, logdet of a sequential pass (device arrays; see the module docstring for the layout).

    mode 0: out = (y - mu) e^-a (IAF density); 1: out = y e^a + mu (MAF sampling); 2: a draw
    from each variable's Gaussian mixture with the noise unif, eps (y unused, logdet 0).
    ctx_part: (N, H_0) the context's share of layer 0, or an empty (0, 0) array.
    """
    n, d = y.shape
    n_layers, hmax = b_all.shape
    npar = wo.shape[1]
    dt = y.dtype
    threads = max(1, min(_launch.THREADS_PER_BLOCK, _MAX_THREADS))
    h_buf = _array.zeros((n, n_layers, hmax), dt)  # units never computed (none in practice) read as 0, as on the CPU
    xp = _array.empty((n, d), dt)
    part = _array.empty((n, 2, threads), dt)
    par = _array.empty((n, npar), dt)
    use_ctx = ctx_part.shape[0] > 0
    if not use_ctx:
        ctx_part = _array.empty((1, 1), dt)
    if unif is None or unif.shape[0] == 0:
        unif = eps = _array.empty((1, 1), dt)
    if n:
        _ar_kernel[n, threads](y, order, w_all, b_all, counts, codes, alphas, ctx_part, use_ctx, wo, bo,
                               dt.type(bound), mode, unif, eps, h_buf, xp, part, par, out, logdet)

