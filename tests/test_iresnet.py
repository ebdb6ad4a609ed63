"""Invertible residual blocks: spectral normalisation, Lipschitz bound, fixed-point inverse,
the three log-det estimators and their gradients."""

import numpy as np
import pytest

import nfcore
from nfcore import gradcheck as gc
from nfcore.errors import ConfigError, GradientNotAvailable, InverseNotAvailable
from nfcore.kernels._scalar import ACT_LIPSWISH
from nfcore.nn import SpectralLinear
from nfcore.transforms import ResidualBlock


def _block(mode="exact", activation="lipswish", seed=0, **kw):
    b = ResidualBlock(3, hidden=[5, 4], activation=activation, logdet=mode, eval_logdet=mode, rng=seed, **kw)
    gc.randomize_parameters(b, 0.3, seed + 1)
    for layer in b.layers:
        layer.power_iteration(100)
    b.frozen_probes = 7  # the same probes (and roulette draw) every call
    return b.eval()  # no power-iteration step inside the finite differences


@pytest.mark.parametrize("coeff", [0.5, 0.9])
def test_spectral_linear_gradient_through_the_normalisation(coeff, rng):
    layer = SpectralLinear(4, 3, coeff=coeff, rng=1)
    layer.weight.data[...] *= 3.0  # well above the bound: the normalisation is active
    layer.power_iteration(100)
    p0, q0 = layer.p.data.copy(), layer.q.data.copy()

    def loss():
        layer.p.data, layer.q.data = p0, q0  # sigma = p^T W q with the singular vectors held fixed
        wt, _ = layer.normalized(update=False)
        return float(np.sum(wt * g))

    g = rng.normal(size=(4, 3))
    wt, cache = layer.normalized(update=False)
    assert cache.scale < 1 and np.isclose(np.linalg.norm(wt, 2), coeff, rtol=1e-6)
    layer.weight.grad[...] = 0
    layer.weight_backward(g, cache)
    num = gc.numerical_gradient(loss, layer.weight.data)
    assert np.max(np.abs(num - layer.weight.grad)) < 1e-7


def test_lipschitz_below_the_bound(rng):
    b = ResidualBlock(4, hidden=[32, 32], coeff=0.9, rng=3)
    gc.randomize_parameters(b, 1.0, 4)  # far beyond the bound before normalisation
    for layer in b.layers:
        layer.power_iteration(200)
    b.eval()
    x, y = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
    gx, _ = b._g(x, update=False)
    gy, _ = b._g(y, update=False)
    ratio = np.linalg.norm(gx - gy, axis=1) / np.linalg.norm(x - y, axis=1)
    norms = [np.linalg.norm(layer.normalized(False)[0], 2) for layer in b.layers]
    assert max(norms) <= 0.9 * (1 + 1e-9)
    assert ratio.max() < np.prod(norms) <= 0.9**3 + 1e-9


@pytest.mark.parametrize("activation", ["lipswish", "elu", "lipswish-learned-beta"])
@pytest.mark.parametrize("mode", ["exact", "series"])
def test_block_gradients(mode, activation, rng):
    """Input and every parameter (the learnable LipSwish betas too: through phi in the output,
    phi' in J and phi'' in the estimators' chains) through output and log-det."""
    learn = activation.endswith("beta")
    b = _block(mode, "lipswish" if learn else activation, n_terms=4, n_probes=2, learn_beta=learn)
    if learn:
        assert [n for n, _ in b.named_parameters() if n.startswith("beta")] == ["beta_0", "beta_1"]
        b.beta_0.data[:] = np.linspace(-1.5, 2.0, 5)  # negative betas are allowed (still 1-Lipschitz)
    x = rng.normal(size=(4, 3))
    result = gc.check_transform(b, x)
    result.assert_ok(1e-6)
    for name, _ in b.named_parameters():
        assert result.norms[name] > 0, name


def test_exact_logdet_and_inverse(rng):
    b = _block("exact")
    x = rng.normal(size=(6, 3))
    assert gc.check_logdet(b, x) < 1e-10
    err_x, err_ld = gc.check_inverse(b, x)
    assert err_x < 1e-8 and err_ld < 1e-8
    assert 1 <= b.last_iterations < b.max_iter
    _, _, cache = b.inverse(x)
    with pytest.raises(GradientNotAvailable):
        b.backward(x, x[:, 0], cache)


def test_inverse_that_does_not_converge_is_an_error(rng):
    b = _block("exact")
    b.max_iter = 2
    with pytest.raises(InverseNotAvailable, match="did not reach"):
        b.inverse(rng.normal(size=(3, 3)))
    b.on_nonconvergence = "warn"
    with pytest.warns(RuntimeWarning):
        b.inverse(rng.normal(size=(3, 3)))


