"""Element maths of coupling layers, written once: ``@element`` functions (inlined) that the
CPU loops (``cpu``) and the CUDA threads (``cuda``, through ``device_maths``) both call."""

import math

from .._scalar import element, softclamp, softclamp_grad


@element
def affine_map_row(a, h, idx_b, bound, b, logdet, ls, i, expand):
    """Row i of the affine coupling map, ls = softclamp(h_s) (kept for backward), t = h_t:
    expand: b_B = a_B e^ls + t, logdet[i] = sum_B ls; else b_B = (a_B - t) e^-ls, logdet[i] = -sum_B ls.
    Columns outside B are copied."""
    nb = idx_b.shape[0]
    for j in range(a.shape[1]):
        b[i, j] = a[i, j]
    acc = 0.0
    for j in range(nb):
        c = idx_b[j]
        v = softclamp(h[i, nb + j], bound)
        ls[i, j] = v
        if expand:
            b[i, c] = a[i, c] * math.exp(v) + h[i, j]
            acc += v
        else:
            b[i, c] = (a[i, c] - h[i, j]) * math.exp(-v)
            acc -= v
    logdet[i] = acc


@element
def affine_map_vjp_row(db, dlogdet, x, ls, idx_b, bound, da, dh, i, expand):
    """Row i of the map's VJP from the saved log-scales ls (one exp, no softclamp), x the map's
    input when expand, its output otherwise; raw' = softclamp' = 1 - (ls/bound)^2:
    expand:  da_B = db_B e^ls, dt = db_B, d raw = (db_B x_B e^ls + dlogdet) raw';
    else:    da_B = db_B e^-ls, dt = -da_B, d raw = (-db_B x_B - dlogdet) raw'.
    Columns outside B: da = db."""
    nb = idx_b.shape[0]
    for j in range(x.shape[1]):
        da[i, j] = db[i, j]
    for j in range(nb):
        c = idx_b[j]
        v = ls[i, j]
        g = db[i, c]
        if expand:
            s = math.exp(v)
            da[i, c] = g * s
            dh[i, j] = g
            dh[i, nb + j] = (g * x[i, c] * s + dlogdet[i]) * softclamp_grad(v, bound)
        else:
            gi = g * math.exp(-v)
            da[i, c] = gi
            dh[i, j] = -gi
            dh[i, nb + j] = (-g * x[i, c] - dlogdet[i]) * softclamp_grad(v, bound)


@element
def additive_row(x, h, idx_b, sign, out, i):
    """Row i: out = x with out_b = x_b + sign * t."""
    for j in range(x.shape[1]):
        out[i, j] = x[i, j]
    for j in range(idx_b.shape[0]):
        c = idx_b[j]
        out[i, c] = x[i, c] + sign * h[i, j]


@element
def additive_bwd_row(dout, idx_b, sign, din, dh, i):
    """Row i of additive coupling's VJP: din = dout; dt = sign * dout_b."""
    for j in range(dout.shape[1]):
        din[i, j] = dout[i, j]
    for j in range(idx_b.shape[0]):
        dh[i, j] = sign * dout[i, idx_b[j]]


