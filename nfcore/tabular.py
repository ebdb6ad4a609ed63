"""Tabular data: discrete columns, the defaults that fit the data's size, and the base chosen by validation.

What ``nfcore train`` does with a table (``--data file.csv``), in order:

1. ``column_kinds``: integer-valued columns are dequantised (``DequantizeColumns``); a column of
   non-integers with at most ``MAX_CODES`` distinct values is refused with advice (a density would
   put a spike on each value).
2. ``plan``: validation rows, batch size, optimiser steps, width, depth, weight decay and patience
   from the numbers of rows and columns (the rule is in ``plan``'s docstring, the measurements in
   benchmarks/RESULTS.md).
3. The flow starts from the best Gaussian: standardisation, then an ``AffineLU`` layer set to
   whiten the training rows (``initialize``), then layers that start at the identity. Untrained,
   it scores exactly the maximum-likelihood full-covariance Gaussian.
4. ``select_base``: Gaussian mixtures with K = 2..8 full or diagonal components are fitted by EM to
   the whitened training rows and scored by 5-fold cross-validation against the single Gaussian;
   the winner becomes the base (``GaussianMixture``, loaded with its EM fit), learned further with
   the flow.
"""

import math

import numpy as np
import scipy.linalg

from .core.transform import Chain
from .errors import ConfigError, DataError
from .gmm import GaussianMixture, em_fit, mixture_log_prob
from .transforms.linear import AffineLU, whitening

__all__ = ["MAX_CODES", "column_kinds", "plan", "whiten_rows", "select_base", "initialize", "base_rows"]

#: a column of non-integers with at most this many distinct values is refused (categorical codes)
MAX_CODES = 10