def _strong_block(mode, **kw):
    b = ResidualBlock(3, hidden=[8, 8], logdet=mode, eval_logdet=mode, coeff=0.97, rng=5, **kw)
    gc.randomize_parameters(b, 2.0, 6)  # large weights: every layer sits at the bound, J is large
    for layer in b.layers:
        layer.power_iteration(200)
    return b.eval()


def test_series_bias_falls_with_the_number_of_terms(rng):
    """With probes sqrt(D) e_j the Hutchinson average is the exact trace: the error left is the bias."""
    x = rng.normal(size=(64, 3))
    exact = np.asarray(_strong_block("exact").forward(x)[1])
    errors = []
    for n in (1, 2, 4, 8, 16):
        b = _strong_block("series", n_terms=n)
        b.frozen_probes = np.sqrt(3) * np.eye(3)
        errors.append(np.max(np.abs(np.asarray(b.forward(x)[1]) - exact)))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.05 * errors[0], errors


def _aligned_block(mode, **kw):
    """A 3 -> 4 -> 3 LipSwish block with W2 = W1^T, both at the spectral bound 0.97: J_g is close to
    symmetric with spectral radius 0.3-0.6 over the test rows, so the series' higher terms matter."""
    b = ResidualBlock(3, hidden=[4], logdet=mode, eval_logdet=mode, coeff=0.97, rng=5, **kw)
    r = np.random.default_rng(7)
    w1 = 3.0 * r.normal(size=b.layers[0].weight.data.shape)
    b.layers[0].weight.data[...] = w1
    b.layers[1].weight.data[...] = w1.T
    b.layers[0].bias.data[...] = 0.5 * r.normal(size=4)
    b.layers[1].bias.data[...] = 0.5 * r.normal(size=3)
    for layer in b.layers:
        layer.power_iteration(200)
    return b.eval()


#: extra roulette terms summed over: P(extra > 80) = 0.5^81 and the terms fall like 0.61^k
ROULETTE_EXTRA = 80


def _roulette_expectation(b, x):
    """(E[log-det estimate], E[parameter gradient]) over the roulette's geometric draw, exactly.

    The probes are sqrt(D) e_j (their average is the exact trace), so the draw of the number of
    extra terms is the only randomness: sum_e P(extra = e) * estimate(e), e = 0..ROULETTE_EXTRA,
    each estimate from the block's own forward and backward with that draw fixed."""
    b.frozen_probes = np.sqrt(3) * np.eye(3)
    draw = b._probes
    p = b.roulette_p
    ld_sum, grad_sum = 0.0, 0.0
    for e in range(ROULETTE_EXTRA + 1):
        b._probes = lambda n, dtype, e=e: (draw(n, dtype)[0], e)
        _, ld, cache = b.forward(x)
        b.zero_grad()
        b.backward(np.zeros_like(x), np.ones(len(x)), cache)
        w = p * (1 - p) ** e
        ld_sum = ld_sum + w * np.asarray(ld)
        grad_sum = grad_sum + w * np.concatenate([q.grad.ravel() for q in b.parameters()])
    del b._probes
    return ld_sum, grad_sum


def _exact_logdet_and_gradient(x):
    ref = _aligned_block("exact")
    _, ld, cache = ref.forward(x)
    ref.zero_grad()
    ref.backward(np.zeros_like(x), np.ones(len(x)), cache)
    return np.asarray(ld), np.concatenate([q.grad.ravel() for q in ref.parameters()])


def test_roulette_expectation_is_the_exact_logdet_and_gradient(rng):
    """Unbiasedness computed, not sampled: the estimator's expectation over N equals log det(I + J_g)
    and the Neumann gradient's expectation equals the exact gradient, both to rounding. Dropping
    1/P(N >= k), truncating at n_terms, or breaking the Neumann vector moves them by 1e-3 or more."""
    x = rng.normal(size=(8, 3))
    want_ld, want_grad = _exact_logdet_and_gradient(x)
    b = _aligned_block("roulette", n_terms=2, n_probes=3)
    ld, grad = _roulette_expectation(b, x)
    # measured: 3e-16 (log-det, values up to 0.52) and 1e-16 (gradient, entries up to 0.9)
    assert np.max(np.abs(ld - want_ld)) < 1e-12, np.abs(ld - want_ld)
    assert np.max(np.abs(grad - want_grad)) < 1e-12 * np.max(np.abs(want_grad)), np.abs(grad - want_grad)
    # the terms beyond the second carry weight on this block: a 2-term truncation misses by 0.05
    assert np.max(np.abs(want_ld - _series(x, 2))) > 1e-2


def _series(x, n):
    s = _aligned_block("series", n_terms=n)
    s.frozen_probes = np.sqrt(3) * np.eye(3)
    return np.asarray(s.forward(x, need_grad=False)[1])


