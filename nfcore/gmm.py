"""A Gaussian-mixture base distribution with exact gradients, and EM to start it where the data are.

    p(z) = sum_k w_k N(z; mu_k, Sigma_k)

Each component is written as an ``AffineLU`` map u_k = (z - mu_k) W_k with W_k = C_k^-T for
Sigma_k = C_k C_k^T (full covariance; ``diagonal`` keeps W_k diagonal), so that

    log N(z; mu_k, Sigma_k) = log N(u_k; 0, I) + log|det W_k|

and the component's gradient is that layer's VJP, written once. The mixture weights are a
softmax of learned logits. ``em_fit`` is the classical expectation-maximisation fit (host
numpy, for initialisation); ``GaussianMixture.set_mixture`` loads its result.
"""

from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.special

from .core.distributions import Distribution
from .core.module import Parameter
from .errors import ConfigError, GradientNotAvailable
from .kernels import backend_of, get_backend
from .transforms.linear import AffineLU, _whitening_matrix

__all__ = ["GaussianMixture", "em_fit", "mixture_log_prob"]

_LOG_2PI = float(np.log(2.0 * np.pi))


class _MixtureCache(NamedTuple):
    z: object
    resp: object  # (K, N) responsibilities r_kn = w_k N_k(z_n) / p(z_n)
    us: tuple  # each component's u_k
    caches: tuple  # each component's AffineLU cache


