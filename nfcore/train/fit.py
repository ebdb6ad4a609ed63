"""Training loops: maximum likelihood on data and reverse KL to an unnormalised density."""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .._checks import check_int, check_real
from ..core.flow import Flow
from ..errors import CheckpointError, ConfigError, NfcoreError, ShapeError
from ..kernels import backend_of, get_backend
from ..threads import workers_for
from .adam import Adam
from .checkpoint import load_checkpoint, save

__all__ = ["History", "fit", "fit_reverse_kl", "evaluate_nll", "bits_per_dim", "TrainingDiverged"]


class TrainingDiverged(NfcoreError):
    """Training diverged: a loss, gradient or weight became NaN/inf, or the training NLL exploded.

    When it is raised the flow holds its last finite state and no checkpoint holds a non-finite
    weight."""


def _exploded(val, best, start):
    """An NLL (nats per row) far above both ``best`` and the untrained flow's ``start``: for the
    training NLL divergence (a run at lr 10 reached 1.5e25), for the validation NLL while training
    falls overfitting. Relative to the start, so data far from the base (unstandardised, NLL 630
    at the start) is not mistaken for an explosion."""
    base = min(v for v in (best, start, math.inf) if not math.isnan(v))
    return math.isfinite(base) and val - base > max(100.0, 10.0 * abs(base))


def _finite(a):
    """Every element finite: max |a| is finite exactly then (NaN and inf propagate through
    ``max_abs``), and one float leaves a GPU instead of the array."""
    return math.isfinite(backend_of(a).max_abs(a))


def _first_nonfinite(flow, x, context):
    """Where the forward pass of ``x`` first goes non-finite, in words (for the divergence message)."""
    transforms = getattr(flow.transform, "transforms", [flow.transform])
    h, i, t = x, 0, flow.transform
    try:
        for i, t in enumerate(transforms):
            h, ld, _ = t.forward(h, context, need_grad=False)
            if not (_finite(h) and _finite(ld)):
                return f"the output of layer {i} ({type(t).__name__})"
        lp, _ = flow.base.log_prob(h)
    except NfcoreError as err:
        return f"layer {i} ({type(t).__name__}): {err}"
    if not _finite(lp):
        return f"the base distribution's log-density ({type(flow.base).__name__})"
    return "the gradient (the forward pass is finite)"


def _restore(flow, optimizer, state):
    flow.load_state_dict(state[0])
    optimizer.load_state_dict(state[1])


@dataclass
class History:
    """Per-epoch records: dicts with epoch, train_nll, val_nll, samples_per_s, seconds."""

    rows: list = field(default_factory=list)
    best_epoch: int = -1
    best_val: float = math.inf
    stopped_early: bool = False

    def append(self, **row):
        self.rows.append(row)

    def column(self, name):
        return [r[name] for r in self.rows]

    def write_csv(self, path):
        if not self.rows:
            return
        tmp = os.fspath(path) + ".tmp"
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(self.rows[0]))
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, path)

    def to_arrays(self):
        if not self.rows:
            return {}
        return {k: np.array([r[k] for r in self.rows], dtype=np.float64) for k in self.rows[0]}

    @classmethod
    def from_arrays(cls, arrays, best_epoch=-1, best_val=math.inf):
        keys = list(arrays)
        n = len(arrays[keys[0]]) if keys else 0
        rows = [{k: (int(arrays[k][i]) if k == "epoch" else float(arrays[k][i])) for k in keys} for i in range(n)]
        return cls(rows, best_epoch, best_val)


def _check_options(epochs, batch_size, lr, weight_decay, clip_norm, patience, max_seconds, seed):
    """fit's numeric options, each in its domain (the error names the option and the range)."""
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0)
    if patience is not None:
        check_int("patience", patience, 1)
    check_real("lr", lr, 0.0)
    check_real("weight_decay", weight_decay, 0.0, closed=True)
    for name, value in (("clip_norm", clip_norm), ("max_seconds", max_seconds)):
        if value is not None:
            check_real(name, value, 0.0)


