"""CPU ops of the continuous-flow dynamics: one call evaluates the whole network with its trace
estimate and regularisers (``cnf_field``), one more its VJP (``cnf_field_vjp``).

The dynamics f(z, t) is a concat-squash MLP (FFJORD): layer k maps h to
p = (h W_k + b_k) g_k(t) + c_k t, g_k(t) = sigmoid(a_k t + e_k), then phi(p) for the hidden
layers (the last is linear); the first layer's input is [z, context]. Its parameters are one
flat vector ``theta`` (per layer W, b, a, e, c; ``math.layer_sizes``). Along with the primal rows
the kernel pushes P tangent rows per sample (the probes u_p) through the network, forward mode:
v = (v_in W) g, then phi'(p) v after a hidden layer, so the output tangent is J u_p with
J = df/dz. The state y = [z, log|det|, kinetic, frobenius] (N, D + 3) gets its derivative
    dy = [f, w sum_p u_p . J u_p, |f|^2, w sum_p |J u_p|^2]
(w = 1 with the basis vectors as probes: the exact trace and |J|_F^2; w = 1/P with random
probes: Hutchinson's estimates). The GEMMs run on BLAS (``np.dot`` in the kernel), primal and
tangent rows of a layer as two products; the element passes are loops over the same rows.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from .._scalar import ACT_TANH
from ..coupling.fast32 import exp32
from ..registry import cpu_kernel
from .math import gate_and_shift, scaled_error_sq, smooth_act, smooth_slopes

_jit = njit(cache=True, nogil=True, error_model="numpy")


@_jit
def _mat(buf, off, rows, cols):
    """buf[off : off + rows cols] as a (rows, cols) array (a view)."""
    return buf[off : off + rows * cols].reshape((rows, cols))


def _tanh(x):
    """(tanh x, 1 - tanh^2 x) by ``math.smooth_act``'s formula; float32 through the vectorisable exp32."""


@overload(_tanh)
def _tanh_routes(x):
    if x == types.float32:
        def tanh32(x):
            one = np.float32(1)
            y = one - (one + one) / (exp32(x + x) + one)
            return y, one - y * y
        return tanh32

    def tanh64(x):
        y, d1, _ = smooth_act(x, ACT_TANH)
        return y, d1
    return tanh64


@_jit
def _colsum(a, j):
    """sum_i a[i, j]."""
    s = a.dtype.type(0)
    for i in range(a.shape[0]):
        s += a[i, j]
    return s


@_jit
def _offsets(n, p, dims, d):
    """Per layer k: offsets in the workspace of its input H_k (n, in), tangent input V_k (n p, in;
    d columns for k = 0), M_k = H_k W + b (n, out), T_k = V_k W (n p, out), pre-activation P_k
    (n, out); then the end (where the VJP's scratch starts)."""
    layers = dims.shape[0] - 1
    off = np.empty((layers + 1, 5), dtype=np.int64)
    o = 0
    for k in range(layers):
        a, b = dims[k], dims[k + 1]
        off[k, 0] = o
        o += n * a
        off[k, 1] = o
        o += n * p * (d if k == 0 else a)
        off[k, 2] = o
        o += n * b
        off[k, 3] = o
        o += n * p * b
        off[k, 4] = o
        o += n * b
    off[layers, 0] = o
    return off


@_jit
def _param_offsets(dims):
    layers = dims.shape[0] - 1
    off = np.empty(layers, dtype=np.int64)
    o = 0
    for k in range(layers):
        off[k] = o
        o += dims[k] * dims[k + 1] + 4 * dims[k + 1]
    return off


