"""Invertible residual blocks y = x + g(x) with Lip(g) < 1, and their log-det estimators.

``g = W_L o phi o ... o phi o W_1`` (row vectors, ``h_l = a_{l-1} W~_l + b_l``, ``a_l = phi(h_l)``)
with spectrally normalised weights (``||W~_l||_2 <= c``) and a 1-Lipschitz ``phi`` (ELU or
LipSwish), so ``Lip(g) <= c^L < 1``: the block is invertible, by the fixed-point iteration
``x_{k+1} = y - g(x_k)``. Its log-det ``log det(I + J_g(x))`` is computed one of three ways:

* ``exact``: J from D Jacobian-vector products, then ``slogdet`` (small D: study, evaluation);
  gradient ``tr(A^{-1} dA)``, A = I + J;
* ``series``: ``sum_{k=1}^{n} (-1)^{k+1}/k v^T J^k v`` with Hutchinson probes v (Gaussian or
  Rademacher, m of them), and the exact gradient of that truncated estimate;
* ``roulette``: the Russian-roulette estimator of Residual Flows: the first terms exact, a
  geometric number of further terms reweighted by ``1 / P(N >= k)`` (unbiased), with the
  Neumann-series gradient ``sum_k (-1)^k v^T J^k (dJ) v / P(N >= k)``, whose backward needs one
  pass, not a graph of the series.

All three gradients reduce to one primitive, the VJP of ``u^T J(x) v`` (u, v held fixed) with
respect to the weights and x: back through the JVP ``J v = W_L (phi'(h_{L-1}) * ... (phi'(h_1) *
(v W_1)))``, which needs ``phi''`` (hence no ReLU), then through the forward pass.

References:
    Behrmann et al. Invertible Residual Networks (2019); Chen et al. Residual Flows for
    Invertible Generative Modeling (2019).
"""

import warnings
from typing import NamedTuple

import numpy as np

from ..core.module import Parameter, widths_text
from ..core.transform import Transform
from ..errors import ConfigError, GradientNotAvailable, InverseNotAvailable, ShapeError
from ..kernels import backend_of
from ..kernels._scalar import ACT_ELU, ACT_LIPSWISH
from ..nn.spectral import SpectralConv2d, SpectralLinear
from ._shapes import check_image, image_shape

__all__ = ["ResidualBlock", "ConvResidualBlock", "LOGDET_MODES"]

LOGDET_MODES = ("exact", "series", "roulette")
_ACTS = {"elu": ACT_ELU, "lipswish": ACT_LIPSWISH}


class _Pass(NamedTuple):
    x: object  # (N, D) input
    weights: tuple  # W~_l
    sn: tuple  # spectral-norm caches
    acts: tuple  # a_l, l = 1..L-1
    d1: tuple  # phi'(h_l)
    d2: tuple  # phi''(h_l)
    db: tuple  # learnable beta: (d phi/d beta, d phi'/d beta) at h_l; else empty


class ResidualCache(NamedTuple):
    inverse: bool
    fwd: _Pass
    mode: str
    aux: object  # exact: A^{-T} (N, D, D) host; series/roulette: the (u, v) pairs of the gradient


