"""Exactness figures for RESULTS.md: for every transform of the contract test, the worst
finite-difference gradient error (input and every parameter, through output and log-det,
forward and inverse), the log-det error against slogdet of the exact Jacobian, and the
round-trip error; plus the base distributions and conditioner layers. float64 throughout.

    python benchmarks/exactness_report.py
"""

import importlib.util
import pathlib

import numpy as np

from nfcore import MLP, DiagNormal, Linear, StandardNormal
from nfcore import gradcheck as gc
from nfcore.nn import ACTIVATIONS

spec = importlib.util.spec_from_file_location(
    "contract", pathlib.Path(__file__).resolve().parent.parent / "tests" / "test_contract.py"
)
contract = importlib.util.module_from_spec(spec)
spec.loader.exec_module(contract)


def main():
    print("| transform | grad rel. error fwd | grad rel. error inv | logdet vs slogdet | round trip | params |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for name in sorted(contract.FACTORIES):
        t = contract._make(name)
        x, ctx = contract._inputs(name, n=6)
        gf = gc.check_transform(t, x, ctx).max_error
        gi = gc.check_transform(t, x, ctx, inverse=True).max_error
        ld = max(gc.check_logdet(t, x, ctx), gc.check_logdet(t, x, ctx, inverse=True))
        rt, _ = gc.check_inverse(t, x, ctx)
        worst = max(worst, gf, gi)
        print(f"| {name} | {gf:.1e} | {gi:.1e} | {ld:.1e} | {rt:.1e} | {len(t.parameters())} |")
    rng = np.random.default_rng(0)
    rows = []
    for act in sorted(ACTIVATIONS):
        lin = Linear(4, 3, activation=act, rng=0)
        gc.randomize_parameters(lin, seed=1)
        rows.append((f"Linear({act})", gc.check_module(lin, rng.normal(size=(6, 4))).max_error))
    for residual in (False, True):
        mlp = MLP(3, 2, hidden=[5, 5, 5], activation="tanh", residual=residual, rng=0)
        gc.randomize_parameters(mlp, seed=2)
        rows.append((f"MLP(residual={residual})", gc.check_module(mlp, rng.normal(size=(5, 3))).max_error))
    dn = DiagNormal(3)
    gc.randomize_parameters(dn, seed=4)
    rows.append(("StandardNormal", gc.check_distribution(StandardNormal(3), rng.normal(size=(5, 3))).max_error))
    rows.append(("DiagNormal", gc.check_distribution(dn, rng.normal(size=(5, 3))).max_error))
    print("\n| layer / distribution | grad rel. error |\n|---|---|")
    for name, err in rows:
        worst = max(worst, err)
        print(f"| {name} | {err:.1e} |")
    print(f"\nworst gradient error over everything: {worst:.1e} (acceptance: < 1e-6)")


if __name__ == "__main__":
    main()
