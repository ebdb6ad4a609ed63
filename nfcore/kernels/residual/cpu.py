"""CPU ops of invertible residual blocks: Lipschitz activations with two derivatives, row scaling.

The log-det estimators of a residual block differentiate through Jacobian-vector products
``J v = W_L (phi'(h) * ...)``, so their backward needs ``phi''``: ``act2`` returns the
activation and both derivatives in one pass. Codes: 0 ELU, 1 LipSwish
``h sigmoid(beta h) / 1.1`` (both 1-Lipschitz; ReLU is refused by the block: phi'' = 0).
"""


from ..registry import cpu_kernel
from .math import act2_element, lipswish_dbeta_element


@cpu_kernel
def act2(h, code, beta, a, d1, d2):
    """a = phi(h), d1 = phi'(h), d2 = phi''(h), element-wise over (N, M); beta (M,) per column."""
    for i in range(h.shape[0]):
        for j in range(h.shape[1]):
            act2_element(h, code, beta, a, d1, d2, i, j)


@cpu_kernel
def lipswish_dbeta(h, beta, p, q):
    """p = d phi/d beta, q = d phi'/d beta of LipSwish over (N, M): a learnable beta's gradient."""
    for i in range(h.shape[0]):
        for j in range(h.shape[1]):
            lipswish_dbeta_element(h, beta, p, q, i, j)


@cpu_kernel
def scale_rows(a, s, out):
    """out[n, :] = s[n] * a[n, :]."""
    n, m = a.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = s[i] * a[i, j]


@cpu_kernel
def rowdot_acc(a, b, c, out):
    """out[n] += c * sum_j a[n, j] b[n, j]."""
    n, m = a.shape
    for i in range(n):
        acc = 0.0
        for j in range(m):
            acc += a[i, j] * b[i, j]
        out[i] += c * acc
