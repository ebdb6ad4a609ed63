"""RealNVP (or MAF) throughput: nfcore vs zuko, nflows and FlowJAX, measured side by side in one process.

For each configuration (D, hidden, batch) it times, after a warm-up (JIT compile excluded):
a training step (zero grads, forward, backward, Adam), log_prob, and sampling; all float32.
FlowJAX's training step (loss, gradient and the optax Adam update) is jax.jit-compiled as one
function (``equinox.filter_jit``), and its log_prob and sampling are jitted too.
Libraries are interleaved round by round and each one's median round is reported, every
library on nfcore's BLAS thread count (``_timing.py``; XLA's CPU pool is not settable at run
time and uses every core, nfcore's default count); each timing starts after a pause that
lets the previous library's spinning thread pools go idle (2 s when FlowJAX runs: XLA's pools
spin longest). nfcore runs as a user gets it: its fused layers, and the worker threads it picks
for the batch (``workers=None``). Prints one markdown table with samples/s and nfcore's
speed-up over the fastest peer.

    pip install '.[bench]'            # torch (CPU), zuko, nflows, jax, flowjax, optax
    python benchmarks/bench_realnvp.py [--quick] [--rounds R] [--flow maf]

With ``--flow maf`` the flows are MAFs (5 layers of MADE, 2 hidden layers, orders reversed
between layers; FlowJAX permutes them at random) on MAF_CONFIGS, and sampling is left out
(bench_maf.py times it).
"""

import argparse
import statistics
import sys
import time

import numpy as np
from _timing import equal_threads, protocol, timeit

import nfcore

CONFIGS = [  # (D, hidden, layers, batch)
    (2, 64, 8, 256),
    (2, 64, 8, 1024),
    (2, 64, 8, 4096),
    (64, 256, 8, 256),
    (64, 256, 8, 4096),
]
MAF_CONFIGS = [(8, 128, 5, 256), (8, 128, 5, 1024), (8, 128, 5, 4096), (64, 512, 5, 256), (64, 512, 5, 4096)]
FLOW = "realnvp"


class NfcoreCase:
    name = "nfcore"

    def __init__(self, d, hidden, layers, batch):
        self.flow = nfcore.build({"flow": FLOW, "dim": d, "layers": layers, "hidden": [hidden, hidden],
                                  "dtype": "float32"})
        self.opt = nfcore.Adam(self.flow.parameters(), lr=1e-4)
        self.x = np.random.default_rng(0).normal(size=(batch, d)).astype(np.float32)
        self.batch = batch

    def train_step(self):
        self.opt.zero_grad()
        self.flow.loss_and_grad(self.x)
        self.opt.step()

    def log_prob(self):
        self.flow.log_prob(self.x)

    def sample(self):
        self.flow.sample(self.batch, seed=0)


class ZukoCase:
    name = "zuko"

    def __init__(self, d, hidden, layers, batch):
        import torch
        import zuko

        self.torch = torch
        family = zuko.flows.MAF if FLOW == "maf" else zuko.flows.RealNVP
        self.flow = family(d, transforms=layers, hidden_features=(hidden, hidden))
        self.opt = torch.optim.Adam(self.flow.parameters(), lr=1e-4)
        self.x = torch.from_numpy(np.random.default_rng(0).normal(size=(batch, d)).astype(np.float32))
        self.batch = batch

    def train_step(self):
        self.opt.zero_grad()
        loss = -self.flow().log_prob(self.x).mean()
        loss.backward()
        self.opt.step()

    def log_prob(self):
        with self.torch.no_grad():
            self.flow().log_prob(self.x)

    def sample(self):
        with self.torch.no_grad():
            self.flow().sample((self.batch,))


class NflowsCase:
    name = "nflows"

    def __init__(self, d, hidden, layers, batch):
        import torch
        from nflows.distributions import StandardNormal
        from nflows.flows import Flow
        from nflows.nn.nets import MLP
        from nflows.transforms import AffineCouplingTransform, CompositeTransform

        self.torch = torch

        class Net(torch.nn.Module):  # nflows' MLP takes no context argument
            def __init__(self, i, o):
                super().__init__()
                self.mlp = MLP((i,), (o,), hidden_sizes=[hidden, hidden])

            def forward(self, x, context=None):
                return self.mlp(x)

        def net(i, o):
            return Net(i, o)

        if FLOW == "maf":
            from nflows.transforms import MaskedAffineAutoregressiveTransform, ReversePermutation

            ts = []
            for k in range(layers):
                if k:
                    ts.append(ReversePermutation(d))
                ts.append(MaskedAffineAutoregressiveTransform(d, hidden, num_blocks=1, use_residual_blocks=False))
        else:
            ts = [AffineCouplingTransform((torch.arange(d) + k) % 2, net) for k in range(layers)]
        self.flow = Flow(CompositeTransform(ts), StandardNormal([d]))
        self.opt = torch.optim.Adam(self.flow.parameters(), lr=1e-4)
        self.x = torch.from_numpy(np.random.default_rng(0).normal(size=(batch, d)).astype(np.float32))
        self.batch = batch

    def train_step(self):
        self.opt.zero_grad()
        loss = -self.flow.log_prob(self.x).mean()
        loss.backward()
        self.opt.step()

    def log_prob(self):
        with self.torch.no_grad():
            self.flow.log_prob(self.x)

    def sample(self):
        with self.torch.no_grad():
            self.flow.sample(self.batch)