class ResidualBlock(Transform):
    """y = x + g(x), Lip(g) <= coeff^L < 1; log|det| = log det(I + J_g(x)) (exact or estimated).

    Arguments:
        dim: D. hidden: hidden widths of g (e.g. [128, 128]).
        activation: ``lipswish`` (x sigmoid(beta x) / 1.1) or ``elu``; ``relu`` is refused
            (its second derivative is 0, so the trainable log-det would have no x-gradient).
        beta, learn_beta: LipSwish's beta (its start value), and whether each hidden unit
            (channel, for images) learns its own (Residual Flows' learnable LipSwish). Every beta,
            negative ones too, keeps the activation 1-Lipschitz: its slope is a function of
            beta h alone, at most 1.0998 / 1.1.
        coeff: c, the spectral bound of every weight.
        logdet: ``exact`` | ``series`` | ``roulette`` (training); ``eval_logdet`` is used in
            evaluation mode (default ``exact`` when D <= 16, else the training estimator).
        n_terms: series terms (``series``), or always-computed terms (``roulette``).
        n_probes, probe: Hutchinson probes per sample and their law (``gaussian``/``rademacher``).
        roulette_p: success probability of the geometric number of extra roulette terms.
        tol, max_iter, on_nonconvergence: the fixed-point inverse stops when
            max |x_{k+1} - x_k| <= tol; beyond max_iter it raises ``InverseNotAvailable``
            (or warns, with ``"warn"``). The iterations used are in ``last_iterations``.
        zero_last: start g's last layer at zero, so the block starts as the identity (measured
            on the checkerboard, resflow CLI defaults: test NLL 4.137 against 4.016 without).
        rng: seed of the weights and of the probes.
    """

    #: rows per worker below which splitting a batch does not pay (``nfcore.threads.workers_for``)
    min_shard_rows = 1024

    def __init__(self, dim, hidden=(64, 64), activation="lipswish", coeff=0.97, logdet="series", n_terms=5,
                 n_probes=1, probe="gaussian", roulette_p=0.5, eval_logdet=None, n_power_iterations=1, beta=1.0,
                 learn_beta=False, tol=None, max_iter=2000, on_nonconvergence="raise", zero_last=False, rng=None,
                 dtype=np.float64):
        if activation == "relu":
            raise ConfigError("ReLU is refused in a residual block: its second derivative vanishes, so the "
                              "log-det estimators' gradients would miss every x-dependence; use lipswish or elu")
        if activation not in _ACTS:
            raise ConfigError(f"activation must be lipswish or elu, got {activation!r}")
        for name, mode in (("logdet", logdet), ("eval_logdet", eval_logdet)):
            if mode is not None and mode not in LOGDET_MODES:
                raise ConfigError(f"{name} must be one of {LOGDET_MODES}, got {mode!r}")
        if probe not in ("gaussian", "rademacher"):
            raise ConfigError(f"probe must be gaussian or rademacher, got {probe!r}")
        if on_nonconvergence not in ("raise", "warn"):
            raise ConfigError(f"on_nonconvergence must be raise or warn, got {on_nonconvergence!r}")
        if learn_beta and activation != "lipswish":
            raise ConfigError("learn_beta needs the lipswish activation")
        if not 0 < coeff < 1:
            raise ConfigError(f"coeff must be in (0, 1) for an invertible block, got {coeff}")
        rng = np.random.default_rng(rng)
        self.dim = int(dim)
        self.activation = activation
        self.act_code = _ACTS[activation]
        self.beta = float(beta)
        self.logdet = logdet
        self.eval_logdet = eval_logdet if eval_logdet is not None else ("exact" if self.dim <= 16 else logdet)
        self.n_terms = int(n_terms)
        self.n_probes = int(n_probes)
        self.probe = probe
        self.roulette_p = float(roulette_p)
        self.tol = tol if tol is not None else (1e-12 if np.dtype(dtype) == np.float64 else 1e-5)
        self.max_iter = int(max_iter)
        self.on_nonconvergence = on_nonconvergence
        self.last_iterations = None
        self.layers = self._build_layers([int(h) for h in hidden], coeff, n_power_iterations, zero_last, rng, dtype)
        widths = [layer.bias.data.shape[0] for layer in self.layers[:-1]]
        self.learn_beta = bool(learn_beta)
        for i, w in enumerate(widths if self.learn_beta else []):  # parameters beta_0, beta_1, ...
            setattr(self, f"beta_{i}", Parameter(np.full(w, self.beta, dtype=dtype)))
        self._beta_const = {}  # fixed beta: one (width,) array per (layer, dtype, backend)
        self._probe_rng = np.random.default_rng(rng.integers(2**63))
        # the roulette's number of extra terms for a call split into shards, drawn once for the whole
        # batch (before_shards) and read by every shard: shared with the workers' replicas
        self._shared_extra = [None]
        # a seed (every call draws the same probes: gradient checks), or explicit probes (m, D)
        # (sqrt(D) times the identity gives the exact traces: the series' truncation bias alone)
        self.frozen_probes = None

    def before_shards(self):
        if self.training and self.logdet == "roulette" and self.frozen_probes is None:
            self._shared_extra[0] = int(self._probe_rng.geometric(self.roulette_p)) - 1

    def _build_layers(self, hidden, coeff, n_power_iterations, zero_last, rng, dtype):
        sizes = [self.dim, *hidden, self.dim]
        last = len(sizes) - 2
        return [SpectralLinear(sizes[i], sizes[i + 1], coeff, n_power_iterations, zero_init=zero_last and i == last,
                               rng=rng, dtype=dtype) for i in range(len(sizes) - 1)]

    # -- the layers' linear parts (dense here; ConvResidualBlock overrides them) --------------------
    def _lin(self, i, a, wt):
        """a W~_i (no bias)."""
        ops = backend_of(a)
        t = ops.empty((a.shape[0], wt.shape[1]), a.dtype)
        ops.matmul(a, wt, t)
        return t

    def _pre(self, i, a, wt, bias):
        """a W~_i + b (one fused GEMM + bias pass)."""
        ops = backend_of(a)
        h = ops.empty((a.shape[0], wt.shape[1]), a.dtype)
        ops.linear_act(a, wt, bias, 0, 0.0, h)
        return h

    def _lin_t(self, i, d, wt):
        """d W~_i^T: the adjoint of _lin."""
        ops = backend_of(d)
        out = ops.empty((d.shape[0], wt.shape[0]), d.dtype)
        ops.matmul_nt(d, wt, out)
        return out

    def _wgrad(self, i, a, d, dw):
        """dw += a^T d: the gradient of <d, a W~_i> with respect to W~_i."""
        backend_of(a).matmul_tn_acc(a, d, dw)

    @staticmethod
    def _2d(a):
        """A 2-D view for element-wise ops (rows of channels for images)."""
        c = a.shape[a.ndim - 1]  # (the simulator's shapes take no negative index)
        return a if a.ndim == 2 else backend_of(a).reshape(a, (a.size // c, c))

    def _flat(self, a):
        """(N, D) view: one row per sample (per-sample sums and scalings)."""
        return backend_of(a).reshape(a, (a.shape[0], self.dim))

    def _unflat(self, v, like):
        """A (N, D) array in the block's own shape."""
        return backend_of(v).reshape(v, like.shape)

    # -- g and its derivatives ---------------------------------------------------------------
    def _beta(self, i, h):
        """LipSwish's beta of hidden layer i, one value per column of h's 2-D view."""
        if self.learn_beta:
            return getattr(self, f"beta_{i}").data
        ops = backend_of(h)
        width = h.shape[h.ndim - 1]
        key = (i, self.beta, np.dtype(h.dtype).str, ops.name)
        if key not in self._beta_const:
            self._beta_const[key] = ops.asarray(np.full(width, self.beta, dtype=h.dtype))
        return self._beta_const[key]

    def _g(self, x, update, need_grad=False):
        """One pass of g: (g(x), _Pass); need_grad keeps what a learnable beta's gradient needs."""
        ops = backend_of(x)
        weights, sns, acts, d1s, d2s, dbs = [], [], [], [], [], []
        a = x
        for i, layer in enumerate(self.layers):
            wt, sn = layer.normalized(update)
            weights.append(wt)
            sns.append(sn)
            h = self._pre(i, a, wt, layer.bias.data)
            if i == len(self.layers) - 1:
                return h, _Pass(x, tuple(weights), tuple(sns), tuple(acts), tuple(d1s), tuple(d2s), tuple(dbs))
            a, d1, d2 = (ops.empty(h.shape, h.dtype) for _ in range(3))
            beta = self._beta(i, h)
            ops.act2(self._2d(h), self.act_code, beta, self._2d(a), self._2d(d1), self._2d(d2))
            if self.learn_beta and need_grad:
                p, q = ops.empty(h.shape, h.dtype), ops.empty(h.shape, h.dtype)
                ops.lipswish_dbeta(self._2d(h), beta, self._2d(p), self._2d(q))
                dbs.append((p, q))
            acts.append(a)
            d1s.append(d1)
            d2s.append(d2)

    def _jvp(self, fp, v, keep=False):
        """J_g(x) v for v shaped like x; with keep, also the intermediates (t_l, s_l) of the chain."""
        ops = backend_of(v)
        s, ts, ss = v, [], [v]
        for i, wt in enumerate(fp.weights):
            t = self._lin(i, s, wt)
            if i == len(fp.weights) - 1:
                return (t, ts, ss) if keep else t
            s = ops.empty(t.shape, t.dtype)
            ops.mask_mul(self._2d(t), self._2d(fp.d1[i]), self._2d(s))
            ts.append(t)
            ss.append(s)

    def _vjp_input(self, fp, u):
        """J_g(x)^T u (no parameter gradients)."""
        ops = backend_of(u)
        r = u
        for i in range(len(fp.weights) - 1, -1, -1):
            dr = self._lin_t(i, r, fp.weights[i])
            if i > 0:
                ops.mask_mul(self._2d(dr), self._2d(fp.d1[i - 1]), self._2d(dr))
            r = dr
        return r

    def _jvp_backward(self, fp, u, v, dh, dw):
        """Accumulate d/d(W~, h) of sum_n u_n^T J(x_n) v_n into dw[l] and dh[l] (the phi'' path)."""
        ops = backend_of(u)
        _, ts, ss = self._jvp(fp, v, keep=True)
        last = len(fp.weights) - 1
        self._wgrad(last, ss[last], u, dw[last])
        ds = self._lin_t(last, u, fp.weights[last])
        for i in range(last - 1, -1, -1):
            dt = ops.empty(ds.shape, ds.dtype)
            ops.mask_mul(self._2d(ds), self._2d(fp.d1[i]), self._2d(dt))
            tmp = ops.empty(ds.shape, ds.dtype)
            ops.mask_mul(self._2d(ds), self._2d(ts[i]), self._2d(tmp))  # d(u^T J v) / d phi'(h_i)
            ops.mask_mul_acc(self._2d(tmp), self._2d(fp.d2[i]), self._2d(dh[i]))
            if fp.db:
                ops.mask_mul(self._2d(tmp), self._2d(fp.db[i][1]), self._2d(tmp))
                ops.colsum_acc(self._2d(tmp), getattr(self, f"beta_{i}").grad)
            self._wgrad(i, ss[i], dt, dw[i])
            if i > 0:
                ds = self._lin_t(i, dt, fp.weights[i])

    def _g_backward(self, fp, dout, dh_extra, dw):
        """Backward through g's forward pass with extra pre-activation gradients; returns dx."""
        ops = backend_of(dout)
        last = len(fp.weights) - 1
        ins = (fp.x, *fp.acts)
        dh = dout
        for i in range(last, -1, -1):
            layer = self.layers[i]
            if i < last:
                g = ops.empty(dh.shape, dh.dtype)
                if fp.db:  # dh is d/d a_i here: beta_i's share through a_i = phi(h_i; beta_i)
                    ops.mask_mul(self._2d(dh), self._2d(fp.db[i][0]), self._2d(g))
                    ops.colsum_acc(self._2d(g), getattr(self, f"beta_{i}").grad)
                ops.mask_mul(self._2d(dh), self._2d(fp.d1[i]), self._2d(g))
                ops.iadd(g, dh_extra[i])
                dh = g
            self._wgrad(i, ins[i], dh, dw[i])
            ops.colsum_acc(self._2d(dh), layer.bias.grad)
            dh = self._lin_t(i, dh, fp.weights[i])
        return dh

    # -- log-det estimators ------------------------------------------------------------------
    def _probes(self, n, dtype):
        fixed = self.frozen_probes
        if isinstance(fixed, np.ndarray):  # explicit probe vectors (m, D), the same for every sample
            v = np.broadcast_to(fixed[:, None, :], (fixed.shape[0], n, self.dim))
            return np.ascontiguousarray(v, dtype=dtype), int(np.random.default_rng(0).geometric(self.roulette_p)) - 1
        rng = np.random.default_rng(fixed) if fixed is not None else self._probe_rng
        shape = (self.n_probes, n, self.dim)
        v = rng.standard_normal(shape) if self.probe == "gaussian" else rng.choice([-1.0, 1.0], size=shape)
        shared = self._shared_extra[0] if self._shard is not None and fixed is None else None
        # roulette: number of terms beyond n_terms (one draw per batch, also when it is split in shards)
        extra = int(rng.geometric(self.roulette_p)) - 1 if shared is None else shared
        return v.astype(dtype), extra

    def _weights(self, mode, extra):
        """Coefficients c_k of v^T J^k v, k = 1..n: (-1)^{k+1}/k, roulette-reweighted."""
        n = self.n_terms + (extra if mode == "roulette" else 0)
        k = np.arange(1, n + 1)
        c = (-1.0) ** (k + 1) / k
        if mode == "roulette":
            beyond = np.maximum(k - self.n_terms, 0)
            c = c / (1.0 - self.roulette_p) ** beyond  # 1 / P(N >= k) for the geometric extra terms
        return c

    def _logdet(self, fp, mode, need_grad):
        ops = backend_of(fp.x)
        n = fp.x.shape[0]
        dtype = fp.x.dtype
        if mode == "exact":
            jac = np.empty((n, self.dim, self.dim))
            for j in range(self.dim):
                e = np.zeros((n, self.dim), dtype=dtype)
                e[:, j] = 1
                col = self._jvp(fp, self._unflat(ops.asarray(e), fp.x))
                jac[:, :, j] = np.asarray(ops.to_host(self._flat(col)))
            a = jac + np.eye(self.dim)
            sign, ld = np.linalg.slogdet(a)
            if np.any(sign <= 0):
                raise InverseNotAvailable("I + J_g has a non-positive determinant: the block is not invertible here")
            aux = np.linalg.inv(a).transpose(0, 2, 1) if need_grad else None
            return ops.asarray(ld.astype(dtype)), aux
        probes, extra = self._probes(n, dtype)
        c = self._weights(mode, extra)
        m = len(probes)
        ld = ops.zeros((n,), dtype)
        pairs = []  # (u, v): the log-det's gradient is the VJP of sum_n u_n^T J v_n over these pairs
        for v in probes:
            vd = self._unflat(ops.asarray(v), fp.x)
            if mode == "roulette":
                # v^T J^k v = <v, (J^T)^k v>: one chain of VJPs r_k = (J^T)^k v gives the estimate and
                # the Neumann gradient's u = sum_{k>=0} (-1)^k / P(N >= k+1) r_k, kept for backward
                u = ops.zeros(fp.x.shape, dtype) if need_grad else None
                r = vd
                for k in range(len(c)):
                    if need_grad:
                        ops.axpy(float(abs(c[k]) * (k + 1)) * (-1.0) ** k / m, r, u)
                    r = self._vjp_input(fp, r)
                    ops.rowdot_acc(self._flat(vd), self._flat(r), float(c[k]) / m, ld)
                if need_grad:
                    pairs.append((u, vd))
                continue
            # series: w_k = J^k v give the estimate; its exact gradient is sum_j VJP(U_j^T J w_j)
            # with U_j = sum_{k > j} c_k (J^T)^{k-1-j} v
            ws = [vd]
            for ck in c:
                ws.append(self._jvp(fp, ws[-1]))
                ops.rowdot_acc(self._flat(vd), self._flat(ws[-1]), float(ck) / m, ld)
            if need_grad:
                nt = len(c)
                rs = [vd]
                for _ in range(nt - 1):
                    rs.append(self._vjp_input(fp, rs[-1]))
                for j in range(nt):
                    u = ops.zeros(fp.x.shape, dtype)
                    for k in range(j + 1, nt + 1):
                        ops.axpy(float(c[k - 1]) / m, rs[k - 1 - j], u)
                    pairs.append((u, ws[j]))
        return ld, pairs

    def _logdet_backward(self, fp, mode, aux, dlogabsdet, dh, dw):
        """Accumulate the log-det's share of the gradient into dh, dw (per-sample weights dlogabsdet)."""
        ops = backend_of(dlogabsdet)
        n = fp.x.shape[0]
        dtype = fp.x.dtype

        def scaled(u):
            out = ops.empty(u.shape, dtype)
            ops.scale_rows(self._flat(u), dlogabsdet, self._flat(out))
            return out

        if mode == "exact":
            # d logdet = tr(A^-1 dJ) = sum_j <A^-T e_j, dJ e_j>
            for j in range(self.dim):
                e = np.zeros((n, self.dim), dtype=dtype)
                e[:, j] = 1
                u = self._unflat(ops.asarray(np.ascontiguousarray(aux[:, :, j], dtype=dtype)), fp.x)
                self._jvp_backward(fp, scaled(u), self._unflat(ops.asarray(e), fp.x), dh, dw)
            return
        for u, v in aux:
            self._jvp_backward(fp, scaled(u), v, dh, dw)

    # -- the contract --------------------------------------------------------------------------
    def _mode(self):
        return self.logdet if self.training else self.eval_logdet

    def _check(self, x, name):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{name} expected input of shape (N, {self.dim}), got {tuple(x.shape)}")

    def forward(self, x, context=None, need_grad=True):
        self._check(x, "ResidualBlock")
        ops = backend_of(x)
        g, fp = self._g(x, update=self.training and need_grad, need_grad=need_grad)
        y = ops.copy(x)
        ops.iadd(y, g)
        mode = self._mode()
        ld, aux = self._logdet(fp, mode, need_grad)
        return y, ld, (ResidualCache(False, fp, mode, aux) if need_grad else None)

    def inverse(self, z, context=None, need_grad=True):
        """x = F^{-1}(z) by x_{k+1} = z - g(x_k) from x_0 = z; log|det| = -log det(I + J_g(x))."""
        self._check(z, "ResidualBlock.inverse")
        ops = backend_of(z)
        x = ops.copy(z)
        it = 0
        for it in range(1, self.max_iter + 1):  # noqa: B007 (it is reported after the loop)
            g, _ = self._g(x, update=False)
            nxt = ops.copy(z)
            ops.axpy(-1.0, g, nxt)
            diff = ops.copy(nxt)
            ops.axpy(-1.0, x, diff)
            step = ops.max_abs(diff)  # one float leaves the device, not the whole difference
            x = nxt
            if step <= self.tol:
                break
        else:
            msg = (f"ResidualBlock.inverse: the fixed-point iteration did not reach tol={self.tol:g} in "
                   f"{self.max_iter} iterations (last step {step:.3g})")
            if self.on_nonconvergence == "raise":
                raise InverseNotAvailable(msg + "; raise max_iter or tol, or lower coeff")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        self.last_iterations = it
        _, fp = self._g(x, update=False)
        ld, _ = self._logdet(fp, self._mode(), False)
        ops.scale_inplace(ld, -1.0)
        return x, ld, (ResidualCache(True, None, self._mode(), it) if need_grad else None)

    def backward(self, dout, dlogabsdet, cache):
        """dx = dy + J_g^T dy + the log-det's share (through phi'' and the weights); inverse: refused."""
        self._require_cache(cache, "ResidualBlock")
        if cache.inverse:
            raise GradientNotAvailable("the residual block's inverse is a fixed-point iteration and has no gradient "
                                       "here; train residual flows by maximum likelihood (the forward direction)")
        ops = backend_of(dout)
        fp = cache.fwd
        dw = [ops.zeros(w.shape, w.dtype) for w in fp.weights]
        dh = [ops.zeros(a.shape, a.dtype) for a in fp.acts]
        self._logdet_backward(fp, cache.mode, cache.aux, dlogabsdet, dh, dw)
        dx = self._g_backward(fp, dout, dh, dw)
        ops.iadd(dx, dout)
        for layer, g, sn in zip(self.layers, dw, fp.sn):
            layer.weight_backward(g, sn)
        return dx

    def lipschitz_bound(self):
        """prod_l sigma(W~_l): an upper bound on Lip(g) (up to the power iteration's accuracy)."""
        out = 1.0
        for layer in self.layers:
            out *= min(layer.sigma(), layer.coeff)
        return out

    def extra_repr(self):
        sizes = [self.layers[0].in_features, *(layer.out_features for layer in self.layers)]
        kernels = "/".join(f"{k}x{k}" for k in (getattr(layer, "kernel_size", None) for layer in self.layers) if k)
        logdet = f"logdet {self.logdet}" + (f", {self.eval_logdet} in evaluation" if self.eval_logdet != self.logdet
                                             else "")
        notes = [kernels, self.activation + (" with learned beta" if self.learn_beta else ""), logdet]
        return f"{super().extra_repr()}, g {widths_text(sizes, notes)}"

    def config(self):
        return {"type": "ResidualBlock", "dim": self.dim, "logdet": self.logdet, "learn_beta": self.learn_beta}


class ConvResidualBlock(ResidualBlock):
    """y = x + g(x) on images (N, H, W, C), g = conv3x3 -> phi -> conv1x1 -> phi -> conv3x3.

    Every convolution is spectrally normalised as an operator on H x W images
    (``SpectralConv2d``), so Lip(g) <= c^L < 1 as for the vector block, and the inverse, the
    log-det estimators and their gradients are the same code with convolutions (and their
    adjoints) in place of the matrix products. ``exact`` needs D = H W C JVPs (small images).

    Arguments:
        shape: (H, W, C). hidden: channel widths of the hidden layers (the first conv is 3x3,
        the middle ones 1x1, the last 3x3). Others as for ``ResidualBlock``.
    """

    def __init__(self, shape, hidden=(64, 64), **kwargs):
        self.shape = image_shape(shape)
        h, w, c = self.shape
        super().__init__(h * w * c, hidden, **kwargs)

    def _build_layers(self, hidden, coeff, n_power_iterations, zero_last, rng, dtype):
        h, w, c = self.shape
        sizes = [c, *hidden, c]
        last = len(sizes) - 2
        return [SpectralConv2d((h, w), sizes[i], sizes[i + 1], 3 if i in (0, last) else 1, coeff, n_power_iterations,
                               zero_init=zero_last and i == last, rng=rng, dtype=dtype)
                for i in range(len(sizes) - 1)]

    def _pre(self, i, a, wt, bias):
        h = self.layers[i].apply(a, wt)
        backend_of(h).bias_act(self._2d(h), bias, 0, 0.0)
        return h

    def _lin(self, i, a, wt):
        return self.layers[i].apply(a, wt)

    def _lin_t(self, i, d, wt):
        return self.layers[i].apply_t(d, wt)

    def _wgrad(self, i, a, d, dw):
        self.layers[i].weight_grad_acc(a, d, dw)

    def _check(self, x, name):
        check_image(x, self.shape, name)

    def config(self):
        return {"type": "ConvResidualBlock", "shape": list(self.shape), "logdet": self.logdet,
                "learn_beta": self.learn_beta}
