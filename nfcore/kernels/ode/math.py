"""Element maths of the continuous-flow dynamics, written once: ``@element`` functions (inlined)
that the CPU loops (``cpu``) and the CUDA threads (``cuda``) both call.

The dynamics' trace needs the network's Jacobian, and its gradient the second derivative of
every activation, so each smooth activation returns (phi, phi', phi''). Every expression keeps
its argument's dtype (``one = x - x + x / x`` style constants; no literal promotes float32).
"""

import math

from .._scalar import ACT_SOFTPLUS, ACT_SWISH, ACT_TANH, element


@element
def sigmoid(x):
    """1 / (1 + e^-x) without overflow (one exp of -|x|)."""
    e = math.exp(-abs(x))
    inv = (e - e + 1) / (e + 1)
    return inv if x >= 0 else e * inv


@element
def smooth_act(x, code):
    """(phi(x), phi'(x), phi''(x)): tanh (phi' = 1 - y^2, phi'' = -2 y phi'), softplus
    log(1 + e^x) (phi' = s, phi'' = s (1 - s), s = sigmoid(x)), swish x s (phi' = s + x s (1 - s),
    phi'' = s (1 - s) (2 + x (1 - 2 s))); any other code: the identity (1, 0)."""
    one = x - x + 1
    if code == ACT_TANH:
        # tanh x = 1 - 2 / (e^(2x) + 1): one exp, no branch (libm's tanh costs ~4 exps); an absolute
        # error of one ulp of 1; e^(2x) = inf still gives 1
        y = one - (one + one) / (math.exp(x + x) + one)
        d1 = one - y * y
        return y, d1, -(y + y) * d1
    if code == ACT_SOFTPLUS:
        s = sigmoid(x)
        y = x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))
        return y, s, s * (one - s)
    if code == ACT_SWISH:
        s = sigmoid(x)
        q = s * (one - s)
        return x * s, s + x * q, q * (one + one + x * (one - s - s))
    return x, one, x - x


@element
def smooth_slopes(x, y, code):
    """(phi'(x), phi''(x)) given y = phi(x) too: tanh's from y alone (no exp), the others' from x."""
    if code == ACT_TANH:
        d1 = (y - y + 1) - y * y
        return d1, -(y + y) * d1
    _, d1, d2 = smooth_act(x, code)
    return d1, d2


@element
def gate_and_shift(t, a, b, c):
    """FFJORD's concat-squash time functions of one output unit: gate g = sigmoid(a t + b),
    shift c t; the layer is (h W + bias) g + c t."""
    return sigmoid(a * t + b), c * t


@element
def scaled_error_sq(e, a, b, rtol, atol):
    """(e / (atol + rtol max(|a|, |b|)))^2: one entry's share of an adaptive Runge-Kutta step's
    error norm (e the local error estimate, a and b the state before and after the step)."""
    q = e / (atol + rtol * max(abs(a), abs(b)))
    return q * q


def layer_sizes(dims):
    """Elements of each concat-squash layer in the flat parameter vector: W (in, out), bias, gate
    weight, gate bias and shift weight (out each), for the widths ``dims`` = [D + C, ..., D]."""
    return [a * b + 4 * b for a, b in zip(dims[:-1], dims[1:])]


def field_work_size(n, probes, dims, d):
    """Elements of the workspace of ``cnf_field`` / ``cnf_field_vjp`` for n rows, ``probes``
    tangents per row and widths ``dims`` (data width d): every layer's input, tangent input,
    h W + b, tangent product and pre-activation, which the VJP reads back."""
    size = 0
    for k, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        size += n * a + n * probes * (d if k == 0 else a) + 2 * n * b + n * probes * b
    # the VJP's two cotangent buffers (rows and tangent rows of the widest layer)
    return size + 2 * n * (1 + probes) * max(dims)


# -- one row at a time (the CUDA threads; the CPU runs the same maths as GEMMs over all rows) ---------
# The workspace layout is the CPU ops': per layer k the rows of H_k (n, in), V_k (n p, in; d columns
# for k = 0), M_k = H_k W + b, T_k = V_k W and the pre-activation P_k, at the offsets ``off[k]``
# (``cpu._offsets``); layer k's parameters start at ``poff[k]`` (W (in, out), b, a, e, c).


