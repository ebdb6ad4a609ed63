"""Residual-flow training-step throughput: nfcore vs normflows' residual flow, CPU, float32.

Both: 8 blocks of (actnorm, residual block x + g(x)), g an MLP D -> 128 -> 128 -> D with
spectrally normalised weights (nfcore c = 0.97 LipSwish; normflows' LipschitzMLP, c = 0.9,
LipSwish), the unbiased Russian-roulette log-det (2 exact terms, geometric p = 0.5, one probe)
with the Neumann-series gradient (normflows: ``reduce_memory=True``), diagonal Gaussian base.
Random data, D = 2 and 16, batch 256 and 1024. A step is zero grads, forward, backward and
Adam; for normflows also ``nf.utils.update_lipschitz(model, 50)`` after the update, as its own
residual-flow example does every step (nfcore's step includes its one power iteration per
layer). Libraries interleaved round by round; the median round reported, every library on
nfcore's BLAS thread count.

    pip install '.[bench]'    # torch (CPU), normflows
    python benchmarks/bench_resflow.py [--quick] [--rounds R]
"""

import argparse

import numpy as np
from _timing import equal_threads, median_of_rounds, protocol

import nfcore

CONFIGS = [(2, 256), (2, 1024), (16, 256), (16, 1024)]
BLOCKS, HIDDEN = 8, 128


class NfcoreCase:
    name = "nfcore"

    def __init__(self, d, batch):
        self.flow = nfcore.build({"flow": "resflow", "dim": d, "layers": BLOCKS, "hidden": [HIDDEN, HIDDEN],
                                  "dtype": "float32", "base": "diag"})
        self.opt = nfcore.Adam(self.flow.parameters(), lr=1e-4)
        self.x = np.random.default_rng(0).normal(size=(batch, d)).astype(np.float32)

    def step(self):
        self.opt.zero_grad()
        self.flow.loss_and_grad(self.x)
        self.opt.step()


class NormflowsCase:
    name = "normflows"

    def __init__(self, d, batch):
        import normflows as nf
        import torch

        torch.manual_seed(0)
        flows = []
        for _ in range(BLOCKS):
            net = nf.nets.LipschitzMLP([d, HIDDEN, HIDDEN, d], init_zeros=True, lipschitz_const=0.9)
            flows += [nf.flows.Residual(net, reduce_memory=True), nf.flows.ActNorm(d)]
        self.model = nf.NormalizingFlow(nf.distributions.DiagGaussian(d), flows)
        self.nf = nf
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.x = torch.from_numpy(np.random.default_rng(0).normal(size=(batch, d)).astype(np.float32))

    def step(self):
        self.opt.zero_grad()
        loss = self.model.forward_kld(self.x)
        loss.backward()
        self.opt.step()
        self.nf.utils.update_lipschitz(self.model, 50)  # as normflows' residual example, every step


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
    print(f"training step, float32, samples/s ({protocol(args.rounds, equal_threads())})")
    print("| D | batch | nfcore samples/s | normflows samples/s | speed-up | nfcore step ms |")
    print("|---|---|---|---|---|---|")
    for d, batch in [CONFIGS[i] for i in args.config] if args.config else CONFIGS:
        cases = [NfcoreCase(d, batch)] + [p(d, batch) for p in peers]
        for c in cases:
            c.step()
            c.step()
        med = median_of_rounds(cases, args.rounds, args.min_time)
        ours, peer = med["nfcore"], med.get("normflows")
        peer_s = f"{batch / peer:.0f}" if peer else "-"
        ratio = f"{peer / ours:.2f}x" if peer else "-"
        print(f"| {d} | {batch} | {batch / ours:.0f} | {peer_s} | {ratio} | {ours * 1e3:.1f} |", flush=True)


if __name__ == "__main__":
    main()
