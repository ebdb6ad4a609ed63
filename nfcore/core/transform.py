"""The Transform contract, composition (Chain) and inversion (Inverse).

Every transform maps data ``x`` to latent ``z`` in ``forward`` (the density direction)
and back in ``inverse`` (the sampling direction)::

    z, logabsdet, cache = t.forward(x, context)     # logabsdet: (N,) log|det dz/dx|
    x, logabsdet, cache = t.inverse(z, context)     # logabsdet: (N,) log|det dx/dz|
    dx = t.backward(dz, dlogabsdet, cache)          # VJP of the call that made cache

``backward`` accumulates parameter gradients into ``Parameter.grad`` and returns the
input gradient. ``cache`` holds everything backward needs; ``need_grad=False`` returns
``cache=None`` and keeps nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from .._types import Array, Cache
from ..errors import ConfigError, GradientNotAvailable
from ..kernels import backend_of
from .module import Module, shape_text

__all__ = ["Transform", "Chain", "Inverse"]


class Transform(Module):
    """z = f(x), log|det df/dx| per sample: the base class of invertible maps with a hand-written VJP."""

    def forward(self, x: Array, context: Array | None = None, need_grad: bool = True) -> tuple[Array, Array, Cache]:
        """(N, ...) data -> (z, logabsdet (N,), cache)."""
        raise NotImplementedError

    def inverse(self, z: Array, context: Array | None = None, need_grad: bool = True) -> tuple[Array, Array, Cache]:
        """(N, ...) latent -> (x, logabsdet (N,), cache)."""
        raise NotImplementedError

    def backward(self, dout: Array, dlogabsdet: Array, cache: Cache) -> Array:
        """d input (N, ...): the vector-Jacobian product of the call out = f(in) that made ``cache``.

        With g = dL/d(out) (N, ...) and c = dL/dlog|det| (N,), per sample n:
            dL/d(in)_n = (d out_n / d in_n)^T g_n + c_n d log|det|_n / d in_n,
            theta.grad += sum_n (d out_n / d theta)^T g_n + c_n d log|det|_n / d theta
        for every parameter theta. A forward call has in = x, out = z; an inverse call in = z, out = x.
        """
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Plain-dict description (for ``info``); builders own reconstruction."""
        return {"type": type(self).__name__}

    def extra_repr(self) -> str:
        """``[event shape]`` (from ``shape`` or ``dim``); layers that change it or hold a network say more."""
        shape = getattr(self, "shape", None)
        if shape is None and getattr(self, "dim", None) is not None:
            shape = (self.dim,)
        return shape_text(shape) if shape is not None else ""

    @staticmethod
    def _require_cache(cache, what):
        if cache is None:
            raise GradientNotAvailable(f"{what}: backward needs the cache of a call made with need_grad=True")


class ChainCache(NamedTuple):
    inverse: bool
    caches: tuple
    segments: tuple  # what made each cache: a layer, or a run of fused layers (transforms._fused.FusedRun)


class RecomputeCache(NamedTuple):
    """A memory-saving chain's cache: its output only (every layer input is recomputed)."""

    inverse: bool
    out: object
    context: object


