"""Element maths of residual blocks, written once: ``@element`` functions (inlined) that the
CPU loops (``cpu``) and the CUDA threads (``cuda``, through ``device_maths``) both call."""

import math

from .._scalar import ACT_ELU, element, elu, elu_vjp


@element
def act2_element(h, code, beta, a, d1, d2, i, j):
    """a = phi(h), d1 = phi'(h), d2 = phi''(h) at (i, j): code ``ACT_ELU`` (alpha 1; phi'' = phi' for
    h <= 0, else 0) or ``ACT_LIPSWISH`` h sigmoid(beta_j h) / 1.1 (beta: one value per column)."""
    x = h[i, j]
    if code == ACT_ELU:
        y = elu(x, 1.0)
        a[i, j] = y
        d1[i, j] = elu_vjp(1.0, y, 1.0)
        d2[i, j] = 0.0 if x > 0 else d1[i, j]
    else:
        # one exp of -|beta h| (never overflows: the simulator's exp raises where it would), one
        # division, products by 1/1.1: twice as fast as a branch per sign and three divisions
        b = beta[j]
        bx = b * x
        e = math.exp(-abs(bx))
        inv = 1.0 / (1.0 + e)
        s = inv if bx >= 0 else e * inv  # sigmoid(beta h)
        q = s * (1.0 - s)
        c = 1.0 / 1.1
        a[i, j] = x * s * c
        d1[i, j] = (s + bx * q) * c
        d2[i, j] = b * q * (2.0 + bx * (1.0 - 2.0 * s)) * c


@element
def lipswish_dbeta_element(h, beta, p, q, i, j):
    """p = d phi / d beta_j = h^2 s (1 - s) / 1.1 and q = d phi' / d beta_j
    = h s (1 - s) (2 + beta_j h (1 - 2 s)) / 1.1 at (i, j), s = sigmoid(beta_j h)."""
    x = h[i, j]
    bx = beta[j] * x
    e = math.exp(-abs(bx))
    inv = 1.0 / (1.0 + e)
    s = inv if bx >= 0 else e * inv
    r = x * s * (1.0 - s) * (1.0 / 1.1)
    p[i, j] = x * r
    q[i, j] = r * (2.0 + bx * (1.0 - 2.0 * s))