def test_the_roulette_check_catches_a_dropped_reweighting(rng, monkeypatch):
    """Mutation check: without 1/P(N >= k) the expectation is biased, and the check above sees it."""
    x = rng.normal(size=(8, 3))
    want_ld, want_grad = _exact_logdet_and_gradient(x)

    def unweighted(self, mode, extra):
        k = np.arange(1, self.n_terms + (extra if mode == "roulette" else 0) + 1)
        return (-1.0) ** (k + 1) / k

    monkeypatch.setattr(ResidualBlock, "_weights", unweighted)
    ld, grad = _roulette_expectation(_aligned_block("roulette", n_terms=2), x)
    assert np.max(np.abs(ld - want_ld)) > 1e-3
    assert np.max(np.abs(grad - want_grad)) > 1e-3 * np.max(np.abs(want_grad))


def test_roulette_draws_a_geometric_number_of_extra_terms():
    b = _aligned_block("roulette", n_terms=2)
    b.frozen_probes = None
    extra = np.array([b._probes(1, np.float64)[1] for _ in range(4000)])
    p = b.roulette_p
    assert extra.min() == 0
    se = np.sqrt((1 - p) / p**2 / len(extra))
    assert abs(extra.mean() - (1 - p) / p) < 4 * se
    assert abs(np.mean(extra == 0) - p) < 4 * np.sqrt(p * (1 - p) / len(extra))


def test_roulette_training_estimate_is_unbiased_by_monte_carlo(rng):
    """End to end with random probes and draws (a weak check beside the exact one above)."""
    x = rng.normal(size=(8, 3))
    want_ld, _ = _exact_logdet_and_gradient(x)
    b = _aligned_block("roulette", n_terms=2, n_probes=1)
    b.frozen_probes = None
    lds = np.array([float(np.sum(b.forward(x, need_grad=False)[1])) for _ in range(600)])
    se = lds.std() / np.sqrt(len(lds))
    assert abs(lds.mean() - float(np.sum(want_ld))) < 4 * se


def test_relu_and_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="second derivative"):
        ResidualBlock(2, activation="relu")
    with pytest.raises(ConfigError):
        ResidualBlock(2, coeff=1.2)
    with pytest.raises(ConfigError):
        ResidualBlock(2, logdet="taylor")
    with pytest.raises(ConfigError, match="lipswish"):
        ResidualBlock(2, activation="elu", learn_beta=True)


def test_lipswish_is_1_lipschitz_for_every_beta():
    """The slope of h sigmoid(beta h) / 1.1 depends on beta h alone: below 1 for any beta."""
    from nfcore.kernels import cpu

    h = np.linspace(-30, 30, 20001)[:, None] * np.ones((1, 5))
    beta = np.array([-3.0, -0.5, 0.0, 0.7, 4.0])
    a, d1, d2 = (np.empty_like(h) for _ in range(3))
    cpu.act2(h, ACT_LIPSWISH, beta, a, d1, d2)
    assert np.all(np.abs(d1) < 1.0) and np.abs(d1).max() > 0.99
    # the beta derivatives against central differences, where they are not negligible
    hs = np.linspace(-5, 5, 41)[:, None] * np.ones((1, 5))
    p, q = np.empty_like(hs), np.empty_like(hs)
    cpu.lipswish_dbeta(hs, beta, p, q)
    assert np.abs(q).max() > 0.5 and np.abs(p).max() > 0.5
    eps = 1e-6
    for j in range(5):
        fd = []
        for sign in (1, -1):
            b = beta.copy()
            b[j] += sign * eps
            out = [np.empty_like(hs) for _ in range(3)]
            cpu.act2(hs, ACT_LIPSWISH, b, *out)
            fd.append(out[:2])
        np.testing.assert_allclose(p[:, j], (fd[0][0] - fd[1][0])[:, j] / (2 * eps), rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(q[:, j], (fd[0][1] - fd[1][1])[:, j] / (2 * eps), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("flow", ["iresnet", "resflow"])
def test_residual_flows_train_and_sample(flow):
    from nfcore.data import sample_toy

    x = sample_toy("8gaussians", 512, seed=0).astype(np.float64) / 3
    f = nfcore.build({"flow": flow, "dim": 2, "layers": 2, "hidden": [16, 16]})
    h = nfcore.fit(f, x, epochs=20, batch_size=64, lr=1e-2, log=None)
    assert not f.training  # evaluation: the exact log-det at D = 2
    # training helped beyond the first epoch (which holds ActNorm's data-dependent start):
    # measured 2.072 -> 1.962 (iresnet) and 1.942 (resflow)
    assert h.best_val < h.rows[0]["val_nll"] - 0.05, [r["val_nll"] for r in h.rows]
    lp = np.asarray(f.log_prob(x[:5]))
    s, lps = f.sample_and_log_prob(4, seed=0)
    assert np.all(np.isfinite(lp)) and np.allclose(np.asarray(f.log_prob(s)), lps, atol=1e-6)