def _log_prob_batches(flow, x, context, batch_size):
    """log p of ``x`` batch by batch, each (B,) on the input's device, no gradient."""
    for s in range(0, x.shape[0], batch_size):
        yield flow.log_prob(x[s : s + batch_size], None if context is None else context[s : s + batch_size])


def evaluate_nll(flow, x, context=None, batch_size=4096):
    """Mean negative log-likelihood of ``x`` (host or device array), in batches, no gradient."""
    return -sum(backend_of(lp).total(lp) for lp in _log_prob_batches(flow, x, context, batch_size)) / x.shape[0]


def bits_per_dim(flow, x, draws=1, batch_size=4096):
    """Mean negative log-likelihood of ``x`` in bits per dimension: NLL / (D log 2).

    For a flow that starts with ``Dequantize`` (K-level data), this is the dequantisation
    bound on the discrete data's bits/dim; ``draws`` averages that many noise draws.
    """
    dim = int(np.prod(flow.shape))
    nll = np.mean([evaluate_nll(flow, x, batch_size=batch_size) for _ in range(int(draws))])
    return float(nll / (dim * math.log(2.0)))


def _check_data(flow, data, name):
    data = np.asarray(data)
    if not np.issubdtype(data.dtype, np.floating):
        raise ShapeError(f"{name} must be floating point, got {data.dtype}")
    if data.ndim != 1 + len(flow.shape) or tuple(data.shape[1:]) != flow.shape:
        raise ShapeError(f"{name} has shape {data.shape}, the flow expects (N, {', '.join(map(str, flow.shape))})")
    if not np.all(np.isfinite(data)):
        raise ShapeError(f"{name} contains NaN or inf")
    return np.ascontiguousarray(data, dtype=flow.dtype)


