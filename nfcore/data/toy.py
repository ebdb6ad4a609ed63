"""Built-in 2-D densities, drawn from a seed (the FFJORD / Residual Flows toy generators).

Best achievable NLLs (differential entropies) for some of them are in ``ENTROPY``:
a model's test NLL can never go below them; the gap is its KL divergence.
"""

import math

import numpy as np

from ..errors import DataError

__all__ = ["TOY_DENSITIES", "ENTROPY", "sample_toy", "banana_log_density", "BANANA_LOG_Z", "funnel_log_density",
           "FUNNEL_LOG_Z", "FUNNEL_SIGMA"]


def _moons(rng, n):
    # sklearn's make_moons with noise 0.1: half on the upper arc, half on the shifted lower arc
    n1 = n // 2
    t = rng.uniform(0, math.pi, n)
    x = np.where(np.arange(n) < n1, np.cos(t), 1.0 - np.cos(t))
    y = np.where(np.arange(n) < n1, np.sin(t), 0.5 - np.sin(t))
    pts = np.stack([x, y], axis=1) + 0.1 * rng.standard_normal((n, 2))
    return pts[rng.permutation(n)]


def _circles(rng, n):
    # two concentric rings (radii 1 and 0.5, sklearn's make_circles factor 0.5), noise 0.08
    t = rng.uniform(0, 2 * math.pi, n)
    r = np.where(rng.uniform(size=n) < 0.5, 1.0, 0.5)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1) + 0.08 * rng.standard_normal((n, 2))


def _8gaussians(rng, n):
    k = rng.integers(0, 8, n)
    centres = 4.0 * np.stack([np.cos(k * math.pi / 4), np.sin(k * math.pi / 4)], axis=1)
    return (centres + 0.5 * rng.standard_normal((n, 2))) / 1.414


def _checkerboard(rng, n):
    x1 = 4.0 * rng.uniform(size=n) - 2.0
    b = rng.integers(0, 2, n)
    x2 = rng.uniform(size=n) - 2.0 * b + np.mod(np.floor(x1), 2)
    return 2.0 * np.stack([x1, x2], axis=1)


def _pinwheel(rng, n):
    radial_std, tangential_std, num_classes, rate = 0.3, 0.1, 5, 0.25
    rads = np.linspace(0, 2 * math.pi, num_classes, endpoint=False)
    feats = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    feats[:, 0] += 1.0
    labels = rng.integers(0, num_classes, n)
    angles = rads[labels] + rate * np.exp(feats[:, 0])
    rot = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], axis=1).reshape(n, 2, 2)
    return 2.0 * np.einsum("ti,tij->tj", feats, rot)


def _2spirals(rng, n):
    m = np.sqrt(rng.uniform(size=n)) * 540 * (2 * math.pi) / 360
    d1x = -np.cos(m) * m + rng.uniform(size=n) * 0.5
    d1y = np.sin(m) * m + rng.uniform(size=n) * 0.5
    sign = np.where(np.arange(n) < n // 2, 1.0, -1.0)
    pts = sign[:, None] * np.stack([d1x, d1y], axis=1) / 3.0
    return pts[rng.permutation(n)] + 0.1 * rng.standard_normal((n, 2))


TOY_DENSITIES = {
    "moons": _moons,
    "circles": _circles,
    "8gaussians": _8gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "2spirals": _2spirals,
}

#: differential entropy (nats) = the best achievable test NLL, from ../shared/data/TOY.md
ENTROPY = {"moons": 1.009, "8gaussians": 2.834, "checkerboard": math.log(32)}


def sample_toy(name, n, seed=None):
    """n draws (n, 2) float64 from the built-in density ``name``.

    Example:
        >>> sample_toy("moons", 4, seed=0).shape
        (4, 2)
    """
    if name not in TOY_DENSITIES:
        raise DataError(f"unknown dataset {name!r}; built-in: {', '.join(sorted(TOY_DENSITIES))}")
    n = int(n)
    if n < 1:
        raise DataError(f"number of samples must be >= 1, got {n}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return np.ascontiguousarray(TOY_DENSITIES[name](rng, n), dtype=np.float64)


#: log normaliser of banana_log_density
BANANA_LOG_Z = math.log(4 * math.pi)


#: the funnel's scale of x1 and its exact normaliser: log Z = log(2 pi * FUNNEL_SIGMA)
FUNNEL_SIGMA = 1.5
FUNNEL_LOG_Z = float(np.log(2.0 * np.pi * FUNNEL_SIGMA))


def funnel_log_density(x):
    """A 2-D funnel (Neal's, milder): x1 ~ N(0, 1.5^2), x2 | x1 ~ N(0, e^{x1}); unnormalised.

    log p~(x) = -x1^2 / (2 * 1.5^2) - x2^2 e^{-x1} / 2 - x1 / 2, so log Z = log(2 pi 1.5)
    (``FUNNEL_LOG_Z``). Its neck (x1 << 0) is narrow and its mouth wide: hard for a flow fitted
    by reverse KL, which under-covers the mouth.

    Returns:
        (log p~ (N,), d log p~ / dx (N, 2)).
    """
    x = np.asarray(x, dtype=np.float64)
    x1, x2 = x[:, 0], x[:, 1]
    e = np.exp(-x1)
    logp = -0.5 * x1 * x1 / FUNNEL_SIGMA**2 - 0.5 * x2 * x2 * e - 0.5 * x1
    g = np.stack([-x1 / FUNNEL_SIGMA**2 + 0.5 * x2 * x2 * e - 0.5, -x2 * e], axis=1)
    return logp, g


def banana_log_density(x):
    """A 2-D "banana": log p~(x) = -x1^2 / 8 - (x2 - x1^2 / 4)^2 / 2, with its gradient.

    x1 ~ N(0, 2^2) and x2 | x1 ~ N(x1^2 / 4, 1), so log Z = log(4 pi) exactly: a flow fitted
    by reverse KL should reach E_q[log q - log p~] = -log(4 pi) = -2.531 (its KL is the gap).

    Returns:
        (log p~ (N,), d log p~ / dx (N, 2)).
    """
    x = np.asarray(x, dtype=np.float64)
    x1, x2 = x[:, 0], x[:, 1]
    r = x2 - 0.25 * x1 * x1
    logp = -x1 * x1 / 8.0 - 0.5 * r * r
    g = np.stack([-x1 / 4.0 + r * 0.5 * x1, -r], axis=1)
    return logp, g