class GaussianMixture(Distribution):
    """p(z) = sum_k softmax(a)_k N(z; mu_k, C_k C_k^T), every parameter learned.

    ``log_prob`` and its backward run on the parameters' device with nfcore's ops (the
    components' GEMMs, one log-sum-exp over components). Sampling picks components on the
    host and is not reparameterisable: reverse-KL training through this base raises
    ``GradientNotAvailable``.

    Arguments:
        dim: D.
        components: K.
        covariance: ``full`` or ``diag``.
        seed: the initial means are drawn from N(0, I) with it (distinct components; identical
            ones would receive identical gradients forever); covariances start at I and the
            weights equal. ``set_mixture`` (e.g. with ``em_fit``'s result) replaces all of it.

    Example:
        >>> import numpy as np
        >>> gm = GaussianMixture(2, components=2)
        >>> gm.set_mixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [np.eye(2), np.eye(2)])
        >>> # at (2, 0): 0.5 N(0; 0, I) + 0.5 N((4, 0); 0, I) = (1 + e^-8) / (4 pi)
        >>> p = np.exp(gm.log_prob(np.array([[2.0, 0.0]]))[0][0])
        >>> bool(np.isclose(p * 4 * np.pi, 1 + np.exp(-8.0), rtol=1e-12))
        True
    """

    def __init__(self, dim, components=2, covariance="full", seed=0, dtype=np.float64):
        super().__init__(dim)
        if len(self.shape) != 1:
            raise ConfigError("GaussianMixture is a base for vector flows: give an int dim")
        if int(components) < 1:
            raise ConfigError(f"components must be >= 1, got {components}")
        if covariance not in ("full", "diag"):
            raise ConfigError(f"covariance must be full or diag, got {covariance!r}")
        self.covariance = covariance
        k = int(components)
        self.logits = Parameter(np.zeros(k, dtype=dtype))
        means = np.zeros((k, self.size))
        if k > 1:
            means = np.random.default_rng([int(seed), 2]).standard_normal((k, self.size))
        self.components = [AffineLU(self.size, loc=means[c], diagonal=covariance == "diag", dtype=dtype)
                           for c in range(k)]

    @property
    def n_components(self):
        return len(self.components)

    def _log_weights(self):
        a = np.asarray(backend_of(self.logits.data).to_host(self.logits.data), dtype=np.float64)
        return a - scipy.special.logsumexp(a)

    def log_prob(self, z, need_grad=False):
        self._check(z)
        ops = backend_of(z)
        n, k = z.shape[0], self.n_components
        logw = self._log_weights()
        a = ops.empty((k, n), z.dtype)
        us, caches = [], []
        for c, comp in enumerate(self.components):
            u, ld, cache = comp.forward(z, need_grad=need_grad)
            row = a[c]
            ops.normal_logprob(u, row)
            ops.iadd(row, ld)
            ops.add_scalar(row, float(logw[c]))
            us.append(u)
            caches.append(cache)
        out = ops.empty((n,), z.dtype)
        resp = ops.empty((k, n), z.dtype)
        ops.logsumexp_cols(a, out, resp)
        return out, (_MixtureCache(z, resp, tuple(us), tuple(caches)) if need_grad else None)

    def backward(self, dlp, cache):
        """With r_kn the responsibilities and g_kn = r_kn dlp_n: dz = sum_k VJP_k(-u_k g_k, g_k),
        the component layers' parameters likewise, and da_k = sum_n g_kn - w_k sum_n dlp_n."""
        ops = backend_of(dlp)
        z = cache.z
        n = z.shape[0]
        dz = ops.zeros(z.shape, z.dtype)
        dlogits = np.empty(self.n_components)
        total_dlp = ops.total(dlp)
        w = np.exp(self._log_weights())
        for c, comp in enumerate(self.components):
            g = ops.empty((n,), z.dtype)
            ops.scale_rows(ops.reshape(cache.resp[c], (n, 1)), dlp, ops.reshape(g, (n, 1)))
            du = ops.empty(z.shape, z.dtype)
            ops.normal_logprob_bwd(cache.us[c], g, du)
            ops.iadd(dz, comp.backward(du, g, cache.caches[c]))
            dlogits[c] = ops.total(g) - w[c] * total_dlp
        ops.iadd(self.logits.grad, ops.asarray(dlogits, dtype=z.dtype))
        return dz

    def rsample(self, n, rng, dtype=None, device=None, temperature=1.0):
        """Component k with probability w_k, then z = mu_k + C_k T eps (T the temperature)."""
        ops = backend_of(self.logits.data) if device is None else get_backend(device)
        dtype = np.dtype(self.logits.data.dtype if dtype is None else dtype)
        pick = rng.choice(self.n_components, size=int(n), p=np.exp(self._log_weights()))
        eps = ops.asarray(np.asarray(float(temperature) * rng.standard_normal((int(n), self.size)), dtype=dtype))
        out = np.empty((int(n), self.size), dtype=dtype)
        for c, comp in enumerate(self.components):
            rows = pick == c
            if rows.any():
                x, _, _ = comp.inverse(eps, need_grad=False)
                out[rows] = np.asarray(ops.to_host(x))[rows]
        return ops.asarray(out), _NotReparameterised()

    def rsample_backward(self, dz, cache):
        raise GradientNotAvailable(
            "a Gaussian mixture's samples are not reparameterisable (a component is chosen); "
            "use a normal or diag base for reverse-KL training"
        )

    def set_mixture(self, weights, means, covariances):
        """Load weights (K,), means (K, D) and covariances (K, D, D) (diag: their diagonals are used)."""
        weights = np.asarray(weights, dtype=np.float64)
        means = np.asarray(means, dtype=np.float64)
        covs = np.asarray(covariances, dtype=np.float64)
        k, d = self.n_components, self.size
        if weights.shape != (k,) or means.shape != (k, d) or covs.shape != (k, d, d):
            raise ConfigError(f"set_mixture expects shapes ({k},), ({k}, {d}), ({k}, {d}, {d}); got "
                              f"{weights.shape}, {means.shape}, {covs.shape}")
        if not (np.all(weights > 0) and np.all(np.isfinite(weights))):
            raise ConfigError("mixture weights must be positive and finite")
        state = {"logits": np.log(weights / weights.sum())}
        for c in range(k):
            cov = np.diag(np.diag(covs[c])) if self.covariance == "diag" else covs[c]
            try:
                w = _whitening_matrix(np.linalg.cholesky(cov), d)
            except np.linalg.LinAlgError as err:
                raise ConfigError(f"covariance {c} is not positive definite") from err
            pre = f"components.{c}."
            state[pre + "loc"] = means[c]
            state[pre + "log_s"] = np.log(np.diag(w))
            state[pre + "perm"] = np.arange(d)
            state[pre + "sign"] = np.ones(d)
            state[pre + "lower"] = np.zeros((d, d))
            state[pre + "upper"] = np.triu(w, 1)
        self.load_state_dict(state)

    def extra_repr(self):
        return f"{super().extra_repr()}, {self.n_components} components, {self.covariance} covariance"

    def config(self):
        return {"type": "GaussianMixture", "shape": list(self.shape), "components": self.n_components,
                "covariance": self.covariance}