@element
def field_row(i, y, t, ctx, theta, dims, code, probes, w, dy, work, off, poff):
    """Row i of ``cnf_field``: the network forward with the tangents of the probes, then
    dy[i] = [f, w sum_q u_q . J u_q, |f|^2, w sum_q |J u_q|^2]."""
    p, d, c = probes.shape[1], probes.shape[2], ctx.shape[1]
    layers = dims.shape[0] - 1
    h0 = off[0, 0] + i * dims[0]
    for j in range(d):
        work[h0 + j] = y[i, j]
    for j in range(c):
        work[h0 + d + j] = ctx[i, j]
    for q in range(p):
        for j in range(d):
            work[off[0, 1] + (i * p + q) * d + j] = probes[i, q, j]
    zero = work[h0] - work[h0]
    for k in range(layers):
        a, b, o = dims[k], dims[k + 1], poff[k]
        au = d if k == 0 else a
        last = k == layers - 1
        for j in range(b):
            acc = theta[o + a * b + j]
            for m in range(a):
                acc += work[off[k, 0] + i * a + m] * theta[o + m * b + j]
            g, s = gate_and_shift(t, theta[o + a * b + b + j], theta[o + a * b + 2 * b + j],
                                  theta[o + a * b + 3 * b + j])
            work[off[k, 2] + i * b + j] = acc
            u = acc * g + s
            work[off[k, 4] + i * b + j] = u
            d1 = g - g + 1
            if not last:
                act, d1, _ = smooth_act(u, code)
                work[off[k + 1, 0] + i * b + j] = act
            for q in range(p):
                r = i * p + q
                tq = zero
                for m in range(au):
                    tq += work[off[k, 1] + r * au + m] * theta[o + m * b + j]
                work[off[k, 3] + r * b + j] = tq
                if not last:
                    work[off[k + 1, 1] + r * b + j] = d1 * g * tq
    k = layers - 1
    a, o = dims[k], poff[k]
    tr = zero
    kin = zero
    fro = zero
    for j in range(d):
        f = work[off[k, 4] + i * d + j]
        dy[i, j] = f
        kin += f * f
        g, _ = gate_and_shift(t, theta[o + a * d + d + j], theta[o + a * d + 2 * d + j], theta[o + a * d + 3 * d + j])
        for q in range(p):
            jv = g * work[off[k, 3] + (i * p + q) * d + j]
            tr += probes[i, q, j] * jv
            fro += jv * jv
    dy[i, d] = w * tr
    dy[i, d + 1] = kin
    dy[i, d + 2] = w * fro


@element
def field_vjp_row(i, t, theta, dims, code, probes, w, gy, dy, dz, dctx, work, off, poff, rev, roff, widest):
    """Row i of ``cnf_field_vjp``'s reverse pass (after ``field_row``): per layer k it keeps the row's
    dm = dp g, dp, dg = dp m + sum_q dT_q T_q and dT_q (pre-gate) at ``roff[k]`` in ``rev``, from
    which ``field_vjp_param`` sums the parameter gradients; dz[i], dctx[i] as the CPU op's."""
    p, d = probes.shape[1], probes.shape[2]
    n = dy.shape[0]
    layers = dims.shape[0] - 1
    two = dy[i, 0] - dy[i, 0] + 2
    # the row's cotangents of the current layer's output (h, then the p tangents) in one of two
    # buffers, buffer ``cur`` at hb(cur) and vb(cur); plain arithmetic (an index into a tuple that a
    # loop changes makes numba-cuda ask for a device to compile)
    hb0, vb0 = roff[layers, 0] + i * widest, roff[layers, 1] + i * p * widest
    hstep, vstep = n * widest, n * p * widest
    cur = i - i
    k = layers - 1
    a, o = dims[k], poff[k]
    for j in range(d):
        rev[hb0 + cur * hstep + j] = gy[i, j] + two * gy[i, d + 1] * dy[i, j]
        g, _ = gate_and_shift(t, theta[o + a * d + d + j], theta[o + a * d + 2 * d + j], theta[o + a * d + 3 * d + j])
        for q in range(p):
            jv = g * work[off[k, 3] + (i * p + q) * d + j]
            rev[vb0 + cur * vstep + q * widest + j] = w * (gy[i, d] * probes[i, q, j] + two * gy[i, d + 2] * jv)
    for k in range(layers - 1, -1, -1):
        a, b, o = dims[k], dims[k + 1], poff[k]
        last = k == layers - 1
        for j in range(b):
            g, _ = gate_and_shift(t, theta[o + a * b + b + j], theta[o + a * b + 2 * b + j],
                                  theta[o + a * b + 3 * b + j])
            pre = work[off[k, 4] + i * b + j]
            s1 = g - g + 1
            s2 = g - g
            if not last:
                s1, s2 = smooth_slopes(pre, work[off[k + 1, 0] + i * b + j], code)
            acc = g - g
            dg = g - g
            for q in range(p):
                r = i * p + q
                v = rev[vb0 + cur * vstep + q * widest + j]
                tq = work[off[k, 3] + r * b + j]
                acc += v * tq
                dtq = v * s1
                dg += dtq * tq
                rev[roff[k, 3] + r * b + j] = dtq * g
            dp = rev[hb0 + cur * hstep + j] * s1
            if not last:
                dp += s2 * g * acc
            dg += dp * work[off[k, 2] + i * b + j]
            rev[roff[k, 0] + i * b + j] = dp * g
            rev[roff[k, 1] + i * b + j] = dp
            rev[roff[k, 2] + i * b + j] = dg
        nxt = 1 - cur
        for m in range(a):  # the input's cotangents: dm W^T and (for k > 0) dT W^T
            s = g - g
            for j in range(b):
                s += rev[roff[k, 0] + i * b + j] * theta[o + m * b + j]
            if k == 0:
                if m < d:
                    dz[i, m] = s
                else:
                    dctx[i, m - d] = s
            else:
                rev[hb0 + nxt * hstep + m] = s
                for q in range(p):
                    s = g - g
                    for j in range(b):
                        s += rev[roff[k, 3] + (i * p + q) * b + j] * theta[o + m * b + j]
                    rev[vb0 + nxt * vstep + q * widest + m] = s
        cur = nxt


