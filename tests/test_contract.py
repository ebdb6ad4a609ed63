"""The contract every transform meets: one loop over a list of every transform case.

Shape and dtype, inverse round trip, log-det = slogdet of the exact Jacobian, finite
differences through output *and* log-det on the input and every parameter (forward and
inverse directions), every parameter actually receiving a gradient, and float32 agreeing with
float64 (values and gradients) up to rounding.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest

import nfcore
from nfcore import Transform
from nfcore import gradcheck as gc
from nfcore.errors import GradientNotAvailable
from nfcore.transforms import (
    CNF,
    IAF,
    MAF,
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    AffineLU,
    BatchNorm,
    ConvResidualBlock,
    Flatten,
    ImageAdditiveCoupling,
    ImageAffineCoupling,
    InvConv1x1,
    InvConv1x1LU,
    Logit,
    Permutation,
    ResidualBlock,
    Scaling,
    Split,
    Squeeze,
    Standardize,
    make_mask,
    make_permutation,
)

D = 5
C = 3  # context width
FORWARD, INVERSE = "forward", "inverse"


class Case(NamedTuple):
    """One transform of the contract, and how to feed it."""

    name: str
    #: dtype -> a new transform; every call builds the same parameters
    factory: Callable[[type], Transform]
    #: event shape of the input: (D,) for vectors, (H, W, C) for images
    shape: tuple[int, ...] = (D,)
    #: inputs drawn from (0, 1) instead of N(0, 1): the logit map's domain
    unit_inputs: bool = False
    #: the transform takes an (N, C) context
    context: bool = False
    #: FORWARD or INVERSE: a direction that is sequential by nature and has no gradient
    #: (backward must refuse it)
    no_gradient: str | None = None
    #: (forward, inverse): the float32 vs float64 gap allowed, relative to 1 + max |float64 value|;
    #: a case that needs more than float32 rounding through a shallow map says why
    float32_tol: tuple[float, float] = (1e-4, 1e-4)

    def differentiable(self, inverse):
        return (INVERSE if inverse else FORWARD) != self.no_gradient


def _built(cfg):
    """dtype -> the transform of ``nfcore.build(cfg)`` in that dtype."""
    return lambda dt: nfcore.build({**cfg, "dtype": np.dtype(dt).name}).transform


def _image_chain(flow, dtype):
    """A 2-scale image flow without Dequantize (a discrete, stochastic layer tested on its own).

    The RealNVP one uses tanh: with ReLU, one pre-activation of its inverse pass lies within
    the finite-difference step of the kink for this seed (a 10% error on one weight that
    vanishes with tanh or with smaller parameters; the glow chain keeps ReLU covered).
    """
    cfg = {"flow": flow, "shape": [4, 4, 2], "layers": 1, "hidden": [3], "dtype": np.dtype(dtype).name,
           "activation": {"glow": "relu", "realnvp": "tanh"}.get(flow)}
    if flow == "iresnet":
        cfg["logdet"] = "exact"
    chain = nfcore.build(cfg).transform
    for t in chain.transforms:
        if isinstance(t, ActNorm):
            t.initialize(np.random.default_rng(3).normal(size=(8, *t.shape)).astype(dtype))
    return chain


def _op_by_op(layer):
    """A coupling layer on its op-by-op path (the fused kernels' reference), which narrow layers
    on the CPU otherwise skip."""
    layer.fused = False
    return layer


def _fused(layer):
    """A MAF/IAF on the fused kernels, which it otherwise takes on a worker's shard only."""
    layer.fused = True
    return layer


def _batchnorm_eval(dtype):
    """Evaluation mode (running averages): a per-sample map, so the Jacobian checks apply."""
    bn = BatchNorm(D, dtype=dtype)
    r = np.random.default_rng(7)
    bn.running_mean.data[...] = r.normal(size=D)
    bn.running_var.data[...] = r.uniform(0.5, 2.0, size=D)
    return bn.eval()


CASES = [
    # couplings
    Case("affine-alternating",
         lambda dt: AffineCoupling(make_mask(D, "alternating"), hidden=[7, 6], rng=0, dtype=dt)),
    Case("affine-half-tanh",
         lambda dt: AffineCoupling(make_mask(D, "half", 1), hidden=[6], activation="tanh", rng=0, dtype=dt)),
    Case("affine-random-elu-residual",
         lambda dt: AffineCoupling(make_mask(D, "random", rng=3), hidden=[6, 6], activation="elu", residual=True,
                                   rng=0, dtype=dt)),
    Case("affine-context-softplus",
         lambda dt: AffineCoupling(make_mask(D), hidden=[6], activation="softplus", context_dim=C, rng=0, dtype=dt),
         context=True),
    Case("affine-leaky",
         lambda dt: AffineCoupling(make_mask(D, "half"), hidden=[6], activation="leaky_relu", rng=0, dtype=dt)),
    Case("additive", lambda dt: AdditiveCoupling(make_mask(D), hidden=[7, 6], rng=0, dtype=dt)),
    Case("additive-context",
         lambda dt: AdditiveCoupling(make_mask(D, "half"), hidden=[5], context_dim=C, rng=0, dtype=dt),
         context=True),
    Case("affine-op-by-op", lambda dt: _op_by_op(AffineCoupling(make_mask(D), hidden=[7, 6], rng=0, dtype=dt))),
    Case("affine-context-tanh-op-by-op",
         lambda dt: _op_by_op(AffineCoupling(make_mask(D, "half"), hidden=[6], activation="tanh", context_dim=C,
                                             rng=2, dtype=dt)),
         context=True),
    Case("additive-op-by-op", lambda dt: _op_by_op(AdditiveCoupling(make_mask(D), hidden=[7, 6], rng=0, dtype=dt))),
    Case("inverse-affine", lambda dt: nfcore.Inverse(AffineCoupling(make_mask(D), hidden=[6], rng=0, dtype=dt))),
    Case("chain-realnvp", _built({"flow": "realnvp", "dim": D, "layers": 3, "hidden": [6], "permute": "random"})),
    Case("chain-nice", _built({"flow": "nice", "dim": D, "layers": 2, "hidden": [6]})),
    # consecutive couplings run as one fused kernel call per direction (transforms._fused.FusedRun)
    Case("chain-realnvp-fused-run", _built({"flow": "realnvp", "dim": D, "layers": 3, "hidden": [6, 5]})),
    Case("chain-realnvp-context-fused-run",
         _built({"flow": "realnvp", "dim": D, "layers": 3, "hidden": [6], "context_dim": C, "activation": "elu"}),
         context=True),
    # element-wise and fixed maps
    Case("scaling", lambda dt: Scaling(D, dtype=dt)),
    Case("standardize", lambda dt: Standardize(np.arange(D) * 0.3, 0.5 + np.arange(D) * 0.2, dtype=dt)),
    Case("permutation-reverse", lambda dt: Permutation(make_permutation(D, "reverse"))),
    Case("permutation-random", lambda dt: Permutation(make_permutation(D, "random", rng=1))),
    Case("batchnorm-eval", _batchnorm_eval),
    # autoregressive: the sequential direction has no gradient
    Case("maf", lambda dt: MAF(D, hidden=[9, 9], order="reversed", rng=0, dtype=dt), no_gradient=INVERSE),
    Case("maf-random-context-tanh",
         lambda dt: MAF(D, hidden=[8], order="random", hidden_degrees="random", activation="tanh", context_dim=C,
                        rng=2, dtype=dt),
         context=True, no_gradient=INVERSE),
    Case("iaf", lambda dt: IAF(D, hidden=[9, 9], order="natural", rng=0, dtype=dt), no_gradient=FORWARD),
    Case("maf-fused", lambda dt: _fused(MAF(D, hidden=[9, 9], order="reversed", rng=0, dtype=dt)),
         no_gradient=INVERSE),
    Case("maf-context-fused",
         lambda dt: _fused(MAF(D, hidden=[8], order="random", activation="tanh", context_dim=C, rng=2, dtype=dt)),
         context=True, no_gradient=INVERSE),
    Case("iaf-fused", lambda dt: _fused(IAF(D, hidden=[9, 9], order="natural", rng=0, dtype=dt)),
         no_gradient=FORWARD),
    Case("maf-residual",
         lambda dt: MAF(D, hidden=[8, 8, 8], order="random", hidden_degrees="random", residual=True,
                        activation="elu", rng=3, dtype=dt),
         no_gradient=INVERSE),
    Case("iaf-residual", lambda dt: IAF(D, hidden=[7, 7], residual=True, activation="tanh", rng=4, dtype=dt),
         no_gradient=FORWARD),
    Case("chain-maf", _built({"flow": "maf", "dim": D, "layers": 2, "hidden": [8, 8]}), no_gradient=INVERSE),
    # image wheels: inputs (N, H, W, C)
    Case("squeeze", lambda dt: Squeeze((4, 4, 2)), shape=(4, 4, 2)),
    Case("flatten", lambda dt: Flatten((2, 2, 2)), shape=(2, 2, 2)),
    Case("actnorm-image", lambda dt: ActNorm((4, 4, 2), data_init=False, dtype=dt), shape=(4, 4, 2)),
    Case("actnorm-vector", lambda dt: ActNorm(D, data_init=False, dtype=dt)),
    Case("invconv-plain", lambda dt: InvConv1x1((2, 2, 3), rng=1, dtype=dt), shape=(2, 2, 3)),
    Case("invconv-lu", lambda dt: InvConv1x1LU((2, 2, 4), rng=1, dtype=dt), shape=(2, 2, 4)),
    Case("invconv-lu-vector", lambda dt: InvConv1x1LU(D, rng=2, dtype=dt)),
    Case("image-affine-channel",
         lambda dt: ImageAffineCoupling((4, 4, 2), "channel", 0, hidden=[3, 3], rng=0, dtype=dt), shape=(4, 4, 2)),
    Case("image-affine-checkerboard",
         lambda dt: ImageAffineCoupling((4, 4, 2), "checkerboard", 1, hidden=[3], rng=0, dtype=dt),
         shape=(4, 4, 2)),
    Case("image-additive-channel",
         lambda dt: ImageAdditiveCoupling((2, 2, 4), "channel", 1, hidden=[3, 3], rng=0, dtype=dt),
         shape=(2, 2, 4)),
    Case("logit", lambda dt: Logit((2, 2, 2), alpha=0.05), shape=(2, 2, 2), unit_inputs=True),
    Case("split",
         lambda dt: Split((2, 2, 4), nfcore.Chain([ActNorm((2, 2, 2), data_init=False, dtype=dt),
                                                   Flatten((2, 2, 2))]), rng=0, dtype=dt),
         shape=(2, 2, 4)),
    # the inverse is ill-conditioned at this seed: the forward map sends the data to |z| ~ 150
    # and the inverse contracts it again, so in float64 alone an input perturbed by 6e-8 (float32
    # rounding) moves the output by ~1.5e-3 relative; float32 lands within that (9e-4 seen)
    Case("chain-glow", lambda dt: _image_chain("glow", dt), shape=(4, 4, 2), float32_tol=(1e-4, 3e-3)),
    Case("chain-realnvp-multiscale", lambda dt: _image_chain("realnvp", dt), shape=(4, 4, 2)),
    # invertible residual networks: the exact log-det (the estimators have their own tests);
    # the inverse is a fixed-point iteration and has no gradient
    Case("residual-lipswish", lambda dt: ResidualBlock(D, hidden=[6, 5], logdet="exact", rng=0, dtype=dt),
         no_gradient=INVERSE),
    Case("residual-elu",
         lambda dt: ResidualBlock(D, hidden=[7], activation="elu", logdet="exact", rng=1, dtype=dt),
         no_gradient=INVERSE),
    Case("residual-learned-beta",
         lambda dt: ResidualBlock(D, hidden=[6, 5], logdet="exact", learn_beta=True, rng=5, dtype=dt),
         no_gradient=INVERSE),
    Case("conv-residual",
         lambda dt: ConvResidualBlock((2, 2, 2), hidden=[3, 3], logdet="exact", rng=2, dtype=dt),
         shape=(2, 2, 2), no_gradient=INVERSE),
    Case("conv-residual-learned-beta",
         lambda dt: ConvResidualBlock((2, 2, 2), hidden=[3, 3], logdet="exact", learn_beta=True, rng=6, dtype=dt),
         shape=(2, 2, 2), no_gradient=INVERSE),
    Case("chain-iresnet", _built({"flow": "iresnet", "dim": D, "layers": 2, "hidden": [6], "logdet": "exact"}),
         no_gradient=INVERSE),
    Case("chain-iresnet-image", lambda dt: _image_chain("iresnet", dt), shape=(4, 4, 2), no_gradient=INVERSE),
    # the tabular front: a learned full affine map (started to whiten), and a chain that starts with it
    Case("affine-lu",
         lambda dt: AffineLU(D, loc=np.arange(D) * 0.2, scale_tril=np.tril(np.full((D, D), 0.3)) + np.eye(D),
                             dtype=dt)),
    Case("affine-lu-diagonal", lambda dt: AffineLU(D, loc=np.ones(D), diagonal=True, dtype=dt)),
    Case("chain-maf-whiten", _built({"flow": "maf", "dim": D, "layers": 1, "hidden": [8], "whiten": True}),
         no_gradient=INVERSE),
    # continuous flows on fixed RK4 steps, fine enough that the discrete map's round trip and its
    # log-det (the solver's quadrature of the trace) meet the 1e-10 and 1e-8 bars; the adaptive
    # solver, the estimators and the adjoint's convergence have their own tests (test_cnf.py)
    Case("cnf-rk4-discretise-context",
         lambda dt: CNF(D, hidden=[6, 5], context_dim=C, solver="rk4", steps=40, gradient="discretise", rng=0,
                        dtype=dt),
         context=True),
    Case("cnf-rk4-adjoint-swish",
         lambda dt: CNF(D, hidden=[6], activation="swish", solver="rk4", steps=40, rng=1, dtype=dt)),
    Case("chain-ffjord", _built({"flow": "ffjord", "dim": D, "layers": 2, "hidden": [5], "activation": "softplus",
                                 "solver": "rk4", "ode_steps": 40, "gradient": "discretise"})),
]
CASES_BY_NAME = {c.name: c for c in CASES}
assert len(CASES_BY_NAME) == len(CASES), "case names are the test ids: they must be unique"

#: parametrize a test over every case, the case's name as its id
over_cases = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])


