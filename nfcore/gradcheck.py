"""Exactness tools: finite-difference gradient checks and exact Jacobians.

Public on purpose: a user who writes a layer (or doubts one of ours) can check it.

* ``check_transform`` — central finite differences (float64) of
  ``L = sum(dz * out) + sum(dlogabsdet * logabsdet)`` with random cotangents, against the
  hand-written ``backward``: the input and every parameter, through output *and* log-det.
* ``jacobian`` — the exact per-sample Jacobian built from ``backward`` (one VJP per
  output coordinate; no differencing).
* ``check_logdet`` — ``slogdet`` of that Jacobian against the reported log-det.
* ``check_inverse`` — the round trip error.
* ``check_module`` / ``check_distribution`` — the same gradient check for conditioner
  layers (``Linear``, ``MLP``) and base distributions.

Example:
    >>> import numpy as np
    >>> from nfcore import AffineCoupling, make_mask, gradcheck
    >>> t = AffineCoupling(make_mask(3), hidden=[5], rng=0)
    >>> gradcheck.randomize_parameters(t, seed=1)
    >>> x = np.random.default_rng(2).normal(size=(4, 3))
    >>> gradcheck.check_transform(t, x).max_error < 1e-6
    True
"""

from dataclasses import dataclass, field

import numpy as np

from .errors import GradientNotAvailable, ShapeError

__all__ = [
    "GradcheckResult",
    "numerical_gradient",
    "randomize_parameters",
    "check_transform",
    "check_module",
    "check_distribution",
    "jacobian",
    "numerical_jacobian",
    "check_logdet",
    "check_inverse",
]


@dataclass
class GradcheckResult:
    """Relative errors ``max|analytic - numeric| / max(max|numeric|, max|analytic|)`` by name."""

    errors: dict = field(default_factory=dict)
    norms: dict = field(default_factory=dict)  # max|numeric| per name (0 means "no gradient")

    @property
    def max_error(self):
        return max(self.errors.values()) if self.errors else 0.0

    def assert_ok(self, tol=1e-6):
        bad = {k: v for k, v in self.errors.items() if not v < tol}
        if bad:
            raise AssertionError(f"gradient check failed (tol {tol}): {bad}")

    def __repr__(self):
        rows = ", ".join(f"{k}: {v:.2e}" for k, v in self.errors.items())
        return f"GradcheckResult(max_error={self.max_error:.2e}; {rows})"


