"""Continuous flows (FFJORD): the dynamics kernels, the solvers, both gradients, the trace estimators.

The contract test (test_contract.py) runs CNF cases on fine RK4 steps; here: the kernel against
finite differences and the Jacobian, the solvers against known solutions and their budget, the
discretise-then-optimise gradient against finite differences to 1e-7, the adjoint converging to
it as the tolerance shrinks, the closed-form log-det of linear dynamics (both trace modes), the
RNODE penalties' gradients, and the model's build / fit / checkpoint / CLI edge.
"""

import numpy as np
import pytest

import nfcore
from nfcore import gradcheck as gc
from nfcore.errors import ConfigError, SolverError
from nfcore.kernels import cpu as ops
from nfcore.kernels.ode.math import field_work_size, layer_sizes
from nfcore.ode import integrate, rk_backward
from nfcore.transforms import CNF

ACTS = {"tanh": 3, "softplus": 5, "swish": 7}


def _field_problem(n=4, d=3, c=2, p=2, hidden=(6, 5), seed=0):
    r = np.random.default_rng(seed)
    dims = np.array([d + c, *hidden, d], dtype=np.int64)
    theta = 0.5 * r.standard_normal(sum(layer_sizes(list(dims))))
    y = r.standard_normal((n, d + 3))
    ctx = r.standard_normal((n, c))
    probes = r.standard_normal((n, p, d))
    work = np.empty(field_work_size(n, p, list(dims), d))
    return dims, theta, y, ctx, probes, work


@pytest.mark.parametrize("activation", sorted(ACTS))
def test_field_vjp_matches_finite_differences(activation):
    """d<g, field>/d(z, t, context, theta) for a cotangent on f, the trace estimate, |f|^2 and |Ju|^2:
    the gradient through the trace is the network's second derivative."""
    dims, theta, y, ctx, probes, work = _field_problem()
    n, d = y.shape[0], probes.shape[2]
    code, w = ACTS[activation], 0.5
    t = np.array([0.37])
    g = np.random.default_rng(1).standard_normal((n, d + 3))

    def loss():
        dy = np.empty((n, d + 3))
        ops.cnf_field(y, t[0], ctx, theta, dims, code, probes, w, dy, work)
        return float(np.sum(g * dy))

    dy, dz, dth = np.empty((n, d + 3)), np.empty((n, d)), np.empty_like(theta)
    dctx, dt = np.empty_like(ctx), np.empty(1)
    ops.cnf_field_vjp(y, t[0], ctx, theta, dims, code, probes, w, g, dy, dz, dth, dctx, dt, work)
    want = np.empty((n, d + 3))
    ops.cnf_field(y, t[0], ctx, theta, dims, code, probes, w, want, work)
    np.testing.assert_array_equal(dy, want)
    num_y = gc.numerical_gradient(loss, y)
    assert np.all(num_y[:, d:] == 0)  # the field reads z only
    for got, num in ((dz, num_y[:, :d]), (dth, gc.numerical_gradient(loss, theta)),
                     (dctx, gc.numerical_gradient(loss, ctx)), (dt, gc.numerical_gradient(loss, t))):
        assert np.max(np.abs(num)) > 0
        assert gc._rel_error(got, num) < 1e-7


def test_field_exact_trace_frobenius_and_kinetic():
    """With the basis vectors as probes (w = 1): tr J, |J|_F^2 and |f|^2 of the finite-difference Jacobian."""
    dims, theta, y, ctx, _, _ = _field_problem(n=5, d=3)
    n, d = y.shape[0], 3
    basis = np.ascontiguousarray(np.broadcast_to(np.eye(d), (n, d, d)))
    work = np.empty(field_work_size(n, d, list(dims), d))

    def field(z):
        yy = y.copy()
        yy[:, :d] = z
        out = np.empty((n, d + 3))
        ops.cnf_field(yy, 0.2, ctx, theta, dims, ACTS["tanh"], basis, 1.0, out, work)
        return out

    out = field(y[:, :d])
    jac = np.empty((n, d, d))
    for j in range(d):
        e = np.zeros(d)
        e[j] = 1e-6
        jac[:, :, j] = (field(y[:, :d] + e)[:, :d] - field(y[:, :d] - e)[:, :d]) / 2e-6
    np.testing.assert_allclose(out[:, d], np.trace(jac, axis1=1, axis2=2), atol=1e-8)
    np.testing.assert_allclose(out[:, d + 2], np.sum(jac**2, axis=(1, 2)), atol=1e-8)
    np.testing.assert_allclose(out[:, d + 1], np.sum(out[:, :d] ** 2, axis=1), rtol=1e-14)


