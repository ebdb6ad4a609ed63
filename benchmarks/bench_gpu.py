"""GPU throughput: the RealNVP training step on the GPU against the same step on the CPU,
and against zuko on the same GPU when torch with CUDA is installed; then Glow, MAF and a
residual flow, GPU against CPU; then MAF sampling (the fast sequential kernel), GPU against CPU;
then the fused layer kernels (``kernels.fused.cuda``, what narrow couplings and MADEs run on a
GPU) against the op-by-op path on the same GPU.

    python benchmarks/bench_gpu.py [--quick]

Needs a CUDA GPU (numba.cuda.is_available()); prints one markdown table of samples/s.
Run it through benchmarks/gpu_check.sh on a machine with a GPU; the figures belong in
benchmarks/RESULTS.md.
"""

import argparse
import statistics
import sys
import time

import numpy as np

import nfcore

CONFIGS = [(2, 64, 8, 256), (2, 64, 8, 4096), (64, 256, 8, 4096), (64, 256, 8, 65536)]


def _sync():
    from numba import cuda

    cuda.synchronize()


def _time(fn, min_time, sync=None):
    fn()
    if sync:
        sync()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if sync:
            sync()
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / n


def nfcore_step(d, hidden, layers, batch, device):
    flow = nfcore.build({"flow": "realnvp", "dim": d, "layers": layers, "hidden": [hidden, hidden],
                         "dtype": "float32"})
    if device == "cuda":
        flow.to("cuda")
    opt = nfcore.Adam(flow.parameters(), lr=1e-4)
    x = np.random.default_rng(0).normal(size=(batch, d)).astype(np.float32)
    if device == "cuda":
        from numba import cuda

        x = cuda.to_device(x)

    def step():
        opt.zero_grad()
        flow.loss_and_grad(x)
        opt.step()

    return step


#: the other model families, GPU vs CPU: (label, config, batch); their kernels have only run under
#: numba's simulator until a session with a GPU runs this
MODELS = [
    ("Glow 16x16x3, 2x4 steps, width 64", {"flow": "glow", "shape": [16, 16, 3], "layers": 4, "hidden": [64, 64],
                                            "base": "diag"}, 256),
    ("MAF D=64, 5 x MADE 2x512", {"flow": "maf", "dim": 64, "layers": 5, "hidden": [512, 512]}, 4096),
    ("residual flow D=16, 8 blocks 2x128", {"flow": "resflow", "dim": 16, "layers": 8, "hidden": [128, 128],
                                            "base": "diag"}, 1024),
]


def model_step(config, batch, device):
    flow = nfcore.build(dict(config, dtype="float32"))
    if device == "cuda":
        flow.to("cuda")
    opt = nfcore.Adam(flow.parameters(), lr=1e-4)
    x = np.random.default_rng(0).normal(size=(batch, *flow.shape)).astype(np.float32)
    if device == "cuda":
        from numba import cuda

        x = cuda.to_device(x)

    def step():
        opt.zero_grad()
        flow.loss_and_grad(x)
        opt.step()

    return step


#: the fused layers against op by op on the GPU: (label, config, batches)
FUSED = [
    ("RealNVP D=2, 8 x 2x64", {"flow": "realnvp", "dim": 2, "layers": 8, "hidden": [64, 64]}, (256, 4096, 65536)),
    ("MAF D=8, 5 x MADE 2x128", {"flow": "maf", "dim": 8, "layers": 5, "hidden": [128, 128]}, (256, 4096, 65536)),
]


def fused_step(config, batch, fused):
    """A training step on the GPU with every layer's ``fused`` set (False: op by op)."""
    flow = nfcore.build(dict(config, dtype="float32")).to("cuda")
    for t in flow.transform.transforms:
        if hasattr(t, "fused"):
            t.fused = fused
    opt = nfcore.Adam(flow.parameters(), lr=1e-4)
    from numba import cuda

    x = cuda.to_device(np.random.default_rng(0).normal(size=(batch, *flow.shape)).astype(np.float32))

    def step():
        opt.zero_grad()
        flow.loss_and_grad(x)
        opt.step()

    return step


