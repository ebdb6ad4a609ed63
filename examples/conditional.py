"""A conditional flow p(x | c): one model for a family of densities indexed by a context.

Here c is a scalar angle and x is the 8-Gaussians density rotated by it; the conditioner
of every coupling layer sees [x_a, c].

    python examples/conditional.py [--quick]
"""

import sys

import numpy as np

import nfcore
from nfcore.data import sample_toy


def rotated(n, seed):
    rng = np.random.default_rng(seed)
    x = sample_toy("8gaussians", n, rng)
    angle = rng.uniform(0, np.pi / 4, n)
    c, s = np.cos(angle), np.sin(angle)
    x = np.stack([c * x[:, 0] - s * x[:, 1], s * x[:, 0] + c * x[:, 1]], axis=1)
    return x, angle[:, None]


def main(quick=False):
    x, ctx = rotated(2_000 if quick else 30_000, 0)
    flow = nfcore.build({"flow": "realnvp", "dim": 2, "layers": 8, "hidden": [64, 64], "context_dim": 1,
                         "standardize": {"mean": x.mean(0), "std": x.std(0)}})
    nfcore.fit(flow, x, context=ctx, epochs=2 if quick else 30, batch_size=256, lr=2e-3, lr_schedule="cosine",
               log=None if quick else print)
    xt, ct = rotated(10_000, 1)
    nll = nfcore.evaluate_nll(flow, xt, ct)
    print(f"conditional test NLL {nll:.4f}")
    for angle in (0.0, np.pi / 8):
        s = np.asarray(flow.sample(2000, context=np.full((2000, 1), angle), seed=2))
        mean_angle = np.mean(np.mod(np.arctan2(s[:, 1], s[:, 0]), np.pi / 4))
        print(f"context angle {angle:.3f}: mean sample angle mod pi/4 = {mean_angle:.3f}")
    return nll


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
