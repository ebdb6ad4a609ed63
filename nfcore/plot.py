"""PNG plots of a trained 2-D flow (optional: needs matplotlib, the ``plot`` extra)."""

import os

import numpy as np

__all__ = ["plot_run", "density_grid"]


def density_grid(flow, lo, hi, n=200):
    """(xs, ys, p) with p = exp(log p) on an n x n grid over [lo, hi] (2-vectors)."""
    xs = np.linspace(lo[0], hi[0], n)
    ys = np.linspace(lo[1], hi[1], n)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(flow.dtype)
    lp = np.asarray(flow.log_prob(pts), dtype=np.float64)
    return xs, ys, np.exp(lp).reshape(n, n)


def plot_run(flow, data, out_dir, seed=0):
    """Write density.png and samples.png into ``out_dir``; returns the paths ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    data = np.asarray(data, dtype=np.float64)
    lo = data.min(0) - 0.5
    hi = data.max(0) + 0.5
    xs, ys, p = density_grid(flow, lo, hi)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(p, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap="viridis", aspect="auto")
    ax.set_title("learned density")
    path = os.path.join(out_dir, "density.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    paths.append(path)
    samples = np.asarray(flow.sample(min(len(data), 5000), seed=seed))
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharex=True, sharey=True)
    axes[0].scatter(data[:5000, 0], data[:5000, 1], s=1, alpha=0.5)
    axes[0].set_title("data")
    axes[1].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.5, color="C1")
    axes[1].set_title("flow samples")
    for ax in axes:
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
    path = os.path.join(out_dir, "samples.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    paths.append(path)
    return paths