@_jit
def _forward(y, t, ctx, theta, dims, code, probes, work, off, poff):
    """Fill the workspace: every layer's input, tangent input, products and pre-activations."""
    n, d = y.shape[0], probes.shape[2]
    p = probes.shape[1]
    c = ctx.shape[1]
    layers = dims.shape[0] - 1
    h0 = _mat(work, off[0, 0], n, d + c)
    for i in range(n):
        for j in range(d):
            h0[i, j] = y[i, j]
        for j in range(c):
            h0[i, d + j] = ctx[i, j]
    v0 = _mat(work, off[0, 1], n * p, d)
    for i in range(n):
        for q in range(p):
            for j in range(d):
                v0[i * p + q, j] = probes[i, q, j]
    tt = theta.dtype.type(t)
    for k in range(layers):
        a, b = dims[k], dims[k + 1]
        o = poff[k]
        w = _mat(theta, o, a, b)
        bias = theta[o + a * b : o + a * b + b]
        ga = theta[o + a * b + b : o + a * b + 2 * b]
        gb = theta[o + a * b + 2 * b : o + a * b + 3 * b]
        sw = theta[o + a * b + 3 * b : o + a * b + 4 * b]
        h = _mat(work, off[k, 0], n, a)
        m = _mat(work, off[k, 2], n, b)
        tp = _mat(work, off[k, 3], n * p, b)
        pre = _mat(work, off[k, 4], n, b)
        if k == 0:
            np.dot(h, w, m)
            np.dot(_mat(work, off[0, 1], n * p, d), _mat(theta, o, d, b), tp)
        else:  # H_k and V_k are consecutive, as are M_k and T_k: one product for both
            np.dot(_mat(work, off[k, 0], n * (1 + p), a), w, _mat(work, off[k, 2], n * (1 + p), b))
        last = k == layers - 1
        gate, shift = _gates(tt, ga, gb, sw)
        for i in range(n):
            for j in range(b):
                mij = m[i, j] + bias[j]
                m[i, j] = mij
                pre[i, j] = mij * gate[j] + shift[j]
        if last:
            continue
        hn = _mat(work, off[k + 1, 0], n, b)
        vn = _mat(work, off[k + 1, 1], n * p, b)
        slope = np.empty(b, dtype=theta.dtype)
        for i in range(n):
            if code == ACT_TANH:  # the default: a loop without a branch (vectorised in float32)
                for j in range(b):
                    act, d1 = _tanh(pre[i, j])
                    hn[i, j] = act
                    slope[j] = d1 * gate[j]
            else:
                for j in range(b):
                    act, d1, _ = smooth_act(pre[i, j], code)
                    hn[i, j] = act
                    slope[j] = d1 * gate[j]
            for q in range(p):
                r = i * p + q
                for j in range(b):
                    vn[r, j] = slope[j] * tp[r, j]


@_jit
def _gates(t, ga, gb, sw):
    """Each output unit's gate sigmoid(a t + e) and shift c t."""
    b = ga.shape[0]
    gate = np.empty(b, dtype=ga.dtype)
    shift = np.empty(b, dtype=ga.dtype)
    for j in range(b):
        gate[j], shift[j] = gate_and_shift(t, ga[j], gb[j], sw[j])
    return gate, shift


@_jit
def _outputs(theta, dims, probes, w, t, work, off, poff, dy):
    """dy = [f, w sum_p u_p . J u_p, |f|^2, w sum_p |J u_p|^2] from the filled workspace."""
    n, p, d = probes.shape[0], probes.shape[1], probes.shape[2]
    layers = dims.shape[0] - 1
    k = layers - 1
    b = dims[layers]
    o = poff[k]
    a = dims[k]
    ga = theta[o + a * b + b : o + a * b + 2 * b]
    gb = theta[o + a * b + 2 * b : o + a * b + 3 * b]
    sw = theta[o + a * b + 3 * b : o + a * b + 4 * b]
    tp = _mat(work, off[k, 3], n * p, b)
    pre = _mat(work, off[k, 4], n, b)
    gate, _ = _gates(theta.dtype.type(t), ga, gb, sw)
    zero = dy.dtype.type(0)
    for i in range(n):
        tr = zero
        kin = zero
        fro = zero
        for j in range(d):
            f = pre[i, j]
            dy[i, j] = f
            kin += f * f
            for q in range(p):
                jv = gate[j] * tp[i * p + q, j]
                tr += probes[i, q, j] * jv
                fro += jv * jv
        dy[i, d] = w * tr
        dy[i, d + 1] = kin
        dy[i, d + 2] = w * fro


