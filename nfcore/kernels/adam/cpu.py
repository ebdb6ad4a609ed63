"""CPU Adam: one fused pass over the flat parameter buffer."""


import numpy as np
from numba import njit

from ..registry import cpu_op
from .math import adam_element

_jit = njit(cache=True, nogil=True, error_model="numpy")  # numpy semantics: no zero-division branch, loops vectorise


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
          t(bc2), t(np.finfo(p.dtype).tiny))


@_jit
def _adam(p, g, m, v, lr, beta1, c1, beta2, c2, eps, weight_decay, bc1, bc2, tiny):
    for i in range(p.shape[0]):
        adam_element(p, g, m, v, lr, beta1, c1, beta2, c2, eps, weight_decay, bc1, bc2, tiny, i)
