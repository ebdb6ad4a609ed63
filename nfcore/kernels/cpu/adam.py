"""CPU Adam: one fused pass over the flat parameter buffer."""

from numba import njit

from .._rows import adam_element

_jit = njit(cache=True, error_model="numpy")  # numpy semantics: no zero-division branch, loops vectorise

__all__ = ["adam_update"]


@_jit
def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """Bias-corrected Adam with decoupled weight decay (AdamW) over 1-D buffers, in place.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) - lr * wd * p
    """
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    for i in range(p.shape[0]):
        adam_element(p, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2, i)
