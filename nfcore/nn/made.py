"""MADE: masked autoencoder for distribution estimation, with hand-written backward.

Every unit gets a degree. Inputs carry their position in the chosen order (1..D), context
inputs degree 0; a hidden unit of degree m may see units of degree <= m, and an output of
degree d only hidden units of degree < d. So output d depends on inputs that come before it
in the order, never on itself or later ones: the network is autoregressive.

The mask multiplies the weight in the forward pass (``W * M``) and the weight gradient in
backward (``dW += (x^T dh) * M``), so masked entries neither act nor learn, whatever values
an optimiser, a checkpoint or a test writes into them.

References:
    Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
    Estimation (2015).
"""

from typing import NamedTuple

import numpy as np

from ..core.module import Buffer, Module, Parameter, widths_text
from ..errors import ConfigError, ShapeError
from ..kernels import backend_of
from ..kernels._scalar import ACT_IDENTITY
from .activations import activation_code, activation_name

__all__ = ["made_degrees", "block_plan", "MaskedLinear", "MADE"]


def _input_degrees(dim, order, rng):
    if order == "natural":
        perm = np.arange(dim)
    elif order == "reversed":
        perm = np.arange(dim)[::-1]
    elif order == "random":
        perm = rng.permutation(dim)
    else:
        perm = np.asarray(order, dtype=np.int64)
        if perm.shape != (dim,) or not np.array_equal(np.sort(perm), np.arange(dim)):
            raise ConfigError(f"order must be natural, reversed, random or a permutation of 0..{dim - 1}")
    degrees = np.empty(dim, dtype=np.int64)
    degrees[perm] = np.arange(1, dim + 1)  # perm[k] is the k-th variable in the order
    return degrees


def made_degrees(dim, hidden, order="natural", hidden_degrees="sequential", rng=None):
    """(input degrees (D,), [hidden degrees per layer]) of a MADE.

    hidden_degrees: ``sequential`` (the degrees k mod (D-1) + 1, k = 0..width-1) or ``random``
    (uniform in [smallest degree of the layer below, D - 1]); either way each layer's units are
    returned sorted by degree.
    """
    if dim < 2:
        raise ConfigError(f"an autoregressive network needs dim >= 2, got {dim}")
    rng = np.random.default_rng(rng)
    d_in = _input_degrees(dim, order, rng)
    layers = []
    low = 1
    for width in hidden:
        if hidden_degrees == "sequential":
            deg = np.arange(width) % (dim - 1) + 1
        elif hidden_degrees == "random":
            deg = rng.integers(low, dim, size=width)
        else:
            raise ConfigError(f"hidden_degrees must be sequential or random, got {hidden_degrees!r}")
        # units sorted by degree: the masks become staircases, whose zero blocks the CPU GEMMs skip
        layers.append(np.sort(deg).astype(np.int64))
        low = int(deg.min())
    return d_in, layers


#: block edges are multiples of this (SIMD-friendly widths for BLAS); at most _MAX_BLOCKS blocks
_ALIGN = 16
_MAX_BLOCKS = 4