# -- solvers ----------------------------------------------------------------------------
def _cos_field(y, t, out):
    """dy/dt = cos(t) y: y(t) = y(0) e^(sin t)."""
    np.multiply(y, np.cos(t), out=out)


def test_rk4_is_fourth_order():
    y0 = np.array([1.0, -2.0])
    errors = [np.max(np.abs(integrate(_cos_field, y0, 0.0, 2.0, "rk4", steps=s).y - y0 * np.exp(np.sin(2.0))))
              for s in (10, 20, 40)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 3.8) & (orders < 4.3)), orders


@pytest.mark.parametrize("backward_in_time", [False, True])
def test_dopri5_error_follows_its_tolerance(backward_in_time):
    y0 = np.array([1.0, 0.5, -3.0])
    t0, t1 = (3.0, 0.0) if backward_in_time else (0.0, 3.0)
    exact = y0 * np.exp(np.sin(t1) - np.sin(t0))
    errors, nfes = [], []
    for tol in (1e-4, 1e-6, 1e-8, 1e-10):
        solve = integrate(_cos_field, y0, t0, t1, "dopri5", rtol=tol, atol=tol)
        errors.append(np.max(np.abs(solve.y - exact) / (1 + np.abs(exact))))
        nfes.append(solve.nfe)
        assert errors[-1] < 30 * tol
    assert errors[-1] < errors[0] * 1e-4 and nfes == sorted(nfes)


def test_solver_budget_and_divergence_raise():
    def stiff(y, t, out):
        np.multiply(y - np.cos(t), -1e6, out=out)

    with pytest.raises(SolverError, match="more than 20 steps"):
        integrate(stiff, np.ones(2), 0.0, 1.0, "dopri5", rtol=1e-8, atol=1e-8, max_steps=20)

    def blows_up(y, t, out):
        np.multiply(y, 1e300, out=out)  # the first step overflows

    with pytest.raises(SolverError, match="NaN or inf"), np.errstate(over="ignore", invalid="ignore"):
        integrate(blows_up, np.ones(1), 0.0, 2.0, "rk4", steps=3)
    with pytest.raises(ConfigError):
        integrate(_cos_field, np.ones(1), 0.0, 1.0, "euler")


def test_rk_backward_is_the_exact_vjp_of_the_discrete_solve():
    """dL/dy0 of a recorded RK4 solve of y' = A(t) y equals finite differences of the same steps."""
    r = np.random.default_rng(0)
    a = r.standard_normal((3, 3))

    def field(y, t, out):
        np.dot(y, a * (1 + t), out=out)

    def vjp(y, t, g):
        return g @ (a * (1 + t)).T

    y0, g = r.standard_normal((2, 3)), r.standard_normal((2, 3))
    solve = integrate(field, y0, 0.0, 1.0, "rk4", steps=3, record=True)
    got = rk_backward(solve, g, "rk4", vjp)
    num = gc.numerical_gradient(lambda: float(np.sum(g * integrate(field, y0, 0.0, 1.0, "rk4", steps=3).y)), y0)
    assert gc._rel_error(got, num) < 1e-9


# -- the CNF transform ------------------------------------------------------------------------
def _cnf(**kw):
    kw = {"hidden": [5, 4], "rng": 1, **kw}
    cnf = CNF(kw.pop("dim", 3), **kw)
    gc.randomize_parameters(cnf, scale=0.5, seed=2)
    return cnf


