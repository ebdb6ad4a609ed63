"""Glow on the bundled 8x8 digits: test bits/dim of nfcore and of normflows' Glow, same size and budget.

Both models: L=2 scales, K=8 steps per scale (actnorm, LU 1x1 convolution, affine coupling with
a 3x3 -> 1x1 -> 3x3 ConvNet of width 128), trained on the 1,257 training images of the fixed
split (``nfcore.data.DIGITS_SPLIT``) for the same number of epochs at batch 64 with Adam
(lr 1e-3, cosine decay), fresh uniform dequantisation noise every batch; the epoch with the best
validation bits/dim is kept and evaluated on the 360 test images (4 noise draws averaged).
Bits/dim are of the discrete 17-level data: (-log p(y) + 64 log 17) / (64 log 2), y = (x + u)/17.

The baseline is an independent per-pixel categorical model (add-one smoothing) fitted to the
same training images.

    python benchmarks/quality_digits.py [--epochs 40] [--seeds 0]
"""

import argparse
import math
import time

import numpy as np

import nfcore
from nfcore.data import load_digit_images

K_LEVELS = 17
D = 64


def categorical_baseline(train, test, alpha=1.0):
    counts = np.stack([(train == k).sum(0) for k in range(K_LEVELS)], -1) + alpha
    p = counts / counts.sum(-1, keepdims=True)
    lp = np.take_along_axis(np.broadcast_to(p, (len(test), *p.shape)), test.astype(np.int64)[..., None], -1)
    return float(-np.log2(lp).mean())


def run_nfcore(tr, va, te, epochs, seed):
    flow = nfcore.build({"flow": "glow", "shape": [8, 8, 1], "levels": K_LEVELS, "layers": 8, "hidden": [128, 128],
                         "dtype": "float32", "seed": seed})
    t0 = time.perf_counter()
    nfcore.fit(flow, tr.astype(np.float32), val_data=va.astype(np.float32), epochs=epochs, batch_size=64, lr=1e-3,
               lr_schedule="cosine", seed=seed, log=None)
    seconds = time.perf_counter() - t0
    return nfcore.bits_per_dim(flow, te.astype(np.float32), draws=4), seconds, flow.num_parameters()


def run_normflows(tr, va, te, epochs, seed):
    import normflows as nf
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    levels, steps, width = 2, 8, 128
    q0, merges, flows = [], [], []
    for i in range(levels):
        blocks = [nf.flows.GlowBlock(2 ** (levels + 1 - i), width, split_mode="channel", scale=True)
                  for _ in range(steps)]
        flows += [blocks + [nf.flows.Squeeze()]]
        if i > 0:
            merges += [nf.flows.Merge()]
            latent = (2 ** (levels - i), 8 // 2 ** (levels - i), 8 // 2 ** (levels - i))
        else:
            latent = (2 ** (levels + 1), 8 // 2**levels, 8 // 2**levels)
        q0 += [nf.distributions.GlowBase(latent)]
    model = nf.MultiscaleFlow(q0, flows, merges, class_cond=False)

    def to_torch(x):
        y = (x + rng.uniform(size=x.shape)) / K_LEVELS
        return torch.from_numpy(np.ascontiguousarray(y.transpose(0, 3, 1, 2), dtype=np.float32))

    def bpd(x):
        with torch.no_grad():
            lp = model.log_prob(to_torch(x), None).double().numpy()
        return float((-lp.mean() + D * math.log(K_LEVELS)) / (D * math.log(2)))

    with torch.no_grad():
        model.log_prob(to_torch(tr[:256]), None)  # actnorm's data-dependent initialisation
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps_per_epoch = len(tr) // 64
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    best, best_state = math.inf, None
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = rng.permutation(len(tr))
        for s in range(steps_per_epoch):
            xb = to_torch(tr[perm[s * 64 : (s + 1) * 64]])
            opt.zero_grad()
            loss = -model.log_prob(xb, None).mean()
            if torch.isfinite(loss):
                loss.backward()
                opt.step()
            sched.step()
        model.eval()
        v = bpd(va)
        if v < best:
            best, best_state = v, {k: t.clone() for k, t in model.state_dict().items()}
    seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    test = float(np.mean([bpd(te) for _ in range(4)]))
    return test, seconds, sum(p.numel() for p in model.parameters())


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args(argv)
    tr, va, te = (load_digit_images(s) for s in ("train", "val", "test"))
    print(f"independent per-pixel categorical (add-one): {categorical_baseline(tr, te):.4f} bits/dim on the test split")
    print("| model | seed | parameters | test bits/dim | train seconds |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        b, sec, n = run_nfcore(tr, va, te, args.epochs, seed)
        print(f"| nfcore glow | {seed} | {n} | {b:.4f} | {sec:.0f} |", flush=True)
        if not args.no_peer:
            b, sec, n = run_normflows(tr, va, te, args.epochs, seed)
            print(f"| normflows glow | {seed} | {n} | {b:.4f} | {sec:.0f} |", flush=True)


if __name__ == "__main__":
    main()
