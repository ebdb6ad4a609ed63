"""Explicit Runge-Kutta solvers for continuous flows: fixed-step RK4 and adaptive Dormand-Prince 5(4).

``integrate(field, y0, t0, t1, ...)`` solves dy/dt = field(y, t) from t0 to t1 (t1 < t0 runs
backward in time) for a state ``y`` of any shape, one step size for the whole state (a batch of
samples shares its steps). ``field(y, t, out)`` writes the derivative into ``out``.

Adaptive steps (``dopri5``): the embedded 4th-order solution estimates the local error
e = h sum_i (b_i - b*_i) k_i; a step is accepted when the root mean square of
e / (atol + rtol max(|y_n|, |y_(n+1)|)) over the controlled entries (``control``) is at most 1,
and the next step is h min(10, max(0.2, 0.9 err^(-1/5))), the norm in one op call
(``rk_error_sumsq``). ``control`` is the number of leading columns that steer the steps (the
state seen as rows: (N, ...) as N rows, a 1-D state as one row): an adjoint solve leaves out the
parameters' adjoints (a "seminorm"), which do not feed back into the dynamics. The first step
follows Hairer, Norsett and Wanner's starting-step rule. The last stage of an accepted step is
the next step's first (FSAL).

With ``record=True`` every accepted step keeps its stage inputs, so that ``rk_backward`` can
differentiate the discrete solver's output exactly (discretise-then-optimise): the steps and
their sizes are held fixed, as is usual (the error controller's choice is not differentiated).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .errors import ConfigError, SolverError
from .kernels import backend_of

__all__ = ["Tableau", "RK4", "DOPRI5", "SOLVERS", "Step", "Solve", "integrate", "rk_backward"]


class Tableau(NamedTuple):
    """An explicit Runge-Kutta method: stage times c, stage weights a (lower triangle), solution
    weights b, error weights b - b* of the embedded lower-order solution (None: fixed steps),
    the order of the error estimate's lower method, and first-same-as-last."""

    name: str
    c: tuple
    a: tuple
    b: tuple
    err: tuple | None
    order: int
    fsal: bool