@cpu_kernel
def cnf_field(y, t, ctx, theta, dims, code, probes, w, dy, work):
    """dy = [f(z, t), w sum_p u_p . J u_p, |f|^2, w sum_p |J u_p|^2] for z = y[:, :D], J = df/dz,
    the probes u (N, P, D); ``work`` of ``math.field_work_size`` elements."""
    off = _offsets(y.shape[0], probes.shape[1], dims, probes.shape[2])
    poff = _param_offsets(dims)
    _forward(y, t, ctx, theta, dims, code, probes, work, off, poff)
    _outputs(theta, dims, probes, w, t, work, off, poff, dy)


@cpu_kernel
def cnf_field_vjp(y, t, ctx, theta, dims, code, probes, w, gy, dy, dz, dtheta, dctx, dt, work):
    """The field ``cnf_field`` (into dy) and its VJP for the cotangent gy (N, D + 3) of dy:
    dz = d<gy, dy>/dz (N, D), dtheta = d<gy, dy>/dtheta, dctx = d<gy, dy>/d context (N, C),
    dt[0] = d<gy, dy>/dt (all overwritten).

    Reverse mode through the primal rows h and tangent rows v of each layer,
    p = m g + c t with m = h W + b, and tangent T = v W (times g): with phi1 = phi'(p),
    phi2 = phi''(p) and the cotangents H (of phi(p)) and V (of phi1 g T):
        dp = H phi1 + phi2 g sum_q V_q T_q,   dT_q = V_q phi1 g,
    then dm = dp g, dW += h^T dm + v^T (dT g), db += sum dm, dh = dm W^T, dv = (dT g) W^T,
    dg = sum (dp m + dT T), da += dg g (1 - g) t, de += dg g (1 - g), dc += t sum dp,
    dt += sum_j (dg_j g_j (1 - g_j) a_j + c_j sum_i dp_ij).
    At the output: H = gy_f + 2 gy_kin f and V_q = w (gy_tr u_q + 2 gy_fro J u_q).
    """
    n, p, d = y.shape[0], probes.shape[1], probes.shape[2]
    c = ctx.shape[1]
    layers = dims.shape[0] - 1
    off = _offsets(n, p, dims, d)
    poff = _param_offsets(dims)
    _forward(y, t, ctx, theta, dims, code, probes, work, off, poff)
    _outputs(theta, dims, probes, w, t, work, off, poff, dy)
    tt = theta.dtype.type(t)
    dtheta[:] = 0
    widest = 0
    for k in range(layers + 1):
        widest = max(widest, dims[k])
    # two halves of scratch, each a layer's cotangents of its rows then of its tangent rows
    s0 = off[layers, 0]
    s2 = s0 + n * (1 + p) * widest
    two = dy.dtype.type(2)
    # cotangents of the output layer: H (n, D) and V (n p, D)
    hbar = _mat(work, s0, n, d)
    vbar = _mat(work, s0 + n * d, n * p, d)
    k = layers - 1
    o = poff[k]
    a, b = dims[k], dims[k + 1]
    ga = theta[o + a * b + b : o + a * b + 2 * b]
    gb = theta[o + a * b + 2 * b : o + a * b + 3 * b]
    sw = theta[o + a * b + 3 * b : o + a * b + 4 * b]
    tp = _mat(work, off[k, 3], n * p, b)
    gate, _ = _gates(tt, ga, gb, sw)
    for i in range(n):
        for j in range(d):
            hbar[i, j] = gy[i, j] + two * gy[i, d + 1] * dy[i, j]
            for q in range(p):
                vbar[i * p + q, j] = w * (gy[i, d] * probes[i, q, j] + two * gy[i, d + 2] * gate[j] * tp[i * p + q, j])
    tsum = dy.dtype.type(0)
    # alternate the two halves of the scratch: one holds this layer's cotangents, the other the next
    cur_h, nxt_h = s0, s2
    for k in range(layers - 1, -1, -1):
        a, b = dims[k], dims[k + 1]
        o = poff[k]
        wgt = _mat(theta, o, a, b)
        ga = theta[o + a * b + b : o + a * b + 2 * b]
        gb = theta[o + a * b + 2 * b : o + a * b + 3 * b]
        sw = theta[o + a * b + 3 * b : o + a * b + 4 * b]
        gate, _ = _gates(tt, ga, gb, sw)
        h = _mat(work, off[k, 0], n, a)
        m = _mat(work, off[k, 2], n, b)
        tp = _mat(work, off[k, 3], n * p, b)
        pre = _mat(work, off[k, 4], n, b)
        hb = _mat(work, cur_h, n, b)  # in: cotangent of the layer's output; out: dm
        vb = _mat(work, cur_h + n * b, n * p, b)  # in: cotangent of the output tangent; out: dT
        dw = _mat(dtheta, o, a, b)
        last = k == layers - 1
        y = _mat(work, off[k + 1, 0], n, b) if not last else pre  # phi(p) (the next layer's input)
        dg = np.zeros(b, dtype=dy.dtype)
        dps = np.zeros(b, dtype=dy.dtype)
        dbias = np.zeros(b, dtype=dy.dtype)
        s1 = np.ones(b, dtype=dy.dtype)
        s2 = np.zeros(b, dtype=dy.dtype)
        acc = np.zeros(b, dtype=dy.dtype)
        for i in range(n):
            if not last:
                for j in range(b):
                    s1[j], s2[j] = smooth_slopes(pre[i, j], y[i, j], code)
                    acc[j] = 0
            for q in range(p):
                r = i * p + q
                for j in range(b):
                    v = vb[r, j]
                    tq = tp[r, j]
                    acc[j] += v * tq
                    dtq = v * s1[j]
                    dg[j] += dtq * tq
                    vb[r, j] = dtq * gate[j]
            for j in range(b):
                dp = hb[i, j] * s1[j]
                if not last:
                    dp += s2[j] * gate[j] * acc[j]
                dg[j] += dp * m[i, j]
                dps[j] += dp
                dm = dp * gate[j]
                hb[i, j] = dm
                dbias[j] += dm
        for j in range(b):
            gs = dg[j] * gate[j] * (1 - gate[j])
            dtheta[o + a * b + j] += dbias[j]
            dtheta[o + a * b + b + j] += gs * tt
            dtheta[o + a * b + 2 * b + j] += gs
            dtheta[o + a * b + 3 * b + j] += dps[j] * tt
            tsum += gs * ga[j] + dps[j] * sw[j]
        if k == 0:
            dw += np.dot(h.T, hb)
            v0 = _mat(work, off[0, 1], n * p, d)
            dw0 = _mat(dtheta, o, d, b)  # the tangent rows meet only W's first D rows (z's)
            dw0 += np.dot(v0.T, vb)
            din = np.dot(hb, wgt.T)
            for i in range(n):
                for j in range(d):
                    dz[i, j] = din[i, j]
                for j in range(c):
                    dctx[i, j] = din[i, d + j]
        else:
            # rows and tangent rows in one product each: [H; V]^T [dM; dT] and [dM; dT] W^T
            both = _mat(work, cur_h, n * (1 + p), b)
            dw += np.dot(_mat(work, off[k, 0], n * (1 + p), a).T, both)
            np.dot(both, wgt.T, _mat(work, nxt_h, n * (1 + p), a))
            cur_h, nxt_h = nxt_h, cur_h
    dt[0] = tsum


@cpu_kernel
def rk_error_sumsq(err, y0, y1, cols, rtol, atol):
    """sum over every row i and the first ``cols`` columns j of
    (err_ij / (atol + rtol max(|y0_ij|, |y1_ij|)))^2 (2-D arrays), accumulated in float64: an
    adaptive step's squared RMS error norm times the number of entries it controls."""
    s = 0.0
    for i in range(err.shape[0]):
        for j in range(cols):
            s += scaled_error_sq(err[i, j], y0[i, j], y1[i, j], rtol, atol)
    return s
