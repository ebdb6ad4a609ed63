"""Flow: a transform (data -> latent) on top of a base distribution.

    log p(x) = log p_base(f(x)) + log|det df/dx|

``Flow`` is the public edge: it validates inputs (shape, dtype, NaN/inf) so the layers
and kernels below can trust them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .._checks import check_int
from .._types import Array
from ..errors import ConfigError, InputOutsideDomain, ShapeError
from ..kernels import backend_of, get_backend, is_device_array
from ..threads import MIN_SHARD_ROWS, workers_for
from .distributions import Distribution
from .module import Module, shape_text
from .transform import Transform

__all__ = ["Flow"]

#: a pass without gradient (log_prob, sample) does about a third of a training step's work per
#: row, so it splits at this many times the rows a step does (measured on RealNVP D=2 and MAF D=8:
#: two workers win from 2048 and 1024 rows, against 1024 and 256 for a step)
EVAL_SHARD_FACTOR = 2


def _concat(parts):
    """Concatenate host or device arrays along the first axis (on their device)."""
    if not is_device_array(parts[0]):
        return np.concatenate([np.asarray(p) for p in parts])
    ops = backend_of(parts[0])
    return ops.asarray(np.concatenate([ops.to_host(p) for p in parts]))


class Flow(Module):
    """log p(x) = log p_base(f(x)) + log|det df/dx|: a normalizing flow.

    Arguments:
        transform: the data -> latent ``Transform`` (usually a ``Chain``).
        base: the base ``Distribution`` over latents.
        context_dim: width of the context for conditional flows (0: unconditional).
        config: the plain-dict config a builder made it from (kept for checkpoints).
        shape: the data's event shape when it differs from the base's (an image flow maps
            (N, H, W, C) to a flat (N, H W C) latent); default: the base's shape.

    Example:
        >>> import numpy as np
        >>> from nfcore import build
        >>> flow = build({"flow": "realnvp", "dim": 2, "layers": 2, "hidden": [8]})
        >>> flow.log_prob(np.zeros((3, 2))).shape
        (3,)
        >>> flow.sample(5, seed=0).shape
        (5, 2)
    """

    def __init__(self, transform: Transform, base: Distribution, context_dim: int = 0,
                 config: Mapping[str, Any] | None = None, shape: Sequence[int] | None = None) -> None:
        self.transform = transform
        self.base = base
        self.shape = base.shape if shape is None else tuple(int(s) for s in shape)
        if int(np.prod(self.shape)) != base.size:
            raise ShapeError(f"data shape {self.shape} and base shape {base.shape} differ in size")
        self.context_dim = int(context_dim)
        self.config = dict(config) if config is not None else None
        self._after_load()

    def _after_load(self):
        # walking the module tree costs more than a small layer: do it on (re)load/move only
        # (a dict, not a list: the module walk would take a list of modules for children)
        self._module_list = dict.fromkeys(self.modules())
        self._dtype = Module.dtype.fget(self) or np.dtype(np.float64)
        self._device = Module.device.fget(self)
        self._workers = None  # worker threads and replicas (nfcore.parallel), made on first use
        # the layers whose shard size follows their ``fused`` switch, which a user may flip later
        # (a dict too: a tuple of modules would be walked as children)
        self._switches = dict.fromkeys(m for m in self._module_list if hasattr(type(m), "fused"))
        self._shard_key = None
        if self.config is not None and "dtype" in self.config:
            self.config["dtype"] = self._dtype.name  # a checkpoint rebuilds what is there now

    @property
    def _shard_rows(self):
        """Rows per worker below which a call stays on fewer workers: the smallest of the layers'
        ``min_shard_rows`` (the layers that do most of the work per row decide: a Glow's first
        scale, not its last). Recomputed when a layer's ``fused`` switch has changed since."""
        key = tuple(m.fused for m in self._switches)
        if key != self._shard_key:
            rows = [m.min_shard_rows for m in self._module_list if m.min_shard_rows is not None]
            self._shard_rows_now = min(rows) if rows else MIN_SHARD_ROWS
            self._shard_key = key
        return self._shard_rows_now

    def extra_repr(self) -> str:
        family = [self.config["flow"]] if self.config and "flow" in self.config else []
        shape = f"dim={self.shape[0]}" if len(self.shape) == 1 else f"shape={shape_text(self.shape)[1:-1]}"
        context = [f"context_dim={self.context_dim}"] if self.context_dim else []
        return ", ".join([*family, shape, *context, f"base={type(self.base).__name__}"])

    def tree_children(self):
        return [("", self.transform), ("base", self.base)]

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def device(self) -> str:
        return self._device

    # -- validation at the public edge -------------------------------------------------
    def _param_dtype(self):
        return self._dtype

    def _validate(self, x, name="x"):
        if not is_device_array(x):
            x = np.asarray(x)
            if not np.issubdtype(x.dtype, np.floating):
                raise ShapeError(f"{name} must be a float array, got dtype {x.dtype}")
        dtype = self._param_dtype()
        if not is_device_array(x) and x.dtype.byteorder not in ("=", "|") and x.dtype.newbyteorder("=") == dtype:
            x = x.astype(dtype)  # the same numbers in the other byte order (a big-endian file, say)
        if np.dtype(x.dtype) != dtype:
            raise ShapeError(
                f"{name} has dtype {np.dtype(x.dtype).name} but the model is {dtype.name}; "
                f"cast the input (x.astype(np.{dtype.name})) or the model (flow.to(dtype=...))"
            )
        if x.ndim != 1 + len(self.shape) or tuple(x.shape[1:]) != self.shape:
            want = ", ".join(["N", *map(str, self.shape)])
            raise ShapeError(f"expected {name} of shape ({want}), got {tuple(x.shape)}")
        if not is_device_array(x):
            if not np.all(np.isfinite(x)):
                raise InputOutsideDomain(f"{name} contains NaN or inf")
            x = get_backend(self.device).asarray(np.ascontiguousarray(x))
        return x

    def _validate_context(self, context, n):
        if self.context_dim == 0:
            if context is not None:
                raise ShapeError("this flow is unconditional (context_dim=0) but a context was given")
            return None
        if context is None:
            raise ShapeError(f"this flow is conditional: pass a context of shape (N, {self.context_dim})")
        if not is_device_array(context):
            context = np.asarray(context)
            if context.ndim == 1:
                context = np.broadcast_to(context, (n, context.size))
        if tuple(context.shape) != (n, self.context_dim):
            raise ShapeError(f"expected context of shape ({n}, {self.context_dim}), got {tuple(context.shape)}")
        return self._validate_any(context, "context")

    def _validate_any(self, a, name):
        if is_device_array(a):
            return a
        a = np.ascontiguousarray(a, dtype=self._param_dtype())
        if not np.all(np.isfinite(a)):
            raise InputOutsideDomain(f"{name} contains NaN or inf")
        return get_backend(self.device).asarray(a)

    @contextlib.contextmanager
    def _evaluating(self):
        """Evaluation semantics for the duration (restored after): a density or a sample never
        changes the model nor depends on the rest of the batch (no ActNorm data initialisation,
        batch norm with its running averages, the residual blocks' exact log-det)."""
        if not self.training:
            yield
            return
        modules = list(self._module_list)  # walked once (_after_load): a density call stays cheap
        modes = [m.training for m in modules]
        try:
            for m in modules:
                m.training = False
            yield
        finally:
            for m, mode in zip(modules, modes):
                m.training = mode

    # -- density ---------------------------------------------------------------------
    def log_prob(self, x: ArrayLike | Array, context: ArrayLike | Array | None = None,
                 chunk_size: int | None = None, workers: int | None = None) -> Array:
        """log p(x), shape (N,), on the input's device; evaluation semantics whatever the mode.

        ``chunk_size``: evaluate that many rows at a time (bounded scratch memory for large N).
        ``workers``: worker threads, each on a contiguous share of the rows (None: chosen from
        the rows and the cores, ``nfcore.threads.workers_for``); the result does not depend on it.
        """
        if chunk_size is not None:
            chunk_size = check_int("chunk_size", chunk_size, 1)
            if len(x) > chunk_size:
                parts = [self.log_prob(x[s : s + chunk_size], None if context is None else context[s : s + chunk_size],
                                       workers=workers)
                         for s in range(0, len(x), chunk_size)]
                return _concat(parts)
        x = self._validate(x)
        context = self._validate_context(context, x.shape[0])
        if x.shape[0] == 0:
            return get_backend(self.device).zeros((0,), self._param_dtype())
        count = workers_for(x.shape[0], workers, self.device, EVAL_SHARD_FACTOR * self._shard_rows)
        with self._evaluating():
            if count > 1:
                return self._sharded_log_prob(x, context, count)
            z, ld, _ = self.transform.forward(x, context, need_grad=False)
            lp, _ = self.base.log_prob(z)
        backend_of(lp).iadd(lp, ld)
        return lp

    def _worker_pool(self):
        from ..parallel import Workers

        if self._workers is None:
            self._workers = Workers()
        return self._workers

    def _sharded_log_prob(self, x, context, count):
        from ..parallel import shard_bounds

        out = np.empty((x.shape[0],), x.dtype)
        bounds = shard_bounds(x.shape[0], count)

        def task(replica, w):
            a, b = bounds[w]
            z, ld, _ = replica.transform.forward(x[a:b], None if context is None else context[a:b], need_grad=False)
            lp, _ = replica.base.log_prob(z)
            np.add(lp, ld, out=out[a:b])

        self._worker_pool().run(self, count, task)
        return out

    def loss_and_grad(self, x: ArrayLike | Array, context: ArrayLike | Array | None = None,
                      workers: int | None = None) -> float:
        """Mean negative log-likelihood of the batch; accumulates its gradient into every parameter.

        Returns the loss as a float. Gradients are *added*: call ``zero_grad`` first.
        ``workers``: worker threads, each on a contiguous shard of the batch, their gradients
        summed in a fixed order (None: chosen from the batch and the cores,
        ``nfcore.threads.workers_for``; see ``nfcore.parallel``). W workers give one worker's
        gradient to rounding, and the same W the same bits.
        """
        x = self._validate(x)
        context = self._validate_context(context, x.shape[0])
        n = x.shape[0]
        count = workers_for(n, workers, self.device, self._shard_rows)
        if count > 1 and not any(m.whole_batch_pending() for m in self._module_list):
            for m in self._module_list:
                m.before_shards()
            return self._sharded_loss_and_grad(x, context, count)
        return -self._sum_log_prob_and_grad(x, context, n) / n

    def _sum_log_prob_and_grad(self, x, context, n):
        """sum of log p over the rows of x; accumulates the gradient of -(that sum) / n."""
        ops = backend_of(x)
        z, ld, cache = self.transform.forward(x, context, need_grad=True)
        lp, bcache = self.base.log_prob(z, need_grad=True)
        ops.iadd(lp, ld)
        total = ops.total(lp)
        dlogp = ops.zeros((x.shape[0],), x.dtype)
        ops.add_scalar(dlogp, -1.0 / n)
        dz = self.base.backward(dlogp, bcache)
        self.transform.backward(dz, dlogp, cache)
        return total

    def _sharded_loss_and_grad(self, x, context, count):
        from ..parallel import shard_bounds

        n = x.shape[0]
        bounds = shard_bounds(n, count)
        pool = self._worker_pool()

        def task(replica, w):
            a, b = bounds[w]
            return replica._sum_log_prob_and_grad(x[a:b], None if context is None else context[a:b], n)

        totals = pool.run(self, count, task)
        pool.add_grads(count)
        return -sum(totals) / n

    # -- sampling --------------------------------------------------------------------
    def _rng(self, seed):
        return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def sample(self, n: int, context: ArrayLike | Array | None = None, seed: int | np.random.Generator | None = None,
               temperature: float = 1.0, chunk_size: int | None = None, workers: int | None = None) -> Array:
        """n samples x ~ p, shape (n, *shape), on the model's device.

        ``temperature`` T scales the base noise (and so every split prior's standard
        deviation): T < 1 gives smoother, more typical samples (Glow uses 0.7).
        ``chunk_size``: draw that many at a time from one generator (bounded scratch memory).
        ``workers``: worker threads for the sampling direction (None: chosen from n and the
        cores); the base noise is drawn first, so the samples do not depend on it.
        """
        return self.sample_and_log_prob(n, context, seed, temperature, chunk_size, workers)[0]

    def sample_and_log_prob(self, n: int, context: ArrayLike | Array | None = None,
                            seed: int | np.random.Generator | None = None, temperature: float = 1.0,
                            chunk_size: int | None = None, workers: int | None = None) -> tuple[Array, Array]:
        """(x, log p(x)) for n fresh samples, in one pass through the sampling direction."""
        n = check_int("number of samples", n, 1, ShapeError)
        temperature = float(temperature)
        if not (np.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature must be a finite number > 0, got {temperature}")
        if chunk_size is not None and n > check_int("chunk_size", chunk_size, 1):
            rng = self._rng(seed)
            parts = [self.sample_and_log_prob(min(chunk_size, n - s), None if context is None else
                                              context[s : s + chunk_size], rng, temperature, workers=workers)
                     for s in range(0, n, chunk_size)]
            return _concat([p[0] for p in parts]), _concat([p[1] for p in parts])
        context = self._validate_context(context, n)
        count = workers_for(n, workers, self.device, EVAL_SHARD_FACTOR * self._shard_rows)
        with self._evaluating():
            return self._sample_and_log_prob(n, context, seed, temperature, count)

    def _sample_and_log_prob(self, n, context, seed, temperature, count=1):
        z = self.base.sample(n, self._rng(seed), self._param_dtype(), self.device, temperature=temperature)
        lp, _ = self.base.log_prob(z)
        if count > 1:
            x, ld, _ = self._sharded_inverse(z, context, count)
            lp -= ld
            return x, lp
        x, ld, _ = self.transform.inverse(z, context, need_grad=False)
        ops = backend_of(x)
        ld_neg = ops.zeros((n,), x.dtype)
        ops.axpy(-1.0, ld, ld_neg)
        ops.iadd(lp, ld_neg)
        return x, lp

    def _sharded_inverse(self, z, context, count, need_grad=False):
        """(x, log|det dx/dz|, the shards' caches or None) of the sampling direction, its rows cut into
        shards; with ``need_grad`` each shard's cache is kept for ``_sharded_backward`` (the same
        replicas, the same bounds)."""
        from ..parallel import shard_bounds

        n = z.shape[0]
        bounds = shard_bounds(n, count)
        x = np.empty((n, *self.shape), z.dtype)
        ld = np.empty((n,), z.dtype)

        def task(replica, w):
            a, b = bounds[w]
            xs, lds, cache = replica.transform.inverse(z[a:b], None if context is None else context[a:b],
                                                       need_grad=need_grad)
            x[a:b] = xs
            ld[a:b] = lds
            return cache

        caches = self._worker_pool().run(self, count, task)
        return x, ld, ((bounds, caches) if need_grad else None)

    def reverse_kl_loss_and_grad(self, log_target: Callable[[np.ndarray], tuple[ArrayLike, ArrayLike]], n: int,
                                 seed: int | np.random.Generator | None = None,
                                 context: ArrayLike | Array | None = None, workers: int | None = None) -> float:
        """Reverse KL to an unnormalised density: E_q[log q(x) - log p~(x)], x = f^{-1}(u), u ~ base.

        ``log_target(x) -> (log p~(x) (N,), d log p~ / dx (N, ...))`` on host arrays, called once
        on the whole batch. Returns the loss estimate (a float; it equals KL(q || p) - log Z).
        Accumulates gradients. ``workers``: worker threads for the sampling direction and its
        VJP, each on a contiguous shard of the rows (None: chosen from n and the cores, as
        ``loss_and_grad``); the base noise is drawn first, so the loss and the gradient do not
        depend on it (to rounding), and the same W gives the same bits.
        """
        rng = self._rng(seed)
        n = int(n)
        context = self._validate_context(context, n)
        dtype = self._param_dtype()
        u, rcache = self.base.rsample(n, rng, dtype, self.device)
        lp_u, bcache = self.base.log_prob(u, need_grad=True)
        count = workers_for(n, workers, self.device, self._shard_rows)
        shards = count > 1 and not any(m.whole_batch_pending() for m in self._module_list)
        if shards:
            for m in self._module_list:
                m.before_shards()
            x, ld, cache = self._sharded_inverse(u, context, count, need_grad=True)
        else:
            x, ld, cache = self.transform.inverse(u, context, need_grad=True)
        ops = backend_of(x)
        lt, gt = log_target(np.asarray(ops.to_host(x)))
        lt = np.asarray(lt, dtype=np.float64)
        gt = np.asarray(gt, dtype=dtype).reshape(x.shape)
        if not (np.all(np.isfinite(lt)) and np.all(np.isfinite(gt))):
            raise InputOutsideDomain("log_target returned NaN or inf (value or gradient)")
        logq = np.asarray(ops.to_host(lp_u), dtype=np.float64) - np.asarray(ops.to_host(ld), dtype=np.float64)
        loss = float(np.mean(logq - lt))
        # loss = mean(log p(u) - ld - log p~(x)):  d/dx = -grad log p~ / n,  d/d ld = -1/n,  d/d log p(u) = 1/n
        dx = ops.asarray(np.ascontiguousarray(-gt / n, dtype=dtype))
        dld = ops.zeros((n,), dtype)
        ops.add_scalar(dld, -1.0 / n)
        du = self._sharded_backward(dx, dld, cache, count) if shards else self.transform.backward(dx, dld, cache)
        dlp = ops.zeros((n,), dtype)
        ops.add_scalar(dlp, 1.0 / n)
        ops.iadd(du, self.base.backward(dlp, bcache))
        self.base.rsample_backward(du, rcache)
        return loss

    def _sharded_backward(self, dx, dld, cache, count):
        """d input of ``_sharded_inverse``'s call with need_grad: each shard's VJP on its replica (the
        gradients into the replicas' buffers, then summed into the flow's in shard order)."""
        bounds, caches = cache
        du = np.empty(dx.shape, dx.dtype)
        pool = self._worker_pool()

        def task(replica, w):
            a, b = bounds[w]
            du[a:b] = replica.transform.backward(dx[a:b], dld[a:b], caches[w])

        pool.run(self, count, task)
        pool.add_grads(count)
        return du