@pytest.mark.parametrize("inverse", [False, True])
def test_discretise_gradients_match_finite_differences(inverse):
    """Fixed-step RK4, discretise-then-optimise: the input, the t-independent (W, b) and
    t-dependent (gate, shift) parameters and the context within 1e-7 of central differences.

    The step is 1e-5: the first layer's gate gradients are ~5e-3, so at 1e-6 the differences'
    rounding alone reaches 2.5e-7 of them (1.2e-8 at 1e-5, 2e-9 at 1e-4)."""
    cnf = _cnf(solver="rk4", steps=5, gradient="discretise", context_dim=2, activation="softplus")
    r = np.random.default_rng(0)
    x, ctx = r.standard_normal((4, 3)), r.standard_normal((4, 2))
    result = gc.check_transform(cnf, x, ctx, inverse=inverse, eps=1e-5)
    result.assert_ok(1e-7)
    assert all(v > 0 for v in result.norms.values())
    call = cnf.inverse if inverse else cnf.forward
    dz, dld = r.standard_normal((4, 3)), r.standard_normal(4)
    _, _, cache = call(x, ctx)
    _, dctx = cnf.vjp(dz, dld, cache)
    num = gc.numerical_gradient(lambda: float(np.sum(call(x, ctx, need_grad=False)[0] * dz)
                                              + np.sum(call(x, ctx, need_grad=False)[1] * dld)), ctx, eps=1e-5)
    assert gc._rel_error(dctx, num) < 1e-7


def _grads(cnf, x, dz, dld):
    cnf.zero_grad()
    _, _, cache = cnf.forward(x)
    dx = cnf.backward(dz, dld, cache)
    return np.concatenate([dx.ravel(), *[p.grad.ravel() for p in cnf.parameters()]])


def test_adjoint_converges_to_discretise_as_the_tolerance_shrinks():
    """The adjoint solves its own ODE backward: its gradient matches the discrete solve's up to an
    error that shrinks with the tolerance."""
    r = np.random.default_rng(0)
    x, dz, dld = r.standard_normal((6, 3)), r.standard_normal((6, 3)), r.standard_normal(6)
    errors = []
    for tol in (1e-3, 1e-5, 1e-7, 1e-9):
        exact = _grads(_cnf(gradient="discretise", rtol=tol, atol=tol), x, dz, dld)
        adjoint = _grads(_cnf(gradient="adjoint", rtol=tol, atol=tol), x, dz, dld)
        errors.append(gc._rel_error(adjoint, exact))
    assert errors[-1] < 1e-7 and errors[-1] < 1e-3 * errors[0], errors
    assert all(e < 300 * tol for e, tol in zip(errors, (1e-3, 1e-5, 1e-7, 1e-9))), errors


def _linear_cnf(a, trace, probe="gaussian", time=1.5):
    """A CNF whose dynamics is f = A z: one concat-squash layer, gate 1/2 and no shift or bias."""
    d = a.shape[0]
    cnf = CNF(d, hidden=[], trace=trace, probe=probe, time=time, rtol=1e-10, atol=1e-10, rng=0)
    layer = cnf.net.layers[0]
    layer.weight.data[...] = 2 * a.T  # f = (z W) sigmoid(0) = z A^T / ... with W = 2 A^T
    layer.gate_weight.data[...] = 0
    layer.gate_bias.data[...] = 0
    return cnf


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_linear_dynamics_logdet_is_time_times_trace(probe):
    """f = A z: z(T) = e^(A T) x and log|det| = T tr A, exactly with the exact trace and in
    expectation (within 4 standard errors) with Hutchinson's."""
    from scipy.linalg import expm

    r = np.random.default_rng(0)
    a = 0.4 * r.standard_normal((4, 4))
    x = r.standard_normal((4000, 4))
    z, ld, _ = _linear_cnf(a, "exact").forward(x, need_grad=False)
    np.testing.assert_allclose(ld, 1.5 * np.trace(a), rtol=1e-12)
    np.testing.assert_allclose(z, x @ expm(1.5 * a).T, atol=1e-8)
    _, ld_h, _ = _linear_cnf(a, "hutchinson", probe).forward(x, need_grad=False)
    err = np.std(ld_h) / np.sqrt(ld_h.size)
    assert np.std(ld_h) > 0.1  # an estimate, not the exact value
    assert abs(np.mean(ld_h) - 1.5 * np.trace(a)) < 4 * err


