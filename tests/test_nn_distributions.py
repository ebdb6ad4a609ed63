"""Conditioner layers and base distributions: finite-difference gradient checks."""

import numpy as np
import pytest

from nfcore import MLP, DiagNormal, Linear, StandardNormal
from nfcore import gradcheck as gc
from nfcore.errors import ConfigError, ShapeError
from nfcore.nn import ACTIVATIONS


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_linear_gradients(act, rng):
    lin = Linear(4, 3, activation=act, rng=0)
    gc.randomize_parameters(lin, seed=1)
    res = gc.check_module(lin, rng.normal(size=(6, 4)))
    res.assert_ok(1e-6)
    assert all(v > 0 for v in res.norms.values())


@pytest.mark.parametrize("residual", [False, True])
def test_mlp_gradients(residual, rng):
    mlp = MLP(3, 2, hidden=[5, 5, 5], activation="tanh", residual=residual, rng=0)
    gc.randomize_parameters(mlp, seed=2)
    res = gc.check_module(mlp, rng.normal(size=(5, 3)))
    res.assert_ok(1e-6)
    assert all(v > 0 for v in res.norms.values())


def test_mlp_zero_last_starts_at_zero(rng):
    mlp = MLP(3, 4, hidden=[8], rng=0)
    y, _ = mlp.forward(rng.normal(size=(5, 3)))
    assert np.all(y == 0)


def test_activation_values_match_numpy():
    x = np.linspace(-3, 3, 13)[None, :]
    ref = {
        "identity": x,
        "relu": np.maximum(x, 0),
        "leaky_relu": np.where(x > 0, x, 0.01 * x),
        "tanh": np.tanh(x),
        "elu": np.where(x > 0, x, np.expm1(x)),
        "softplus": np.log1p(np.exp(x)),
    }
    for act, expected in ref.items():
        lin = Linear(13, 13, activation=act, rng=0)
        lin.weight.data[...] = np.eye(13)
        y, _ = lin.forward(x)
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12, err_msg=act)


def test_bad_activation_and_shapes():
    with pytest.raises(ConfigError):
        Linear(2, 2, activation="swishy")
    with pytest.raises(ConfigError):
        MLP(2, 2, hidden=[3, 4], residual=True)
    with pytest.raises(ShapeError):
        Linear(3, 2).forward(np.zeros((4, 2)))


def test_standard_normal(rng):
    d = StandardNormal(3)
    z = rng.normal(size=(5, 3))
    lp, _ = d.log_prob(z)
    ref = -0.5 * (z**2).sum(1) - 1.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(lp, ref, rtol=1e-13)
    gc.check_distribution(d, z).assert_ok(1e-6)


def test_diag_normal(rng):
    d = DiagNormal(3)
    gc.randomize_parameters(d, seed=4)
    z = rng.normal(size=(5, 3))
    lp, _ = d.log_prob(z)
    mu, s = d.loc.data, np.exp(d.log_scale.data)
    ref = (-0.5 * ((z - mu) / s) ** 2 - np.log(s)).sum(1) - 1.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(lp, ref, rtol=1e-13)
    res = gc.check_distribution(d, z)
    res.assert_ok(1e-6)
    assert res.norms["loc"] > 0 and res.norms["log_scale"] > 0


def test_diag_normal_rsample_gradient():
    """d/dtheta of sum(w * z(theta)) with z = mu + sigma * eps (eps frozen by the seed)."""
    d = DiagNormal(3)
    gc.randomize_parameters(d, seed=5)
    w = np.random.default_rng(9).normal(size=(4, 3))

    def loss():
        return float(np.sum(d.rsample(4, np.random.default_rng(0))[0] * w))

    d.zero_grad()
    _, cache = d.rsample(4, np.random.default_rng(0))
    d.rsample_backward(w, cache)
    for p in d.parameters():
        num = gc.numerical_gradient(loss, p.data)
        np.testing.assert_allclose(p.grad, num, rtol=1e-7, atol=1e-9)
