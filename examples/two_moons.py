"""Fit a RealNVP to two moons with the Python API, then sample and evaluate it.

    python examples/two_moons.py [--quick]
"""

import sys

import numpy as np

import nfcore
from nfcore.data import ENTROPY, sample_toy, standardization


def main(quick=False):
    x = sample_toy("moons", 2_000 if quick else 20_000, seed=0)
    mean, std = standardization(x)
    flow = nfcore.build({"flow": "realnvp", "dim": 2, "layers": 8, "hidden": [64, 64], "dtype": "float32",
                         "standardize": {"mean": mean, "std": std}})
    nfcore.fit(flow, x.astype(np.float32), epochs=2 if quick else 40, batch_size=256, lr=2e-3,
               lr_schedule="cosine", log=None if quick else print)
    test = sample_toy("moons", 20_000, seed=1).astype(np.float32)
    nll = nfcore.evaluate_nll(flow, test)
    print(f"test NLL {nll:.4f} nats (best achievable {ENTROPY['moons']:.3f})")
    samples = flow.sample(5, seed=0)
    print("five samples:\n", np.round(samples, 3))
    return nll


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
