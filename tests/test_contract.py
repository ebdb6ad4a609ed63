"""The contract every transform meets: one loop over a list of every transform factory.

Shape and dtype, inverse round trip, log-det = slogdet of the exact Jacobian, finite
differences through output *and* log-det on the input and every parameter (forward and
inverse directions), and every parameter actually receiving a gradient.
"""

import numpy as np
import pytest

import nfcore
from nfcore import gradcheck as gc
from nfcore.errors import GradientNotAvailable
from nfcore.transforms import (
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


def _affine(**kw):
    return lambda dtype: AffineCoupling(make_mask(D, kw.pop("mask", "alternating")), hidden=[7, 6], rng=0,
                                        dtype=dtype, **kw)


FACTORIES = {
    "affine-alternating": lambda dt: AffineCoupling(make_mask(D, "alternating"), hidden=[7, 6], rng=0, dtype=dt),
    "affine-half-tanh": lambda dt: AffineCoupling(make_mask(D, "half", 1), hidden=[6], activation="tanh", rng=0,
                                                  dtype=dt),
    "affine-random-elu-residual": lambda dt: AffineCoupling(make_mask(D, "random", rng=3), hidden=[6, 6],
                                                            activation="elu", residual=True, rng=0, dtype=dt),
    "affine-context-softplus": lambda dt: AffineCoupling(make_mask(D), hidden=[6], activation="softplus",
                                                         context_dim=C, rng=0, dtype=dt),
    "affine-leaky": lambda dt: AffineCoupling(make_mask(D, "half"), hidden=[6], activation="leaky_relu", rng=0,
                                              dtype=dt),
    "additive": lambda dt: AdditiveCoupling(make_mask(D), hidden=[7, 6], rng=0, dtype=dt),
    "additive-context": lambda dt: AdditiveCoupling(make_mask(D, "half"), hidden=[5], context_dim=C, rng=0, dtype=dt),
    "scaling": lambda dt: Scaling(D, dtype=dt),
    "standardize": lambda dt: Standardize(np.arange(D) * 0.3, 0.5 + np.arange(D) * 0.2, dtype=dt),
    "permutation-reverse": lambda dt: Permutation(make_permutation(D, "reverse")),
    "permutation-random": lambda dt: Permutation(make_permutation(D, "random", rng=1)),
    "chain-realnvp": lambda dt: nfcore.build({"flow": "realnvp", "dim": D, "layers": 3, "hidden": [6],
                                              "permute": "random", "dtype": np.dtype(dt).name}).transform,
    "chain-nice": lambda dt: nfcore.build({"flow": "nice", "dim": D, "layers": 2, "hidden": [6],
                                           "dtype": np.dtype(dt).name}).transform,
    "inverse-affine": lambda dt: nfcore.Inverse(AffineCoupling(make_mask(D), hidden=[6], rng=0, dtype=dt)),
    "maf": lambda dt: MAF(D, hidden=[9, 9], order="reversed", rng=0, dtype=dt),
    "maf-random-context-tanh": lambda dt: MAF(D, hidden=[8], order="random", hidden_degrees="random",
                                              activation="tanh", context_dim=C, rng=2, dtype=dt),
    "iaf": lambda dt: IAF(D, hidden=[9, 9], order="natural", rng=0, dtype=dt),
    "maf-residual": lambda dt: MAF(D, hidden=[8, 8, 8], order="random", hidden_degrees="random", residual=True,
                                   activation="elu", rng=3, dtype=dt),
    "iaf-residual": lambda dt: IAF(D, hidden=[7, 7], residual=True, activation="tanh", rng=4, dtype=dt),
    "chain-maf": lambda dt: nfcore.build({"flow": "maf", "dim": D, "layers": 2, "hidden": [8, 8],
                                          "dtype": np.dtype(dt).name}).transform,
    "batchnorm-eval": lambda dt: _batchnorm_eval(dt),
    # image wheels (inputs (N, H, W, C), see INPUT_SHAPES)
    "squeeze": lambda dt: Squeeze((4, 4, 2)),
    "flatten": lambda dt: Flatten((2, 2, 2)),
    "actnorm-image": lambda dt: ActNorm((4, 4, 2), data_init=False, dtype=dt),
    "actnorm-vector": lambda dt: ActNorm(D, data_init=False, dtype=dt),
    "invconv-plain": lambda dt: InvConv1x1((2, 2, 3), rng=1, dtype=dt),
    "invconv-lu": lambda dt: InvConv1x1LU((2, 2, 4), rng=1, dtype=dt),
    "invconv-lu-vector": lambda dt: InvConv1x1LU(D, rng=2, dtype=dt),
    "image-affine-channel": lambda dt: ImageAffineCoupling((4, 4, 2), "channel", 0, hidden=[3, 3], rng=0, dtype=dt),
    "image-affine-checkerboard": lambda dt: ImageAffineCoupling((4, 4, 2), "checkerboard", 1, hidden=[3], rng=0,
                                                                dtype=dt),
    "image-additive-channel": lambda dt: ImageAdditiveCoupling((2, 2, 4), "channel", 1, hidden=[3, 3], rng=0,
                                                               dtype=dt),
    "logit": lambda dt: Logit((2, 2, 2), alpha=0.05),
    "split": lambda dt: Split((2, 2, 4), nfcore.Chain([ActNorm((2, 2, 2), data_init=False, dtype=dt),
                                                       Flatten((2, 2, 2))]), rng=0, dtype=dt),
    "chain-glow": lambda dt: _image_chain("glow", dt),
    # invertible residual networks: the exact log-det (the estimators have their own tests)
    "residual-lipswish": lambda dt: ResidualBlock(D, hidden=[6, 5], logdet="exact", rng=0, dtype=dt),
    "residual-elu": lambda dt: ResidualBlock(D, hidden=[7], activation="elu", logdet="exact", rng=1, dtype=dt),
    "conv-residual": lambda dt: ConvResidualBlock((2, 2, 2), hidden=[3, 3], logdet="exact", rng=2, dtype=dt),
    "residual-learned-beta": lambda dt: ResidualBlock(D, hidden=[6, 5], logdet="exact", learn_beta=True, rng=5,
                                                      dtype=dt),
    "conv-residual-learned-beta": lambda dt: ConvResidualBlock((2, 2, 2), hidden=[3, 3], logdet="exact",
                                                               learn_beta=True, rng=6, dtype=dt),
    "chain-iresnet-image": lambda dt: _image_chain("iresnet", dt),
    "chain-iresnet": lambda dt: nfcore.build({"flow": "iresnet", "dim": D, "layers": 2, "hidden": [6],
                                              "logdet": "exact", "dtype": np.dtype(dt).name}).transform,
    "chain-realnvp-multiscale": lambda dt: _image_chain("realnvp", dt),
    # the tabular front: a learned full affine map (started to whiten), and a chain that starts with it
    "affine-lu": lambda dt: AffineLU(D, loc=np.arange(D) * 0.2, scale_tril=np.tril(np.full((D, D), 0.3))
                                     + np.eye(D), dtype=dt),
    "affine-lu-diagonal": lambda dt: AffineLU(D, loc=np.ones(D), diagonal=True, dtype=dt),
    "chain-maf-whiten": lambda dt: nfcore.build({"flow": "maf", "dim": D, "layers": 1, "hidden": [8],
                                                 "whiten": True, "dtype": np.dtype(dt).name}).transform,
}

#: event shape of each factory's input (default (D,))
INPUT_SHAPES = {
    "squeeze": (4, 4, 2), "flatten": (2, 2, 2), "actnorm-image": (4, 4, 2), "invconv-plain": (2, 2, 3),
    "invconv-lu": (2, 2, 4), "image-affine-channel": (4, 4, 2), "image-affine-checkerboard": (4, 4, 2),
    "image-additive-channel": (2, 2, 4), "logit": (2, 2, 2), "split": (2, 2, 4), "chain-glow": (4, 4, 2),
    "chain-realnvp-multiscale": (4, 4, 2), "conv-residual": (2, 2, 2), "chain-iresnet-image": (4, 4, 2),
    "conv-residual-learned-beta": (2, 2, 2),
}
#: inputs drawn from (0, 1) instead of N(0, 1): the logit map's domain
UNIT_INPUTS = {"logit"}


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


def _batchnorm_eval(dtype):
    """Evaluation mode (running averages): a per-sample map, so the Jacobian checks apply."""
    bn = BatchNorm(D, dtype=dtype)
    r = np.random.default_rng(7)
    bn.running_mean.data[...] = r.normal(size=D)
    bn.running_var.data[...] = r.uniform(0.5, 2.0, size=D)
    return bn.eval()

CONTEXTUAL = {"affine-context-softplus", "additive-context", "maf-random-context-tanh"}

#: directions that are sequential by nature and have no gradient (backward must refuse)
NO_GRADIENT = {
    "maf": {"inverse"},
    "maf-random-context-tanh": {"inverse"},
    "chain-maf": {"inverse"},
    "chain-maf-whiten": {"inverse"},
    "iaf": {"forward"},
    "maf-residual": {"inverse"},
    "iaf-residual": {"forward"},
    "residual-lipswish": {"inverse"},
    "residual-elu": {"inverse"},
    "chain-iresnet": {"inverse"},
    "conv-residual": {"inverse"},
    "residual-learned-beta": {"inverse"},
    "conv-residual-learned-beta": {"inverse"},
    "chain-iresnet-image": {"inverse"},
}


def _differentiable(name, inverse):
    return ("inverse" if inverse else "forward") not in NO_GRADIENT.get(name, set())


def _make(name, dtype=np.float64, seed=0):
    t = FACTORIES[name](dtype)
    gc.randomize_parameters(t, scale=0.4, seed=seed)
    for m in t.modules():
        if isinstance(m, (nfcore.SpectralLinear, nfcore.SpectralConv2d)):
            m.power_iteration(100)  # re-estimate the norm after the noise (training calls do one step each)
    return t


def _inputs(name, n=4, dtype=np.float64, seed=0):
    r = np.random.default_rng(seed)
    shape = (n, *INPUT_SHAPES.get(name, (D,)))
    x = (r.uniform(0.02, 0.98, size=shape) if name in UNIT_INPUTS else r.normal(size=shape)).astype(dtype)
    ctx = r.normal(size=(n, C)).astype(dtype) if name in CONTEXTUAL else None
    return x, ctx


def _call_input(t, name, inverse, **kw):
    """An input for the direction asked: data for forward, the latent of data for inverse."""
    x, ctx = _inputs(name, **kw)
    if inverse:
        x = np.asarray(t.forward(x, ctx, need_grad=False)[0])
    return x, ctx


def test_every_transform_class_is_covered():
    covered = {type(FACTORIES[k](np.float64)).__name__ for k in FACTORIES}
    public = {n for n in nfcore.transforms.__all__ if isinstance(getattr(nfcore.transforms, n), type)}
    public -= {"Coupling", "ImageCoupling"}  # abstract templates
    # Dequantize and DequantizeColumns are discrete and stochastic: their own tests are in
    # test_image.py and test_tabular.py
    assert public <= covered | {"Chain", "Inverse", "Dequantize", "DequantizeColumns"}, public - covered


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shapes_and_dtypes(name, dtype):
    t = _make(name, dtype)
    x, ctx = _inputs(name, dtype=dtype)
    z, ld, cache = t.forward(x, ctx)
    assert z.shape[0] == x.shape[0] and z.size == x.size and ld.shape == (x.shape[0],)
    assert z.dtype == dtype and ld.dtype == dtype
    x2, ld2, cache_inv = t.inverse(z, ctx)
    assert x2.shape == x.shape and x2.dtype == dtype and ld2.dtype == dtype
    if not _differentiable(name, inverse=False):
        cache = cache_inv
    dx = t.backward(np.ones_like(z), np.ones_like(ld), cache)
    assert dx.shape == x.shape and dx.dtype == dtype
    for p in t.parameters():
        assert p.grad.dtype == dtype


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_inverse_round_trip(name):
    t = _make(name)
    x, ctx = _inputs(name, n=16)
    z, ld, _ = t.forward(x, ctx)
    x2, ld2, _ = t.inverse(z, ctx)
    assert np.max(np.abs(x2 - x)) < 1e-10
    assert np.max(np.abs(ld + ld2)) < 1e-10


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("inverse", [False, True])
def test_logdet_matches_slogdet(name, inverse):
    t = _make(name)
    x, ctx = _call_input(t, name, inverse)
    assert gc.check_logdet(t, x, ctx, inverse=inverse) < 1e-8


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("inverse", [False, True])
def test_gradients_match_finite_differences(name, inverse):
    t = _make(name)
    x, ctx = _call_input(t, name, inverse)
    if not _differentiable(name, inverse):
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


def test_gradcheck_catches_a_wrong_backward():
    """The checker itself must be able to fail: break a VJP on purpose."""
    t = _make("affine-alternating")
    x, _ = _inputs("affine-alternating")
    original = t._map_bwd

    def broken(dout, dld, cache):
        din, dh = original(dout, dld, cache)
        return din * 1.001, dh

    t._map_bwd = broken
    assert gc.check_transform(t, x).max_error > 1e-4


def test_jacobian_is_triangular_for_coupling():
    t = _make("affine-half-tanh")
    x, _ = _inputs("affine-half-tanh")
    jac = gc.jacobian(t, x)
    mask = make_mask(D, "half", 1)
    a, b = np.flatnonzero(~mask), np.flatnonzero(mask)
    # z_a = x_a: identity block; d z_a / d x_b = 0; d z_b / d x_b diagonal
    assert np.allclose(jac[:, a][:, :, a], np.eye(len(a)))
    assert np.all(jac[:, a][:, :, b] == 0)
    off = jac[:, b][:, :, b] * (1 - np.eye(len(b)))
    assert np.all(off == 0)
