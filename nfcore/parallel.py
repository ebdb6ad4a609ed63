"""Data parallelism inside one process: W worker threads, each on a contiguous shard of the rows.

How a training step runs on W workers (``Flow.loss_and_grad(x, workers=W)``, ``fit(workers=W)``):

1. The rows are cut into W contiguous shards, as equal as the batch allows.
2. Worker w runs the forward and the backward pass of its shard on its *replica* of the flow:
   a shallow copy of the module tree that shares every parameter and buffer array with the flow
   (nothing is copied), with a gradient buffer of its own and random generators of its own
   (reseeded from the flow's generators at every call, so the flow's generator state still makes
   a run reproducible and resumable).
3. The shards' losses and gradient buffers are added into the flow's in worker order: the sum
   never depends on thread timing, so the same seed and W give bit-identical results run to run.

Layers that couple the samples of a batch see the whole batch: batch norm in training mode
gathers the shards' moments (``Shard.gather``) and normalises with the whole batch's, and its
backward gathers its column sums likewise, so W workers compute what one worker does (to
rounding). Work that must see the whole batch once runs before the split: a call with an ActNorm
still waiting for its data-dependent initialisation runs unsplit, and the power iterations of
spectrally normalised layers run on the flow (``Module.before_shards``), not on the replicas.
Stochastic log-det estimators draw their probes per shard from independent streams: each shard's
estimate is unbiased, so their sum is.

Densities and samples run the same way without gradients: ``log_prob`` cuts the rows, ``sample``
draws all base noise first (the samples do not depend on W) and cuts the latents.

Threads run concurrently because the Numba kernels are ``nogil`` and numpy's GEMMs release the
GIL; while workers run, BLAS is held at one thread (``threads.blas_limit``), so W workers use W
cores. Worker threads run CPU flows only: a CUDA flow runs on one device and one stream.
"""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .core.module import Module, Parameter
from .threads import blas_limit

__all__ = ["Shard", "ShardGroup", "Workers", "shard_bounds"]