@element
def field_vjp_param(e, t, theta, dims, p, d, n, work, off, poff, rev, roff, dtheta):
    """dtheta[e] summed over the rows from ``field_vjp_row``'s per-row terms: W by h^T dm + v^T dT,
    b by sum dm, the gate's a and e by g (1 - g) sum dg (times t for a), the shift c by t sum dp."""
    layers = dims.shape[0] - 1
    k = 0
    while k + 1 < layers and e >= poff[k + 1]:
        k += 1
    a, b, o = dims[k], dims[k + 1], poff[k]
    au = d if k == 0 else a
    loc = e - o
    s = theta[0] - theta[0]
    if loc < a * b:
        m, j = loc // b, loc % b
        for i in range(n):
            s += work[off[k, 0] + i * a + m] * rev[roff[k, 0] + i * b + j]
        if m < au:
            for r in range(n * p):
                s += work[off[k, 1] + r * au + m] * rev[roff[k, 3] + r * b + j]
        dtheta[e] = s
        return
    part, j = (loc - a * b) // b, (loc - a * b) % b
    col = 0 if part == 0 else (2 if part in (1, 2) else 1)  # dm, dp, dg as kept by field_vjp_row
    for i in range(n):
        s += rev[roff[k, col] + i * b + j]
    if part in (1, 2):
        g, _ = gate_and_shift(t, theta[o + a * b + b + j], theta[o + a * b + 2 * b + j], theta[o + a * b + 3 * b + j])
        s = s * g * (1 - g)
    if part in (1, 3):
        s = s * t
    dtheta[e] = s


@element
def field_vjp_time(t, theta, dims, n, poff, rev, roff, dt):
    """dt[0] = sum over layers and units of g (1 - g) a sum_i dg + c sum_i dp (the gates' and
    shifts' time derivatives), from ``field_vjp_row``'s per-row terms."""
    s = theta[0] - theta[0]
    for k in range(dims.shape[0] - 1):
        a, b, o = dims[k], dims[k + 1], poff[k]
        for j in range(b):
            sdg = s - s
            sdp = s - s
            for i in range(n):
                sdg += rev[roff[k, 2] + i * b + j]
                sdp += rev[roff[k, 1] + i * b + j]
            g, _ = gate_and_shift(t, theta[o + a * b + b + j], theta[o + a * b + 2 * b + j],
                                  theta[o + a * b + 3 * b + j])
            s += sdg * g * (1 - g) * theta[o + a * b + b + j] + sdp * theta[o + a * b + 3 * b + j]
    dt[0] = s
