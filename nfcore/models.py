"""Builders: one way to make a model, from a plain-dict config.

``build(config)`` returns a ``Flow`` whose ``config`` is the full, defaults-filled dict;
a checkpoint stores that dict, so ``nfcore.load`` rebuilds the model without the code
that made it.

Config keys (defaults in ``DEFAULTS``):
    flow        ``realnvp`` | ``nice`` | ``maf`` | ``iaf`` | ``glow`` | ``iresnet`` | ``resflow`` | ``ffjord``
    dim         data dimension D (image flows: H W C, filled in from ``shape``)
    shape       image shape [H, W, C] (channels last) for the image flows ``glow`` and the
                multi-scale ``realnvp``; None for vector flows
    levels      K, the number of levels of discrete data (17 for the digits, 256 for 8-bit
                images): a ``Dequantize`` layer first (image and vector flows), so
                log-likelihoods are of the discrete data
    scales      image flows: the number of scales L (each: squeeze, steps, split)
    layers      vector flows: coupling (or autoregressive, residual, continuous) layers; image flows:
                steps per scale
    hidden      list of hidden widths of each conditioner MLP (image flows: of each ConvNet)
    coupling    image flows: ``affine`` | ``additive``
    invconv     glow: ``lu`` | ``plain`` (the 1x1 convolution's parameterisation)
    activation  conditioner activation (``relu``, ``leaky_relu``, ``tanh``, ``elu``, ``softplus``;
                residual flows: ``lipswish`` or ``elu``; ffjord: ``tanh``, ``softplus`` or ``swish``);
                None: ``relu``, ``lipswish`` for the residual flows, ``tanh`` for ffjord
    coeff       residual flows: the spectral-norm bound c < 1 of every weight of g
    logdet      residual flows: the training log-det, ``exact`` | ``series`` | ``roulette``
                (None: ``series`` for iresnet, ``roulette`` for resflow); evaluation uses
                ``exact`` when dim <= 16
    n_terms     residual flows: series terms (iresnet), always-computed terms (resflow)
    learn_beta  residual flows: every hidden unit (channel) learns its LipSwish beta
    residual    residual hidden blocks in the conditioner (MLP; MAF/IAF: residual MADE blocks)
    mask        ``alternating`` | ``half`` | ``random`` (parity flips every layer)
    order       MAF/IAF variable order: ``alternate`` (natural, reversed, natural, ...),
                ``natural``, ``reversed`` or ``random`` (fixed per layer)
    hidden_degrees  MADE hidden degrees: ``sequential`` | ``random``
    batch_norm  MAF/IAF: a BatchNorm bijector between consecutive autoregressive layers
    permute     ``none`` | ``reverse`` | ``random``: a fixed permutation after each coupling
    scale_bound RealNVP's soft log-scale bound
    base        ``normal`` | ``diag`` (learnable diagonal Gaussian; the default of image flows:
                Glow's learned top prior) | ``made`` (autoregressive
                Gaussian prior) | ``made-mog`` (autoregressive mixture prior) | ``gmm`` (a learned
                Gaussian mixture, ``GaussianMixture``; vector flows)
    prior_hidden, prior_components  MADE widths of the made/made-mog bases; the mixture size of the
                made-mog (per conditional) and gmm bases
    mixture_covariance  gmm base: ``full`` | ``diag``
    whiten      vector flows: a learned full affine layer (``AffineLU``) after the standardisation;
                it starts at the identity, ``nfcore.tabular.initialize`` sets it to whiten data
    discrete    vector flows: indices of integer-valued columns, dequantised first
                (``DequantizeColumns``), or None
    context_dim width of the context (conditional flows)
    standardize ``{"mean": [...], "std": [...]}`` or None: a fixed first layer
    dtype       ``float64`` | ``float32``
    seed        initialisation seed (masks, permutations, weights)
    memory_saving  backward recomputes every layer's input from its output with the layer's
                inverse instead of keeping activations (``Chain(memory_saving=True)``)
    ffjord (continuous flows, ``transforms.CNF``; ``layers`` CNF blocks, each an ODE whose
    dynamics is a concat-squash MLP of widths ``hidden``):
    time        the integration time T of each block
    solver      ``dopri5`` (adaptive, ``rtol`` / ``atol``) | ``rk4`` (``ode_steps`` equal steps)
    ode_max_steps  an adaptive solve's step budget
    trace       training trace: ``exact`` | ``hutchinson`` (None: exact when dim <= 16); evaluation
                always uses the exact trace
    gradient    ``adjoint`` | ``discretise`` (exact gradient of the discrete solve)
    kinetic, jacobian  RNODE regularisers' weights (kinetic energy, Jacobian Frobenius norm)
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from . import transforms as T
from ._checks import check_int, check_real
from .core.distributions import DiagNormal, StandardNormal
from .core.flow import Flow
from .core.transform import Chain
from .errors import ConfigError

__all__ = ["DEFAULTS", "FLOWS", "build", "realnvp", "nice", "maf", "iaf", "glow", "iresnet", "resflow", "ffjord"]

DEFAULTS = {
    "flow": "realnvp",
    "dim": 2,
    "shape": None,
    "levels": None,
    "scales": 2,
    "coupling": "affine",
    "invconv": "lu",
    "layers": 8,
    "hidden": [64, 64],
    "activation": None,
    "coeff": 0.97,
    "logdet": None,
    "n_terms": None,
    "learn_beta": False,
    "residual": False,
    "mask": "alternating",
    "order": "alternate",
    "hidden_degrees": "sequential",
    "batch_norm": False,
    "permute": "none",
    "scale_bound": 3.0,
    "base": "normal",
    "prior_hidden": [64, 64],
    "prior_components": 4,
    "mixture_covariance": "full",
    "whiten": False,
    "discrete": None,
    "context_dim": 0,
    "standardize": None,
    "dtype": "float64",
    "seed": 0,
    "memory_saving": False,
    "time": 1.0,
    "solver": "dopri5",
    "rtol": 1e-5,
    "atol": 1e-5,
    "ode_steps": 8,
    "ode_max_steps": 1000,
    "trace": None,
    "gradient": "adjoint",
    "kinetic": 0.0,
    "jacobian": 0.0,
}


def _base(cfg, dtype):
    if cfg["base"] == "normal":
        return StandardNormal(cfg["dim"])
    if cfg["base"] == "diag":
        return DiagNormal(cfg["dim"], dtype=dtype)
    if cfg["base"] in ("made", "made-mog"):
        from .priors import AutoregressivePrior

        if cfg["dim"] < 2:
            raise ConfigError("an autoregressive prior needs dim >= 2")
        components = 1 if cfg["base"] == "made" else int(cfg["prior_components"])
        return AutoregressivePrior(cfg["dim"], hidden=cfg["prior_hidden"], components=components,
                                   rng=np.random.default_rng([cfg["seed"], 1]), dtype=dtype)
    if cfg["base"] == "gmm":
        from .gmm import GaussianMixture

        if cfg["shape"] is not None:
            raise ConfigError("the gmm base is for vector flows")
        return GaussianMixture(cfg["dim"], components=int(cfg["prior_components"]),
                               covariance=cfg["mixture_covariance"], seed=cfg["seed"], dtype=dtype)
    raise ConfigError(f"unknown base {cfg['base']!r}; choose normal, diag, made, made-mog or gmm")


def _coupling_chain(cfg, layer_cls, extra_kwargs, dtype):
    rng = np.random.default_rng(cfg["seed"])
    layers = _vector_front(cfg, dtype)
    for k in range(cfg["layers"]):
        mask = T.make_mask(cfg["dim"], cfg["mask"], parity=k, rng=rng)
        layers.append(
            layer_cls(mask, hidden=cfg["hidden"], activation=cfg["activation"], context_dim=cfg["context_dim"],
                      residual=cfg["residual"], rng=rng, dtype=dtype, **extra_kwargs)
        )
        if cfg["permute"] != "none" and k < cfg["layers"] - 1:
            layers.append(T.Permutation(T.make_permutation(cfg["dim"], cfg["permute"], rng)))
    return layers


def _vector_front(cfg, dtype):
    """The fixed and data-fitted first layers of a vector flow, data side first.

    K-level data (``levels``): Dequantize, so the rest sees (v + u) / K; integer columns of a
    table (``discrete``): DequantizeColumns; then Standardize and the whitening AffineLU.
    """
    layers = []
    if cfg["levels"] is not None:
        layers.append(T.Dequantize(cfg["dim"], cfg["levels"], seed=cfg["seed"]))
    if cfg["discrete"]:
        layers.append(T.DequantizeColumns(cfg["dim"], cfg["discrete"], seed=[cfg["seed"], 3]))
    if cfg["standardize"] is not None:
        layers.append(T.Standardize(cfg["standardize"]["mean"], cfg["standardize"]["std"], dtype=dtype))
    if cfg["whiten"]:
        layers.append(T.AffineLU(cfg["dim"], dtype=dtype))
    return layers


def _autoregressive_chain(cfg, cls, dtype):
    rng = np.random.default_rng(cfg["seed"])
    layers = _vector_front(cfg, dtype)
    for k in range(cfg["layers"]):
        order = cfg["order"]
        if order == "alternate":
            order = "natural" if k % 2 == 0 else "reversed"
        layers.append(
            cls(cfg["dim"], hidden=cfg["hidden"], order=order, hidden_degrees=cfg["hidden_degrees"],
                activation=cfg["activation"], context_dim=cfg["context_dim"], scale_bound=cfg["scale_bound"],
                residual=cfg["residual"], rng=rng, dtype=dtype)
        )
        if cfg["batch_norm"] and k < cfg["layers"] - 1:
            layers.append(T.BatchNorm(cfg["dim"], dtype=dtype))
    return layers


def maf(cfg, dtype):
    """MAF: K affine autoregressive layers on MADEs, orders alternating between layers."""
    return _autoregressive_chain(cfg, T.MAF, dtype)


def iaf(cfg, dtype):
    """IAF: like MAF but with the one-pass direction for sampling (fit it by reverse KL)."""
    return _autoregressive_chain(cfg, T.IAF, dtype)


def realnvp(cfg, dtype):
    """RealNVP: K affine couplings with alternating masks; with ``shape``, the multi-scale image version."""
    if cfg["shape"] is not None:
        return _multiscale(cfg, dtype, _realnvp_steps)
    return _coupling_chain(cfg, T.AffineCoupling, {"scale_bound": cfg["scale_bound"]}, dtype)


def glow(cfg, dtype):
    """Glow: L scales of [squeeze, K x (actnorm, 1x1 conv, affine coupling), split]."""
    if cfg["shape"] is None:
        raise ConfigError("glow is an image flow: give shape [H, W, C] in the config")
    return _multiscale(cfg, dtype, _glow_steps)


def _image_coupling(cfg, shape, mask, parity, rng, dtype):
    cls = T.ImageAffineCoupling if cfg["coupling"] == "affine" else T.ImageAdditiveCoupling
    kw = {"scale_bound": cfg["scale_bound"]} if cfg["coupling"] == "affine" else {}
    return cls(shape, mask, parity, hidden=cfg["hidden"], activation=cfg["activation"], rng=rng, dtype=dtype, **kw)


def _glow_steps(cfg, shape, rng, dtype, before_squeeze):
    if before_squeeze:
        return []
    inv = T.InvConv1x1LU if cfg["invconv"] == "lu" else T.InvConv1x1
    steps = []
    for k in range(cfg["layers"]):
        steps += [T.ActNorm(shape, dtype=dtype), inv(shape, rng=rng, dtype=dtype),
                  _image_coupling(cfg, shape, "channel", k, rng, dtype)]
    return steps


def _realnvp_steps(cfg, shape, rng, dtype, before_squeeze):
    # RealNVP: checkerboard couplings at the full resolution, channel couplings after the squeeze
    mask = "checkerboard" if before_squeeze else "channel"
    return [_image_coupling(cfg, shape, mask, k, rng, dtype) for k in range(cfg["layers"])]


def _multiscale(cfg, dtype, steps):
    """[Dequantize, (Logit)] then scale 1; scale l: steps, squeeze, steps, then split into scale l+1 (or flatten)."""
    rng = np.random.default_rng(cfg["seed"])
    h, w, c = cfg["shape"]
    for level in range(cfg["scales"]):
        if h % (2 ** (level + 1)) or w % (2 ** (level + 1)):
            raise ConfigError(f"{cfg['scales']} scales need H and W divisible by {2 ** cfg['scales']}, got {h}x{w}")

    def scale(level, shape):
        layers = steps(cfg, shape, rng, dtype, True)
        sq = T.Squeeze(shape)
        layers.append(sq)
        shape = sq.out_shape
        layers += steps(cfg, shape, rng, dtype, False)
        if level < cfg["scales"] - 1:
            hh, ww, cc = shape
            rest = Chain(scale(level + 1, (hh, ww, cc // 2)), memory_saving=cfg["memory_saving"])
            layers.append(T.Split(shape, rest, rng=rng, dtype=dtype))
        else:
            layers.append(T.Flatten(shape))
        return layers

    pre = []
    if cfg["levels"] is not None:
        pre.append(T.Dequantize(cfg["shape"], cfg["levels"], seed=cfg["seed"]))
        if cfg["flow"] == "realnvp":
            pre.append(T.Logit(cfg["shape"], alpha=0.05))
    return pre + scale(0, tuple(cfg["shape"]))


def nice(cfg, dtype):
    """NICE: K additive couplings, then the diagonal scaling layer."""
    return [*_coupling_chain(cfg, T.AdditiveCoupling, {}, dtype), T.Scaling(cfg["dim"], dtype=dtype)]


def _residual_chain(cfg, dtype):
    rng = np.random.default_rng(cfg["seed"])
    layers = _vector_front(cfg, dtype)
    for _ in range(cfg["layers"]):
        layers.append(T.ActNorm(cfg["dim"], dtype=dtype))
        layers.append(T.ResidualBlock(cfg["dim"], hidden=cfg["hidden"], activation=cfg["activation"],
                                      coeff=cfg["coeff"], logdet=cfg["logdet"], n_terms=cfg["n_terms"],
                                      learn_beta=cfg["learn_beta"], rng=rng, dtype=dtype))
    return layers


def _residual_steps(cfg, shape, rng, dtype, before_squeeze):
    if before_squeeze:
        return []
    steps = []
    for _ in range(cfg["layers"]):
        steps += [T.ActNorm(shape, dtype=dtype),
                  T.ConvResidualBlock(shape, hidden=cfg["hidden"], activation=cfg["activation"], coeff=cfg["coeff"],
                                    logdet=cfg["logdet"], n_terms=cfg["n_terms"], learn_beta=cfg["learn_beta"],
                                    rng=rng, dtype=dtype)]
    return steps


def iresnet(cfg, dtype):
    """i-ResNet: K x (actnorm, residual block), log-det by the truncated power series in training.

    With ``shape``: the multi-scale image version, K x (actnorm, conv residual block) per scale.
    """
    if cfg["shape"] is not None:
        return _multiscale(cfg, dtype, _residual_steps)
    return _residual_chain(cfg, dtype)


def resflow(cfg, dtype):
    """Residual flow: like iresnet, with the unbiased Russian-roulette log-det and its Neumann gradient."""
    return iresnet(cfg, dtype)


def ffjord(cfg, dtype):
    """FFJORD: K continuous-flow blocks (``CNF``), each an ODE solved from 0 to ``time``."""
    rng = np.random.default_rng(cfg["seed"])
    layers = _vector_front(cfg, dtype)
    for _ in range(cfg["layers"]):
        layers.append(T.CNF(cfg["dim"], hidden=cfg["hidden"], activation=cfg["activation"],
                            context_dim=cfg["context_dim"], time=cfg["time"], solver=cfg["solver"], rtol=cfg["rtol"],
                            atol=cfg["atol"], steps=cfg["ode_steps"], max_steps=cfg["ode_max_steps"],
                            trace=cfg["trace"], gradient=cfg["gradient"], kinetic=cfg["kinetic"],
                            jacobian=cfg["jacobian"], rng=rng, dtype=dtype))
    return layers


FLOWS = {"realnvp": realnvp, "nice": nice, "maf": maf, "iaf": iaf, "glow": glow, "iresnet": iresnet,
         "resflow": resflow, "ffjord": ffjord}


#: a model larger than this many parameters is refused unless asked for (``allow_large``): a
#: config (a checkpoint's, say) cannot make nfcore allocate more than ~0.8 GB of float64 weights
MAX_PARAMETERS = 100_000_000

_ENUMS = {
    "coupling": ("affine", "additive"),
    "invconv": ("lu", "plain"),
    "logdet": (None, "exact", "series", "roulette"),
    "mask": ("alternating", "half", "random"),
    "order": ("alternate", "natural", "reversed", "random"),
    "hidden_degrees": ("sequential", "random"),
    "permute": ("none", "reverse", "random"),
    "base": ("normal", "diag", "made", "made-mog", "gmm"),
    "mixture_covariance": ("full", "diag"),
    "dtype": ("float32", "float64"),
    "solver": ("dopri5", "rk4"),
    "trace": (None, "exact", "hutchinson"),
    "gradient": ("adjoint", "discretise"),
}
_BOOLS = ("learn_beta", "residual", "batch_norm", "whiten", "memory_saving")
#: integer keys: (smallest value, None = may be None)
_INTS = {"dim": (1, False), "layers": (1, False), "scales": (1, False), "levels": (2, True),
         "n_terms": (1, True), "prior_components": (1, False), "context_dim": (0, False), "seed": (0, False),
         "ode_steps": (1, False), "ode_max_steps": (1, False)}


def _widths(key, value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value] * 2
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key} must be a list of positive integers (or one integer), got {value!r}")
    return [check_int(f"{key}[{i}]", v, 1) for i, v in enumerate(value)]


def _floats(key, value, n, positive=False):
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ConfigError(f"{key} must be a list of {n} numbers, got {value!r}"[:300])
    return [check_real(f"{key}[{i}]", v, 0.0 if positive else None) for i, v in enumerate(value)]


def estimate_parameters(cfg):
    """An upper estimate of the parameter count of a normalised config, from sizes alone (no
    allocation): checked against ``MAX_PARAMETERS`` before anything is built."""
    d, ctx, layers = cfg["dim"], cfg["context_dim"], cfg["layers"]

    def mlp(widths, taps=1, inner_taps=None):
        inner = taps if inner_taps is None else inner_taps
        last = len(widths) - 2
        return sum((a * (taps if i in (0, last) else inner) + 1) * b
                   for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])))

    if cfg["shape"] is not None:
        c = cfg["shape"][2]
        total = 0
        for level in range(cfg["scales"]):
            cs = 4 * c * 2**level  # channels after this scale's squeeze; each split keeps half of them
            # ConvNet: 3x3 first and last convolutions, 1x1 between; 1x1 invertible convolution; actnorm
            total += layers * (mlp([cs, *cfg["hidden"], 2 * cs], taps=9, inner_taps=1) + cs * cs + 4 * cs)
            total += mlp([cs // 2, *cfg["hidden"], cs], taps=9, inner_taps=1)  # a split prior's network
    elif cfg["flow"] in ("iresnet", "resflow"):
        total = layers * (mlp([d, *cfg["hidden"], d]) + 2 * d + sum(cfg["hidden"]))
    elif cfg["flow"] == "ffjord":  # concat-squash: 3 time parameters per unit beside W and b
        widths = [d + ctx, *cfg["hidden"], d]
        total = layers * (mlp(widths) + 3 * sum(widths[1:]))
    else:
        total = layers * (mlp([d + ctx, *cfg["hidden"], 2 * d]) + 2 * d)
    if cfg["whiten"]:
        total += d * d + 2 * d
    k = cfg["prior_components"]
    if cfg["base"] in ("made", "made-mog"):
        total += mlp([d, *cfg["prior_hidden"], 3 * k * d])
    elif cfg["base"] == "gmm":
        total += k * (d * d + 2 * d + 1)
    return int(total)


def normalize_config(config, allow_large=False):
    """Fill defaults and validate every value (types and ranges, as a checkpoint's config is
    untrusted input); returns a new dict. A model of more than ``MAX_PARAMETERS`` parameters
    (estimated from the sizes, before anything is allocated) needs ``allow_large=True``."""
    if not isinstance(config, dict):
        raise ConfigError(f"a config is a dict of settings, got {type(config).__name__}")
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown config keys {sorted(map(str, unknown))[:20]}; known: {sorted(DEFAULTS)}")
    cfg = copy.deepcopy(DEFAULTS)
    cfg.update(copy.deepcopy(dict(config)))
    if not isinstance(cfg["flow"], str) or cfg["flow"] not in FLOWS:
        raise ConfigError(f"unknown flow {cfg['flow']!r}; choose one of {sorted(FLOWS)}")
    for key, allowed in _ENUMS.items():
        if cfg[key] not in allowed:
            raise ConfigError(f"{key} must be one of {[a for a in allowed if a is not None]}, got {cfg[key]!r}")
    for key in _BOOLS:
        if not isinstance(cfg[key], (bool, np.bool_)):
            raise ConfigError(f"{key} must be true or false, got {cfg[key]!r}")
        cfg[key] = bool(cfg[key])
    for key, (lo, nullable) in _INTS.items():
        if not (nullable and cfg[key] is None):
            cfg[key] = check_int(key, cfg[key], lo)
    cfg["hidden"] = _widths("hidden", cfg["hidden"])
    cfg["prior_hidden"] = _widths("prior_hidden", cfg["prior_hidden"])
    cfg["coeff"] = check_real("coeff", cfg["coeff"], 0.0, 1.0)
    cfg["scale_bound"] = check_real("scale_bound", cfg["scale_bound"], 0.0)
    cfg["time"] = check_real("time", cfg["time"], 0.0)
    for key in ("rtol", "atol", "kinetic", "jacobian"):
        cfg[key] = check_real(key, cfg[key], 0.0, closed=True)
    if cfg["activation"] is not None and not isinstance(cfg["activation"], str):
        raise ConfigError(f"activation must be a name, got {cfg['activation']!r}")
    residual = cfg["flow"] in ("iresnet", "resflow")
    if cfg["activation"] is None:
        cfg["activation"] = "lipswish" if residual else ("tanh" if cfg["flow"] == "ffjord" else "relu")
    if residual:
        if cfg["logdet"] is None:
            cfg["logdet"] = "series" if cfg["flow"] == "iresnet" else "roulette"
        if cfg["n_terms"] is None:
            cfg["n_terms"] = 5 if cfg["flow"] == "iresnet" else 2
        if cfg["context_dim"]:
            raise ConfigError("the residual flows are unconditional (context_dim must be 0)")
    if cfg["shape"] is not None:
        if not isinstance(cfg["shape"], (list, tuple)) or len(cfg["shape"]) != 3:
            raise ConfigError(f"shape must be [H, W, C] with positive sizes, got {cfg['shape']!r}")
        shape = [check_int(f"shape[{i}]", v, 1) for i, v in enumerate(cfg["shape"])]
        cfg["shape"] = shape
        cfg["dim"] = shape[0] * shape[1] * shape[2]
        if cfg["flow"] not in ("glow", "realnvp", "iresnet", "resflow"):  # ffjord included: vectors only
            raise ConfigError(f"flow {cfg['flow']!r} takes vectors; image shapes work with glow, realnvp, iresnet "
                              "and resflow")
        if cfg["context_dim"]:
            raise ConfigError("the image flows are unconditional (context_dim must be 0)")
    if (cfg["whiten"] or cfg["discrete"] or cfg["base"] == "gmm") and cfg["shape"] is not None:
        raise ConfigError("whiten, discrete and the gmm base are for vector flows (no shape)")
    if cfg["discrete"] is not None:
        if not isinstance(cfg["discrete"], (list, tuple)):
            raise ConfigError(f"discrete must be a list of column indices, got {cfg['discrete']!r}")
        cols = sorted({check_int("discrete[]", c, 0) for c in cfg["discrete"]})
        if cols and cols[-1] >= cfg["dim"]:
            raise ConfigError(f"discrete column {cols[-1]} is out of range for dim {cfg['dim']}")
        cfg["discrete"] = cols or None
    if cfg["standardize"] is not None:
        st = cfg["standardize"]
        if not isinstance(st, dict) or set(st) != {"mean", "std"}:
            raise ConfigError("standardize must be {'mean': [...], 'std': [...]}")
        cfg["standardize"] = {"mean": _floats("standardize.mean", st["mean"], cfg["dim"]),
                              "std": _floats("standardize.std", st["std"], cfg["dim"], positive=True)}
    size = estimate_parameters(cfg)
    if size > MAX_PARAMETERS and not allow_large:
        raise ConfigError(f"this config asks for about {size:,} parameters, more than nfcore builds without being "
                          f"asked ({MAX_PARAMETERS:,}); pass allow_large=True (build, load; --allow-large on the "
                          "command line) if it is meant")
    return cfg


def build(config: dict[str, Any], allow_large: bool = False) -> Flow:
    """A ``Flow`` from a config dict (see the module docstring for the keys); ``allow_large``:
    build one of more than ``MAX_PARAMETERS`` parameters."""
    cfg = normalize_config(config, allow_large)
    dtype = np.dtype(cfg["dtype"])
    layers = FLOWS[cfg["flow"]](cfg, dtype)
    chain = Chain(layers, memory_saving=cfg["memory_saving"])
    return Flow(chain, _base(cfg, dtype), context_dim=cfg["context_dim"], config=cfg, shape=cfg["shape"])
