"""How exact are FFJORD's gradients: the adjoint method against discretise-then-optimise, by tolerance.

A CNF block (D = 2, dynamics 2 -> 16 -> 16 -> 2 tanh, parameters perturbed by N(0, 0.5^2) so the
flow is far from the identity), 64 rows, random cotangents on z and on the log-det, float64.
For each rtol = atol from 1e-3 to 1e-9: the gradient (input and every parameter, one vector) by
the adjoint ODE and by differentiating the same adaptive solve's steps exactly
(``discretise``), their relative gap max|a - b| / max|b|, and each one's gap to the reference
(``discretise`` at 1e-12, the continuous gradient to ~1e-12). Then fixed-step RK4 (8 steps):
``discretise`` against central finite differences of the same steps.

    python benchmarks/exactness_cnf.py
"""

import numpy as np

from nfcore import gradcheck as gc
from nfcore.transforms import CNF


def _cnf(**kw):
    cnf = CNF(2, hidden=[16, 16], rng=1, **kw)
    gc.randomize_parameters(cnf, scale=0.5, seed=2)
    return cnf


def _grad(cnf, x, dz, dld):
    cnf.zero_grad()
    _, _, cache = cnf.forward(x)
    dx = cnf.backward(dz, dld, cache)
    return np.concatenate([dx.ravel(), *[p.grad.ravel() for p in cnf.parameters()]])


def main():
    r = np.random.default_rng(0)
    x, dz, dld = r.standard_normal((64, 2)), r.standard_normal((64, 2)), r.standard_normal(64)
    ref = _grad(_cnf(gradient="discretise", rtol=1e-12, atol=1e-12), x, dz, dld)
    print("| rtol = atol | adjoint vs discretise | adjoint vs reference | discretise vs reference "
          "| NFE forward | NFE adjoint backward |")
    print("|---|---|---|---|---|---|")
    for k in range(3, 10):
        tol = 10.0 ** -k
        exact_cnf = _cnf(gradient="discretise", rtol=tol, atol=tol)
        exact = _grad(exact_cnf, x, dz, dld)
        adj_cnf = _cnf(gradient="adjoint", rtol=tol, atol=tol)
        adj = _grad(adj_cnf, x, dz, dld)
        print(f"| 1e-{k} | {gc._rel_error(adj, exact):.2e} | {gc._rel_error(adj, ref):.2e} | "
              f"{gc._rel_error(exact, ref):.2e} | {adj_cnf.stats['forward_nfe']} | {adj_cnf.stats['backward_nfe']} |")
    cnf = _cnf(solver="rk4", steps=8, gradient="discretise", context_dim=0)
    res = gc.check_transform(cnf, x[:8], eps=1e-5)
    print(f"\nRK4, 8 steps, discretise vs central differences (step 1e-5): max relative error {res.max_error:.2e} "
          f"over the input and {len(res.errors) - 1} parameter arrays")


if __name__ == "__main__":
    main()
