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


def _order_positions(made):
    order = made.order()
    pos = np.empty(made.dim, dtype=int)
    pos[order] = np.arange(made.dim)
    return pos


@pytest.mark.parametrize("order, degrees, residual", [("natural", "sequential", False), ("reversed", "random", False),
                                                      ("random", "random", False), ("random", "random", True),
                                                      ("natural", "sequential", True)])
def test_made_is_autoregressive(order, degrees, residual):
    """Output p*D + d depends only on variables strictly before d in the order (exact Jacobian),
    with and without residual MADE blocks."""
    from nfcore.nn import MADE

    d = 5
    hidden = [12, 12, 12] if residual else [12, 12]
    made = MADE(d, hidden, params_per_dim=2, order=order, hidden_degrees=degrees, residual=residual, rng=4)
    gc.randomize_parameters(made, seed=5)
    x = np.random.default_rng(6).normal(size=(3, d))
    _, cache = made.forward(x)
    pos = _order_positions(made)
    for o in range(2 * d):
        dy = np.zeros((3, 2 * d))
        dy[:, o] = 1.0
        made.zero_grad()
        jrow = made.backward(dy, cache)  # d output o / d x, per sample
        target = o % d
        for j in range(d):
            if pos[j] >= pos[target]:
                assert np.all(jrow[:, j] == 0), (o, j)
    # and it is not trivially zero: the last variable depends on the earlier ones
    assert np.any(made.forward(x + 0.1)[0] != made.forward(x)[0])


def test_made_gradients_and_masked_weights_stay_masked(rng):
    from nfcore.nn import MADE
    from nfcore.train import Adam

    made = MADE(4, [8, 8], params_per_dim=2, context_dim=2, activation="tanh", rng=0)
    gc.randomize_parameters(made, seed=3)  # also writes into masked entries: they must stay inert
    x = rng.normal(size=(5, 4))
    c = rng.normal(size=(5, 2))
    res = gc.check_module(_WithContext(made, c), x)
    res.assert_ok(1e-6)
    masked = [layer.mask.data == 0 for layer in made.layers]
    before = [layer.weight.data[m].copy() for layer, m in zip(made.layers, masked)]
    opt = Adam(made.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        y, cache = made.forward(x, c)
        made.backward(np.ones_like(y), cache)
        for layer, m in zip(made.layers, masked):
            assert np.all(layer.weight.grad[m] == 0)
        opt.step()
    for layer, m, b in zip(made.layers, masked, before):
        np.testing.assert_array_equal(layer.weight.data[m], b)


class _WithContext:
    """Adapter: a MADE with a fixed context as a module of x alone (for check_module)."""

    def __init__(self, made, context):
        self.made, self.context = made, context

    def forward(self, x, need_grad=True):
        return self.made.forward(x, self.context, need_grad)

    def backward(self, dy, cache):
        return self.made.backward(dy, cache)

    def __getattr__(self, name):
        return getattr(self.made, name)


@pytest.mark.parametrize("components", [1, 3])
def test_autoregressive_prior_gradients(components, rng):
    from nfcore import AutoregressivePrior

    prior = AutoregressivePrior(3, hidden=[9, 9], components=components, order="reversed", rng=0)
    gc.randomize_parameters(prior, seed=2)
    res = gc.check_distribution(prior, rng.normal(size=(5, 3)))
    res.assert_ok(1e-6)
    assert all(v > 0 for v in res.norms.values()), res.norms


def test_autoregressive_prior_samples_exactly_and_normalises():
    from nfcore import AutoregressivePrior
    from nfcore.errors import GradientNotAvailable
    from nfcore.kernels import cpu

    prior = AutoregressivePrior(2, hidden=[16, 16], components=3, rng=1)
    gc.randomize_parameters(prior, scale=0.3, seed=3)
    z, cache = prior.rsample(50, np.random.default_rng(4))
    # the sequential sampler's fixed point: drawing again, with the same noise, from the
    # conditionals evaluated at the sample itself gives the sample back
    r = np.random.default_rng(4)
    unif, eps = r.uniform(size=(50, 2)), r.standard_normal((50, 2))
    h, _ = prior.made.forward(z, need_grad=False)
    again = np.empty_like(z)
    cpu.mog_sample(h, 3, 3.0, unif, eps, again)
    np.testing.assert_allclose(again, z, atol=1e-12)
    # the density integrates to 1
    g = np.linspace(-8, 8, 401)
    gx, gy = np.meshgrid(g, g)
    lp, _ = prior.log_prob(np.stack([gx.ravel(), gy.ravel()], 1))
    assert abs(np.exp(lp).sum() * (g[1] - g[0]) ** 2 - 1) < 1e-3
    with pytest.raises(GradientNotAvailable):
        prior.rsample_backward(np.ones_like(z), cache)


@pytest.mark.parametrize("components", [1, 4])
def test_autoregressive_prior_fast_sampling_equals_naive(components):
    from nfcore import AutoregressivePrior

    prior = AutoregressivePrior(5, hidden=[23, 17], components=components, order="random", rng=2)
    gc.randomize_parameters(prior, scale=0.4, seed=3)
    fast, _ = prior.rsample(37, np.random.default_rng(9))
    naive, _ = prior.rsample(37, np.random.default_rng(9), sequential="naive")
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kw", [{"order": "reversed"},
                                {"order": "random", "hidden_degrees": "random", "residual": True, "context_dim": 3}])
def test_made_block_sparse_path_equals_dense(kw, rng, monkeypatch):
    """A MADE large enough for the CPU's block-sparse GEMMs (and a batch above their row
    threshold) gives the outputs, input gradient and weight gradients of the dense path, and its
    exact Jacobian stays strictly triangular in the order (also with random degrees, residual
    blocks and context inputs)."""
    from nfcore.kernels.dense import cpu as cpu_dense
    from nfcore.nn import MADE

    monkeypatch.setattr(cpu_dense, "_THREADED_BLOCK_MACS", 0)  # blocks at this small batch on any thread count
    made = MADE(6, [80, 80], params_per_dim=2, rng=1, **kw)
    gc.randomize_parameters(made, seed=2)
    assert made.layers[1]._col_blocks is not None and made.layers[1]._row_blocks is not None
    x = rng.normal(size=(24, 6))
    ctx = rng.normal(size=(24, 3)) if kw.get("context_dim") else None
    dy = rng.normal(size=(24, 12))

    def run():
        made.zero_grad()
        y, cache = made.forward(x, ctx)
        dx = made.backward(dy, cache)
        return [y, dx] + [layer.weight.grad.copy() for layer in made.layers]

    blocked = run()
    plans = [(layer._col_blocks, layer._row_blocks) for layer in made.layers]
    for layer in made.layers:
        layer._col_blocks = layer._row_blocks = None
    dense = run()
    for layer, (c, r) in zip(made.layers, plans):
        layer._col_blocks, layer._row_blocks = c, r
    for a, b in zip(blocked, dense):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    pos = _order_positions(made)
    _, cache = made.forward(x, ctx)
    for o in range(12):
        e = np.zeros((24, 12))
        e[:, o] = 1.0
        jrow = made.backward(e, cache)
        later = pos >= pos[o % 6]
        assert np.all(jrow[:, later] == 0), o