def _make(case, dtype=np.float64, seed=0):
    t = case.factory(dtype)
    gc.randomize_parameters(t, scale=0.4, seed=seed)
    for m in t.modules():
        if isinstance(m, (nfcore.SpectralLinear, nfcore.SpectralConv2d)):
            m.power_iteration(100)  # re-estimate the norm after the noise (training calls do one step each)
    return t


def _inputs(case, n=4, dtype=np.float64, seed=0):
    r = np.random.default_rng(seed)
    shape = (n, *case.shape)
    x = (r.uniform(0.02, 0.98, size=shape) if case.unit_inputs else r.normal(size=shape)).astype(dtype)
    ctx = r.normal(size=(n, C)).astype(dtype) if case.context else None
    return x, ctx


def _call_input(t, case, inverse, **kw):
    """An input for the direction asked: data for forward, the latent of data for inverse."""
    x, ctx = _inputs(case, **kw)
    if inverse:
        x = np.asarray(t.forward(x, ctx, need_grad=False)[0])
    return x, ctx


def test_every_transform_class_is_covered():
    covered = {type(c.factory(np.float64)).__name__ for c in CASES}
    public = {n for n in nfcore.transforms.__all__ if isinstance(getattr(nfcore.transforms, n), type)}
    public -= {"Coupling", "ImageCoupling"}  # abstract templates
    # Dequantize and DequantizeColumns are discrete and stochastic: their own tests are in
    # test_image.py and test_tabular.py
    assert public <= covered | {"Chain", "Inverse", "Dequantize", "DequantizeColumns"}, public - covered


