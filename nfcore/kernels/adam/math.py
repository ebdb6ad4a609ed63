"""Element maths of Adam, written once: ``@element`` functions (inlined) that the
CPU loops (``cpu``) and the CUDA threads (``cuda``, through ``device_maths``) both call."""

import math

from .._scalar import element


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