def _segments(mask):
    """Column blocks (c0, c1, r0, r1) of a (K, M) 0/1 mask covering every nonzero, or None.

    Columns are cut into at most _MAX_BLOCKS runs at multiples of _ALIGN; each run keeps the
    aligned row range spanning its nonzeros. The cuts minimise the rectangles' area (dynamic
    programming over the cut points); None when that saves less than a fifth of the dense area.
    """
    k, m = mask.shape
    nz = mask != 0
    any_col = nz.any(axis=0)
    lo = np.where(any_col, nz.argmax(axis=0), k)
    hi = np.where(any_col, k - nz[::-1].argmax(axis=0), 0)
    cuts = list(range(0, m, _ALIGN)) + [m]

    def rect(a, b):
        c0, c1 = cuts[a], cuts[b]
        r0, r1 = lo[c0:c1].min(), hi[c0:c1].max()
        if r1 <= r0:
            return 0, 0, 0
        r0 = (r0 // _ALIGN) * _ALIGN
        r1 = min(k, -(-r1 // _ALIGN) * _ALIGN)
        return (r1 - r0) * (c1 - c0), int(r0), int(r1)

    n = len(cuts) - 1
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(_MAX_BLOCKS + 1)]  # best[g][b]: cuts[0:b] in g blocks
    back = [[0] * (n + 1) for _ in range(_MAX_BLOCKS + 1)]
    best[0][0] = 0
    for g in range(1, _MAX_BLOCKS + 1):
        for b in range(1, n + 1):
            for a in range(b):
                c = best[g - 1][a] + rect(a, b)[0]
                if c < best[g][b]:
                    best[g][b], back[g][b] = c, a
    g = min(range(1, _MAX_BLOCKS + 1), key=lambda i: best[i][n])
    if best[g][n] > 0.8 * k * m:
        return None
    blocks, b = [], n
    while b > 0:
        a = back[g][b]
        _, r0, r1 = rect(a, b)
        blocks.append((cuts[a], cuts[b], r0, r1))
        b, g = a, g - 1
    return tuple(reversed(blocks))


def block_plan(mask):
    """(column blocks, row blocks) of a (K, M) weight mask for the CPU's block-sparse GEMMs.

    Column block (c0, c1, r0, r1): columns c0:c1 are zero outside rows r0:r1 (the forward
    product and the weight gradient); row block (r0, r1, c0, c1): rows r0:r1 are zero outside
    columns c0:c1 (the input gradient). Either is None where blocks would not pay. With MADE's
    degree-sorted units the masks are staircases: at D=8, 128 hidden units, the hidden layer's
    four blocks hold 72% of the dense area.
    """
    mask = np.asarray(mask)
    col = _segments(mask)
    row = _segments(mask.T)
    return col, row


class MaskedCache(NamedTuple):
    x: object  # (N, in) input
    y: object  # (N, out) output
    w: object  # (in, out) effective weight W * M


class MaskedLinear(Module):
    """y = phi(x (W * M) + b): a linear layer whose connections are restricted by a 0/1 mask M.

    Arguments:
        mask: (in, out) boolean array.
        activation, alpha: as for ``Linear``.
        zero_init: start with W = 0 (the MADE's output layer, so a flow starts as the identity).
    """

    def __init__(self, mask, activation="identity", alpha=None, zero_init=False, rng=None, dtype=np.float64):
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ConfigError("mask must be 2-D (in, out)")
        self.in_features, self.out_features = mask.shape
        self.act_code, self.alpha = activation_code(activation, alpha)
        rng = np.random.default_rng(rng)
        fan_in = np.maximum(mask.sum(0), 1)  # connections actually feeding each output
        if zero_init:
            w = np.zeros(mask.shape)
        else:
            w = rng.uniform(-1, 1, size=mask.shape) / np.sqrt(fan_in)
        self.weight = Parameter(np.ascontiguousarray(w * mask, dtype=dtype))
        self.bias = Parameter(np.zeros(self.out_features, dtype=dtype))
        self.mask = Buffer(mask.astype(dtype))
        self._after_load()

    def _after_load(self):
        self._col_blocks, self._row_blocks = block_plan(backend_of(self.mask.data).to_host(self.mask.data))

    def forward(self, x, need_grad=True):
        """(N, in) -> ((N, out), cache)."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(f"MaskedLinear expected x of shape (N, {self.in_features}), got {tuple(x.shape)}")
        ops = backend_of(x)
        w = ops.empty(self.weight.data.shape, x.dtype)
        ops.mask_mul(self.weight.data, self.mask.data, w)
        y = ops.empty((x.shape[0], self.out_features), x.dtype)
        ops.masked_linear_act(x, w, self.bias.data, self._col_blocks, self.act_code, self.alpha, y)
        return y, (MaskedCache(x, y, w) if need_grad else None)

    def backward(self, dy, cache, need_input_grad=True):
        """dh = dy phi'; db += sum_n dh; dW += (x^T dh) * M; returns dx = dh (W * M)^T.

        The products skip the weight's zero rectangles on the CPU (``block_plan``)."""
        x, y, w = cache
        ops = backend_of(dy)
        if self.act_code == ACT_IDENTITY:
            dh = dy
            ops.colsum_acc(dh, self.bias.grad)
        else:
            dh = ops.empty(y.shape, y.dtype)
            ops.bias_act_bwd(dy, y, self.act_code, self.alpha, dh, self.bias.grad)
        ops.masked_matmul_tn_acc(x, dh, self.mask.data, self._col_blocks, self.weight.grad)
        if not need_input_grad:
            return None
        dx = ops.empty(x.shape, x.dtype)
        ops.masked_matmul_nt(dh, w, self._row_blocks, dx)
        return dx


class MADECache(NamedTuple):
    layers: tuple


class MADE(Module):
    """An autoregressive MLP: (N, D) inputs (+ (N, C) context) -> (N, P * D) outputs.

    Output column ``p * D + d`` is parameter p of variable d and depends only on the variables
    before d in the order (and on the context).

    Arguments:
        dim: D.
        hidden: hidden widths, e.g. ``[128, 128]`` (each at least D - 1 for sequential degrees,
            so every degree is represented).
        params_per_dim: P, outputs per variable.
        order: ``natural``, ``reversed``, ``random`` or an explicit permutation (first variable
            first).
        hidden_degrees: ``sequential`` or ``random``.
        activation, alpha: hidden activation.
        context_dim: C, inputs of degree 0 that every hidden unit sees.
        residual: residual MADE blocks: every hidden layer after the first is
            ``h <- h + phi(h (W * M) + b)``; the hidden layers then share one degree vector (equal
            widths), so the skip connection keeps the autoregressive property.
        zero_last: zero-initialise the output layer.
        rng: Generator or seed (weights, random orders and degrees).

    Example:
        >>> import numpy as np
        >>> made = MADE(3, [8, 8], params_per_dim=2, rng=0)
        >>> y, _ = made.forward(np.ones((4, 3)))
        >>> y.shape
        (4, 6)
    """

    def __init__(self, dim, hidden=(64, 64), params_per_dim=2, order="natural", hidden_degrees="sequential",
                 activation="relu", alpha=None, context_dim=0, residual=False, zero_last=True, rng=None,
                 dtype=np.float64):
        rng = np.random.default_rng(rng)
        hidden = [int(h) for h in hidden]
        if not hidden:
            raise ConfigError("MADE needs at least one hidden layer")
        if residual and (len(hidden) < 2 or len(set(hidden)) > 1):
            raise ConfigError(f"residual MADE blocks need >= 2 hidden layers of equal width, got {hidden}")
        self.residual = bool(residual)
        self.dim = int(dim)
        self.context_dim = int(context_dim)
        self.params_per_dim = int(params_per_dim)
        d_in, d_hidden = made_degrees(self.dim, hidden, order, hidden_degrees, rng)
        if self.residual:
            d_hidden = [d_hidden[0]] * len(hidden)  # one degree per hidden unit across the blocks
        self.input_degrees = Buffer(d_in)
        deg_prev = np.concatenate([d_in, np.zeros(self.context_dim, dtype=np.int64)])
        self.layers = []
        for deg in d_hidden:
            mask = deg[None, :] >= deg_prev[:, None]
            self.layers.append(MaskedLinear(mask, activation, alpha, rng=rng, dtype=dtype))
            deg_prev = deg
        out_deg = np.tile(d_in, self.params_per_dim)
        mask = out_deg[None, :] > deg_prev[:, None]
        self.layers.append(MaskedLinear(mask, "identity", zero_init=zero_last, rng=rng, dtype=dtype))
        self._ctx_idx = np.arange(self.context_dim, dtype=np.int64)
        self._x_idx = np.arange(self.dim, dtype=np.int64)

    def _after_load(self):
        ops = backend_of(self.input_degrees.data)
        self._ctx_idx = ops.asarray(np.arange(self.context_dim, dtype=np.int64))
        self._x_idx = ops.asarray(np.arange(self.dim, dtype=np.int64))

    def effective_degrees(self):
        """Per hidden layer, each unit's effective degree (host arrays): the largest degree among
        the units that feed it (0 if only the context does). A unit is final once every input
        variable of degree <= its degree is."""
        deg_in = np.asarray(backend_of(self.input_degrees.data).to_host(self.input_degrees.data))
        prev = np.concatenate([deg_in, np.zeros(self.context_dim, dtype=np.int64)])
        out = []
        for layer in self.layers[:-1]:
            mask = np.asarray(backend_of(layer.mask.data).to_host(layer.mask.data)) != 0
            deg = np.where(mask, prev[:, None], 0).max(axis=0)
            out.append(deg.astype(np.int64))
            prev = deg
        return out

    def order(self):
        """The variables in autoregressive order (first one first)."""
        deg = np.asarray(backend_of(self.input_degrees.data).to_host(self.input_degrees.data))
        return np.argsort(deg, kind="stable")

    def extra_repr(self):
        sizes = [self.dim, *(layer.out_features for layer in self.layers)]
        order, natural = self.order(), np.arange(self.dim)
        kind = "natural" if np.array_equal(order, natural) else \
            "reversed" if np.array_equal(order, natural[::-1]) else "permuted"
        notes = [activation_name(self.layers[0].act_code), f"{kind} order",
                 f"context {self.context_dim}" if self.context_dim else "",
                 "residual" if getattr(self, "residual", False) else ""]
        return widths_text(sizes, notes)

    def _input(self, x, context):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"MADE expected x of shape (N, {self.dim}), got {tuple(x.shape)}")
        if not self.context_dim:
            if context is not None:
                raise ShapeError("this MADE was built without context (context_dim=0) but got one")
            return x
        if context is None or tuple(context.shape) != (x.shape[0], self.context_dim):
            got = None if context is None else tuple(context.shape)
            raise ShapeError(f"expected context of shape ({x.shape[0]}, {self.context_dim}), got {got}")
        ops = backend_of(x)
        xc = ops.empty((x.shape[0], self.dim + self.context_dim), x.dtype)
        ops.gather_cols(x, self._x_idx, xc, 0)
        ops.gather_cols(context, self._ctx_idx, xc, self.dim)
        return xc

    def forward(self, x, context=None, need_grad=True):
        """(N, D) [+ (N, C)] -> ((N, P * D), cache)."""
        h = self._input(x, context)
        caches = []
        for i, layer in enumerate(self.layers):
            a, c = layer.forward(h, need_grad)
            if self._is_residual(i):
                ops = backend_of(a)
                a = ops.copy(a)  # the layer's cache keeps phi(.) intact for its backward
                ops.add_inplace(a, h)
            h = a
            caches.append(c)
        return h, (MADECache(tuple(caches)) if need_grad else None)

    def _is_residual(self, i):
        return getattr(self, "residual", False) and 0 < i < len(self.layers) - 1

    def backward(self, dy, cache):
        """d input (N, D): the VJPs of the masked layers in reverse.

        h_0 = [x, context], h_i = phi(h_(i-1) (W_i * M_i) + b_i) (+ h_(i-1) in a residual block);
        for i = L down to 1 (``MaskedLinear.backward``):
            da = dh_i * phi'; dW_i += (h_(i-1)^T da) * M_i; db_i += sum_n da;
            dh_(i-1) = da (W_i * M_i)^T (+ dh_i through the skip connection);
        dx is the first D columns of dh_0 (the context's columns are dropped).
        """
        dh = dy
        for i in range(len(self.layers) - 1, -1, -1):
            dx = self.layers[i].backward(dh, cache.layers[i])
            if self._is_residual(i):
                backend_of(dx).add_inplace(dx, dh)  # the skip connection
            dh = dx
        if not self.context_dim:
            return dh
        ops = backend_of(dh)
        dx = ops.empty((dh.shape[0], self.dim), dh.dtype)
        ops.gather_cols(dh, self._x_idx, dx, 0)
        return dx