def _rel_error(a, n):
    a = np.asarray(a, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    scale = max(np.max(np.abs(n), initial=0.0), np.max(np.abs(a), initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(a - n)) / scale)


def numerical_gradient(f, arr, eps=1e-6):
    """Central differences of the scalar ``f()`` with respect to ``arr`` (perturbed in place)."""
    grad = np.zeros(arr.shape, dtype=np.float64)
    flat = arr.reshape(-1)
    if not np.shares_memory(flat, arr):
        raise ShapeError("numerical_gradient needs a contiguous array")
    g = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return grad


def randomize_parameters(module, scale=0.3, seed=0):
    """Add N(0, scale^2) noise to every parameter (zero-initialised layers hide gradients)."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data[...] = p.data + scale * rng.standard_normal(p.data.shape)


def _check_float64(module, *arrays):
    for a in arrays:
        if a is not None and np.asarray(a).dtype != np.float64:
            raise ShapeError("gradient checks run in float64: convert inputs (and the model: .to(dtype=np.float64))")
    for p in module.parameters():
        if p.data.dtype != np.float64:
            raise ShapeError("gradient checks run in float64: convert the model with .to(dtype=np.float64)")


def _grads_snapshot(module):
    return [p.grad.copy() for p in module.parameters()]


def _grads_restore(module, snap):
    for p, g in zip(module.parameters(), snap):
        p.grad[...] = g


def _check(module, loss, run_backward, inputs, eps):
    """Shared driver: analytic grads from run_backward(), numeric ones from loss()."""
    snap = _grads_snapshot(module)
    module.zero_grad()
    analytic_inputs = run_backward()
    result = GradcheckResult()
    for name, arr in inputs.items():
        num = numerical_gradient(loss, arr, eps)
        result.errors[name] = _rel_error(analytic_inputs[name], num)
        result.norms[name] = float(np.max(np.abs(num), initial=0.0))
    for name, p in module.named_parameters():
        num = numerical_gradient(loss, p.data, eps)
        result.errors[name] = _rel_error(p.grad, num)
        result.norms[name] = float(np.max(np.abs(num), initial=0.0))
    _grads_restore(module, snap)
    return result


def check_transform(transform, x, context=None, inverse=False, eps=1e-6, seed=0):
    """Gradient check of a transform's ``backward`` (float64), input and every parameter.

    Arguments:
        transform: a ``Transform``.
        x: (N, ...) input of the direction checked.
        context: optional (N, C) context (held fixed).
        inverse: check the inverse direction's VJP instead of the forward one.
        eps: finite-difference step.
        seed: seed of the random cotangents ``dz`` and ``dlogabsdet``.

    Returns:
        ``GradcheckResult`` with errors for ``"input"`` and each parameter name.
    """
    x = np.array(x, dtype=np.float64, copy=True)
    _check_float64(transform, x, context)
    call = transform.inverse if inverse else transform.forward
    out, ld, _ = call(x, context, need_grad=False)
    rng = np.random.default_rng(seed)
    dout = rng.standard_normal(np.shape(out))
    dld = rng.standard_normal(np.shape(ld))

    def loss():
        o, l, _ = call(x, context, need_grad=False)
        return float(np.sum(o * dout) + np.sum(l * dld))

    def run_backward():
        _, _, cache = call(x, context, need_grad=True)
        return {"input": transform.backward(dout, dld, cache)}

    return _check(transform, loss, run_backward, {"input": x}, eps)


def check_module(module, x, eps=1e-6, seed=0):
    """Gradient check of a conditioner layer with ``forward(x) -> (y, cache)`` and ``backward(dy, cache)``."""
    x = np.array(x, dtype=np.float64, copy=True)
    _check_float64(module, x)
    y, _ = module.forward(x, need_grad=False)
    dy = np.random.default_rng(seed).standard_normal(y.shape)

    def loss():
        return float(np.sum(module.forward(x, need_grad=False)[0] * dy))

    def run_backward():
        _, cache = module.forward(x, need_grad=True)
        return {"input": module.backward(dy, cache)}

    return _check(module, loss, run_backward, {"input": x}, eps)


def check_distribution(dist, z, eps=1e-6, seed=0):
    """Gradient check of ``log_prob``'s backward (input and parameters)."""
    z = np.array(z, dtype=np.float64, copy=True)
    _check_float64(dist, z)
    dlp = np.random.default_rng(seed).standard_normal(z.shape[0])

    def loss():
        return float(np.sum(dist.log_prob(z)[0] * dlp))

    def run_backward():
        _, cache = dist.log_prob(z, need_grad=True)
        return {"input": dist.backward(dlp, cache)}

    return _check(dist, loss, run_backward, {"input": z}, eps)


def numerical_jacobian(transform, x, context=None, inverse=False, eps=1e-6):
    """Per-sample Jacobians (N, D_out, D_in) by central differences: for directions that have
    no backward (sequential MAF sampling, IAF density)."""
    x = np.array(x, dtype=np.float64, copy=True)
    call = transform.inverse if inverse else transform.forward
    n = x.shape[0]
    d_in = int(np.prod(x.shape[1:]))
    flat = x.reshape(n, d_in)
    cols = []
    for j in range(d_in):
        old = flat[:, j].copy()
        flat[:, j] = old + eps
        up = np.asarray(call(x, context, need_grad=False)[0]).reshape(n, -1)
        flat[:, j] = old - eps
        down = np.asarray(call(x, context, need_grad=False)[0]).reshape(n, -1)
        flat[:, j] = old
        cols.append((up - down) / (2 * eps))
    return np.stack(cols, axis=2)


def jacobian(transform, x, context=None, inverse=False):
    """Exact per-sample Jacobians d out / d in, shape (N, D_out, D_in), from D_out VJPs.

    Assumes samples do not interact (true of every transform in eval mode).
    Parameter gradients are left as they were.
    """
    x = np.asarray(x)
    call = transform.inverse if inverse else transform.forward
    out, _, cache = call(x, context, need_grad=True)
    n = x.shape[0]
    d_out = int(np.prod(out.shape[1:]))
    d_in = int(np.prod(x.shape[1:]))
    jac = np.zeros((n, d_out, d_in), dtype=np.float64)
    snap = _grads_snapshot(transform)
    zero = np.zeros(n, dtype=x.dtype)
    for j in range(d_out):
        e = np.zeros((n, d_out), dtype=x.dtype)
        e[:, j] = 1
        dx = transform.backward(e.reshape(out.shape), zero, cache)
        jac[:, j, :] = np.asarray(dx).reshape(n, d_in)
    _grads_restore(transform, snap)
    return jac


def check_logdet(transform, x, context=None, inverse=False):
    """max |slogdet(J) - logabsdet| over the batch.

    J from ``jacobian`` (exact VJPs); for a direction without a backward, from
    ``numerical_jacobian`` (central differences, error ~1e-9).
    """
    call = transform.inverse if inverse else transform.forward
    _, ld, _ = call(np.asarray(x), context, need_grad=False)
    try:
        jac = jacobian(transform, x, context, inverse)
    except GradientNotAvailable:
        jac = numerical_jacobian(transform, x, context, inverse)
    sign, logdet = np.linalg.slogdet(jac)
    if np.any(sign == 0):
        return float("inf")
    return float(np.max(np.abs(logdet - np.asarray(ld))))


def check_inverse(transform, x, context=None):
    """(max |inverse(forward(x)) - x|, max |logdet_fwd + logdet_inv|)."""
    z, ld_f, _ = transform.forward(x, context, need_grad=False)
    x2, ld_i, _ = transform.inverse(z, context, need_grad=False)
    return float(np.max(np.abs(np.asarray(x2) - x))), float(np.max(np.abs(np.asarray(ld_f) + np.asarray(ld_i))))