@over_cases
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shapes_and_dtypes(case, dtype):
    t = _make(case, dtype)
    x, ctx = _inputs(case, dtype=dtype)
    z, ld, cache = t.forward(x, ctx)
    assert z.shape[0] == x.shape[0] and z.size == x.size and ld.shape == (x.shape[0],)
    assert z.dtype == dtype and ld.dtype == dtype
    x2, ld2, cache_inv = t.inverse(z, ctx)
    assert x2.shape == x.shape and x2.dtype == dtype and ld2.dtype == dtype
    if not case.differentiable(inverse=False):
        cache = cache_inv
    dx = t.backward(np.ones_like(z), np.ones_like(ld), cache)
    assert dx.shape == x.shape and dx.dtype == dtype
    for p in t.parameters():
        assert p.grad.dtype == dtype


@over_cases
def test_inverse_round_trip(case):
    t = _make(case)
    x, ctx = _inputs(case, n=16)
    z, ld, _ = t.forward(x, ctx)
    x2, ld2, _ = t.inverse(z, ctx)
    assert np.max(np.abs(x2 - x)) < 1e-10
    assert np.max(np.abs(ld + ld2)) < 1e-10


@over_cases
@pytest.mark.parametrize("inverse", [False, True])
def test_logdet_matches_slogdet(case, inverse):
    t = _make(case)
    x, ctx = _call_input(t, case, inverse)
    assert gc.check_logdet(t, x, ctx, inverse=inverse) < 1e-8


