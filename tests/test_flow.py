"""Flow-level behaviour: densities, sampling, the ML and reverse-KL gradients, validation."""

import numpy as np
import pytest

import nfcore
from nfcore import gradcheck as gc
from nfcore.data import banana_log_density, sample_toy
from nfcore.errors import InputOutsideDomain, ShapeError


def _flow(**kw):
    cfg = {"flow": "realnvp", "dim": 3, "layers": 3, "hidden": [6], "base": "diag"}
    cfg.update(kw)
    f = nfcore.build(cfg)
    gc.randomize_parameters(f, scale=0.3, seed=0)
    return f


def test_sample_and_log_prob_agree():
    f = _flow()
    x, lp = f.sample_and_log_prob(50, seed=3)
    np.testing.assert_allclose(lp, f.log_prob(x), rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(f.sample(5, seed=7), f.sample(5, seed=7))


def test_ml_gradient_matches_finite_differences():
    f = _flow()
    x = np.random.default_rng(1).normal(size=(8, 3))

    def loss():
        return -float(np.mean(f.log_prob(x)))

    f.zero_grad()
    value = f.loss_and_grad(x)
    assert abs(value - loss()) < 1e-12
    for name, p in f.named_parameters():
        num = gc.numerical_gradient(loss, p.data)
        scale = max(np.abs(num).max(), 1e-12)
        assert np.abs(p.grad - num).max() / scale < 1e-6, name


def test_reverse_kl_gradient_matches_finite_differences():
    """With the base draws frozen by the seed, the reverse-KL loss is a smooth function of the parameters."""
    f = _flow(dim=2, layers=2)

    def target(x):
        return banana_log_density(x)

    def loss():
        f2_grads = [p.grad.copy() for p in f.parameters()]
        value = f.reverse_kl_loss_and_grad(target, 16, seed=11)
        for p, g in zip(f.parameters(), f2_grads):
            p.grad[...] = g
        return value

    f.zero_grad()
    f.reverse_kl_loss_and_grad(target, 16, seed=11)
    analytic = {n: p.grad.copy() for n, p in f.named_parameters()}
    for name, p in f.named_parameters():
        num = gc.numerical_gradient(loss, p.data)
        scale = max(np.abs(num).max(), 1e-12)
        assert np.abs(analytic[name] - num).max() / scale < 1e-6, name
        assert np.abs(num).max() > 0, name


def test_conditional_flow():
    f = _flow(context_dim=2)
    x = np.random.default_rng(2).normal(size=(5, 3))
    c = np.random.default_rng(3).normal(size=(5, 2))
    a = f.log_prob(x, c)
    b = f.log_prob(x, c + 1.0)
    assert a.shape == (5,) and not np.allclose(a, b)
    xs = f.sample(5, context=c, seed=0)
    np.testing.assert_allclose(f.log_prob(xs, c), f.sample_and_log_prob(5, context=c, seed=0)[1], atol=1e-10)
    with pytest.raises(ShapeError):
        f.log_prob(x)
    with pytest.raises(ShapeError):
        f.log_prob(x, c[:, :1])


def test_input_validation():
    f = _flow()
    with pytest.raises(ShapeError, match=r"\(N, 3\)"):
        f.log_prob(np.zeros((4, 2)))
    with pytest.raises(ShapeError, match="float32"):
        f.to(dtype=np.float32).log_prob(np.zeros((4, 3)))
    f = _flow()
    with pytest.raises(InputOutsideDomain):
        f.log_prob(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ShapeError):
        f.log_prob(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ShapeError):
        f.sample(0)


def test_trained_density_integrates_to_one():
    """A trained 2-D model's density sums to 1 +- 0.01 over a grid covering the data."""
    x = sample_toy("moons", 4000, seed=0)
    mean, std = x.mean(0), x.std(0)
    f = nfcore.build({"dim": 2, "layers": 4, "hidden": [32, 32], "standardize": {"mean": mean, "std": std}})
    h = nfcore.fit(f, x, epochs=6, batch_size=128, lr=3e-3, log=None)
    assert h.rows[-1]["train_nll"] < h.rows[0]["train_nll"]
    lo, hi, n = np.array([-3.0, -3.0]), np.array([4.0, 3.5]), 500
    xs, ys, p = nfcore.plot.density_grid(f, lo, hi, n)
    mass = p.sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert abs(mass - 1.0) < 0.01, mass


def test_float32_flow_keeps_float32():
    f = nfcore.build({"dim": 2, "layers": 2, "hidden": [8], "dtype": "float32"})
    x = np.zeros((3, 2), np.float32)
    assert f.log_prob(x).dtype == np.float32
    assert f.sample(3, seed=0).dtype == np.float32
    for p in f.parameters():
        assert p.data.dtype == np.float32


@pytest.mark.parametrize("base", ["made", "made-mog"])
def test_flow_with_autoregressive_prior(base):
    f = nfcore.build({"flow": "realnvp", "dim": 3, "layers": 2, "hidden": [6], "base": base,
                      "prior_hidden": [7], "prior_components": 2})
    gc.randomize_parameters(f, scale=0.3, seed=0)
    x = np.random.default_rng(1).normal(size=(6, 3))

    def loss():
        return -float(np.mean(f.log_prob(x)))

    f.zero_grad()
    f.loss_and_grad(x)
    for name, p in f.named_parameters():
        num = gc.numerical_gradient(loss, p.data)
        assert np.abs(p.grad - num).max() / max(np.abs(num).max(), 1e-12) < 1e-6, name
    s, lp = f.sample_and_log_prob(5, seed=2)
    np.testing.assert_allclose(f.log_prob(s), lp, atol=1e-10)
    with pytest.raises(nfcore.GradientNotAvailable):
        f.reverse_kl_loss_and_grad(lambda z: (-0.5 * (z**2).sum(1), -z), 4, seed=0)
