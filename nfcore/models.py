"""Builders: one way to make a model, from a plain-dict config.

``build(config)`` returns a ``Flow`` whose ``config`` is the full, defaults-filled dict;
a checkpoint stores that dict, so ``nfcore.load`` rebuilds the model without the code
that made it.

Config keys (defaults in ``DEFAULTS``):
    flow        ``realnvp`` | ``nice`` | ``maf`` | ``iaf``
    dim         data dimension D
    layers      number of coupling (or autoregressive) layers K
    hidden      list of hidden widths of each conditioner MLP
    activation  conditioner activation (``relu``, ``leaky_relu``, ``tanh``, ``elu``, ``softplus``)
    residual    residual hidden blocks in the conditioner
    mask        ``alternating`` | ``half`` | ``random`` (parity flips every layer)
    order       MAF/IAF variable order: ``alternate`` (natural, reversed, natural, ...),
                ``natural``, ``reversed`` or ``random`` (fixed per layer)
    hidden_degrees  MADE hidden degrees: ``sequential`` | ``random``
    batch_norm  MAF/IAF: a BatchNorm bijector between consecutive autoregressive layers
    permute     ``none`` | ``reverse`` | ``random``: a fixed permutation after each coupling
    scale_bound RealNVP's soft log-scale bound
    base        ``normal`` | ``diag`` (learnable diagonal Gaussian) | ``made`` (autoregressive
                Gaussian prior) | ``made-mog`` (autoregressive mixture prior)
    prior_hidden, prior_components  MADE widths and mixture size of the made/made-mog bases
    context_dim width of the context (conditional flows)
    standardize ``{"mean": [...], "std": [...]}`` or None: a fixed first layer
    dtype       ``float64`` | ``float32``
    seed        initialisation seed (masks, permutations, weights)
"""

import copy

import numpy as np

from .core.distributions import DiagNormal, StandardNormal
from .core.flow import Flow
from .core.transform import Chain
from .errors import ConfigError
from .transforms import (
    IAF,
    MAF,
    AdditiveCoupling,
    AffineCoupling,
    BatchNorm,
    Permutation,
    Scaling,
    Standardize,
    make_mask,
    make_permutation,
)

__all__ = ["DEFAULTS", "FLOWS", "build", "realnvp", "nice", "maf", "iaf"]

DEFAULTS = {
    "flow": "realnvp",
    "dim": 2,
    "layers": 8,
    "hidden": [64, 64],
    "activation": "relu",
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
    "context_dim": 0,
    "standardize": None,
    "dtype": "float64",
    "seed": 0,
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
    raise ConfigError(f"unknown base {cfg['base']!r}; choose normal, diag, made or made-mog")


def _coupling_chain(cfg, layer_cls, extra_kwargs, dtype):
    rng = np.random.default_rng(cfg["seed"])
    layers = []
    if cfg["standardize"] is not None:
        layers.append(Standardize(cfg["standardize"]["mean"], cfg["standardize"]["std"], dtype=dtype))
    for k in range(cfg["layers"]):
        mask = make_mask(cfg["dim"], cfg["mask"], parity=k, rng=rng)
        layers.append(
            layer_cls(mask, hidden=cfg["hidden"], activation=cfg["activation"], context_dim=cfg["context_dim"],
                      residual=cfg["residual"], rng=rng, dtype=dtype, **extra_kwargs)
        )
        if cfg["permute"] != "none" and k < cfg["layers"] - 1:
            layers.append(Permutation(make_permutation(cfg["dim"], cfg["permute"], rng)))
    return layers


def _autoregressive_chain(cfg, cls, dtype):
    rng = np.random.default_rng(cfg["seed"])
    layers = []
    if cfg["standardize"] is not None:
        layers.append(Standardize(cfg["standardize"]["mean"], cfg["standardize"]["std"], dtype=dtype))
    for k in range(cfg["layers"]):
        order = cfg["order"]
        if order == "alternate":
            order = "natural" if k % 2 == 0 else "reversed"
        layers.append(
            cls(cfg["dim"], hidden=cfg["hidden"], order=order, hidden_degrees=cfg["hidden_degrees"],
                activation=cfg["activation"], context_dim=cfg["context_dim"], scale_bound=cfg["scale_bound"],
                rng=rng, dtype=dtype)
        )
        if cfg["batch_norm"] and k < cfg["layers"] - 1:
            layers.append(BatchNorm(cfg["dim"], dtype=dtype))
    return layers


def maf(cfg, dtype):
    """MAF: K affine autoregressive layers on MADEs, orders alternating between layers."""
    return _autoregressive_chain(cfg, MAF, dtype)


def iaf(cfg, dtype):
    """IAF: like MAF but with the one-pass direction for sampling (fit it by reverse KL)."""
    return _autoregressive_chain(cfg, IAF, dtype)


def realnvp(cfg, dtype):
    """RealNVP: K affine couplings with alternating masks."""
    return _coupling_chain(cfg, AffineCoupling, {"scale_bound": cfg["scale_bound"]}, dtype)


def nice(cfg, dtype):
    """NICE: K additive couplings, then the diagonal scaling layer."""
    return [*_coupling_chain(cfg, AdditiveCoupling, {}, dtype), Scaling(cfg["dim"], dtype=dtype)]


FLOWS = {"realnvp": realnvp, "nice": nice, "maf": maf, "iaf": iaf}


def normalize_config(config):
    """Fill defaults and validate; returns a new dict."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = copy.deepcopy(DEFAULTS)
    cfg.update(copy.deepcopy(dict(config)))
    if cfg["flow"] not in FLOWS:
        raise ConfigError(f"unknown flow {cfg['flow']!r}; choose one of {sorted(FLOWS)}")
    if isinstance(cfg["hidden"], int):
        cfg["hidden"] = [cfg["hidden"]] * 2
    cfg["hidden"] = [int(h) for h in cfg["hidden"]]
    if isinstance(cfg["prior_hidden"], int):
        cfg["prior_hidden"] = [cfg["prior_hidden"]] * 2
    cfg["prior_hidden"] = [int(h) for h in cfg["prior_hidden"]]
    for key in ("dim", "layers"):
        if int(cfg[key]) < 1:
            raise ConfigError(f"{key} must be >= 1, got {cfg[key]}")
        cfg[key] = int(cfg[key])
    if cfg["dtype"] not in ("float32", "float64"):
        raise ConfigError(f"dtype must be float32 or float64, got {cfg['dtype']!r}")
    if cfg["standardize"] is not None:
        s = cfg["standardize"]
        cfg["standardize"] = {"mean": [float(v) for v in s["mean"]], "std": [float(v) for v in s["std"]]}
    return cfg


def build(config):
    """A ``Flow`` from a config dict (see the module docstring for the keys)."""
    cfg = normalize_config(config)
    dtype = np.dtype(cfg["dtype"])
    layers = FLOWS[cfg["flow"]](cfg, dtype)
    return Flow(Chain(layers), _base(cfg, dtype), context_dim=cfg["context_dim"], config=cfg)