RK4 = Tableau("rk4", (0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
              (1 / 6, 1 / 3, 1 / 3, 1 / 6), None, 4, False)

_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
DOPRI5 = Tableau(
    "dopri5",
    (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
     (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
     (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656), _B5[:6]),
    _B5, tuple(p - q for p, q in zip(_B5, _B4)), 4, True)

SOLVERS = {"rk4": RK4, "dopri5": DOPRI5}


class Step(NamedTuple):
    """One accepted step: its start time, size, and each stage's input state (recorded solves)."""

    t: float
    h: float
    stages: tuple


class Solve(NamedTuple):
    """What a solve did: the state at t1, function evaluations, accepted and rejected steps, and
    the accepted steps' stage inputs when recorded (else an empty tuple)."""

    y: np.ndarray
    nfe: int
    steps: int
    rejected: int
    trajectory: tuple


class _Norm:
    """The RMS of v / (atol + rtol max(|a|, |b|)) over the first ``control`` columns of states
    seen as rows (a 1-D state: one row), by the backend's ``rk_error_sumsq``."""

    def __init__(self, y, control, rtol, atol):
        self.rows = 1 if y.ndim == 1 else y.shape[0]
        cols = y.size // max(self.rows, 1)
        self.cols = cols if control is None else int(control)
        if not 0 <= self.cols <= cols:
            raise ConfigError(f"control must be a number of leading columns in [0, {cols}], got {control}")
        self.count, self.rtol, self.atol = self.rows * self.cols, float(rtol), float(atol)
        self.op = backend_of(y).rk_error_sumsq

    def __call__(self, v, a, b):
        if self.count == 0:
            return 0.0
        r = self.rows
        sq = self.op(v.reshape(r, -1), a.reshape(r, -1), b.reshape(r, -1), self.cols, self.rtol, self.atol)
        return math.sqrt(sq / self.count)


def integrate(field: Callable, y0: np.ndarray, t0: float, t1: float, method: str = "dopri5",
              rtol: float = 1e-5, atol: float = 1e-5, steps: int = 8, max_steps: int = 1000,
              control: int | None = None, record: bool = False) -> Solve:
    """Solve dy/dt = field(y, t) from y(t0) = y0 to t1.

    Arguments:
        field: ``field(y, t, out)`` writes dy/dt at (y, t) into ``out`` (an array like y).
        method: ``rk4`` (``steps`` equal steps) or ``dopri5`` (adaptive, ``rtol``/``atol``).
        max_steps: the step budget of an adaptive solve (accepted and rejected together); a
            solve that needs more raises ``SolverError``, as does a non-finite state.
        control: the number of leading columns that steer the step size (default: all of
            them); the state is seen as rows, its first axis (a 1-D state: one row).
        record: keep every accepted step's stage inputs (for ``rk_backward``).
    """
    if method not in SOLVERS:
        raise ConfigError(f"unknown ODE solver {method!r}; choose one of {sorted(SOLVERS)}")
    tab = SOLVERS[method]
    y = np.array(y0, copy=True)
    t0, t1 = float(t0), float(t1)
    if t0 == t1:
        return Solve(y, 0, 0, 0, ())
    ks = [np.empty_like(y) for _ in tab.c]
    stage = np.empty_like(y)
    nfe = 0
    trajectory = []

    def stage_input(i, h, out):
        np.copyto(out, y)
        for j, aij in enumerate(tab.a[i]):
            if aij != 0.0:
                out += (h * aij) * ks[j]
        return out

    if tab.err is None:
        h = (t1 - t0) / steps
        for n in range(steps):
            t = t0 + n * h
            stages = []
            for i, ci in enumerate(tab.c):
                yi = y if i == 0 else stage_input(i, h, stage)
                if record:
                    stages.append(yi.copy())
                field(yi, t + ci * h, ks[i])
            nfe += len(tab.c)
            for bi, k in zip(tab.b, ks):
                y += (h * bi) * k
            if record:
                trajectory.append(Step(t, h, tuple(stages)))
            _check_finite(y, t + h)
        return Solve(y, nfe, steps, 0, tuple(trajectory))

    norm = _Norm(y, control, rtol, atol)
    direction = 1.0 if t1 > t0 else -1.0
    field(y, t0, ks[0])
    nfe += 1
    h = direction * _initial_step(field, y, t0, ks[0], tab.order, norm, stage)
    nfe += 1
    t = t0
    accepted = rejected = 0
    y_new = np.empty_like(y)
    err = np.empty_like(y)
    while direction * (t1 - t) > 0:
        if accepted + rejected >= max_steps:
            raise SolverError(f"the ODE solve from t={t0:g} to t={t1:g} needed more than {max_steps} steps "
                              f"(at t={t:.6g}, step {h:.3g}); raise max_steps or the tolerances, or regularise the "
                              "dynamics (kinetic, jacobian)")
        if direction * (t + h - t1) > 0 or abs(t1 - (t + h)) < 1e-12 * max(1.0, abs(t1)):
            h = t1 - t  # the last step ends exactly at t1
        stages = [y.copy()] if record else None
        for i in range(1, len(tab.c)):
            yi = stage_input(i, h, y_new if i == len(tab.c) - 1 else stage)
            if record and i < len(tab.c) - 1:
                stages.append(yi.copy())
            field(yi, t + tab.c[i] * h, ks[i])
        nfe += len(tab.c) - 1
        # y_new = y + h sum b_i k_i is the last stage's input (its a row is b): already in y_new
        np.multiply(ks[0], h * tab.err[0], out=err)
        for ei, k in zip(tab.err[1:], ks[1:]):
            if ei != 0.0:
                err += (h * ei) * k
        ratio = norm(err, y, y_new)
        if not math.isfinite(ratio):
            _check_finite(y_new, t + h)
        if ratio <= 1.0:
            if record:
                trajectory.append(Step(t, h, tuple(stages)))
            t = t + h if direction * (t1 - (t + h)) > 0 else t1
            y, y_new = y_new, y
            ks[0], ks[-1] = ks[-1], ks[0]  # first same as last
            accepted += 1
            factor = 10.0 if ratio == 0.0 else min(10.0, max(0.2, 0.9 * ratio ** (-1.0 / (tab.order + 1))))
        else:
            rejected += 1
            factor = max(0.2, 0.9 * ratio ** (-1.0 / (tab.order + 1)))
        h = h * factor
    _check_finite(y, t1)
    return Solve(y, nfe, accepted, rejected, tuple(trajectory))


def _check_finite(y, t):
    if not np.all(np.isfinite(y)):
        raise SolverError(f"the ODE state became NaN or inf at t={t:.6g} (a diverged model or too large a step)")


def _initial_step(field, y, t, f0, order, norm, work):
    """A first step size from the scale of y, of f and of f's change (Hairer, Norsett, Wanner);
    every size relative to atol + rtol |y|."""
    d0 = norm(y, y, y)
    d1 = norm(f0, y, y)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    np.multiply(f0, h0, out=work)
    work += y
    f1 = np.empty_like(y)
    field(work, t + h0, f1)
    f1 -= f0
    d2 = norm(f1, y, y) / h0
    big = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if big <= 1e-15 else (0.01 / big) ** (1.0 / (order + 1))
    return min(100 * h0, h1)


def rk_backward(solve: Solve, dy: np.ndarray, method: str, vjp: Callable) -> np.ndarray:
    """The exact VJP of a recorded solve's output with respect to its start: dL/dy0 from dL/dy1.

    For each step, last first: with k_i = field(Y_i, t + c_i h), Y_i = y + h sum_j a_ij k_j and
    y' = y + h sum_i b_i k_i, the stage cotangents are K_i = h b_i dy' + h sum_(j>i) a_ji dY_j,
    taken from the last stage down, dY_i = vjp(Y_i, t + c_i h, K_i) and dy = dy' + sum_i dY_i.
    ``vjp(y, t, g)`` returns (dL/dy for the cotangent g of field(y, t), and accumulates every other
    gradient (parameters) itself).
    """
    tab = SOLVERS[method]
    dy = np.array(dy, copy=True)
    for step in reversed(solve.trajectory):
        h = step.h
        s = len(step.stages)  # dopri5 records six: its seventh stage (b_7 = 0) only estimates the error
        kbar = [(h * tab.b[i]) * dy for i in range(s)]
        total = dy.copy()
        for i in range(s - 1, -1, -1):
            d = vjp(step.stages[i], step.t + tab.c[i] * h, kbar[i])
            total += d
            for j, aij in enumerate(tab.a[i]):
                if aij != 0.0:
                    kbar[j] += (h * aij) * d
        dy = total
    return dy
