"""PNG plots of a trained 2-D flow (optional: needs matplotlib, the ``plot`` extra)."""

import os

import numpy as np

__all__ = ["plot_run", "density_grid", "save_image_grid"]


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


def save_image_grid(images, path, levels, ncols=None):
    """Write images (N, H, W, C) of levels 0..K-1 as one PNG grid; returns False without matplotlib.

    One channel is shown in grey, three as RGB; a one-pixel border separates the tiles; images
    smaller than 32 pixels are enlarged by pixel repetition.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    x = np.clip(np.asarray(images, dtype=np.float64) / (levels - 1), 0, 1)
    n, h, w, c = x.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.ones((nrows * (h + 1) + 1, ncols * (w + 1) + 1, c))
    for k in range(n):
        r, q = divmod(k, ncols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = x[k]
    zoom = max(1, 32 // max(h, w))  # small images (8x8 digits) are enlarged, pixels kept square
    grid = grid.repeat(zoom, axis=0).repeat(zoom, axis=1)
    if c == 1:
        plt.imsave(path, grid[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        plt.imsave(path, grid[..., :3])
    return True