def test_round_trip_within_the_solver_tolerance():
    cnf = _cnf(dim=2, rtol=1e-8, atol=1e-8)
    x = np.random.default_rng(0).standard_normal((50, 2))
    z, ld, _ = cnf.forward(x, need_grad=False)
    x2, ld2, _ = cnf.inverse(z, need_grad=False)
    assert np.max(np.abs(x2 - x)) < 1e-6 and np.max(np.abs(ld + ld2)) < 1e-6
    assert cnf.stats["forward_nfe"] > 6


@pytest.mark.parametrize("inverse", [False, True])
def test_rnode_penalties_have_their_gradient(inverse):
    """With kinetic and jacobian weights the backward adds the gradient of
    sum_n |c_n| (kinetic int |f|^2 + jacobian int |J|_F^2), the integrals run forward in time."""
    cnf = _cnf(solver="rk4", steps=4, gradient="discretise", kinetic=0.3, jacobian=0.2)
    r = np.random.default_rng(0)
    x, dz, dld = r.standard_normal((4, 3)), r.standard_normal((4, 3)), r.standard_normal(4)
    call = cnf.inverse if inverse else cnf.forward
    sign = -1.0 if inverse else 1.0

    def loss():
        z, ld, cache = call(x)
        kin, fro = cache.y1[:, 4], cache.y1[:, 5]
        return float(np.sum(z * dz) + np.sum(ld * dld) + sign * np.sum(np.abs(dld) * (0.3 * kin + 0.2 * fro)))

    cnf.zero_grad()
    _, _, cache = call(x)
    dx = cnf.backward(dz, dld, cache)
    assert gc._rel_error(dx, gc.numerical_gradient(loss, x)) < 1e-7
    for name, p in cnf.named_parameters():
        assert gc._rel_error(p.grad, gc.numerical_gradient(loss, p.data)) < 1e-7, name


def test_hutchinson_gradient_is_exact_for_fixed_probes_and_evaluation_is_exact():
    cnf = _cnf(trace="hutchinson", probe="rademacher", n_probes=2, solver="rk4", steps=4, gradient="discretise")
    cnf.frozen_probes = 5  # every call draws the same probes
    x = np.random.default_rng(0).standard_normal((4, 3))
    gc.check_transform(cnf, x).assert_ok(1e-7)
    cnf.frozen_probes = None
    lds = [cnf.forward(x, need_grad=False)[1] for _ in range(2)]
    assert not np.allclose(lds[0], lds[1])  # fresh probes per solve in training
    cnf.eval()
    exact = _cnf(solver="rk4", steps=4).eval().forward(x, need_grad=False)[1]
    np.testing.assert_allclose(cnf.forward(x, need_grad=False)[1], exact, rtol=1e-12)