def fit(flow: Flow, data: ArrayLike, *, context: ArrayLike | None = None, epochs: int = 100, batch_size: int = 256,
        lr: float = 1e-3, weight_decay: float = 0.0, clip_norm: float | None = None, val_fraction: float = 0.1,
        val_data: ArrayLike | None = None, val_context: ArrayLike | None = None, patience: int | None = None,
        seed: int = 0, out_dir: str | os.PathLike[str] | None = None, resume: str | os.PathLike[str] | None = None,
        max_seconds: float | None = None, lr_schedule: str = "constant", log: Callable[[str], object] | None = print,
        meta: Mapping[str, Any] | None = None, keep_start: bool = False, workers: int | None = None) -> History:
    """Fit ``flow`` by maximum likelihood with Adam; returns a ``History``.

    Arguments:
        flow: a ``Flow`` (on the CPU or, after ``flow.to("cuda")``, on the GPU).
        data: (N, ...) training data (host array); ``context``: (N, C) for conditional flows.
        epochs, batch_size, lr, weight_decay, clip_norm: optimisation settings.
        val_fraction: part of ``data`` held out for validation (ignored when ``val_data`` is given).
        patience: stop after this many epochs without a better validation NLL (None: never).
        seed: shuffling and split seed.
        out_dir: if set, write ``model.npz`` (best weights), ``last.npz`` (resume state) and
            ``history.csv`` there after every epoch.
        resume: path of a ``last.npz`` to continue from (weights, optimiser, history, best, the
            shuffling generator and the model's own generators, the schedule's plan): a run
            resumed after epoch k ends bit-identical to the run that was not interrupted.
        max_seconds: stop after this much training time (the epoch in progress finishes).
        lr_schedule: ``constant`` or ``cosine`` (decay from ``lr`` to 0 over the planned epochs: this
            call's, or on resume the larger of the interrupted run's plan and the epochs done plus
            this call's).
        log: callable taking one line of progress text (None: silent).
        meta: extra JSON-able facts stored in the checkpoints (e.g. the data source).
        keep_start: score the flow on the validation data before the first step and keep those
            weights unless the best epoch beats them *clearly*: its per-row validation gain over
            the start must exceed twice its standard error (a paired test), since on a few dozen
            validation rows a small gain is noise. For a flow that starts from a fitted model
            (``nfcore.tabular.initialize``): training then does not end worse than the start
            by chance. Not with data-dependent initialisation (ActNorm).
        workers: worker threads per step, each on a contiguous shard of the batch with its
            own gradient buffer, summed in a fixed order (``nfcore.parallel``): W workers give
            one worker's gradients to rounding, the same seed and W the same model bit for bit.
            None: chosen from the batch size, the cores and the layers' measured shard sizes
            (``nfcore.threads.workers_for``: a RealNVP step splits from 1024 rows, a MAF step from
            256); CUDA flows run on one worker. Scoring and sampling use workers too.

    At the end the flow holds the best weights by validation NLL (early-stopping semantics) and
    is in evaluation mode (``flow.eval()``: batch-norm layers use their running averages).

    Divergence: a non-finite loss or gradient stops training before the step is applied; a
    non-finite weight or validation NLL at the end of an epoch, or a training NLL exploded far
    above its best and the untrained flow's (``_exploded``), stops it too. (A validation NLL that
    explodes while the training NLL falls is overfitting: an early stop, not an error.) The flow is
    rolled back to its last finite state (the start of the epoch), no
    checkpoint is written with the bad weights, and ``TrainingDiverged`` names the epoch, the
    step and where the values went non-finite.
    """
    _check_options(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, clip_norm=clip_norm,
                   patience=patience, max_seconds=max_seconds, seed=seed)
    if lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"lr_schedule must be constant or cosine, got {lr_schedule!r}")
    data = _check_data(flow, data, "data")
    rng = np.random.default_rng(seed)
    if context is not None:
        context = np.ascontiguousarray(context, dtype=flow.dtype)
        if context.shape[0] != data.shape[0]:
            raise ShapeError(f"context has {context.shape[0]} rows, data has {data.shape[0]}")
    if val_data is None:
        if not 0 <= val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        perm = rng.permutation(data.shape[0])
        n_val = int(round(val_fraction * data.shape[0]))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        val_data = data[val_idx] if n_val else None
        val_context = context[val_idx] if (n_val and context is not None) else None
        data = data[train_idx]
        context = context[train_idx] if context is not None else None
    else:
        val_data = _check_data(flow, val_data, "val_data")
    n = data.shape[0]
    if n < 1:
        raise ConfigError("no training data left after the validation split")
    batch_size = min(batch_size, n)
    workers = workers_for(batch_size, workers, flow.device, flow._shard_rows)

    ops = get_backend(flow.device)
    optimizer = Adam(flow.parameters(), lr=lr, weight_decay=weight_decay, clip_norm=clip_norm)
    history = History()
    best_state = None
    start_epoch = 0
    planned = epochs
    if resume is not None:
        from ..models import MAX_PARAMETERS

        # a model the caller built large on purpose may resume a state of its size
        saved, info, sections = load_checkpoint(resume, allow_large=flow.num_parameters() > MAX_PARAMETERS)
        flow.load_state_dict(saved.state_dict())
        tm = info.get("meta", {})
        hist = {k[len("history/"):]: v for k, v in sections["extra"].items() if k.startswith("history/")}
        try:
            if sections["optim"]:
                optimizer.load_state_dict(sections["optim"])
            lengths = {np.asarray(v).shape for v in hist.values()}
            if len(lengths) > 1 or (hist and len(next(iter(lengths))) != 1) or (hist and "epoch" not in hist):
                raise ValueError(f"ragged or malformed history columns {sorted(hist)}")
            best_epoch, best_val = tm.get("best_epoch", -1), tm.get("best_val", math.inf)
            if not isinstance(best_epoch, int) or not isinstance(best_val, (int, float)):
                raise ValueError("best_epoch / best_val are not numbers")
            history = History.from_arrays(hist, best_epoch, float(best_val))
            planned = max(planned, int(tm.get("planned_epochs", 0)), len(history.rows) + epochs)
        except (KeyError, ValueError, TypeError, IndexError, OverflowError) as err:
            raise CheckpointError(f"{resume}: not a usable resume state ({type(err).__name__}: {err})") from err
        best_state = sections["best"] or None
        start_epoch = len(history.rows)
        if "shuffle_rng" in tm:  # continue the shuffling stream where it stopped
            rng = np.random.default_rng()
            try:
                rng.bit_generator.state = tm["shuffle_rng"]
            except (TypeError, ValueError, KeyError, OverflowError) as err:
                raise CheckpointError(f"{resume}: the saved shuffling state is not valid ({err})") from err
        else:  # a resume state from before session 6
            rng = np.random.default_rng([seed, start_epoch])
        if "generators" in tm:
            flow.set_generator_states(tm["generators"])
    dev_val = None if val_data is None else ops.asarray(val_data)
    dev_val_ctx = None if val_context is None else ops.asarray(val_context)
    since_best = start_epoch - 1 - history.best_epoch  # epochs since the best (best_epoch -1: the start)
    meta = dict(meta or {})
    t_start = time.perf_counter()
    if out_dir is not None:
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise ConfigError(f"out_dir {out_dir} is a file, not a folder: name a run folder")
        os.makedirs(out_dir, exist_ok=True)
    start = None
    if keep_start and resume is not None and "start/lp" in sections["extra"]:
        extra = sections["extra"]
        start = ({k[len("start/model/"):]: v for k, v in extra.items() if k.startswith("start/model/")},
                 np.asarray(extra["start/lp"], dtype=np.float64))
    elif keep_start and resume is None and dev_val is not None:
        flow.eval()
        start = (flow.state_dict(), _row_log_probs(flow, dev_val, dev_val_ctx))
        history.best_val = -float(np.mean(start[1]))
        best_state = start[0]
        if log is not None:
            log(f"start       val NLL {history.best_val:8.4f}  (the untrained flow)")
        if out_dir is not None:
            save(os.path.join(out_dir, "model.npz"), flow, None,
                 dict(meta, best_epoch=-1, best_val=history.best_val, epochs_done=0, lr=lr, batch_size=batch_size))

    if resume is not None:
        start_nll = float(tm.get("start_nll", math.nan)) if isinstance(tm.get("start_nll"), (int, float)) else math.nan
    elif start is not None:  # the untrained flow's level: what an explosion is measured against
        start_nll = -float(np.mean(start[1]))
    else:
        flow.eval()
        try:
            start_nll = (evaluate_nll(flow, dev_val, dev_val_ctx) if dev_val is not None else
                         evaluate_nll(flow, ops.asarray(data[:4096]),
                                      None if context is None else ops.asarray(context[:4096])))
        except NfcoreError:  # an untrained flow that cannot score the data: only the best counts
            start_nll = math.nan
    best_train = math.inf  # the lowest training NLL of an epoch (in this call)
    steps_per_epoch = n // batch_size
    total_steps = planned * steps_per_epoch
    step_index = start_epoch * steps_per_epoch
    # where the last finite resume state is: the file resumed from, then each last.npz written
    last_good = (os.fspath(resume), start_epoch) if resume is not None else None

    def diverged(what, epoch, step, where):
        last = (f"the last resume state (epoch {last_good[1]}) is {last_good[0]}" if last_good
                else "no resume state was written")
        return TrainingDiverged(
            f"training diverged at epoch {epoch + 1}" + (f", step {step}" if step else "") + f": {what}"
            + (f", first in {where}" if where else "") + f"; the model is back at the start of epoch {epoch + 1} "
            f"(its last finite state) and {last}. Lower the learning rate (now {lr:g}) or clip the gradient norm "
            "(clip_norm, --clip-norm)")

    def roll_back(xb=None, cb=None):
        """Where it went non-finite (a forward pass of the batch), then back to the epoch's start."""
        try:
            return _first_nonfinite(flow, xb, cb) if xb is not None else None
        finally:
            _restore(flow, optimizer, good)
            flow.eval()

    for epoch in range(start_epoch, start_epoch + epochs):
        t0 = time.perf_counter()
        flow.train()
        good = (flow.state_dict(), optimizer.state_dict())  # the last finite state: the epoch's start
        perm = rng.permutation(n)
        x_epoch = ops.asarray(data[perm])
        c_epoch = None if context is None else ops.asarray(context[perm])
        total, steps = 0.0, 0
        for s in range(0, n - batch_size + 1, batch_size):
            xb = x_epoch[s : s + batch_size]
            cb = None if c_epoch is None else c_epoch[s : s + batch_size]
            if lr_schedule == "cosine":
                optimizer.lr = lr * 0.5 * (1.0 + math.cos(math.pi * step_index / total_steps))
            step_index += 1
            optimizer.zero_grad()
            loss = flow.loss_and_grad(xb, cb, workers=workers)
            if not math.isfinite(loss):
                raise diverged(f"the training loss became {loss}", epoch, steps + 1, roll_back(xb, cb))
            if not math.isfinite(optimizer.step()):  # a NaN/inf gradient: Adam skipped the update
                raise diverged("the gradient became non-finite", epoch, steps + 1, roll_back(xb, cb))
            total += loss
            steps += 1
        seconds = time.perf_counter() - t0
        train_nll = total / max(steps, 1)
        flow.eval()  # batch norm: validation with the running averages
        if not _finite(optimizer.flat):  # every weight in one buffer: one check (one transfer on a GPU)
            bad = [name for name, p in flow.named_parameters() if not _finite(p.data)]
            roll_back()
            raise diverged(f"weights became non-finite ({', '.join(bad[:3])})", epoch, None, None)
        val_nll = evaluate_nll(flow, dev_val, dev_val_ctx) if dev_val is not None else train_nll
        if not math.isfinite(val_nll) or _exploded(train_nll, best_train, start_nll):
            kind = "validation NLL became non-finite" if not math.isfinite(val_nll) else "training NLL exploded"
            roll_back()
            best = f"best {best_train:.4g}, " if math.isfinite(best_train) else ""
            raise diverged(f"the {kind} (train {train_nll:.4g}: {best}untrained {start_nll:.4g}; validation "
                           f"{val_nll:.4g})", epoch, None, None)
        best_train = min(best_train, train_nll)
        # the validation NLL exploding while the training NLL falls is overfitting, not divergence: stop
        # early (the best weights are restored below)
        overfit = _exploded(val_nll, history.best_val, start_nll)
        history.append(epoch=epoch + 1, train_nll=train_nll, val_nll=val_nll,
                       samples_per_s=steps * batch_size / max(seconds, 1e-12), seconds=seconds)
        improved = val_nll < history.best_val
        if improved:
            history.best_val, history.best_epoch = val_nll, epoch
            best_state = flow.state_dict()
            since_best = 0
        else:
            since_best += 1
        if log is not None:
            log(f"epoch {epoch + 1:4d}  train NLL {train_nll:8.4f}  val NLL {val_nll:8.4f}"
                f"{' *' if improved else '  '}  {steps * batch_size / max(seconds, 1e-12):9.0f} samples/s")
        stop = (patience is not None and since_best >= patience) or overfit
        out_of_time = max_seconds is not None and time.perf_counter() - t_start >= max_seconds
        if out_dir is not None:
            summary = dict(meta, best_epoch=history.best_epoch, best_val=history.best_val,
                           epochs_done=epoch + 1, lr=lr, batch_size=batch_size)
            hist = {f"history/{k}": v for k, v in history.to_arrays().items()}
            resume_state = dict(summary, planned_epochs=planned, shuffle_rng=rng.bit_generator.state,
                                generators=flow.generator_states(), start_nll=start_nll)
            if start is not None:  # keep_start's candidate travels with the resume state
                hist.update({f"start/model/{k}": v for k, v in start[0].items()}, **{"start/lp": start[1]})
            save(os.path.join(out_dir, "last.npz"), flow, optimizer, resume_state, best_state, hist)
            last_good = (os.path.join(out_dir, "last.npz"), epoch + 1)
            if improved:
                save(os.path.join(out_dir, "model.npz"), flow, None, summary)
            history.write_csv(os.path.join(out_dir, "history.csv"))
        if stop:
            history.stopped_early = True
            if log is not None and overfit:
                log(f"early stop: the validation NLL exploded ({val_nll:.4g}) while the training NLL fell "
                    f"({train_nll:.4g}): overfitting (best {history.best_val:.4f} at epoch {history.best_epoch + 1})")
            elif log is not None:
                log(f"early stop: no better validation NLL for {patience} epochs (best {history.best_val:.4f} "
                    f"at epoch {history.best_epoch + 1})")
            break
        if out_of_time:
            break
    if best_state is not None:
        flow.load_state_dict(best_state)
    flow.eval()
    if start is not None and history.best_epoch >= 0:
        gain = _row_log_probs(flow, dev_val, dev_val_ctx) - start[1]
        se = float(np.std(gain) / math.sqrt(gain.size))
        if not float(np.mean(gain)) > 2.0 * se:
            flow.load_state_dict(start[0])
            flow.eval()
            if log is not None:
                log(f"kept the untrained start: the best epoch ({history.best_epoch + 1}) gains {np.mean(gain):.4f} "
                    f"nats per validation row, within twice its standard error ({se:.4f})")
            history.best_epoch, history.best_val = -1, -float(np.mean(start[1]))
            if out_dir is not None:
                save(os.path.join(out_dir, "model.npz"), flow, None,
                     dict(meta, best_epoch=-1, best_val=history.best_val, epochs_done=len(history.rows), lr=lr,
                          batch_size=batch_size))
    return history


