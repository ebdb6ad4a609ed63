"""Tabular data: the whitening start, the Gaussian-mixture base, discrete columns, the size rule, the CLI."""

import os

import numpy as np
import pytest
import scipy.special
import scipy.stats

import nfcore
from nfcore import gradcheck as gc
from nfcore import tabular
from nfcore.cli import main
from nfcore.errors import ConfigError, DataError, GradientNotAvailable, InputOutsideDomain
from nfcore.gmm import GaussianMixture, em_fit, mixture_log_prob
from nfcore.kernels import cpu
from nfcore.transforms import AffineLU, DequantizeColumns, whitening


def _correlated(rng, n, d):
    a = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) @ a + rng.normal(size=d) * 3


def _random_mixture(rng, k, d):
    w = rng.dirichlet(np.ones(k) * 3)
    mu = rng.normal(size=(k, d)) * 2
    covs = np.array([a @ a.T + 0.5 * np.eye(d) for a in rng.normal(size=(k, d, d)) * 0.7])
    return w, mu, covs


# -- the ops and layers ---------------------------------------------------------------------------


def test_logsumexp_cols_matches_scipy(rng):
    a = rng.normal(size=(4, 9)) * 30
    a[2, 3] = -np.inf
    out, resp = np.empty(9), np.empty((4, 9))
    cpu.logsumexp_cols(a, out, resp)
    np.testing.assert_allclose(out, scipy.special.logsumexp(a, axis=0), rtol=1e-14)
    np.testing.assert_allclose(resp, np.exp(a - out), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(resp.sum(0), 1.0, rtol=1e-14)


def test_whitening_layer_maps_data_to_zero_mean_identity_covariance(rng):
    x = _correlated(rng, 500, 4)
    mean, chol = whitening(x, ridge=0.0)
    z, ld, _ = AffineLU(4, loc=mean, scale_tril=chol).forward(x, need_grad=False)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(np.cov(z, rowvar=False, bias=True), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(ld, -np.log(np.diag(chol)).sum(), rtol=1e-13)


@pytest.mark.parametrize("diagonal", [False, True])
def test_affine_lu_gradients_both_directions(diagonal, rng):
    layer = AffineLU(4, loc=rng.normal(size=4), scale_tril=np.tril(rng.normal(size=(4, 4))) + 3 * np.eye(4),
                     diagonal=diagonal)
    gc.randomize_parameters(layer, scale=0.3, seed=1)
    x = rng.normal(size=(6, 4))
    for inverse in (False, True):
        res = gc.check_transform(layer, x, inverse=inverse)
        res.assert_ok(1e-6)
        assert all(v > 0 for v in res.norms.values()), res.norms
        assert gc.check_logdet(layer, x, inverse=inverse) < 1e-10
    if diagonal:  # the factors stay fixed at zero
        assert not [n for n, _ in layer.named_parameters() if n in ("lower", "upper")]


def test_dequantize_columns(rng):
    x = np.column_stack([rng.normal(size=50), rng.integers(0, 3, size=50), rng.normal(size=50)])
    layer = DequantizeColumns(3, [1], seed=0)
    y, ld, _ = layer.forward(x)
    assert np.all(ld == 0) and np.array_equal(y[:, [0, 2]], x[:, [0, 2]])
    assert np.all((y[:, 1] - x[:, 1] >= 0) & (y[:, 1] - x[:, 1] < 1))
    back, _, _ = layer.inverse(y)
    np.testing.assert_array_equal(back, x)
    with pytest.raises(InputOutsideDomain, match="column 1"):
        layer.forward(x + 0.5)
    with pytest.raises(ConfigError):
        DequantizeColumns(3, [3])


# -- the Gaussian-mixture base ----------------------------------------------------------------------


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_gaussian_mixture_value_and_gradients(covariance, rng):
    gm = GaussianMixture(3, components=3, covariance=covariance, seed=1)
    w, mu, covs = _random_mixture(rng, 3, 3)
    if covariance == "diag":
        covs = np.array([np.diag(np.diag(c)) for c in covs])
    gm.set_mixture(w, mu, covs)
    z = rng.normal(size=(7, 3)) * 2
    lp, _ = gm.log_prob(z)
    np.testing.assert_allclose(lp, mixture_log_prob(z, w, mu, covs), rtol=1e-12)
    gc.randomize_parameters(gm, scale=0.3, seed=2)
    res = gc.check_distribution(gm, z)
    res.assert_ok(1e-6)
    assert all(v > 0 for v in res.norms.values()), res.norms


def test_gaussian_mixture_samples_and_normalises(rng):
    gm = GaussianMixture(2, components=2)
    gm.set_mixture([0.25, 0.75], [[-3.0, 0.0], [3.0, 1.0]], [np.eye(2) * 0.5, [[1.0, 0.5], [0.5, 1.0]]])
    z = gm.sample(40_000, np.random.default_rng(0))
    left = z[:, 0] < 0
    assert abs(left.mean() - 0.25) < 0.01
    np.testing.assert_allclose(z[~left].mean(0), [3.0, 1.0], atol=0.03)
    np.testing.assert_allclose(np.cov(z[~left], rowvar=False), [[1.0, 0.5], [0.5, 1.0]], atol=0.05)
    g = np.linspace(-9, 9, 361)
    gx, gy = np.meshgrid(g, g)
    lp, _ = gm.log_prob(np.stack([gx.ravel(), gy.ravel()], 1))
    assert abs(np.exp(lp).sum() * (g[1] - g[0]) ** 2 - 1) < 1e-4
    _, cache = gm.rsample(3, np.random.default_rng(0))
    with pytest.raises(GradientNotAvailable):
        gm.rsample_backward(np.ones((3, 2)), cache)


def test_em_fit_recovers_a_mixture(rng):
    w, mu, covs = _random_mixture(rng, 2, 3)
    mu = mu * 3  # well separated
    pick = rng.choice(2, size=4000, p=w)
    x = np.array([rng.multivariate_normal(mu[c], covs[c]) for c in pick])
    wf, muf, covf, ll = em_fit(x, 2, "full", seed=0)
    order = np.argsort(muf[:, 0]) if mu[0, 0] < mu[1, 0] else np.argsort(-muf[:, 0])
    np.testing.assert_allclose(wf[order], w, atol=0.03)
    np.testing.assert_allclose(muf[order], mu, atol=0.15)
    assert ll == pytest.approx(mixture_log_prob(x, wf, muf, covf).mean(), rel=1e-9)
    assert ll > mixture_log_prob(x, [1.0], [x.mean(0)], [np.cov(x, rowvar=False, bias=True)]).mean() + 0.5


# -- an untrained tabular flow is the best Gaussian ------------------------------------------------------


@pytest.mark.parametrize("flow", ["realnvp", "maf", "nice"])
def test_untrained_flow_equals_full_gaussian(flow, rng):
    x = _correlated(rng, 300, 5)
    mean, std = x.mean(0), x.std(0)
    model = nfcore.build({"flow": flow, "dim": 5, "layers": 2, "hidden": [8], "whiten": True,
                          "standardize": {"mean": mean, "std": std}})
    tabular.initialize(model, x)
    # the layer whitens the standardised rows; its covariance carries whitening's ridge
    s = (x - mean) / std
    cov = np.cov(s, rowvar=False, bias=True)
    cov += 1e-6 * np.mean(np.diag(cov)) * np.eye(5)
    ref = scipy.stats.multivariate_normal(s.mean(0), cov).logpdf((x[:20] - mean) / std) - np.log(std).sum()
    np.testing.assert_allclose(model.log_prob(x[:20]), ref, rtol=1e-10)


def test_untrained_flow_with_mixture_base_equals_the_mixture(rng):
    x = _correlated(rng, 300, 3)
    model = nfcore.build({"flow": "maf", "dim": 3, "layers": 2, "hidden": [8], "whiten": True, "base": "gmm",
                          "prior_components": 2})
    w, mu, covs = _random_mixture(rng, 2, 3)
    tabular.initialize(model, x, (w, mu, covs))
    mean, chol = whitening(x)
    z = np.linalg.solve(chol, (x[:10] - mean).T).T
    ref = mixture_log_prob(z, w, mu, covs) - np.log(np.diag(chol)).sum()
    np.testing.assert_allclose(model.log_prob(x[:10]), ref, rtol=1e-10)
    with pytest.raises(ConfigError, match="whiten"):
        tabular.initialize(nfcore.build({"dim": 3}), x)


# -- columns, the size rule, the choice of base ------------------------------------------------------------


def test_column_kinds(rng):
    x = np.column_stack([rng.normal(size=40), rng.integers(1, 3, size=40), np.arange(40.0)])
    assert tabular.column_kinds(x) == [1, 2]
    codes = np.column_stack([rng.normal(size=40), rng.choice([-0.05, 0.05], size=40)])
    with pytest.raises(DataError, match="column 1 holds only 2 distinct values"):
        tabular.column_kinds(codes)


def test_plan_rule():
    small = tabular.plan(398, 30)
    assert small["regime"] == "small" and small["val_rows"] == 79 and small["batch_size"] == 32
    assert small["layers"] == 4 and small["hidden"] == 32 and small["weight_decay"] > 0
    assert small["epochs"] * (319 // 32) == pytest.approx(2000, rel=0.01)
    large = tabular.plan(20_000, 2)
    assert large == {"val_rows": 2000, "batch_size": 256, "hidden": 64, "layers": 8, "weight_decay": 0.0,
                     "lr": 2e-3, "epochs": 40, "regime": "large", "patience": 8}
    assert tabular.plan(100_000, 2, "maf")["epochs"] == 60


def test_select_base_finds_clusters_and_keeps_a_gaussian(rng):
    d = 2
    blobs = np.concatenate([rng.normal(size=(200, d)) * 0.3 - 3, rng.normal(size=(200, d)) * 0.3 + 3])
    choice, scores = tabular.select_base(tabular.whiten_rows(blobs)[0], seed=0)
    assert choice is not None and choice[0] >= 2
    assert max(scores.values()) > scores[(1, "full")] + 0.5
    gauss = rng.normal(size=(400, 3))
    choice, scores = tabular.select_base(tabular.whiten_rows(gauss)[0], seed=0)
    assert choice is None, scores


def test_select_base_does_not_depend_on_the_column_order(rng):
    """Candidates are fitted in the symmetric whitening of the frame, so permuting the columns
    (what a RealNVP's first permutation does, and what a Cholesky whitening is not blind to)
    changes neither the scores nor the chosen model; the mixture comes back in z's coordinates."""
    mix = rng.normal(size=(4, 4))
    x = np.concatenate([rng.normal(size=(150, 4)) @ mix + 4.0, rng.normal(size=(150, 4)) * 0.5 @ mix - 2.0])
    perm = [2, 0, 3, 1]
    z1, z2 = tabular.whiten_rows(x)[0], tabular.whiten_rows(x[:, perm])[0]
    c1, s1 = tabular.select_base(z1, seed=0, frame=x)
    c2, s2 = tabular.select_base(z2, seed=0, frame=x[:, perm])
    assert s1.keys() == s2.keys()
    for key in s1:
        assert abs(s1[key] - s2[key]) < 1e-8, key
    assert c1 is not None and c1[:2] == c2[:2]
    # the same model in two coordinate systems that differ by a rotation: the same log-likelihoods
    np.testing.assert_allclose(mixture_log_prob(z1, *c1[2]), mixture_log_prob(z2, *c2[2]), rtol=1e-8, atol=1e-8)
    assert np.mean(mixture_log_prob(z1, *c1[2])) > s1[(1, "full")]


# -- the CLI on a small table ---------------------------------------------------------------------------------


def test_cli_small_table_end_to_end(tmp_path, rng):
    x = np.column_stack([_correlated(rng, 160, 3), rng.integers(1, 3, size=160)])
    x[:80, :3] += 6  # two clusters
    path = tmp_path / "t.csv"
    np.savetxt(path, x, delimiter=",")
    lines = []
    run = tmp_path / "run"
    import nfcore.cli as cli

    args = cli.build_parser().parse_args(["train", "--data", str(path), "--flow", "maf", "--steps", "60",
                                          "--out", str(run), "--no-plot"])
    assert cli.cmd_train(args, out=lines.append) == 0
    text = "\n".join(lines)
    assert "integer-valued columns [3] dequantised" in text and "plan (small table)" in text
    assert "base candidate normal" in text and "whitening on" in text
    model = nfcore.load(run / "model.npz")
    assert model.config["whiten"] and model.config["discrete"] == [3]
    lp = model.log_prob(x[:5].astype(np.float32))
    assert np.all(np.isfinite(lp))
    # the run restored its best validation weights: never worse than the untrained start on validation
    start = [ln for ln in lines if ln.startswith("start")][0]
    assert float(text.split("best validation NLL ")[1].split()[0]) <= float(start.split()[3]) + 1e-6
    assert main(["logprob", str(run / "model.npz"), str(path), "--output", str(tmp_path / "lp.npy")]) == 0
    assert os.path.exists(tmp_path / "lp.npy")


def test_fit_keep_start_restores_the_start_when_training_only_hurts(rng):
    x = _correlated(rng, 200, 3)
    model = nfcore.build({"flow": "realnvp", "dim": 3, "layers": 2, "hidden": [8], "whiten": True})
    tabular.initialize(model, x[:150])
    before = model.state_dict()
    # a validation set the start fits far better than anything training on shifted data can
    nfcore.fit(model, x[:150] * 3 + 10, val_data=x[150:], epochs=3, batch_size=50, lr=5e-2, keep_start=True,
               log=None)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