def column_kinds(x):
    """Indices of the integer-valued columns of x (N, D); raises for few-valued non-integer columns.

    Example:
        >>> import numpy as np
        >>> column_kinds(np.array([[1.0, 0.3], [2.0, 0.71], [1.0, 0.2]]))
        [0]
    """
    x = np.asarray(x, dtype=np.float64)
    discrete = []
    for j in range(x.shape[1]):
        col = x[:, j]
        if np.all(col == np.floor(col)):
            discrete.append(j)
            continue
        values = np.unique(col)
        if values.size <= min(MAX_CODES, max(2, x.shape[0] // 2)):
            raise DataError(
                f"column {j} holds only {values.size} distinct values ({', '.join(f'{v:g}' for v in values[:5])}"
                f"{', ...' if values.size > 5 else ''}), not integers: a density would put a spike on each. "
                "Recode it as integer levels 0, 1, ... (integer columns are dequantised), or drop it"
            )
    return discrete


def plan(n_rows, n_cols, flow="realnvp"):
    """The defaults for a table of ``n_rows`` x ``n_cols``; a dict of the CLI's option values.

    Rule (measured on breast cancer, wine and diabetes, and the 2-D toys; benchmarks/RESULTS.md):

    * validation rows: 10% of the rows, at least min(100, 20%);
    * large tables (at least ``4096`` training rows): the toys' defaults, unchanged (batch 256,
      width 64, 8 layers, 40 epochs; MAF 60), no weight decay;
    * small tables: batch = training rows / 8 rounded to a power of two in [16, 256]; 4 layers of
      width 32 (64 from 1,000 rows); a budget of 2,000 optimiser steps (at most 400 epochs);
      decoupled weight decay 1e-4; learning rate 1e-3;
    * early stopping after 20% of the epochs (at least 5) without a better validation NLL, and
      the best-validation weights restored, including the untrained start.
    """
    n_rows, n_cols = int(n_rows), int(n_cols)
    n_val = max(int(round(0.1 * n_rows)), min(100, n_rows // 5))
    n_train = n_rows - n_val
    if n_train < 2:
        raise ConfigError(f"{n_rows} rows leave too few for training after {n_val} validation rows")
    if n_train >= 4096:
        p = {"val_rows": n_val, "batch_size": 256, "hidden": 64, "layers": 8, "weight_decay": 0.0, "lr": 2e-3,
             "epochs": 60 if flow == "maf" else 40, "regime": "large"}
    else:
        batch = int(2 ** round(math.log2(max(n_train / 8, 1))))
        batch = min(256, max(16, batch), n_train)
        steps_per_epoch = max(1, n_train // batch)
        p = {"val_rows": n_val, "batch_size": batch, "hidden": 32 if n_train < 1000 else 64, "layers": 4,
             "weight_decay": 1e-4, "lr": 1e-3, "epochs": min(400, max(1, round(2000 / steps_per_epoch))),
             "regime": "small"}
    p["patience"] = max(5, p["epochs"] // 5)
    return p


def whiten_rows(x, standardize=None):
    """(z, mean, chol): x standardised (``{"mean", "std"}`` or None), then whitened by its own Cholesky."""
    y = np.asarray(x, dtype=np.float64)
    if standardize is not None:
        y = (y - np.asarray(standardize["mean"])) / np.asarray(standardize["std"])
    mean, chol = whitening(y)
    z = scipy.linalg.solve_triangular(chol, (y - mean).T, lower=True).T
    return z, mean, chol


def _zca(u):
    """(mean, W) with W = cov(u)^(-1/2): the symmetric whitening, the one nearest to u's own axes
    and the only one that does not depend on the order of the columns."""
    d = u.shape[1]
    cov = np.cov(u, rowvar=False, bias=True).reshape(d, d) + 1e-6 * np.eye(d)
    ev, vec = np.linalg.eigh(cov)
    return u.mean(0), (vec / np.sqrt(ev)) @ vec.T


def _whitened_split(tr, te):
    """(tr, te) in the symmetric whitening of ``tr``: mean 0, covariance I on the training part."""
    mu, w = _zca(tr)
    return (tr - mu) @ w, (te - mu) @ w


def select_base(z, seed=0, max_components=8, folds=5, log=None, frame=None):
    """Choose the base for whitened rows z (N, D) by ``folds``-fold cross-validation.

    Candidates: the standard normal (the single Gaussian, as z is whitened) and Gaussian
    mixtures with K in {2, 3, 4, 6, 8} (up to ``max_components``) full or diagonal components,
    full ones only while every component would average at least 2 D rows. Returns
    ``(choice, scores)``: ``choice`` is None for the normal base, else ``(K, covariance,
    (weights, means, covariances))`` fitted by EM on all of z; ``scores`` maps each candidate to
    its mean held-out log-likelihood per row. A mixture wins only when its per-row held-out gain
    over the single Gaussian exceeds twice its standard error (a paired test over the rows).

    Coordinates: the candidates are fitted in the symmetric (ZCA) whitening of ``frame``, the same
    rows in the coordinates whose axes a diagonal component should follow (the CLI passes the
    standardised rows as they reach the whitening layer), or of z itself. A Cholesky whitening
    such as z's turns the data by an angle that depends on the column order, so a "diagonal"
    component there follows arbitrary axes (MAF and RealNVP, whose only difference at the start
    is a column permutation, chose different bases on wine). The chosen mixture is mapped to z's
    coordinates (both whiten the same rows, so they differ by a rotation and a shift) as a
    full-covariance mixture.

    Each fold is whitened again with its own training part's statistics before any candidate
    sees it: whitened with every row, held-out ones included, a mixture would profit from that
    leak while the single Gaussian, refitted on the training part, would not (on wine's training
    rows the leak made a 2-component mixture look 1.3 nats per row better than the Gaussian;
    without it, 0.33). The re-whitening's log-det is the same for every candidate of a fold and
    cancels from every comparison.
    """
    z = np.asarray(z, dtype=np.float64)
    u = z if frame is None else np.asarray(frame, dtype=np.float64)
    if u.shape != z.shape:
        raise ConfigError(f"select_base: frame {u.shape} and rows {z.shape} differ in shape")
    n, d = z.shape
    rng = np.random.default_rng([int(seed), 4])
    fold = rng.permutation(n) % folds
    candidates = [(1, "full")]
    for k in (2, 3, 4, 6, 8):
        if k > max_components or n * (folds - 1) / folds < 4 * k:
            continue
        if n * (folds - 1) / folds / k >= 2 * d:
            candidates.append((k, "full"))
        candidates.append((k, "diag"))
    splits = [_whitened_split(u[fold != f], u[fold == f]) for f in range(folds)]
    scores, rows = {}, {}
    for k, cov in candidates:
        held = []
        for f, (tr, te) in enumerate(splits):
            if k == 1:
                w, mu, covs = np.ones(1), tr.mean(0, keepdims=True), np.cov(tr, rowvar=False, bias=True)[None]
                covs = covs + 1e-6 * np.eye(d)
            else:
                w, mu, covs, _ = em_fit(tr, k, cov, seed=[int(seed), f], n_init=2)
            held.append(mixture_log_prob(te, w, mu, covs))
        rows[(k, cov)] = np.concatenate(held)  # rows in fold order, the same for every candidate
        scores[(k, cov)] = float(np.mean(rows[(k, cov)]))
        if log is not None:
            log(f"  base candidate {'normal' if k == 1 else f'gmm K={k} {cov}'}: cross-validated log-lik "
                f"{scores[(k, cov)]:.4f} per row")
    k, cov = max(scores, key=scores.get)
    gain = rows[(k, cov)] - rows[(1, "full")]
    if k == 1 or not np.mean(gain) > 2.0 * np.std(gain) / np.sqrt(gain.size):
        return None, scores
    mean, white = _zca(u)
    uw = (u - mean) @ white
    w, mu, covs, _ = em_fit(uw, k, cov, seed=int(seed), n_init=3)
    # z = uw A^T + c for the same rows: c = mean(z), A = cov(z, uw) (orthogonal: both are white)
    c = z.mean(0)
    a = (z - c).T @ uw / n
    return (k, "full", (w, mu @ a.T + c, a @ covs @ a.T)), scores


def base_rows(flow, x, with_frame=False):
    """The rows x (N, D) as ``flow``'s base sees them (through the whole transform), float64 on the host.

    ``with_frame``: also the rows as they reach the first ``AffineLU`` (standardised and
    dequantised, before the whitening), the coordinates ``select_base`` fits its candidates in;
    None when the flow has no such layer.
    """
    y = np.ascontiguousarray(x, dtype=flow.dtype)
    layers = flow.transform.transforms if isinstance(flow.transform, Chain) else [flow.transform]
    frame = None
    for layer in layers:
        if frame is None and isinstance(layer, AffineLU):
            frame = np.asarray(y, dtype=np.float64)
        y, _, _ = layer.forward(y, need_grad=False)
    z = np.asarray(y, dtype=np.float64)
    return (z, frame) if with_frame else z


def initialize(flow, x, mixture=None):
    """Start ``flow`` from the data: its ``AffineLU`` whitens the rows x (N, D) as they reach it;
    a ``GaussianMixture`` base gets ``mixture`` = (weights, means, covariances) in the coordinates
    the base sees (``base_rows`` after the whitening: the whitened rows, permuted by any fixed
    permutation layers, as the layers between start at the identity).

    The layers in front of the AffineLU (dequantisation, standardisation) run on x first, so the
    whitening is of what the layer sees. Raises ``ConfigError`` when the flow has no AffineLU
    (build it with ``"whiten": True``).
    """
    layers = list(getattr(flow.transform, "transforms", [flow.transform]))
    idx = next((i for i, t in enumerate(layers) if isinstance(t, AffineLU)), None)
    if idx is None:
        raise ConfigError("initialize needs a flow built with \"whiten\": True (an AffineLU layer)")
    y = np.ascontiguousarray(x, dtype=flow.dtype)
    for t in layers[:idx]:
        y, _, _ = t.forward(y, need_grad=False)
    mean, chol = whitening(np.asarray(y))
    fresh = AffineLU(layers[idx].channels, loc=mean, scale_tril=chol)
    layers[idx].load_state_dict(fresh.state_dict())
    if mixture is not None:
        if not isinstance(flow.base, GaussianMixture):
            raise ConfigError("a mixture was given but the flow's base is not a GaussianMixture (base \"gmm\")")
        flow.base.set_mixture(*mixture)
    return flow
