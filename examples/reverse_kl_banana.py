"""Variational inference: fit a flow to an unnormalised "banana" density by reverse KL.

Only log p~(x) and its gradient are needed, no samples of p. The loss
E_q[log q(x) - log p~(x)] = KL(q || p) - log Z is bounded below by -log Z = -log(4 pi),
so the gap to it is the KL divergence left.

    python examples/reverse_kl_banana.py [--quick]
"""

import sys

import numpy as np

import nfcore
from nfcore.data import BANANA_LOG_Z, banana_log_density


def main(quick=False):
    flow = nfcore.build({"flow": "realnvp", "dim": 2, "layers": 6, "hidden": [64, 64], "base": "diag"})
    losses = nfcore.fit_reverse_kl(flow, banana_log_density, steps=50 if quick else 3000, batch_size=256,
                                   lr=2e-3, log=None if quick else print, log_every=500)
    final = losses[-50:].mean()
    print(f"reverse KL - log Z: {final:.4f}; floor -log Z = {-BANANA_LOG_Z:.4f}; KL ~ {final + BANANA_LOG_Z:.4f}")
    x = np.asarray(flow.sample(20_000, seed=1))
    print(f"sample mean of x1 {x[:, 0].mean():.3f} (exact 0), std {x[:, 0].std():.3f} (exact 2), "
          f"mean of x2 {x[:, 1].mean():.3f} (exact 1)")
    return final


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
