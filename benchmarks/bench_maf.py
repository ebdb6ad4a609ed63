"""MAF / IAF passes: nfcore's one-pass and fast sequential directions against zuko and nflows.

MAF with 5 layers of MADE (2 hidden layers, ReLU), orders reversed between layers, float32,
batch 4096 by default. Density (one pass for MAF) and sampling (sequential for MAF: D steps)
are timed; nfcore's naive sequential pass (D full MADE evaluations) is timed as the
reference, and nfcore's IAF (sampling in one pass, density sequential) alongside.
Prints one markdown table of seconds per call: the median of interleaved rounds, every
library on nfcore's BLAS thread count.

    python benchmarks/bench_maf.py [--dims 8 64] [--batch 4096] [--rounds 5]
"""

import argparse
import statistics
import sys
import time

import numpy as np
from _timing import MIN_ROUNDS, equal_threads, protocol

import nfcore


def _medians(fns, rounds):
    """{name: median seconds of one call}: every function warmed up once (JIT, allocator), then
    called once per round, all of them interleaved round by round after a pause."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(0.2)  # let other libraries' spinning thread pools go idle
            fn()  # untimed: the first call after a pause runs on cold memory (_timing.timeit)
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def nfcore_cases(d, hidden, batch, flow_name):
    flow = nfcore.build({"flow": flow_name, "dim": d, "layers": 5, "hidden": [hidden, hidden], "dtype": "float32"})
    nfcore.gradcheck.randomize_parameters(flow, scale=0.05, seed=0)
    x = np.random.default_rng(0).normal(size=(batch, d)).astype(np.float32)

    def naive(fn):
        def run():
            for t in flow.transform.transforms:
                t.sequential = "naive"
            try:
                fn()
            finally:
                for t in flow.transform.transforms:
                    t.sequential = "fast"
        return run

    return {
        "density": lambda: flow.log_prob(x),
        "sample": lambda: flow.sample(batch, seed=0),
        "naive": naive(lambda: flow.log_prob(x) if flow_name == "iaf" else flow.sample(batch, seed=0)),
    }


def zuko_cases(d, hidden, batch):
    import torch
    import zuko

    flow = zuko.flows.MAF(d, transforms=5, hidden_features=(hidden, hidden))
    x = torch.randn(batch, d)

    def density():
        with torch.no_grad():
            flow().log_prob(x)

    def sample():
        with torch.no_grad():
            flow().sample((batch,))

    return {"density": density, "sample": sample}


def nflows_cases(d, hidden, batch):
    import torch
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import CompositeTransform, MaskedAffineAutoregressiveTransform, ReversePermutation

    ts = []
    for _ in range(5):
        ts.append(MaskedAffineAutoregressiveTransform(d, hidden, num_blocks=1, use_residual_blocks=False))
        ts.append(ReversePermutation(d))
    flow = Flow(CompositeTransform(ts[:-1]), StandardNormal([d]))
    x = torch.randn(batch, d)

    def density():
        with torch.no_grad():
            flow.log_prob(x)

    def sample():
        with torch.no_grad():
            flow.sample(batch)

    return {"density": density, "sample": sample}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="*", default=[8, 64])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=MIN_ROUNDS)
    args = p.parse_args(argv)
    try:
        import torch  # noqa: F401

        peers = {"zuko": zuko_cases, "nflows": nflows_cases}
    except ImportError:
        print("torch not installed: nfcore only", file=sys.stderr)
        peers = {}
    threads = equal_threads()
    print(f"seconds per call, batch {args.batch}, float32, 5 layers of MADE 2 x hidden "
          f"({protocol(args.rounds, threads)})")
    head = ["D", "hidden", "op", "nfcore MAF", "nfcore MAF naive", "nfcore IAF", *peers, "MAF vs best peer"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * (6 + len(peers)))
    for d in args.dims:
        hidden = 128 if d <= 8 else 512
        maf = nfcore_cases(d, hidden, args.batch, "maf")
        iaf = nfcore_cases(d, hidden, args.batch, "iaf")
        peer = {name: make(d, hidden, args.batch) for name, make in peers.items()}
        for op in ("density", "sample"):
            fns = {"maf": maf[op], "iaf": iaf[op], **{name: c[op] for name, c in peer.items()}}
            if op == "sample":
                fns["naive"] = maf["naive"]
            t = _medians(fns, args.rounds)
            best = min((t[name] for name in peer), default=float("nan"))
            cells = [f"{t['maf']:.4f}", f"{t['naive']:.4f}" if "naive" in t else "-", f"{t['iaf']:.4f}",
                     *(f"{t[name]:.4f}" for name in peer)]
            print(f"| {d} | {hidden} | {op} | " + " | ".join(cells) + f" | {best / t['maf']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