class FlowJaxCase:
    name = "flowjax"

    def __init__(self, d, hidden, layers, batch):
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        import optax
        import paramax
        from flowjax.bijections import Affine
        from flowjax.distributions import Normal
        from flowjax.flows import coupling_flow, masked_autoregressive_flow

        self.jax = jax
        family = masked_autoregressive_flow if FLOW == "maf" else coupling_flow
        dist = family(jax.random.key(0), base_dist=Normal(jnp.zeros(d)), transformer=Affine(), flow_layers=layers,
                      nn_width=hidden, nn_depth=2, nn_activation=jax.nn.relu)
        # trainable leaves as flowjax's fit_to_data finds them; the rest stays static (closed over below)
        self.params, static = eqx.partition(dist, eqx.is_inexact_array,
                                            is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable))
        opt = optax.adam(1e-4)
        self.opt_state = opt.init(self.params)
        self.x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, d)).astype(np.float32))
        self.key = jax.random.key(0)

        def loss(params, x):  # flowjax's MaximumLikelihoodLoss
            return -paramax.unwrap(eqx.combine(params, static)).log_prob(x).mean()

        @eqx.filter_jit
        def step(params, opt_state, x):  # flowjax.train.train_utils.step, the whole update in one XLA call
            value, grads = eqx.filter_value_and_grad(loss)(params, x)
            updates, opt_state = opt.update(grads, opt_state, params=params)
            return eqx.apply_updates(params, updates), opt_state, value

        self._step = step
        self._log_prob = eqx.filter_jit(lambda params, x: eqx.combine(params, static).log_prob(x))
        self._sample = eqx.filter_jit(lambda params, key: eqx.combine(params, static).sample(key, (batch,)))

    def train_step(self):
        self.params, self.opt_state, loss = self.jax.block_until_ready(
            self._step(self.params, self.opt_state, self.x))
        return loss

    def log_prob(self):
        return self.jax.block_until_ready(self._log_prob(self.params, self.x))

    def sample(self):
        return self.jax.block_until_ready(self._sample(self.params, self.key))


def peers():
    cases = []
    try:
        import torch  # noqa: F401 (the peers need it; main() gave it nfcore's thread count)

        cases.append(ZukoCase)
        cases.append(NflowsCase)
    except ImportError:
        print("torch not installed: no zuko or nflows (pip install '.[bench]' for the peers)", file=sys.stderr)
    try:
        import flowjax  # noqa: F401
        import jax  # noqa: F401

        cases.append(FlowJaxCase)
    except ImportError:
        print("jax/flowjax not installed: no FlowJAX (pip install '.[bench]' for the peers)", file=sys.stderr)
    return cases


def run(configs, rounds, min_time, settle=None, ops=("train_step", "log_prob", "sample")):
    rows = []
    classes = [NfcoreCase, *peers()]
    if settle is None:  # XLA's pools spin longer than torch's and OpenBLAS's (PERF.md): 2 s with FlowJAX
        settle = 2.0 if FlowJaxCase in classes else 0.3
    for d, hidden, layers, batch in configs:
        cases = []
        for cls in classes:
            try:
                cases.append(cls(d, hidden, layers, batch))
            except ImportError as err:
                print(f"skipping {cls.name}: {err}", file=sys.stderr)
        for op in ops:
            times = {c.name: [] for c in cases}
            for c in cases:  # warm-up: JIT compile, allocator, caches
                for _ in range(3):
                    getattr(c, op)()
            for _ in range(rounds):
                for c in cases:
                    # let the previous library's thread pools stop spinning first: OpenBLAS
                    # workers busy-wait ~0.1 s after a GEMM and OpenMP pools spin too, which
                    # would charge one library for another's idle threads on 2 cores
                    time.sleep(settle)
                    times[c.name].append(timeit(getattr(c, op), min_time))
            # the median round of each library: what a user sees on this machine, noise included
            med = {k: statistics.median(v) for k, v in times.items()}
            peer = {k: v for k, v in med.items() if k != "nfcore"}
            best = min(peer, key=peer.get) if peer else None
            row = {"D": d, "hidden": hidden, "batch": batch, "op": op}
            for k, v in med.items():
                row[k] = batch / v
            row["ratio"] = (peer[best] / med["nfcore"]) if best else float("nan")
            row["vs"] = best or "-"
            rows.append(row)
            print(_fmt_row(row, [c.name for c in cases]), flush=True)
    return rows


def _fmt_row(row, names):
    cells = [f"{row['D']}", f"{row['hidden']}", f"{row['batch']}", row["op"]]
    cells += [f"{row[n]:,.0f}" if n in row else "-" for n in names]
    cells += [f"{row['ratio']:.2f}x vs {row['vs']}"]
    return "| " + " | ".join(cells) + " |"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round, short timings (a smoke run)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per timing")
    p.add_argument("--config", type=int, action="append", help="index into CONFIGS (repeatable)")
    p.add_argument("--flow", choices=["realnvp", "maf"], default="realnvp")
    args = p.parse_args(argv)
    global FLOW
    FLOW = args.flow
    table = MAF_CONFIGS if FLOW == "maf" else CONFIGS
    configs = [table[i] for i in args.config] if args.config else table
    ops = ("train_step", "log_prob") if FLOW == "maf" else ("train_step", "log_prob", "sample")
    names = ["nfcore"] + [c.name for c in peers()]
    threads = equal_threads()
    rounds = 1 if args.quick else args.rounds
    print(f"samples/s ({protocol(rounds, threads)}), float32; ratio = fastest peer's time / nfcore's")
    print("| D | hidden | batch | op | " + " | ".join(names) + " | nfcore speed-up |")
    print("|" + "---|" * (5 + len(names)))
    print(f"flow: {FLOW}")
    if args.quick:
        return run(configs, 1, 0.05, ops=ops)
    return run(configs, args.rounds, args.min_time, ops=ops)


if __name__ == "__main__":
    main()
