"""Element maths of the continuous-flow dynamics, written once: ``@element`` functions (inlined)
that the CPU loops (``cpu``) and the CUDA threads (``cuda``) both call.

The dynamics' trace needs the network's Jacobian, and its gradient the second derivative of
every activation, so each smooth activation returns (phi, phi', phi''). Every expression keeps
its argument's dtype (``one = x - x + x / x`` style constants; no literal promotes float32).
"""

import math

from .._scalar import ACT_SOFTPLUS, ACT_SWISH, ACT_TANH, element


@element
def sigmoid(x):
    """1 / (1 + e^-x) without overflow (one exp of -|x|)."""
    e = math.exp(-abs(x))
    inv = (e - e + 1) / (e + 1)
    return inv if x >= 0 else e * inv


@element
def smooth_act(x, code):
    """(phi(x), phi'(x), phi''(x)): tanh (phi' = 1 - y^2, phi'' = -2 y phi'), softplus
    log(1 + e^x) (phi' = s, phi'' = s (1 - s), s = sigmoid(x)), swish x s (phi' = s + x s (1 - s),
    phi'' = s (1 - s) (2 + x (1 - 2 s))); any other code: the identity (1, 0)."""
    one = x - x + 1
    if code == ACT_TANH:
        # tanh x = 1 - 2 / (e^(2x) + 1): one exp, no branch (libm's tanh costs ~4 exps); an absolute
        # error of one ulp of 1; e^(2x) = inf still gives 1
        y = one - (one + one) / (math.exp(x + x) + one)
        d1 = one - y * y
        return y, d1, -(y + y) * d1
    if code == ACT_SOFTPLUS:
        s = sigmoid(x)
        y = x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))
        return y, s, s * (one - s)
    if code == ACT_SWISH:
        s = sigmoid(x)
        q = s * (one - s)
        return x * s, s + x * q, q * (one + one + x * (one - s - s))
    return x, one, x - x


@element
def smooth_slopes(x, y, code):
    """(phi'(x), phi''(x)) given y = phi(x) too: tanh's from y alone (no exp), the others' from x."""
    if code == ACT_TANH:
        d1 = (y - y + 1) - y * y
        return d1, -(y + y) * d1
    _, d1, d2 = smooth_act(x, code)
    return d1, d2


@element
def gate_and_shift(t, a, b, c):
    """FFJORD's concat-squash time functions of one output unit: gate g = sigmoid(a t + b),
    shift c t; the layer is (h W + bias) g + c t."""
    return sigmoid(a * t + b), c * t


def layer_sizes(dims):
    """Elements of each concat-squash layer in the flat parameter vector: W (in, out), bias, gate
    weight, gate bias and shift weight (out each), for the widths ``dims`` = [D + C, ..., D]."""
    return [a * b + 4 * b for a, b in zip(dims[:-1], dims[1:])]


def field_work_size(n, probes, dims, d):
    """Elements of the workspace of ``cnf_field`` / ``cnf_field_vjp`` for n rows, ``probes``
    tangents per row and widths ``dims`` (data width d): every layer's input, tangent input,
    h W + b, tangent product and pre-activation, which the VJP reads back."""
    size = 0
    for k, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        size += n * a + n * probes * (d if k == 0 else a) + 2 * n * b + n * probes * b
    # the VJP's two cotangent buffers (rows and tangent rows of the widest layer)
    return size + 2 * n * (1 + probes) * max(dims)
