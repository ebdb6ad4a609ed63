"""Element maths of the fast sequential MADE pass, written once: ``@element`` functions (inlined) that the
CPU loops (``cpu``) and the CUDA threads (``cuda``, through ``device_maths``) both call."""

import math

from .._scalar import element, softclamp


@element
def ar_affine_element(y, mu, raw, bound, expand):
    """One variable of an autoregressive layer's sequential pass (the CPU and CUDA kernels):
    (its value, its log-det term): expand: y e^a + mu, +a; else (y - mu) e^-a, -a; a = softclamp(raw)."""
    a = softclamp(raw, bound)
    if expand:
        return y * math.exp(a) + mu, a
    return (y - mu) * math.exp(-a), -a


