"""CUDA Adam: one fused pass over the flat parameter buffer, one thread per element."""


import numpy as np
from numba import cuda

from .. import launch as _launch
from .._scalar import device_maths
from ..registry import cuda_op
from . import math as _maths

_maths = device_maths(_maths)



@cuda.jit(cache=True)
def _adam_kernel(p, g, m, v, lr, beta1, c1, beta2, c2, eps, weight_decay, bc1, bc2, tiny):
    i = cuda.grid(1)
    if i < p.shape[0]:
        _maths.adam_element(p, g, m, v, lr, beta1, c1, beta2, c2, eps, weight_decay, bc1, bc2, tiny, i)


@cuda_op
def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """Bias-corrected Adam with decoupled weight decay (AdamW) over 1-D buffers, in place.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) - lr * wd * p
    """
    # the bias corrections are the same for every element: computed once, on the host
    bc1 = 1.0 - float(beta1) ** int(step)
    bc2 = 1.0 - float(beta2) ** int(step)
    t = np.dtype(p.dtype).type  # constants in the buffers' dtype, as on the CPU
    _adam_kernel[_launch.grid(p.shape[0])](
        p, g, m, v, t(lr), t(beta1), t(1.0 - beta1), t(beta2), t(1.0 - beta2), t(eps), t(weight_decay), t(bc1), t(bc2),
        t(np.finfo(p.dtype).tiny)
    )


def parity_cases(c):
    """Adam's parity inputs (``nfcore.kernels.parity``): weight decay, the third step."""
    r, flat = c.r, c.s.flat
    return {"adam_update": [("", [r(flat), r(flat), r(flat), np.abs(r(flat)), 0.01, 0.9, 0.999, 1e-8, 0.01, 3],
                             [0, 2, 3])]}
