"""Element maths of Adam, written once: ``@element`` functions (inlined) that the
CPU loops (``cpu``) and the CUDA threads (``cuda``, through ``device_maths``) both call."""

import math

from .._scalar import element


@element
def adam_element(p, g, m, v, lr, beta1, c1, beta2, c2, eps, weight_decay, bc1, bc2, tiny, i):
    """Element i of bias-corrected AdamW (c = 1 - beta, bc1 = 1 - beta1^t, bc2 = 1 - beta2^t).

    Every constant arrives as an argument (cast by the caller to the buffers' dtype): a float
    literal here would turn float32 updates into float64 arithmetic.

    No subnormal number enters or leaves the moment updates (``tiny``: the dtype's smallest
    normal number). x86 cores take a microcode assist of ~100 cycles for each subnormal operand
    or result: the first moment of a parameter whose gradient has become exactly zero (a dead
    ReLU unit) decays by beta1 per step into that range, and Adam ran 4-10x slower (figures:
    benchmarks/RESULTS.md, "Session 11"). So a moment below tiny / beta is zero before it decays,
    and a gradient adds nothing to m when |g| c1 < tiny, nor to v when c2 g^2 < tiny: what they
    drop is below the smallest normal number, and m / (sqrt(v) + eps) moves p by less than
    lr tiny / eps. NaN passes through (every test is "< threshold").
    """
    gi = g[i]
    zero = gi - gi
    ga = abs(gi)
    mo = m[i]
    vo = v[i]
    mo = zero if abs(mo) < tiny / beta1 else mo
    vo = zero if vo < tiny / beta2 else vo
    gm = zero if ga < tiny / c1 else gi
    gv = zero if ga < math.sqrt(tiny / c2) else gi
    mi = beta1 * mo + c1 * gm
    vi = beta2 * vo + c2 * gv * gv
    m[i] = mi
    v[i] = vi
    p[i] = p[i] - lr * ((mi / bc1) / (math.sqrt(vi / bc2) + eps) + weight_decay * p[i])