@over_cases
@pytest.mark.parametrize("inverse", [False, True])
def test_gradients_match_finite_differences(case, inverse):
    t = _make(case)
    x, ctx = _call_input(t, case, inverse)
    if not case.differentiable(inverse):
        out, ld, cache = (t.inverse if inverse else t.forward)(x, ctx)
        with pytest.raises(GradientNotAvailable):
            t.backward(np.ones_like(out), np.ones_like(ld), cache)
        return
    result = gc.check_transform(t, x, ctx, inverse=inverse)
    result.assert_ok(1e-6)
    # a check on all-zero gradients could not fail: demand that input and parameters are reached
    assert result.norms["input"] > 0
    for pname, _ in t.named_parameters():
        assert result.norms[pname] > 0, f"{pname} receives no gradient"


def _on_float32_grid(a):
    """``a`` rounded to the nearest float32 values, its dtype kept (integer arrays unchanged)."""
    if a is None or not np.issubdtype(a.dtype, np.floating):
        return a
    return a.astype(np.float32).astype(a.dtype)


def _values_and_gradients(t, x, ctx, inverse, differentiable):
    """{name: array}: output and log-det of the direction and, where it has a gradient, the input
    and parameter gradients for upstream gradients dout, dlogabsdet ~ N(0, 1) (seeded, on the
    float32 grid, so that both dtypes get the same values)."""
    out, ld, cache = (t.inverse if inverse else t.forward)(x, ctx)
    found = {"output": out, "logabsdet": ld}
    if differentiable:
        r = np.random.default_rng(1)
        dout = _on_float32_grid(r.standard_normal(out.shape)).astype(out.dtype)
        dld = _on_float32_grid(r.standard_normal(ld.shape)).astype(ld.dtype)
        t.zero_grad()
        found["input grad"] = t.backward(dout, dld, cache)
        found.update((f"{name} grad", p.grad.copy()) for name, p in t.named_parameters())
    return found


