"""Glow training-step throughput: nfcore vs normflows' Glow, side by side in one process, CPU, float32.

The model (both libraries): L=2 scales, K=4 steps per scale (actnorm, LU 1x1 convolution,
affine coupling with the 3x3 -> 1x1 -> 3x3 ConvNet of width 64), a factor-out split between
the scales; on random (N, H, W, C) data, 8x8x1 and 16x16x3. A step is zero grads, forward,
backward and Adam. Libraries are interleaved round by round and each one's median round is
reported, every library on nfcore's BLAS thread count (``_timing.py``).

It also prints the convolution FLOPs of a step (forward 2 N H W k^2 C_in C_out per conv,
training ~3x forward) and the rate they are done at: the distance from the BLAS peak.

    pip install '.[bench]'    # torch (CPU), normflows
    python benchmarks/bench_glow.py [--quick] [--rounds R]
"""

import argparse

import numpy as np
from _timing import equal_threads, median_of_rounds, protocol

import nfcore

CONFIGS = [((8, 8, 1), 64), ((8, 8, 1), 256), ((16, 16, 3), 64), ((16, 16, 3), 256)]
L, K, WIDTH = 2, 4, 64


def conv_flops(shape, batch):
    """Forward FLOPs of every convolution of the model (couplings and split priors)."""
    h, w, c = shape
    total = 0
    for level in range(L):
        h, w, c = h // 2, w // 2, c * 4
        ca, cb = c // 2, c - c // 2
        per_pixel = 9 * ca * WIDTH + WIDTH * WIDTH + 9 * WIDTH * 2 * cb
        total += K * 2 * batch * h * w * per_pixel
        if level < L - 1:
            total += 2 * batch * h * w * 9 * (c // 2) * 2 * (c - c // 2)  # the split prior's conv
            c //= 2
    return total


class NfcoreCase:
    name = "nfcore"

    def __init__(self, shape, batch):
        self.flow = nfcore.build({"flow": "glow", "shape": list(shape), "scales": L, "layers": K,
                                  "hidden": [WIDTH, WIDTH], "dtype": "float32", "base": "diag"})
        self.opt = nfcore.Adam(self.flow.parameters(), lr=1e-4)
        self.x = np.random.default_rng(0).normal(size=(batch, *shape)).astype(np.float32)

    def step(self):
        self.opt.zero_grad()
        self.flow.loss_and_grad(self.x)
        self.opt.step()


class NormflowsCase:
    name = "normflows"

    def __init__(self, shape, batch):
        import normflows as nf
        import torch

        torch.manual_seed(0)
        h, w, c = shape
        q0, merges, flows = [], [], []
        for i in range(L):
            blocks = [nf.flows.GlowBlock(c * 2 ** (L + 1 - i), WIDTH, split_mode="channel", scale=True)
                      for _ in range(K)]
            blocks += [nf.flows.Squeeze()]
            flows += [blocks]
            if i > 0:
                merges += [nf.flows.Merge()]
                latent = (c * 2 ** (L - i), h // 2 ** (L - i), w // 2 ** (L - i))
            else:
                latent = (c * 2 ** (L + 1), h // 2 ** L, w // 2 ** L)
            q0 += [nf.distributions.GlowBase(latent)]
        self.model = nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        x = np.random.default_rng(0).normal(size=(batch, *shape)).astype(np.float32)
        self.x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # NCHW
        with torch.no_grad():
            self.model.log_prob(self.x, None)  # actnorm's data-dependent initialisation

    def step(self):
        self.opt.zero_grad()
        loss = -self.model.log_prob(self.x, None).mean()
        loss.backward()
        self.opt.step()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--config", type=int, action="append", help="index into CONFIGS (repeatable)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.min_time = 2, 0.3
    try:
        import normflows  # noqa: F401
        import torch  # noqa: F401

        peers = [NormflowsCase]
    except ImportError:
        print("torch/normflows not installed: nfcore only (pip install '.[bench]')")
        peers = []
    threads = equal_threads()
    rows = []
    for shape, batch in [CONFIGS[i] for i in args.config] if args.config else CONFIGS:
        cases = [NfcoreCase(shape, batch)] + [p(shape, batch) for p in peers]
        for c in cases:
            c.step()
            c.step()  # warm-up: JIT compile, actnorm init, allocator
        med = median_of_rounds(cases, args.rounds, args.min_time)
        flops = 3 * conv_flops(shape, batch)
        ours = med["nfcore"]
        peer = med.get("normflows")
        rows.append((shape, batch, batch / ours, batch / peer if peer else None, peer / ours if peer else None,
                     flops / ours / 1e9, ours * 1e3))
    print(f"Glow training step, float32 ({protocol(args.rounds, threads)})")
    print("| image | batch | nfcore img/s | normflows img/s | speed-up | nfcore conv GFLOP/s | step ms |")
    print("|---|---|---|---|---|---|---|")
    for shape, batch, ours, peer, ratio, gflops, ms in rows:
        peer_s = f"{peer:.0f}" if peer else "-"
        ratio_s = f"{ratio:.2f}x" if ratio else "-"
        image = "x".join(map(str, shape))
        print(f"| {image} | {batch} | {ours:.0f} | {peer_s} | {ratio_s} | {gflops:.1f} | {ms:.1f} |")


if __name__ == "__main__":
    main()
