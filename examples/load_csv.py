"""Train on your own table: a CSV file of (N, D) numbers, through the CLI's Python entry.

Writes a small CSV (a 3-D correlated, skewed cloud), trains on it with ``nfcore train
--data file.csv``, then evaluates ``logprob`` on raw rows: the standardisation the CLI
applies is part of the model, so densities are those of the raw data.

    python examples/load_csv.py [--quick]
"""

import os
import sys
import tempfile

import numpy as np

import nfcore
from nfcore.cli import main as cli


def main(quick=False):
    rng = np.random.default_rng(0)
    n = 2_000 if quick else 20_000
    z = rng.normal(size=(n, 3))
    x = np.stack([z[:, 0], 0.5 * z[:, 0] + np.exp(0.5 * z[:, 1]), 10 + 3 * z[:, 2] ** 2 + z[:, 0]], axis=1)
    folder = tempfile.mkdtemp(prefix="nfcore-csv-")
    path = os.path.join(folder, "table.csv")
    np.savetxt(path, x, delimiter=",", header="a,b,c", comments="")
    out = os.path.join(folder, "run")
    cli(["train", "--data", path, "--epochs", "2" if quick else "30", "--out", out, "--no-plot"])
    flow = nfcore.load(os.path.join(out, "model.npz"))
    lp = np.asarray(flow.log_prob(x[:5].astype(flow.dtype)))
    print("log p of the first five raw rows:", np.round(lp, 3))
    return lp


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
