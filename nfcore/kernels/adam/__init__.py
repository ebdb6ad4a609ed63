"""CPU Adam: one fused pass over the flat parameter buffer."""

import math

from numba import njit

from .._scalar import element
from ..registry import cpu_op

_jit = njit(cache=True, error_model="numpy")  # numpy semantics: no zero-division branch, loops vectorise


# -- element maths, shared with the CUDA kernels (``for_cuda``) --------------------


@element
def adam_element(p, g, m, v, lr, beta1, c1, beta2, c2, eps, weight_decay, bc1, bc2, i):
    """Element i of bias-corrected AdamW (c = 1 - beta, bc1 = 1 - beta1^t, bc2 = 1 - beta2^t).

    Every constant arrives as an argument (cast by the caller to the buffers' dtype): a float
    literal here would turn float32 updates into float64 arithmetic.
    """
    gi = g[i]
    mi = beta1 * m[i] + c1 * gi
    vi = beta2 * v[i] + c2 * gi * gi
    m[i] = mi
    v[i] = vi
    p[i] = p[i] - lr * ((mi / bc1) / (math.sqrt(vi / bc2) + eps) + weight_decay * p[i])


# -- CPU loops --------------------------------------------------------------------------------------


@cpu_op
def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """Bias-corrected Adam with decoupled weight decay (AdamW) over 1-D buffers, in place.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) - lr * wd * p

    The scalars are cast to the buffers' dtype, so float32 parameters update in float32
    arithmetic (vectorised) rather than through float64.
    """
    t = p.dtype.type
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    _adam(p, g, m, v, t(lr), t(beta1), t(1.0 - beta1), t(beta2), t(1.0 - beta2), t(eps), t(weight_decay), t(bc1),
          t(bc2))


@_jit
def _adam(p, g, m, v, lr, beta1, c1, beta2, c2, eps, weight_decay, bc1, bc2):
    for i in range(p.shape[0]):
        adam_element(p, g, m, v, lr, beta1, c1, beta2, c2, eps, weight_decay, bc1, bc2, i)