def _row_log_probs(flow, x, context=None, batch_size=4096):
    """log p(x_n) per row, float64 on the host."""
    return np.concatenate([np.asarray(backend_of(lp).to_host(lp), dtype=np.float64)
                           for lp in _log_prob_batches(flow, x, context, batch_size)])


def fit_reverse_kl(flow: Flow, log_target: Callable[[np.ndarray], tuple[ArrayLike, ArrayLike]], *, steps: int = 2000,
                   batch_size: int = 256, lr: float = 1e-3, clip_norm: float | None = None, seed: int | None = 0,
                   log: Callable[[str], object] | None = print, log_every: int = 200,
                   workers: int | None = None) -> np.ndarray:
    """Fit ``flow`` to an unnormalised density by reverse KL; returns the loss per step.

    ``log_target(x) -> (log p~(x) (N,), d log p~/dx (N, ...))`` on host arrays. The loss is
    the Monte-Carlo estimate of ``KL(q || p) - log Z`` (its floor is ``-log Z``). ``workers``:
    worker threads per step (None: chosen from the batch and the cores; see
    ``Flow.reverse_kl_loss_and_grad``).
    """
    rng = np.random.default_rng(seed)
    optimizer = Adam(flow.parameters(), lr=lr, clip_norm=clip_norm)
    losses = np.empty(steps)
    good = None
    for i in range(steps):
        if i % log_every == 0:
            good = (flow.state_dict(), optimizer.state_dict())  # rolled back to on divergence
        optimizer.zero_grad()
        loss = flow.reverse_kl_loss_and_grad(log_target, batch_size, rng, workers=workers)
        what = f"the reverse-KL loss became {loss}" if not math.isfinite(loss) else None
        if what is None and not math.isfinite(optimizer.step()):
            what = "the gradient became non-finite"
        if what is not None:
            _restore(flow, optimizer, good)
            raise TrainingDiverged(f"reverse-KL training diverged at step {i + 1}: {what}; the model is back at its "
                                   f"state of step {i - i % log_every + 1}. Lower lr (now {lr:g}) or set clip_norm")
        losses[i] = loss
        if log is not None and ((i + 1) % log_every == 0 or i == steps - 1):
            window = losses[max(0, i + 1 - log_every) : i + 1]
            log(f"step {i + 1:6d}  reverse KL + log Z  {window.mean():8.4f}")
    return losses