class Chain(Transform):
    """f = f_K o ... o f_1 in the forward direction; log-dets add up.

    Arguments:
        transforms: the layers, data side first.
        memory_saving: keep no layer caches in a gradient call, only the chain's output;
            backward walks the layers in reverse and rebuilds each one's input from its
            output with the layer's own inverse, reruns that layer with a cache, and takes
            its VJP. Activation memory is then that of one layer, whatever the depth, for
            about one extra inverse and forward pass per layer. Gradients equal the plain
            chain's up to the round-off of the inverses. Needs both directions of every
            layer (a BatchNorm in training mode, whose inverse uses running averages, is
            refused).
    """

    def __init__(self, transforms: Iterable[Transform], memory_saving: bool = False) -> None:
        self.transforms = list(transforms)
        self.memory_saving = bool(memory_saving)

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, i):
        return self.transforms[i]

    def _run(self, x, context, need_grad, inverse):
        if need_grad and self.memory_saving:
            self._check_recomputable()
            out, total, _ = self._run(x, context, False, inverse)
            return out, total, RecomputeCache(inverse, out, context)
        ops = backend_of(x)
        total = ops.zeros((x.shape[0],), x.dtype)
        caches = []
        segments = self._segments(x, inverse)
        for t in segments:
            if isinstance(t, Transform):
                x, ld, c = (t.inverse if inverse else t.forward)(x, context, need_grad)
            else:  # a run of fused coupling layers: one kernel call
                x, ld, c = t.call(x, context, need_grad, expand=not inverse)
            ops.iadd(total, ld)
            caches.append(c)
        cache = ChainCache(inverse, tuple(caches), tuple(segments)) if need_grad else None
        return x, total, cache

    def _segments(self, x, inverse):
        """The layers in the call's order, consecutive fusable couplings grouped into one run
        (``transforms._fused.fused_segments``); kept per layer set, direction and backend."""
        from ..transforms._fused import fused_segments, overridden

        key = (inverse, backend_of(x).name, tuple(map(id, self.transforms)),
               tuple((getattr(t, "fused", None), overridden(t)) for t in self.transforms))
        memo = self.__dict__.setdefault("_segment_memo", {})
        found = memo.get(key)
        if found is None:
            if len(memo) > 16:  # worker replicas add their own layer sets: keep it small
                memo.clear()
            seq = list(reversed(self.transforms)) if inverse else list(self.transforms)
            found = memo[key] = fused_segments(seq, x)
        return found

    def forward(self, x: Array, context: Array | None = None, need_grad: bool = True) -> tuple[Array, Array, Cache]:
        return self._run(x, context, need_grad, inverse=False)

    def inverse(self, z: Array, context: Array | None = None, need_grad: bool = True) -> tuple[Array, Array, Cache]:
        return self._run(z, context, need_grad, inverse=True)

    def _check_recomputable(self):
        for t in self.transforms:
            if getattr(t, "batch_statistics", False) and t.training:
                raise ConfigError(
                    f"memory-saving backward needs exact inverses, but {type(t).__name__} normalises with batch "
                    "statistics in training mode; build the flow without batch_norm or without memory_saving"
                )

    def _backward_recompute(self, dout, dlogabsdet, cache):
        # the calls ran in `seq` order; undo them from the last, redo each with a cache, take its VJP
        seq = list(reversed(self.transforms)) if cache.inverse else list(self.transforms)
        y, context = cache.out, cache.context
        for t in reversed(seq):
            undo, redo = (t.forward, t.inverse) if cache.inverse else (t.inverse, t.forward)
            x_in = undo(y, context, need_grad=False)[0]
            _, _, c = redo(x_in, context, need_grad=True)
            dout = t.backward(dout, dlogabsdet, c)
            y = x_in
        return dout

    def backward(self, dout: Array, dlogabsdet: Array, cache: Cache) -> Array:
        """d input: the chain rule through the layers, in the reverse order of the calls.

        Forward z_0 = x, z_k = f_k(z_(k-1)), z = z_K, log|det| = sum_k ld_k; for k = K down to 1:
            dL/dz_(k-1) = J_k^T dL/dz_k + c d ld_k / dz_(k-1)   (f_k.backward),
        every layer with the same c = dL/dlog|det| (the log-dets add up), and dL/dx = dL/dz_0.
        An inverse call ran f_K^-1 first, so backward visits f_1 .. f_K. A memory-saving chain
        first rebuilds each layer's input z_(k-1) = f_k^-1(z_k) and reruns f_k with a cache.
        """
        self._require_cache(cache, "Chain")
        if isinstance(cache, RecomputeCache):
            return self._backward_recompute(dout, dlogabsdet, cache)
        # backward visits the calls in the reverse of the order they ran (a fused run: one call)
        for t, c in zip(reversed(cache.segments), reversed(cache.caches)):
            dout = t.backward(dout, dlogabsdet, c)
        return dout

    def extra_repr(self) -> str:
        n = len(self.transforms)
        return f"{n} layer{'s' if n != 1 else ''}" + (", memory-saving" if self.memory_saving else "")

    def tree_children(self):
        width = len(str(len(self.transforms) - 1))
        return [(f"{i:<{width}}", t) for i, t in enumerate(self.transforms)]

    def config(self) -> dict[str, Any]:
        return {"type": "Chain", "memory_saving": self.memory_saving,
                "transforms": [t.config() for t in self.transforms]}


class Inverse(Transform):
    """z = f^-1(x), log|det| = -log|det df/dz|: forward and inverse swapped (caches keep their direction)."""

    def __init__(self, transform: Transform) -> None:
        self.transform = transform

    def forward(self, x: Array, context: Array | None = None, need_grad: bool = True) -> tuple[Array, Array, Cache]:
        return self.transform.inverse(x, context, need_grad)

    def inverse(self, z: Array, context: Array | None = None, need_grad: bool = True) -> tuple[Array, Array, Cache]:
        return self.transform.forward(z, context, need_grad)

    def backward(self, dout: Array, dlogabsdet: Array, cache: Cache) -> Array:
        """The wrapped transform's VJP of the call that made ``cache`` (f^-1's forward is f's inverse):

        dL/d(in) = (d out / d in)^T dL/d(out) + dL/dlog|det| d log|det| / d in, unchanged.
        """
        return self.transform.backward(dout, dlogabsdet, cache)

    def tree_children(self):
        return [("", self.transform)]

    def config(self) -> dict[str, Any]:
        return {"type": "Inverse", "transform": self.transform.config()}