def test_float32_runs_on_its_own_dtype():
    cnf64 = _cnf(rtol=1e-6, atol=1e-6)
    cnf32 = CNF(3, hidden=[5, 4], rtol=1e-6, atol=1e-6, rng=1, dtype=np.float32)
    cnf32.load_state_dict({k: v.astype(np.float32) for k, v in cnf64.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((8, 3))
    z64, ld64, c64 = cnf64.forward(x)
    z32, ld32, c32 = cnf32.forward(x.astype(np.float32))
    assert z32.dtype == ld32.dtype == np.float32
    np.testing.assert_allclose(z32, z64, atol=1e-4)
    np.testing.assert_allclose(ld32, ld64, atol=1e-4)
    dx = cnf32.backward(np.ones_like(z32), np.ones_like(ld32), c32)
    assert dx.dtype == np.float32 and all(p.grad.dtype == np.float32 for p in cnf32.parameters())


def test_bad_settings_are_refused():
    for kw in ({"activation": "relu"}, {"solver": "euler"}, {"gradient": "backprop"}, {"trace": "lanczos"},
               {"rtol": 0.0, "atol": 0.0}, {"time": 0.0}, {"probe": "uniform"}):
        with pytest.raises(ConfigError):
            CNF(2, **kw)
    with pytest.raises(ConfigError):
        nfcore.build({"flow": "ffjord", "dim": 2, "solver": "rk5"})


def test_ffjord_fits_saves_and_loads(tmp_path):
    x = nfcore.data.sample_toy("moons", 512, seed=0)
    flow = nfcore.build({"flow": "ffjord", "dim": 2, "layers": 1, "hidden": [16, 16], "rtol": 1e-4, "atol": 1e-4,
                         "kinetic": 0.01, "jacobian": 0.01})
    before = float(-np.mean(flow.log_prob(x)))
    nfcore.fit(flow, x, epochs=3, batch_size=128, lr=5e-3, log=None)
    after = float(-np.mean(flow.log_prob(x)))
    assert after < before - 0.1
    path = tmp_path / "ffjord.npz"
    nfcore.save(path, flow)
    again = nfcore.load(path)
    np.testing.assert_array_equal(again.log_prob(x[:20]), flow.log_prob(x[:20]))
    s = again.sample(30, seed=0)
    assert s.shape == (30, 2) and np.all(np.isfinite(s))


def test_workers_on_fixed_steps_equal_one_worker():
    flow = nfcore.build({"flow": "ffjord", "dim": 2, "layers": 1, "hidden": [8], "solver": "rk4", "ode_steps": 4})
    gc.randomize_parameters(flow, scale=0.4, seed=0)
    x = np.random.default_rng(0).standard_normal((64, 2))
    grads = []
    for w in (1, 2):
        flow.zero_grad()
        loss = flow.loss_and_grad(x, workers=w)
        grads.append(np.concatenate([[loss], *[p.grad.ravel() for p in flow.parameters()]]))
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12, atol=1e-15)


def test_cli_trains_ffjord(tmp_path, capsys):
    from nfcore.cli import main

    out = tmp_path / "run"
    assert main(["train", "--flow", "ffjord", "--data", "moons", "--n-train", "5000", "--epochs", "1", "--hidden", "8",
                 "--out", str(out), "--no-plot"]) == 0
    assert "test NLL" in capsys.readouterr().out
    flow = nfcore.load(out / "model.npz")
    cnf = next(m for m in flow.modules() if isinstance(m, CNF))
    assert list(cnf.net.dims) == [2, 8, 8, 8, 2] and cnf.kinetic == cnf.jacobian == 1e-3


def test_cnf_blocks_compose_with_actnorm_in_a_chain():
    """[ActNorm, CNF, ActNorm, CNF] as one Chain: exact gradients (discretise, RK4) and a round trip."""
    from nfcore import Chain
    from nfcore.transforms import ActNorm

    r = np.random.default_rng(0)
    x = r.standard_normal((6, 3))
    chain = Chain([ActNorm(3), _cnf(solver="rk4", steps=20, gradient="discretise"), ActNorm(3),
                   _cnf(solver="rk4", steps=20, gradient="discretise", activation="swish")])
    chain.forward(x, need_grad=False)  # the ActNorms' data-dependent start
    gc.randomize_parameters(chain, scale=0.3, seed=4)
    gc.check_transform(chain, x, eps=1e-5).assert_ok(1e-7)
    z, ld, _ = chain.forward(x, need_grad=False)
    x2, ld2, _ = chain.inverse(z, need_grad=False)
    assert np.max(np.abs(x2 - x)) < 1e-8 and np.max(np.abs(ld + ld2)) < 1e-8
