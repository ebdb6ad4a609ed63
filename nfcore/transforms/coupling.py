"""Coupling layers: NICE's additive and RealNVP's affine coupling, with masks.

A boolean mask splits the D inputs: ``mask[j] = True`` columns (b) are transformed,
the others (a) pass through unchanged and, with the optional context, feed the
conditioner network: ``h = net([x_a, context])``. The Jacobian is triangular, so the
log-det is a sum over the b columns. The base class gathers, runs the network and
routes gradients; subclasses supply only the fused element-wise map.
"""

from typing import NamedTuple

import numpy as np

from ..core.module import Buffer
from ..core.transform import Transform
from ..errors import ConfigError, ShapeError
from ..kernels import backend_of
from ..nn.linear import MLP
from ._fused import FusedCache, narrow, net_map, net_map_vjp

__all__ = ["make_mask", "Coupling", "AdditiveCoupling", "AffineCoupling"]


def make_mask(dim, kind="alternating", parity=0, rng=None):
    """Boolean (dim,) mask, True where a coupling layer transforms.

    kind: ``half`` (second half, or first when parity is odd), ``alternating``
    (odd columns, or even when parity is odd), ``random`` (a fixed random half drawn
    from ``rng``; parity flips it).
    """
    if dim < 2:
        raise ConfigError(f"a coupling layer needs dim >= 2, got {dim}")
    j = np.arange(dim)
    if kind == "half":
        mask = j >= dim // 2
    elif kind == "alternating":
        mask = j % 2 == 1
    elif kind == "random":
        mask = np.zeros(dim, dtype=bool)
        mask[np.random.default_rng(rng).permutation(dim)[: dim - dim // 2]] = True
    else:
        raise ConfigError(f"unknown mask kind {kind!r}; choose half, alternating or random")
    return ~mask if parity % 2 else mask


class CouplingCache(NamedTuple):
    inverse: bool
    x: object  # the data-side array: the forward input or the inverse output, (N, D)
    aux: object  # what the element-wise map's backward needs (affine: the log-scales (N, B))
    net: object  # the conditioner's cache, or the fused kernels' (``_fused.FusedCache``)


class Coupling(Transform):
    """z_a = x_a, z_b = g(x_b; h), h = net([x_a, context]); log|det| = sum_b log|dg/dx_b|.

    A template: subclasses give the element-wise map g and its VJP.
    """

    #: conditioner outputs per transformed column
    params_per_dim = 1
    #: the coupling map is affine (else additive), for the fused kernels
    _affine = False
    #: run the fused kernels (``_fused``) where they apply (False: always op by op, the reference)
    fused = True

    def __init__(self, mask, hidden=(64, 64), activation="relu", context_dim=0, residual=False, rng=None,
                 dtype=np.float64):
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 1 or mask.all() or not mask.any():
            raise ConfigError("coupling mask must be 1-D with at least one True and one False entry")
        self.dim = int(mask.size)
        self.context_dim = int(context_dim)
        self.mask = Buffer(mask.astype(np.int8))
        self._after_load()
        nb = int(mask.sum())
        self.net = MLP(self.dim - nb + self.context_dim, self.params_per_dim * nb, hidden=hidden,
                       activation=activation, residual=residual, zero_last=True, rng=rng, dtype=dtype)

    def _after_load(self):
        mask = np.asarray(backend_of(self.mask.data).to_host(self.mask.data)).astype(bool)
        ops = backend_of(self.mask.data)
        self.idx_a = ops.asarray(np.flatnonzero(~mask).astype(np.int64))
        self.idx_b = ops.asarray(np.flatnonzero(mask).astype(np.int64))
        self._ctx_idx = ops.asarray(np.arange(getattr(self, "context_dim", 0), dtype=np.int64))

    def _check(self, x, context):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{type(self).__name__} expected input of shape (N, {self.dim}), got {tuple(x.shape)}")
        if self.context_dim:
            if context is None or context.ndim != 2 or context.shape != (x.shape[0], self.context_dim):
                got = None if context is None else tuple(context.shape)
                raise ShapeError(f"expected context of shape ({x.shape[0]}, {self.context_dim}), got {got}")
        elif context is not None:
            raise ShapeError("this coupling layer was built without context (context_dim=0) but got one")

    def _conditioner_input(self, x, context):
        self._check(x, context)
        ops = backend_of(x)
        na = self.dim - self.idx_b.shape[0]
        xa = ops.empty((x.shape[0], na + self.context_dim), x.dtype)
        ops.gather_cols(x, self.idx_a, xa, 0)
        if self.context_dim:
            ops.gather_cols(context, self._ctx_idx, xa, na)
        return xa

    @property
    def min_shard_rows(self):
        """Rows per worker below which splitting a batch does not pay (``nfcore.threads.workers_for``;
        measured: benchmarks/RESULTS.md, "Worker threads"): 512 on the fused kernels, 1024 op by op
        (wide conditioners, whose GEMMs already use BLAS's threads)."""
        return 512 if self.fused and narrow(self.net.linears, self.net.residual) else 1024

    def _fused_call(self, x, context, need_grad, inverse):
        """``_call`` in one kernel (``_fused.net_map``): the same maths."""
        self._check(x, context)
        out, logdet, ls, fcache = net_map(x, context, self.idx_a, self.idx_b, self.net.linears, False,
                                          getattr(self, "scale_bound", 1.0), self._affine, not inverse, need_grad)
        return out, logdet, (CouplingCache(inverse, out if inverse else x, ls, fcache) if need_grad else None)

    def _call(self, x, context, need_grad, inverse):
        if self.fused and narrow(self.net.linears, self.net.residual):
            return self._fused_call(x, context, need_grad, inverse)
        xa = self._conditioner_input(x, context)
        h, net_cache = self.net.forward(xa, need_grad)
        out, logdet, aux = self._map(x, h, inverse)
        cache = None
        if need_grad:
            cache = CouplingCache(inverse, out if inverse else x, aux, net_cache)
        return out, logdet, cache

    def forward(self, x, context=None, need_grad=True):
        return self._call(x, context, need_grad, inverse=False)

    def inverse(self, z, context=None, need_grad=True):
        return self._call(z, context, need_grad, inverse=True)

    def backward(self, dout, dlogabsdet, cache):
        """dL/dx = (dz/dx)^T dL/dz + (d log|det|/dx)^T dL/dlog|det|, and the conditioner's weights.

        With h = net([x_a, c]): the element-wise map's VJP (``_map_bwd``, formulas in the
        subclasses) gives dL/dx_b and dL/dh; the network's backward adds J_h(x_a)^T dL/dh into
        the pass-through columns a (on top of dL/dz_a, which passes unchanged) and accumulates
        its weight and bias gradients. The inverse direction is the same with the roles of
        x and z swapped.
        """
        self._require_cache(cache, type(self).__name__)
        if isinstance(cache.net, FusedCache):
            return net_map_vjp(dout, dlogabsdet, cache.x, cache.aux, self.idx_a, self.idx_b, self.net.linears, False,
                               getattr(self, "scale_bound", 1.0), self._affine, not cache.inverse, cache.net)
        din, dh = self._map_bwd(dout, dlogabsdet, cache)
        dxa = self.net.backward(dh, cache.net)
        backend_of(din).scatter_add_cols(dxa, self.idx_a, din)
        return din

    def _map(self, x, h, inverse):
        """(out, logdet, aux): the element-wise map given the conditioner output h."""
        raise NotImplementedError

    def _map_bwd(self, dout, dlogabsdet, cache):
        """(d input, d h): its VJP."""
        raise NotImplementedError

    def _dh(self, dout):
        ops = backend_of(dout)
        return ops.empty((dout.shape[0], self.params_per_dim * self.idx_b.shape[0]), dout.dtype)

    def extra_repr(self):
        context = f", context {self.context_dim}" if self.context_dim else ""
        return f"{super().extra_repr()}{context}, conditioner MLP {self.net.extra_repr()}"

    def config(self):
        return {"type": type(self).__name__, "dim": self.dim, "context_dim": self.context_dim}


class AdditiveCoupling(Coupling):
    """NICE: z_a = x_a, z_b = x_b + t(x_a); log|det| = 0.

    Arguments:
        mask: boolean (D,), True for transformed columns (see ``make_mask``).
        hidden, activation, residual: the conditioner MLP.
        context_dim: width of the optional context.

    References:
        Dinh, Krueger, Bengio. NICE: Non-linear Independent Components Estimation (2014).
    """

    params_per_dim = 1

    def _map(self, x, h, inverse):
        ops = backend_of(x)
        out = ops.empty(x.shape, x.dtype)
        ops.additive_coupling(x, h, self.idx_b, -1.0 if inverse else 1.0, out)
        return out, ops.zeros((x.shape[0],), x.dtype), None

    def _map_bwd(self, dout, dlogabsdet, cache):
        """z_b = x_b +- t: dL/dx = dL/dz (every column), dL/dt = +-dL/dz_b; the log-det (0) adds nothing."""
        ops = backend_of(dout)
        din = ops.empty(dout.shape, dout.dtype)
        dh = self._dh(dout)
        ops.additive_coupling_bwd(dout, self.idx_b, -1.0 if cache.inverse else 1.0, din, dh)
        return din, dh


class AffineCoupling(Coupling):
    """RealNVP: z_b = x_b * exp(log s) + t with log s = B tanh(h_s / B); log|det| = sum log s.

    The log-scale is soft-clamped to (-B, B) (``scale_bound``, default 3): near zero it is
    the raw output, so a zero-initialised conditioner starts at the identity, and it can
    never overflow exp.

    References:
        Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP (2017).
    """

    params_per_dim = 2
    _affine = True

    def __init__(self, mask, hidden=(64, 64), activation="relu", context_dim=0, residual=False,
                 scale_bound=3.0, rng=None, dtype=np.float64):
        if not scale_bound > 0:
            raise ConfigError(f"scale_bound must be > 0, got {scale_bound}")
        self.scale_bound = float(scale_bound)
        super().__init__(mask, hidden, activation, context_dim, residual, rng, dtype)

    def _map(self, x, h, inverse):
        ops = backend_of(x)
        out = ops.empty(x.shape, x.dtype)
        logdet = ops.empty((x.shape[0],), x.dtype)
        ls = ops.empty((x.shape[0], self.idx_b.shape[0]), x.dtype)
        ops.affine_map(x, h, self.idx_b, x.dtype.type(self.scale_bound), not inverse, out, logdet, ls)
        return out, logdet, ls

    def _map_bwd(self, dout, dlogabsdet, cache):
        """With g = dL/dz, c = dL/dlog|det| (per row) and l = B tanh(h_s / B):

        forward z_b = x_b e^l + t, log|det| = sum l:
            dL/dx_b = g_b e^l,  dL/dt = g_b,  dL/dl = g_b x_b e^l + c;
        inverse x_b = (z_b - t) e^-l, log|det| = -sum l:
            dL/dz_b = g_b e^-l,  dL/dt = -g_b e^-l,  dL/dl = -g_b x_b - c;
        and dL/dh_s = dL/dl (1 - (l / B)^2) through the soft bound; columns a pass g unchanged.
        """
        ops = backend_of(dout)
        din = ops.empty(dout.shape, dout.dtype)
        dh = self._dh(dout)
        ops.affine_map_vjp(dout, dlogabsdet, cache.x, cache.aux, self.idx_b, dout.dtype.type(self.scale_bound),
                           not cache.inverse, din, dh)
        return din, dh