class _NotReparameterised(NamedTuple):
    pass


def mixture_log_prob(x, weights, means, covariances):
    """log sum_k w_k N(x_n; mu_k, Sigma_k) for x (N, D), in float64 on the host (a reference)."""
    return scipy.special.logsumexp(_log_terms(np.asarray(x, dtype=np.float64), weights, means, covariances), axis=1)


def em_fit(x, components, covariance="full", seed=0, n_init=3, max_iter=300, tol=1e-6, reg=1e-6):
    """Fit a Gaussian mixture to x (N, D) by expectation-maximisation; the best of ``n_init`` starts.

    Starts from k-means++ seeds refined by a few Lloyd steps; each covariance gets ``reg`` added
    to its diagonal (the data should be on a unit scale, e.g. whitened) so that no component
    collapses onto a point. Returns ``(weights (K,), means (K, D), covariances (K, D, D),
    mean log-likelihood)`` of the best start.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    k = int(components)
    if k < 1 or n < k:
        raise ConfigError(f"em_fit: need 1 <= components <= rows, got {k} components for {n} rows")
    if covariance not in ("full", "diag"):
        raise ConfigError(f"covariance must be full or diag, got {covariance!r}")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(max(1, int(n_init))):
        resp = _kmeans_resp(x, k, rng)
        prev = -np.inf
        for _ in range(int(max_iter)):
            weights, means, covs = _m_step(x, resp, covariance, reg)
            ll_rows = _log_terms(x, weights, means, covs)
            lse = scipy.special.logsumexp(ll_rows, axis=1)
            resp = np.exp(ll_rows - lse[:, None])
            ll = float(np.mean(lse))
            if ll - prev < tol * max(1.0, abs(ll)):
                break
            prev = ll
        if best is None or ll > best[3]:
            best = (weights, means, covs, ll)
    return best


def _kmeans_resp(x, k, rng, steps=10):
    """Hard responsibilities from k-means++ seeding and a few Lloyd iterations."""
    n = x.shape[0]
    centres = [x[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min([np.sum((x - c) ** 2, axis=1) for c in centres], axis=0)
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(x[rng.choice(n, p=p)])
    centres = np.array(centres)
    sq = np.sum(x * x, axis=1)[:, None]
    for _ in range(steps):
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, as an (N, K) product: no (N, K, D) temporary
        label = np.argmin(sq - 2.0 * x @ centres.T + np.sum(centres * centres, axis=1), axis=1)
        for c in range(k):
            if np.any(label == c):
                centres[c] = x[label == c].mean(axis=0)
    resp = np.zeros((n, k))
    resp[np.arange(n), label] = 1.0
    return resp


def _m_step(x, resp, covariance, reg):
    nk = resp.sum(axis=0) + 10 * np.finfo(float).eps
    weights = nk / nk.sum()
    means = resp.T @ x / nk[:, None]
    d = x.shape[1]
    covs = np.empty((len(nk), d, d))
    for c in range(len(nk)):
        y = x - means[c]
        if covariance == "diag":
            covs[c] = np.diag(resp[:, c] @ (y * y) / nk[c] + reg)
        else:
            covs[c] = (resp[:, c, None] * y).T @ y / nk[c] + reg * np.eye(d)
    return weights, means, covs


def _log_terms(x, weights, means, covs):
    """(N, K) log w_k + log N(x_n; mu_k, Sigma_k)."""
    out = np.empty((x.shape[0], len(weights)))
    for c in range(len(weights)):
        chol = np.linalg.cholesky(covs[c])
        y = scipy.linalg.solve_triangular(chol, (x - means[c]).T, lower=True)
        out[:, c] = (np.log(weights[c]) - 0.5 * np.sum(y * y, axis=0) - np.sum(np.log(np.diag(chol)))
                     - 0.5 * x.shape[1] * _LOG_2PI)
    return out