def shard_bounds(rows, count):
    """[(start, stop)] of ``count`` contiguous shards of ``rows`` rows, sizes differing by at most one."""
    q, r = divmod(int(rows), int(count))
    bounds, start = [], 0
    for w in range(count):
        stop = start + q + (1 if w < r else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


class ShardGroup:
    """What the shards of one call share: a barrier and two sets of slots for ``gather``.

    Slots alternate between consecutive gathers: a worker can write gather k + 2's slots only
    after every worker has passed gather k + 1's barrier, i.e. after each has read gather k's.
    """

    def __init__(self, count):
        self.count = int(count)
        self._barrier = threading.Barrier(self.count)
        self._slots = ([None] * self.count, [None] * self.count)
        self._rounds = [0] * self.count

    def gather(self, index, value):
        """Every shard's ``value``, in shard order (each shard calls it, in the same sequence)."""
        k = self._rounds[index]
        self._rounds[index] = k + 1
        slots = self._slots[k & 1]
        slots[index] = value
        self._barrier.wait()
        return list(slots)

    def abort(self):
        """A shard failed: every shard waiting (or about to wait) in ``gather`` raises."""
        self._barrier.abort()


class Shard:
    """A replica's place in the call: its index among ``count`` shards and the call's group.
    Every module of a replica holds the replica's ``Shard`` as ``_shard`` (a flow's own modules
    hold ``None``)."""

    __slots__ = ("index", "count", "group")

    def __init__(self, index, count):
        self.index, self.count, self.group = int(index), int(count), None

    def gather(self, value):
        return self.group.gather(self.index, value)


class _Replica:
    """A shallow copy of a flow's module tree for one worker: shared arrays, own gradients,
    own generators."""

    def __init__(self, flow, index):
        self.shard = Shard(index, 0)
        self.pairs = []  # (flow's module, replica's module)
        self.generators = []  # (flow's generator, replica's generator)
        self.flow = self._copy(flow, {})
        self.flow._module_list = dict.fromkeys(self.flow.modules())
        self.flow._workers = None
        params = self.flow.parameters()
        dtype = flow.dtype
        self.grad = np.zeros(sum(p.data.size for p in params), dtype)
        off = 0
        for p in params:
            p.grad = self.grad[off : off + p.data.size].reshape(p.data.shape)
            off += p.data.size
        self.params = params
        self.flow_params = flow.parameters()
        # what the replica shares, and where its gradients go
        self.sources = [(p.data, p.grad) for p in self.flow_params]
        self.flat = _flat_grad(self.flow_params)

    def _copy(self, module, memo):
        if id(module) in memo:
            return memo[id(module)]
        new = copy.copy(module)
        memo[id(module)] = new
        self.pairs.append((module, new))
        new._shard = self.shard
        for key, value in vars(module).items():
            if isinstance(value, Parameter):
                if id(value) not in memo:
                    p = Parameter.__new__(Parameter)
                    p.data, p.grad = value.data, None
                    memo[id(value)] = p
                setattr(new, key, memo[id(value)])
            elif isinstance(value, Module):
                setattr(new, key, self._copy(value, memo))
            elif isinstance(value, (list, tuple)) and any(isinstance(v, Module) for v in value):
                setattr(new, key, type(value)(self._copy(v, memo) if isinstance(v, Module) else v for v in value))
            elif isinstance(value, np.random.Generator):
                g = np.random.Generator(np.random.PCG64())
                setattr(new, key, g)
                self.generators.append((value, g))
        return new

    def current(self):
        """Whether the replica still shares the flow's parameter arrays and gradients (``to()``,
        an optimiser's flattening and a dtype change rebind them)."""
        return all(p.data is d and p.grad is g for p, (d, g) in zip(self.flow_params, self.sources))


def _flat_grad(params):
    """The one buffer the parameters' gradients are consecutive views of (an optimiser's), or None."""
    if not params:
        return None
    base = params[0].grad.base
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    addr = base.__array_interface__["data"][0]
    off = 0
    for p in params:
        g = p.grad
        if g.base is not base or g.__array_interface__["data"][0] != addr + off * base.itemsize:
            return None
        off += g.size
    return base if off == base.size else None


class Workers:
    """A flow's worker threads and replicas (kept on the flow, rebuilt when its arrays move)."""

    def __init__(self):
        self.replicas = []
        self.pool = None
        self.pool_size = 0

    def _ready(self, flow, count):
        if self.replicas and not self.replicas[0].current():
            self.replicas = []
        while len(self.replicas) < count:
            self.replicas.append(_Replica(flow, len(self.replicas)))
        if self.pool_size < count - 1:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
            self.pool = ThreadPoolExecutor(max_workers=count - 1, thread_name_prefix="nfcore-worker")
            self.pool_size = count - 1
        group = ShardGroup(count)
        for r in self.replicas[:count]:
            r.shard.count, r.shard.group = count, group
            r.grad.fill(0)
            for m, rm in r.pairs:
                rm.training = m.training
            if r.generators:
                for g, rg in r.generators:  # each replica its own stream, drawn from the flow's
                    rg.bit_generator.state = np.random.PCG64(int(g.integers(2**63))).state
        return self.replicas[:count], group

    def run(self, flow, count, task):
        """``task(replica_flow, shard_index)`` on ``count`` replicas at once; their results in shard order.

        Shard 0 runs on the calling thread. A failing shard aborts the others' gathers; every
        shard has finished before the first error (in shard order, a shard's own error before
        the aborted gathers it caused) is raised.
        """
        replicas, group = self._ready(flow, count)

        def one(w):
            try:
                return task(replicas[w].flow, w)
            except BaseException:
                group.abort()
                raise

        with blas_limit(1):
            futures = [self.pool.submit(one, w) for w in range(1, count)]
            first = None
            try:
                first = one(0)
            except BaseException as err:
                first = err
            results, errors = [first], [first] if isinstance(first, BaseException) else []
            for f in futures:
                try:
                    results.append(f.result())
                except BaseException as err:
                    errors.append(err)
        if errors:
            real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
            raise (real or errors)[0]
        return results

    def add_grads(self, count):
        """Add the replicas' gradient buffers into the flow's gradients, in shard order."""
        for r in self.replicas[:count]:
            if r.flat is not None:
                r.flat += r.grad
            else:
                for p, rp in zip(r.flow_params, r.params):
                    p.grad += rp.grad
