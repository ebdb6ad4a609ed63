"""Continuous normalizing flows (FFJORD): z = x + int_0^T f(z(t), t) dt with a free-form f.

The instantaneous change of variables gives the log-density along the path,
d log p(z(t)) / dt = -tr(df/dz), so

    log|det dz/dx| = int_0^T tr(df/dz(t)) dt,

which the solver integrates beside z as one state y = [z, log|det|, kinetic, frobenius]. The
trace is exact (D Jacobian-vector products: the basis vectors as probes) or Hutchinson's
unbiased estimate u^T J u with probes u fixed over a solve (Gaussian or Rademacher). The
regularisers of RNODE, the kinetic energy int |f|^2 dt and the Jacobian's Frobenius norm
int |J|_F^2 dt (estimated with the same probes, |J u|^2), ride along in the same state.

The dynamics f is a concat-squash MLP (``ODENet``), evaluated with its trace and regularisers in
one kernel call, and differentiated (the trace's gradient included) in another
(``nfcore.kernels.ode``). Gradients come two ways:

* ``adjoint``: the augmented reverse-time ODE of [z, a_z, a_context, a_theta] with
  da_z/dt = -a^T dg/dz and da_theta/dt = -a^T dg/dtheta, g the whole state's derivative, solved
  with the same solver and tolerances (the parameters' adjoints do not steer the steps); memory
  does not grow with the number of steps.
* ``discretise``: the exact gradient of the discrete solver's output (``nfcore.ode.rk_backward``,
  back through every recorded stage), for exactness studies and fixed-step training.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._checks import check_int, check_real
from .._types import Array, Cache
from ..core.transform import Transform
from ..errors import ConfigError, DeviceError, ShapeError
from ..kernels import backend_of, is_device_array
from ..kernels.ode.math import field_work_size
from ..nn.odenet import ODENet
from ..ode import SOLVERS, integrate, rk_backward

__all__ = ["CNF"]

GRADIENTS = ("adjoint", "discretise")
TRACES = ("exact", "hutchinson")


class CNFCache(NamedTuple):
    t0: float
    t1: float
    y1: object  # the state [z, log|det|, kinetic, frobenius] at t1 (N, D + 3)
    context: object  # (N, C), C = 0 without a context
    probes: object  # (N, P, D)
    weight: float  # 1 (exact) or 1 / P (Hutchinson)
    theta: object  # the parameters the solve used, flat
    solve: object  # nfcore.ode.Solve: NFE, steps, and the recorded stages (discretise)


class CNF(Transform):
    """z = x + int_0^T f(z(t), t) dt, log|det dz/dx| = int_0^T tr(df/dz) dt (FFJORD).

    Arguments:
        dim: D.
        hidden, activation, context_dim: the dynamics network (``ODENet``).
        time: the integration time T.
        solver: ``dopri5`` (adaptive, ``rtol``/``atol``) or ``rk4`` (``steps`` equal steps).
        max_steps: an adaptive solve's step budget (``SolverError`` beyond it).
        trace: the trace in training, ``exact`` or ``hutchinson`` (None: exact when D <= 16).
        eval_trace: the trace outside training (None: ``exact``).
        probe, n_probes: Hutchinson's probes (``gaussian`` or ``rademacher``) and their number per
            sample, drawn once per solve.
        gradient: ``adjoint`` or ``discretise`` (see the module docstring).
        kinetic, jacobian: RNODE's weights of int |f|^2 dt and int |df/dz|_F^2 dt. Each row's
            penalty is weighted as its log-likelihood term is, |dL/dlog|det||, so a training
            loss -mean(log p) gains kinetic * mean(int |f|^2) + jacobian * mean(int |J|_F^2)
            (the reported loss leaves them out).
        rng: seed of the weights and of the probes.

    ``stats`` holds the last solves' function evaluations and steps (``forward_nfe``,
    ``forward_steps``, ``backward_nfe``, ``backward_steps``).
    """

    #: rows per worker: never split a batch by itself (shards would choose their own adaptive steps)
    min_shard_rows = 1 << 40

    def __init__(self, dim: int, hidden=(64, 64), activation: str = "tanh", context_dim: int = 0, time: float = 1.0,
                 solver: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, steps: int = 8,
                 max_steps: int = 1000, trace: str | None = None, eval_trace: str | None = None,
                 probe: str = "gaussian", n_probes: int = 1, gradient: str = "adjoint", kinetic: float = 0.0,
                 jacobian: float = 0.0, rng=None, dtype=np.float64) -> None:
        if solver not in SOLVERS:
            raise ConfigError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
        if gradient not in GRADIENTS:
            raise ConfigError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        for name, mode in (("trace", trace), ("eval_trace", eval_trace)):
            if mode is not None and mode not in TRACES:
                raise ConfigError(f"{name} must be one of {TRACES}, got {mode!r}")
        if probe not in ("gaussian", "rademacher"):
            raise ConfigError(f"probe must be gaussian or rademacher, got {probe!r}")
        rng = np.random.default_rng(rng)
        self.dim = check_int("dim", dim, 1)
        self.time = check_real("time", time, 0.0)
        self.solver = solver
        self.rtol = check_real("rtol", rtol, 0.0, closed=True)
        self.atol = check_real("atol", atol, 0.0, closed=True)
        if not (self.rtol > 0 or self.atol > 0):
            raise ConfigError("rtol and atol cannot both be 0")
        self.steps = check_int("steps", steps, 1)
        self.max_steps = check_int("max_steps", max_steps, 1)
        self.trace = trace if trace is not None else ("exact" if self.dim <= 16 else "hutchinson")
        self.eval_trace = eval_trace if eval_trace is not None else "exact"
        self.probe = probe
        self.n_probes = check_int("n_probes", n_probes, 1)
        self.gradient = gradient
        self.kinetic = check_real("kinetic", kinetic, 0.0, closed=True)
        self.jacobian = check_real("jacobian", jacobian, 0.0, closed=True)
        self.net = ODENet(self.dim, hidden, activation, context_dim, rng=rng, dtype=dtype)
        self.context_dim = self.net.context_dim
        self._probe_rng = np.random.default_rng(rng.integers(2**63))
        #: a seed: every call draws the same probes (gradient checks); None: fresh probes per solve
        self.frozen_probes = None
        self._basis = {}
        self.stats = {}

    def extra_repr(self) -> str:
        steps = f"{self.steps} steps" if self.solver == "rk4" else f"rtol={self.rtol:g}, atol={self.atol:g}"
        return (f"[{self.dim}], dynamics {self.net.extra_repr()}, T={self.time:g}, {self.solver} ({steps}), "
                f"trace {self.trace}, {self.gradient}"
                + "".join(f", {k} {v:g}" for k, v in (("kinetic", self.kinetic), ("jacobian", self.jacobian)) if v))

    def config(self) -> dict[str, Any]:
        return {"type": "CNF", "dim": self.dim, "hidden": [int(h) for h in self.net.dims[1:-1]],
                "activation": self.net.activation, "time": self.time, "solver": self.solver, "rtol": self.rtol,
                "atol": self.atol, "steps": self.steps, "trace": self.trace, "gradient": self.gradient,
                "kinetic": self.kinetic, "jacobian": self.jacobian}

    # -- probes ------------------------------------------------------------------------
    def _probes(self, n, dtype):
        """(probes (n, P, D), w): the basis vectors and w = 1 for the exact trace, else P random
        probes per row and w = 1 / P."""
        mode = self.trace if self.training else self.eval_trace
        if mode == "exact":
            key = (n, np.dtype(dtype).str)
            basis = self._basis.get(key)
            if basis is None:
                if len(self._basis) > 8:
                    self._basis.clear()
                basis = self._basis[key] = np.ascontiguousarray(
                    np.broadcast_to(np.eye(self.dim, dtype=dtype), (n, self.dim, self.dim)))
            return basis, 1.0
        rng = np.random.default_rng(self.frozen_probes) if self.frozen_probes is not None else self._probe_rng
        shape = (n, self.n_probes, self.dim)
        u = rng.standard_normal(shape) if self.probe == "gaussian" else rng.choice([-1.0, 1.0], size=shape)
        return np.ascontiguousarray(u, dtype=dtype), 1.0 / self.n_probes

    # -- the solve ---------------------------------------------------------------------
    def _solve(self, x, context, need_grad, t0, t1):
        if is_device_array(x):
            raise DeviceError("CNF runs on the CPU only for now (its kernels have CUDA twins, but the ODE solver "
                              "works on host arrays); keep the flow on the CPU")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"CNF expected an input of shape (N, {self.dim}), got {tuple(x.shape)}")
        n, d = x.shape
        dtype = x.dtype
        ops = backend_of(x)
        ctx = self._context(context, n, dtype)
        probes, w = self._probes(n, dtype)
        theta = self.net.theta().astype(dtype, copy=False)
        dims, code = self.net.dims, self.net.act_code
        work = np.empty(field_work_size(n, probes.shape[1], list(dims), d), dtype)

        def field(y, t, out):
            ops.cnf_field(y, t, ctx, theta, dims, code, probes, w, out, work)

        y0 = np.zeros((n, d + 3), dtype)
        y0[:, :d] = x
        record = need_grad and self.gradient == "discretise"
        solve = integrate(field, y0, t0, t1, self.solver, self.rtol, self.atol, self.steps, self.max_steps,
                          control=d + 1, record=record)
        self.stats.update(forward_nfe=solve.nfe, forward_steps=solve.steps)
        y1 = solve.y
        cache = CNFCache(t0, t1, y1, ctx, probes, w, theta, solve) if need_grad else None
        return np.ascontiguousarray(y1[:, :d]), np.ascontiguousarray(y1[:, d]), cache

    def _context(self, context, n, dtype):
        if self.context_dim == 0:
            return np.empty((n, 0), dtype)
        if context is None or tuple(context.shape) != (n, self.context_dim):
            got = None if context is None else tuple(context.shape)
            raise ShapeError(f"CNF expected a context of shape ({n}, {self.context_dim}), got {got}")
        return np.ascontiguousarray(context, dtype=dtype)

    def forward(self, x: Array, context: Array | None = None, need_grad: bool = True) -> tuple[Array, Array, Cache]:
        return self._solve(x, context, need_grad, 0.0, self.time)

    def inverse(self, z: Array, context: Array | None = None, need_grad: bool = True) -> tuple[Array, Array, Cache]:
        return self._solve(z, context, need_grad, self.time, 0.0)

    # -- gradients ---------------------------------------------------------------------
    def backward(self, dout: Array, dlogabsdet: Array, cache: Cache) -> Array:
        """d input: the VJP of the solve from t0 to t1 (x -> z forward, z -> x inverse).

        With a = dL/dz(t1) and c = dL/dlog|det|, the state's cotangent [a, c, k, j] (k, j: the
        RNODE weights times |c| times the direction's sign) is carried back to t0 by
            da_z/dt = -(a_z^T df/dz + c d s/dz + k d|f|^2/dz + j d|Ju|^2/dz),
            da_theta/dt = -(the same with d/dtheta),  a_theta(t1) = 0,
        s = w sum_p u_p^T J u_p the trace estimate: dL/dx = a_z(t0), theta.grad += a_theta(t0)
        (``adjoint``), or by the exact VJP of every recorded Runge-Kutta stage (``discretise``).
        """
        return self.vjp(dout, dlogabsdet, cache)[0]

    def vjp(self, dout: Array, dlogabsdet: Array, cache: Cache) -> tuple[Array, Array]:
        """(dL/d input, dL/d context (N, C)): ``backward``, with the context's gradient too (the
        contract treats a context as data; a conditional model upstream can use this one)."""
        self._require_cache(cache, "CNF")
        n, d = dout.shape
        dtype = cache.y1.dtype
        sign = 1.0 if cache.t1 > cache.t0 else -1.0
        gy = np.zeros((n, d + 3), dtype)
        gy[:, :d] = dout
        gy[:, d] = dlogabsdet
        weight = np.abs(np.asarray(dlogabsdet, dtype=dtype)) * sign
        gy[:, d + 1] = self.kinetic * weight
        gy[:, d + 2] = self.jacobian * weight
        if self.gradient == "discretise":
            dx, dtheta, dctx = self._backward_discrete(gy, cache)
        else:
            dx, dtheta, dctx = self._backward_adjoint(gy, cache)
        self.net.add_grad(dtheta)
        return dx, dctx

    def _vjp_parts(self, cache, n):
        d = self.dim
        dtype = cache.y1.dtype
        p = cache.probes.shape[1]
        work = np.empty(field_work_size(n, p, list(self.net.dims), d), dtype)
        scratch = (np.empty((n, d + 3), dtype), np.empty((n, d), dtype), np.empty(cache.theta.shape, dtype),
                   np.empty((n, self.context_dim), dtype), np.empty(1, dtype))
        return work, scratch

    def _backward_discrete(self, gy, cache):
        n, d = gy.shape[0], self.dim
        ops = backend_of(gy)
        work, (dy, dz, dth, dctx, dt) = self._vjp_parts(cache, n)
        dtheta = np.zeros_like(cache.theta)
        dcontext = np.zeros_like(dctx)
        dims, code = self.net.dims, self.net.act_code

        def vjp(y, t, g):
            ops.cnf_field_vjp(y, t, cache.context, cache.theta, dims, code, cache.probes, cache.weight, g, dy, dz,
                              dth, dctx, dt, work)
            dtheta[:] += dth
            dcontext[:] += dctx
            out = np.zeros_like(g)
            out[:, :d] = dz
            return out

        dy0 = rk_backward(cache.solve, gy, self.solver, vjp)
        self.stats.update(backward_nfe=sum(len(s.stages) for s in cache.solve.trajectory),
                          backward_steps=len(cache.solve.trajectory))
        return np.ascontiguousarray(dy0[:, :d]), dtheta, dcontext

    def _backward_adjoint(self, gy, cache):
        n, d = gy.shape[0], self.dim
        c = self.context_dim
        ops = backend_of(gy)
        work, (dy, dz, dth, dctx, dt) = self._vjp_parts(cache, n)
        dims, code = self.net.dims, self.net.act_code
        m = cache.theta.size
        # the state [z, a_z, a_context, a_theta], flat; the steps follow z and a_z only
        nd, nc = n * d, n * c
        state = np.zeros(2 * nd + nc + m, gy.dtype)
        state[:nd] = cache.y1[:, :d].ravel()
        state[nd : 2 * nd] = gy[:, :d].ravel()
        g = gy.copy()

        def field(s, t, out):
            z = s[:nd].reshape(n, d)
            g[:, :d] = s[nd : 2 * nd].reshape(n, d)
            ops.cnf_field_vjp(z, t, cache.context, cache.theta, dims, code, cache.probes, cache.weight, g, dy, dz,
                              dth, dctx, dt, work)
            out[:nd] = dy[:, :d].ravel()
            np.negative(dz.ravel(), out=out[nd : 2 * nd])
            np.negative(dctx.ravel(), out=out[2 * nd : 2 * nd + nc])
            np.negative(dth, out=out[2 * nd + nc :])

        solve = integrate(field, state, cache.t1, cache.t0, self.solver, self.rtol, self.atol, self.steps,
                          self.max_steps, control=2 * nd)
        self.stats.update(backward_nfe=solve.nfe, backward_steps=solve.steps)
        s = solve.y
        return (np.ascontiguousarray(s[nd : 2 * nd].reshape(n, d)), s[2 * nd + nc :],
                s[2 * nd : 2 * nd + nc].reshape(n, c))
