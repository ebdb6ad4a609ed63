"""Held-out log-likelihood on real tables: nfcore's CLI defaults against scikit-learn's density estimators.

    python benchmarks/quality_tabular.py                 # the tables bundled with scikit-learn
    python benchmarks/quality_tabular.py --toys          # also two 2-D toys (20,000 rows; slower)
    python benchmarks/quality_tabular.py --seeds 0 1 2   # several splits

Data sets (all bundled with scikit-learn, no download): breast cancer (569 x 30, continuous),
wine (178 x 13; magnesium and proline are integer-valued), diabetes unscaled (442 x 10; age,
sex (1/2), total cholesterol and glucose are integer-valued). Each is split 70/30 (train/test) by
the seed; the continuous columns are standardised with the training statistics, the integer
columns are left as integers. Every estimator sees the integer columns dequantised with uniform
noise (scikit-learn's: one fixed draw on the training rows; nfcore: its own layer), and every
estimator is scored on the same thing, the expectation over that noise on the test rows: the
mean over ``TEST_DRAWS`` noise draws (scikit-learn: the test rows with 16 fixed draws; nfcore:
``nfcore logprob`` on the test rows repeated 16 times, its layer drawing fresh noise for each).
Until session 6 scikit-learn was scored on one draw and nfcore on one (the "mean of 4 draws" were
the same draw: a model loaded in a new process starts its noise generator from its seed).

Estimators: one full-covariance Gaussian; GaussianMixture with its components (1-8) and
covariance type (full, diag, tied) chosen by 5-fold cross-validation; KernelDensity with its
bandwidth chosen by 5-fold cross-validation; nfcore ``train --flow maf`` and ``--flow realnvp``
with every other option at its default, then ``nfcore logprob`` on the test rows. Mean held-out
log-likelihood per row (nats, higher is better).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def _datasets(toys):
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

    sets = {
        "breast cancer": load_breast_cancer().data,
        "wine": load_wine().data,
        "diabetes": load_diabetes(scaled=False).data,
    }
    if toys:
        from nfcore.data import sample_toy

        for name in ("moons", "8gaussians"):
            sets[name] = sample_toy(name, 28_572, seed=0)  # 20,000 training rows after the 70/30 split
    return sets


def _split(x, seed):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(x.shape[0])
    n_test = int(round(0.3 * x.shape[0]))
    test, train = x[perm[:n_test]], x[perm[n_test:]]
    integer = np.all(train == np.floor(train), axis=0) & np.all(test == np.floor(test), axis=0)
    cont = ~integer
    mean, std = train[:, cont].mean(0), train[:, cont].std(0)
    train, test = train.copy(), test.copy()
    train[:, cont] = (train[:, cont] - mean) / std
    test[:, cont] = (test[:, cont] - mean) / std
    return train, test, np.flatnonzero(integer)


def _sklearn(train, test, integer, seed):
    from sklearn.mixture import GaussianMixture
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KernelDensity

    rng = np.random.default_rng([seed, 99])
    tr = train.copy()
    tr[:, integer] += rng.random((tr.shape[0], integer.size))
    te = _test_draws(test, integer, seed)
    out = {}
    g = GaussianMixture(1, covariance_type="full", reg_covar=1e-6).fit(tr)
    out["full Gaussian"] = g.score(te)
    grid = {"n_components": [1, 2, 3, 4, 6, 8], "covariance_type": ["full", "diag", "tied"]}
    gm = GridSearchCV(GaussianMixture(random_state=seed, n_init=2), grid, cv=5).fit(tr)
    p = gm.best_params_
    out[f"GaussianMixture (CV: {p['n_components']} {p['covariance_type']})"] = gm.best_estimator_.score(te)
    kd = GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(-1.5, 0.5, 15)}, cv=5).fit(tr)
    bandwidth = kd.best_params_["bandwidth"]
    out[f"KernelDensity (CV: bandwidth {bandwidth:.3g})"] = kd.best_estimator_.score(te) / te.shape[0]
    return out


#: noise draws of the test rows' integer columns every estimator is scored on (their mean)
TEST_DRAWS = 16


def _test_draws(test, integer, seed):
    """The test rows repeated TEST_DRAWS times, integer columns dequantised by fresh noise."""
    te = np.tile(test, (TEST_DRAWS, 1))
    te[:, integer] += np.random.default_rng([seed, 98]).random((te.shape[0], integer.size))
    return te


def _nfcore(train, test, flow, seed, tmp):
    tr_path, te_path = os.path.join(tmp, "train.csv"), os.path.join(tmp, "test.csv")
    np.savetxt(tr_path, train, delimiter=",", fmt="%.17g")
    np.savetxt(te_path, np.tile(test, (TEST_DRAWS, 1)), delimiter=",", fmt="%.17g")  # fresh noise per copy
    run = os.path.join(tmp, f"run-{flow}")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nfcore.cli", "train", "--data", tr_path, "--flow", flow, "--seed",
                    str(seed), "--out", run, "--no-plot"], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    lp_path = os.path.join(tmp, "lp.npy")
    subprocess.run([sys.executable, "-m", "nfcore.cli", "logprob", os.path.join(run, "model.npz"), te_path,
                    "--output", lp_path], check=True, capture_output=True, text=True)
    return float(np.load(lp_path).mean()), seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--toys", action="store_true")
    ap.add_argument("--only", nargs="+", default=None, help="data set names")
    args = ap.parse_args()
    print("| data set | seed | estimator | held-out log-lik | train time |")
    print("|---|---|---|---|---|")
    for name, x in _datasets(args.toys).items():
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            train, test, integer = _split(np.asarray(x, dtype=np.float64), seed)
            rows = _sklearn(train, test, integer, seed)
            with tempfile.TemporaryDirectory() as tmp:
                for flow in ("maf", "realnvp"):
                    ll, sec = _nfcore(train, test, flow, seed, tmp)
                    rows[f"nfcore {flow} (CLI defaults)"] = (ll, sec)
            for est, v in rows.items():
                ll, sec = v if isinstance(v, tuple) else (v, None)
                print(f"| {name} ({x.shape[0]} x {x.shape[1]}) | {seed} | {est} | {ll:.3f} | "
                      f"{'' if sec is None else f'{sec:.0f} s'} |", flush=True)


if __name__ == "__main__":
    main()
