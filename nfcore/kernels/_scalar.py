"""Element math written once, as ``@njit`` scalar functions.

Both backends call these: the CPU kernels from their loops and the CUDA kernels from
their threads (numba compiles an ``@njit`` function for the CUDA target when a
``@cuda.jit`` kernel calls it). Activations are identified by an integer code so that
one kernel serves all of them.

Every activation derivative here is written as a function of the activation's *output*
``y``: a layer then keeps only its output for backward (tinygrad's habit), and no
pre-activation buffer is needed.
"""

import math

from numba import njit

__all__ = [
    "ACT_IDENTITY",
    "ACT_RELU",
    "ACT_LEAKY_RELU",
    "ACT_TANH",
    "ACT_ELU",
    "ACT_SOFTPLUS",
    "act_fwd",
    "act_grad_from_y",
    "softclamp",
    "softclamp_grad",
]

ACT_IDENTITY = 0
ACT_RELU = 1
ACT_LEAKY_RELU = 2
ACT_TANH = 3
ACT_ELU = 4
ACT_SOFTPLUS = 5


@njit(cache=True, inline="always")
def act_fwd(x, code, alpha):
    """y = phi(x) for the activation ``code`` (alpha: leaky slope or ELU scale)."""
    if code == 1:
        return x if x > 0 else x - x
    if code == 2:
        return x if x > 0 else alpha * x
    if code == 3:
        return math.tanh(x)
    if code == 4:
        return x if x > 0 else alpha * (math.exp(x) - 1.0)
    if code == 5:
        # softplus(x) = log(1 + e^x), written to neither overflow nor lose precision
        if x > 0:
            return x + math.log1p(math.exp(-x))
        return math.log1p(math.exp(x))
    return x


@njit(cache=True, inline="always")
def act_grad_from_y(y, code, alpha):
    """phi'(x) expressed through y = phi(x).

    relu: [y > 0]; leaky: 1 or alpha; tanh: 1 - y^2; elu: 1 or y + alpha;
    softplus: sigmoid(x) = 1 - exp(-y).
    """
    if code == 1:
        return 1.0 if y > 0 else 0.0
    if code == 2:
        return 1.0 if y > 0 else alpha
    if code == 3:
        return 1.0 - y * y
    if code == 4:
        return 1.0 if y > 0 else y + alpha
    if code == 5:
        return -math.expm1(-y)
    return 1.0


@njit(cache=True, inline="always")
def softclamp(h, bound):
    """log s = bound * tanh(h / bound): a log-scale that is ~h near 0 and never leaves (-bound, bound)."""
    return bound * math.tanh(h / bound)


@njit(cache=True, inline="always")
def softclamp_grad(logscale, bound):
    """d softclamp / dh written through its output: 1 - (log s / bound)^2."""
    r = logscale / bound
    return 1.0 - r * r