def zuko_step(d, hidden, layers, batch):
    import torch
    import zuko

    flow = zuko.flows.RealNVP(d, transforms=layers, hidden_features=(hidden, hidden)).cuda()
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
    x = torch.randn(batch, d, device="cuda")

    def step():
        opt.zero_grad()
        (-flow().log_prob(x).mean()).backward()
        opt.step()

    return step, torch.cuda.synchronize


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if not nfcore.kernels.cuda_available():
        print("no CUDA GPU: nothing to measure", file=sys.stderr)
        return 1
    min_time = 0.2 if args.quick else 1.0
    try:
        import torch

        has_torch_cuda = torch.cuda.is_available()
    except ImportError:
        has_torch_cuda = False
    print("RealNVP training step, float32, samples/s (median of rounds)")
    print("| D | hidden | batch | nfcore GPU | nfcore CPU | zuko GPU | GPU/CPU | nfcore/zuko (GPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for d, hidden, layers, batch in CONFIGS:
        gpu = nfcore_step(d, hidden, layers, batch, "cuda")
        cpu = nfcore_step(d, hidden, layers, batch, "cpu") if batch <= 4096 else None
        zk = zuko_step(d, hidden, layers, batch) if has_torch_cuda else None
        res = {"gpu": [], "cpu": [], "zuko": []}
        for _ in range(args.rounds):
            res["gpu"].append(_time(gpu, min_time, _sync))
            if cpu:
                res["cpu"].append(_time(cpu, min_time))
            if zk:
                res["zuko"].append(_time(zk[0], min_time, zk[1]))
        med = {k: statistics.median(v) for k, v in res.items() if v}
        sps = {k: f"{batch / v:,.0f}" for k, v in med.items()}

        ratio_cpu = f"{med['cpu'] / med['gpu']:.2f}x" if "cpu" in med else "-"
        ratio_zuko = f"{med['zuko'] / med['gpu']:.2f}x" if "zuko" in med else "-"
        cells = [sps.get(k, "-") for k in ("gpu", "cpu", "zuko")]
        print(f"| {d} | {hidden} | {batch} | " + " | ".join(cells) + f" | {ratio_cpu} | {ratio_zuko} |", flush=True)
    print()
    print("Other models, training step, float32, samples/s (median of rounds)")
    print("| model | batch | nfcore GPU | nfcore CPU | GPU/CPU |")
    print("|---|---|---|---|---|")
    for label, config, batch in MODELS:
        gpu, cpu = model_step(config, batch, "cuda"), model_step(config, batch, "cpu")
        tg = statistics.median(_time(gpu, min_time, _sync) for _ in range(args.rounds))
        tc = statistics.median(_time(cpu, min_time) for _ in range(args.rounds))
        print(f"| {label} | {batch} | {batch / tg:,.0f} | {batch / tc:,.0f} | {tc / tg:.2f}x |", flush=True)
    print()
    print("MAF D=64 (5 x MADE 2x512) sampling, the fast sequential kernel, float32, samples/s (median of rounds)")
    print("| batch | nfcore GPU | nfcore CPU | GPU/CPU |")
    print("|---|---|---|---|")
    for batch in (4096, 65536):
        fns = {}
        for device in ("cuda", "cpu"):
            flow = nfcore.build({"flow": "maf", "dim": 64, "layers": 5, "hidden": [512, 512], "dtype": "float32"})
            if device == "cuda":
                flow.to("cuda")
            fns[device] = lambda f=flow, n=batch: f.sample(n, seed=0)
        tg = statistics.median(_time(fns["cuda"], min_time, _sync) for _ in range(args.rounds))
        tc = statistics.median(_time(fns["cpu"], min_time) for _ in range(args.rounds)) if batch <= 4096 else None
        cpu_cells = f"{batch / tc:,.0f} | {tc / tg:.2f}x" if tc else "- | -"
        print(f"| {batch} | {batch / tg:,.0f} | {cpu_cells} |", flush=True)
    print()
    print("Fused layer kernels on the GPU against op by op, training step, float32, samples/s (median of rounds,")
    print("the two interleaved)")
    print("| model | batch | fused | op by op | fused / op by op |")
    print("|---|---|---|---|---|")
    for label, config, batches in FUSED:
        for batch in batches:
            fns = {f: fused_step(config, batch, f) for f in (True, False)}
            res = {True: [], False: []}
            for _ in range(args.rounds):
                for f, fn in fns.items():
                    res[f].append(_time(fn, min(min_time, 0.3), _sync))
            tf, to = statistics.median(res[True]), statistics.median(res[False])
            print(f"| {label} | {batch} | {batch / tf:,.0f} | {batch / to:,.0f} | {to / tf:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
