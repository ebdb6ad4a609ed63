"""Element maths of element-wise ops, written once: ``@element`` functions (inlined) that the
CPU loops (``cpu``) and the CUDA threads (``cuda``, through ``device_maths``) both call."""

import math

from .._scalar import element

LOG_2PI = math.log(2.0 * math.pi)


@element
def column_scale(ls, sign):
    """e^ls (sign +1) or e^-ls (sign -1), in ls's precision: a diagonal map's column factor, which
    the CPU loops compute once per column (an exp per element cost ~7 ns of the ~8 each took)."""
    if sign > 0:
        return math.exp(ls)
    return math.exp(-ls)


@element
def diag_affine_value(v, loc, e, sign):
    """One element of the diagonal affine map given its column's e = e^(sign ls):
    v e^ls + loc (sign +1) or (v - loc) e^-ls (sign -1)."""
    if sign > 0:
        return v * e + loc
    return (v - loc) * e


@element
def diag_affine_grad(g, o, loc, e, dl, sign):
    """(din, dloc term, dls term) of one element given its output o, its column's e = e^(sign ls)
    (a column reduction computes it once) and the sample's dlogdet dl.

    Forward (sign +1), o = x e^ls + loc, logdet += ls: din = g e^ls, dloc += g, dls += g (o - loc) + dl.
    Inverse (sign -1), o = (x - loc) e^-ls, logdet -= ls: din = g e^-ls, dloc -= din, dls -= g o + dl.
    """
    gi = g * e
    if sign > 0:
        return gi, g, g * (o - loc) + dl
    return gi, -gi, -(g * o + dl)


@element
def normal_row(z, i):
    """log N(z[i]; 0, I) = -0.5 |z_i|^2 - D/2 log(2 pi)."""
    d = z.shape[1]
    acc = 0.0
    for j in range(d):
        acc += z[i, j] * z[i, j]
    return -0.5 * acc - 0.5 * d * LOG_2PI


@element
def diag_normal_term(z, loc, inv_s, ls):
    """One element's term of log N(z; mu, diag s^2) but the constant: -0.5 ((z - mu)/s)^2 - log s,
    given its column's 1/s = e^-ls and ls; a row's log-density is the sum of its terms
    - D/2 log(2 pi)."""
    u = (z - loc) * inv_s
    return -0.5 * u * u - ls


@element
def diag_normal_grad(z, loc, inv_s, g):
    """(dz, dloc term, dls term) of one element of diag_normal_term, given its column's 1/s = e^-ls
    and g = dL/dlogp of its sample: with u = (z - mu)/s, dz = -u/s g, dmu = u/s g, dls = (u^2 - 1) g."""
    u = (z - loc) * inv_s
    return -u * inv_s * g, u * inv_s * g, (u * u - 1.0) * g


@element
def store_chunk_pair(dloc_part, dls_part, ch, j, acc_loc, acc_ls, accumulate):
    """Chunk ch's column-j sums of two parameter gradients, added (``accumulate``) or written:
    the CUDA column reductions' last step (their per-chunk partial sums)."""
    if accumulate:
        dloc_part[ch, j] += acc_loc
        dls_part[ch, j] += acc_ls
    else:
        dloc_part[ch, j] = acc_loc
        dls_part[ch, j] = acc_ls


@element
def reduce_step(acc, v, mode):
    """One element into a running reduction: mode 0 sum, 1 sum of squares, 2 max |v|.
    The max propagates NaN (a NaN element or accumulator gives NaN)."""
    if mode == 0:
        return acc + v
    if mode == 1:
        return acc + v * v
    m = abs(v)
    return m if (m > acc or m != m) else acc