def _float32_gap(a32, a64):
    """max |a32 - a64| / (1 + max |a64|): the float32 error relative to the float64 magnitude."""
    diff = np.abs(np.asarray(a32, dtype=np.float64) - a64)
    return float(np.max(diff, initial=0.0) / (1.0 + np.max(np.abs(a64), initial=0.0)))


@over_cases
@pytest.mark.parametrize("inverse", [False, True])
def test_float32_matches_float64(case, inverse):
    """The float32 kernels take routes of their own: they agree with float64 up to rounding.

    Both models hold the same parameters and buffers (the float64 ones rounded to float32) and
    both runs see the same input, context and upstream gradients (float32 values), so what
    differs is float32 arithmetic only. The directions without a gradient compare their values.
    """
    t64, t32 = _make(case), case.factory(np.float32)
    # the first forward call initialises ActNorm layers from the data: in float64, before sharing
    t64.forward(*_inputs(case), need_grad=False)
    state = {k: _on_float32_grid(v) for k, v in t64.state_dict().items()}
    t64.load_state_dict(state)
    t32.load_state_dict(state)
    x, ctx = (_on_float32_grid(a) for a in _call_input(t64, case, inverse))
    want = _values_and_gradients(t64, x, ctx, inverse, case.differentiable(inverse))
    x32, ctx32 = (None if a is None else a.astype(np.float32) for a in (x, ctx))
    got = _values_and_gradients(t32, x32, ctx32, inverse, case.differentiable(inverse))
    assert got.keys() == want.keys()
    assert all(v.dtype == np.float32 for v in got.values()), {k: v.dtype for k, v in got.items()}
    gaps = {k: _float32_gap(got[k], want[k]) for k in want}
    tol = case.float32_tol[inverse]
    too_far = {k: f"{g:.2e}" for k, g in gaps.items() if not g <= tol}
    assert not too_far, f"float32 vs float64 beyond {tol:g}: {too_far}"


def test_gradcheck_catches_a_wrong_backward():
    """The checker itself must be able to fail: break a VJP on purpose."""
    case = CASES_BY_NAME["affine-op-by-op"]  # _map_bwd: the op-by-op path's
    t = _make(case)
    x, _ = _inputs(case)
    original = t._map_bwd

    def broken(dout, dld, cache):
        din, dh = original(dout, dld, cache)
        return din * 1.001, dh

    t._map_bwd = broken
    assert gc.check_transform(t, x).max_error > 1e-4


def test_jacobian_is_triangular_for_coupling():
    case = CASES_BY_NAME["affine-half-tanh"]
    t = _make(case)
    x, _ = _inputs(case)
    jac = gc.jacobian(t, x)
    mask = make_mask(D, "half", 1)
    a, b = np.flatnonzero(~mask), np.flatnonzero(mask)
    # z_a = x_a: identity block; d z_a / d x_b = 0; d z_b / d x_b diagonal
    assert np.allclose(jac[:, a][:, :, a], np.eye(len(a)))
    assert np.all(jac[:, a][:, :, b] == 0)
    off = jac[:, b][:, :, b] * (1 - np.eye(len(b)))
    assert np.all(off == 0)
