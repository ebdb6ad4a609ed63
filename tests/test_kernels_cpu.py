"""Every CPU kernel against a slow, obvious numpy reference."""

import math

import numpy as np
import pytest

from nfcore.kernels import cpu


@pytest.fixture(params=[np.float32, np.float64])
def dtype(request):
    return request.param


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def test_gemms(dtype, rng):
    a = rng.normal(size=(7, 5)).astype(dtype)
    b = rng.normal(size=(5, 3)).astype(dtype)
    out = np.empty((7, 3), dtype)
    cpu.matmul(a, b, out)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, **_tol(dtype))
    c = rng.normal(size=(7, 3)).astype(dtype)
    dx = np.empty((7, 5), dtype)
    cpu.matmul_nt(c, b, dx)
    np.testing.assert_allclose(dx, c.astype(np.float64) @ b.T.astype(np.float64), **_tol(dtype))
    acc = np.ones((5, 3), dtype)
    cpu.matmul_tn_acc(a, c, acc)
    np.testing.assert_allclose(acc, 1 + a.T.astype(np.float64) @ c, **_tol(dtype))
    assert out.dtype == dx.dtype == acc.dtype == dtype


def test_coupling_kernels_match_formulas(dtype, rng):
    n, d = 6, 5
    idx_b = np.array([1, 3, 4])
    x = rng.normal(size=(n, d)).astype(dtype)
    h = rng.normal(size=(n, 6)).astype(dtype)
    bound = 2.0
    t, ls = h[:, :3].astype(np.float64), bound * np.tanh(h[:, 3:] / bound)
    z = np.empty_like(x)
    ld = np.full(n, np.nan, dtype)  # garbage in the output buffer must not leak in
    saved = np.full((n, 3), np.nan, dtype)
    cpu.affine_map(x, h, idx_b, bound, True, z, ld, saved)
    np.testing.assert_allclose(saved, ls, **_tol(dtype))
    ref = x.astype(np.float64).copy()
    ref[:, idx_b] = x[:, idx_b] * np.exp(ls) + t
    np.testing.assert_allclose(z, ref, **_tol(dtype))
    np.testing.assert_allclose(ld, ls.sum(1), **_tol(dtype))
    back = np.empty_like(x)
    ld2 = np.full(n, np.nan, dtype)
    cpu.affine_map(z, h, idx_b, bound, False, back, ld2, saved)
    np.testing.assert_allclose(back, x, **_tol(dtype))
    np.testing.assert_allclose(ld2, -ls.sum(1), **_tol(dtype))
    out = np.empty_like(x)
    cpu.additive_coupling(x, h[:, :3], idx_b, -1.0, out)
    ref = x.astype(np.float64).copy()
    ref[:, idx_b] -= h[:, :3]
    np.testing.assert_allclose(out, ref, **_tol(dtype))


def test_exp32_accuracy_and_edges():
    """fast32.exp32 (the vectorisable float32 exp): within 2 ulp of exp on [-87, 88], clamps
    outside it, NaN stays NaN; softclamp32 equals the shared softclamp to float32 rounding."""
    from numba import njit

    from nfcore.kernels._scalar import softclamp
    from nfcore.kernels.coupling.fast32 import exp32, exp32_wide, softclamp32

    @njit
    def run(a, out, clamped, bound):
        for i in range(a.shape[0]):
            out[i] = exp32(a[i])
            clamped[i] = softclamp32(a[i], bound)

    @njit
    def run_wide(a, out):
        for i in range(a.shape[0]):
            out[i] = exp32_wide(a[i])

    a = np.concatenate([np.linspace(-87, 88, 200001), [-1e-30, 0, 1e-30]]).astype(np.float32)
    out, clamped, wide = np.empty_like(a), np.empty_like(a), np.empty_like(a)
    run(a, out, clamped, np.float32(3))
    run_wide(a, wide)
    ref = np.exp(a.astype(np.float64))
    assert np.max(np.abs(out - ref) / ref) < 2 * 2.0**-23
    assert np.max(np.abs(wide - ref) / ref) < 2 * 2.0**-23
    np.testing.assert_allclose(clamped, [softclamp(float(v), 3.0) for v in a], rtol=0, atol=4e-7)
    edge = np.array([100, -100, np.inf, -np.inf, np.nan], np.float32)
    out, clamped = np.empty_like(edge), np.empty_like(edge)
    run(edge, out, clamped, np.float32(3))
    assert out[0] == out[2] and abs(out[0] / np.exp(88.0) - 1) < 2 * 2.0**-23  # clamped at 88, finite
    assert 0 < out[1] == out[3] < 1e-37 and np.isnan(out[4])
    assert clamped[0] == clamped[2] == 3 and clamped[1] == clamped[3] == -3 and np.isnan(clamped[4])


def test_exp32_computes_in_float32():
    """exp32's arithmetic stays in float32 (a float64 step halves its vector lanes and brings a
    float64 division: ``math.floor`` once returned an integer and promoted the whole polynomial):
    its compiled loop converts nothing to double."""
    from numba import njit

    from nfcore.kernels.coupling.fast32 import exp32

    @njit
    def run(a, out):
        for i in range(a.shape[0]):
            out[i] = exp32(a[i])

    a = np.zeros(4, np.float32)
    run(a, a.copy())
    ir = run.inspect_llvm(run.signatures[0])
    body = ir[ir.index("define"):]
    assert "to double" not in body and "fpext" not in body


@pytest.mark.parametrize("idx_b", [np.arange(6), np.roll(np.arange(6), 1), np.array([1, 3, 4])])
def test_affine_coupling_float32_route_matches_float64(idx_b, rng):
    """float32 affine coupling kernels (exp32 in flat passes) agree with the float64 ones
    (libm): every column in order (the all-flat route of MAF/IAF), every column permuted, a
    subset; with saturating log-scales; NaN kept where it came in."""
    from nfcore.kernels.coupling.cpu import _fast32

    n, d, nb = 37, 6, idx_b.shape[0]
    x = rng.normal(size=(n, d))
    h = rng.normal(size=(n, 2 * nb)) * 3
    h[0, nb:] = [1e4, -1e4, 40] if nb == 3 else [1e4, -1e4, 40, -40, 0, 1e-3]
    dz, dld = rng.normal(size=(n, d)), rng.normal(size=n)
    out = {}
    for dt in (np.float32, np.float64):
        xs, hs, dzs, dlds = (a.astype(dt) for a in (x, h, dz, dld))
        bound = dt(2.5)
        z, ld, ls = np.empty((n, d), dt), np.empty(n, dt), np.empty((n, nb), dt)
        cpu.affine_map(xs, hs, idx_b, bound, True, z, ld, ls)
        xi, ldi, lsi = np.empty((n, d), dt), np.empty(n, dt), np.empty((n, nb), dt)
        cpu.affine_map(z, hs, idx_b, bound, False, xi, ldi, lsi)
        dx1, dh1 = np.empty((n, d), dt), np.empty((n, 2 * nb), dt)
        cpu.affine_map_vjp(dzs, dlds, xs, ls, idx_b, bound, True, dx1, dh1)
        dx2, dh2 = np.empty((n, d), dt), np.empty((n, 2 * nb), dt)
        cpu.affine_map_vjp(dzs, dlds, xi, lsi, idx_b, bound, False, dx2, dh2)
        out[dt] = (z, ld, ls, xi, ldi, dx1, dh1, dx2, dh2)
        assert _fast32(ls) == (dt == np.float32)
    for a32, a64 in zip(out[np.float32], out[np.float64]):
        assert a32.dtype == np.float32
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(a64).max()))
    h[1, nb] = np.nan
    hs = h.astype(np.float32)
    z, ld, ls = np.empty((n, d), np.float32), np.empty(n, np.float32), np.empty((n, nb), np.float32)
    cpu.affine_map(x.astype(np.float32), hs, idx_b, np.float32(2.5), True, z, ld, ls)
    assert np.isnan(z[1, idx_b[0]]) and np.isnan(ld[1]) and np.isfinite(np.delete(z, 1, 0)).all()


def test_bias_act_and_colsum(dtype, rng):
    h = rng.normal(size=(4, 3)).astype(dtype)
    b = rng.normal(size=3).astype(dtype)
    y = h.copy()
    cpu.bias_act(y, b, 3, 0.0)
    np.testing.assert_allclose(y, np.tanh(h.astype(np.float64) + b), **_tol(dtype))
    dy = rng.normal(size=(4, 3)).astype(dtype)
    dh = np.empty_like(dy)
    db = np.ones(3, dtype)
    cpu.bias_act_bwd(dy, y, 3, 0.0, dh, db)
    np.testing.assert_allclose(dh, dy * (1 - y.astype(np.float64) ** 2), **_tol(dtype))
    np.testing.assert_allclose(db, 1 + dh.astype(np.float64).sum(0), **_tol(dtype))
    g = np.zeros(3, dtype)
    cpu.colsum_acc(dh, g)
    np.testing.assert_allclose(g, dh.astype(np.float64).sum(0), **_tol(dtype))
    # ReLU's fused pass (its VJP and the column sum in one loop)
    y = np.maximum(rng.normal(size=(9, 5)), 0).astype(dtype)
    y[0, 0] = 0
    dy = rng.normal(size=(9, 5)).astype(dtype)
    dh = np.full_like(dy, np.nan)
    db = np.ones(5, dtype)
    cpu.bias_act_bwd(dy, y, 1, 0.0, dh, db)
    ref = np.where(y > 0, dy.astype(np.float64), 0.0)
    np.testing.assert_allclose(dh, ref, **_tol(dtype))
    np.testing.assert_allclose(db, 1 + ref.sum(0), **_tol(dtype))


def test_gather_scatter(rng):
    x = rng.normal(size=(3, 5))
    out = np.zeros((3, 4))
    cpu.gather_cols(x, np.array([4, 0]), out, 1)
    np.testing.assert_array_equal(out[:, 1:3], x[:, [4, 0]])
    acc = np.ones((3, 5))
    cpu.scatter_add_cols(out[:, 1:3].copy(), np.array([4, 0]), acc)
    np.testing.assert_array_equal(acc[:, [4, 0]], 1 + x[:, [4, 0]])


def test_diag_affine_and_normals(dtype, rng):
    x = rng.normal(size=(6, 3)).astype(dtype)
    loc = rng.normal(size=3).astype(dtype)
    ls = rng.normal(size=3).astype(dtype)
    out = np.empty_like(x)
    cpu.diag_affine(x, loc, ls, 1, out)
    np.testing.assert_allclose(out, x * np.exp(ls.astype(np.float64)) + loc, **_tol(dtype))
    lp = np.empty(6, dtype)
    cpu.normal_logprob(x, lp)
    np.testing.assert_allclose(lp, -0.5 * (x.astype(np.float64) ** 2).sum(1) - 1.5 * math.log(2 * math.pi),
                               **_tol(dtype))
    assert abs(cpu.sumsq(x.ravel()) - (x.astype(np.float64) ** 2).sum()) < 1e-4


def test_adam_matches_reference(rng):
    p = rng.normal(size=10)
    g = rng.normal(size=10)
    m, v = np.zeros(10), np.zeros(10)
    pr, mr, vr = p.copy(), m.copy(), v.copy()
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    for t in range(1, 4):
        cpu.adam_update(p, g, m, v, lr, b1, b2, eps, wd, t)
        mr = b1 * mr + (1 - b1) * g
        vr = b2 * vr + (1 - b2) * g * g
        pr = pr - lr * ((mr / (1 - b1**t)) / (np.sqrt(vr / (1 - b2**t)) + eps) + wd * pr)
    np.testing.assert_allclose(p, pr, rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_keeps_moments_normal(rng, dtype):
    """A dead unit's moments (gradient exactly zero) decay towards the subnormal range, and
    gradients too small to leave a normal trace arrive: no subnormal enters m or v (x86 cores
    take a ~100-cycle assist per subnormal operand), normal values update exactly, NaN passes."""
    tiny = np.finfo(dtype).tiny
    b1, b2 = 0.9, 0.999
    m = np.array([tiny * 1.05, tiny * 2.0, 0.5, 0.0, 0.0, 0.0], dtype)
    v = np.array([tiny * 1.0005, tiny * 4.0, 0.25, 0.0, 0.0, 0.0], dtype)
    g = np.array([0.0, 0.0, 0.1, tiny / 2, np.sqrt(tiny), np.nan], dtype)
    p = np.zeros(6, dtype)
    m0, v0 = m.copy(), v.copy()
    cpu.adam_update(p, g, m, v, 1e-3, b1, b2, 1e-8, 0.0, 5)
    finite = np.isfinite(m)
    assert np.all((m[finite] == 0) | (np.abs(m[finite]) >= tiny)), m
    assert np.all((v[finite] == 0) | (v[finite] >= tiny)), v
    assert m[0] == 0 and v[0] == 0  # the next decay would have been subnormal: flushed first
    assert m[1] == dtype(b1) * m0[1] and v[1] == dtype(b2) * v0[1]  # still normal after the decay: kept
    np.testing.assert_allclose([m[2], v[2]], [b1 * 0.5 + (1 - b1) * 0.1, b2 * 0.25 + (1 - b2) * 0.01], rtol=1e-6)
    assert m[3] == 0 and v[3] == 0  # a subnormal gradient adds nothing
    assert m[4] == dtype(1 - b1) * g[4] and v[4] == 0  # its square would be subnormal: m only
    assert np.isnan(m[5]) and np.isnan(v[5]) and np.isnan(p[5])


@pytest.mark.parametrize("rows", [16, 256, 1000])
def test_weight_gradient_in_row_blocks(rng, rows):
    """The weight gradient summed over row blocks (below OpenBLAS's small-matrix size) equals the
    one product, plain and masked, and the op-by-op and fused paths choose it alike."""
    from nfcore.kernels.dense.cpu import block_rows, tn_acc

    assert block_rows(1000, 64, 64) == 240 and block_rows(200, 64, 64) == 200 and block_rows(4096, 128, 128) == 4096
    a, b = rng.normal(size=(rows, 64)), rng.normal(size=(rows, 64))
    mask = (rng.random((64, 64)) < 0.5).astype(np.float64)
    out, outm, ref = np.ones((64, 64)), np.ones((64, 64)), np.ones((64, 64))
    tn_acc(a, b, mask, False, out, np.empty((64, 64)))
    tn_acc(a, b, mask, True, outm, np.empty((64, 64)))
    cpu.matmul_tn_acc(a, b, ref)
    np.testing.assert_allclose(out, 1 + a.T @ b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(outm, 1 + (a.T @ b) * mask, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref, out, rtol=1e-12, atol=1e-12)


@pytest.fixture
def force_blocks(monkeypatch):
    """The block-sparse GEMMs whatever the BLAS thread count (several threads make the ops
    choose dense products for small batches)."""
    from nfcore.kernels.dense import cpu as dense

    monkeypatch.setattr(dense, "_THREADED_BLOCK_MACS", 0)


def test_block_choice_follows_blas_threads(monkeypatch):
    """One BLAS thread: blocks from 16 rows. Several: only when each block is big enough for
    BLAS to split it too (a mean of 2^20 multiply-adds), else the dense product."""
    from nfcore.kernels.dense import cpu as dense

    blocks = ((0, 16, 0, 32), (16, 48, 0, 64), (48, 80, 0, 96), (80, 128, 0, 128))  # MADE 2x128, D=8
    monkeypatch.setattr(dense, "blas_threads", lambda: 1)
    assert not dense._blocks_pay(8, blocks) and dense._blocks_pay(16, blocks) and dense._blocks_pay(256, blocks)
    assert not dense._blocks_pay(4096, None)
    monkeypatch.setattr(dense, "blas_threads", lambda: 2)
    assert not dense._blocks_pay(256, blocks) and dense._blocks_pay(512, blocks)


def test_block_sparse_gemms_match_dense(dtype, rng, force_blocks):
    """The masked GEMMs skip the zero rectangles of a staircase mask (MADE's degree-sorted
    units) and give the dense products; the plan covers every nonzero."""
    from nfcore.nn.made import block_plan

    deg_in = np.sort(rng.integers(1, 8, size=70))
    deg_out = np.sort(rng.integers(1, 8, size=90))
    for mask in (deg_out[None, :] >= deg_in[:, None], deg_out[None, ::-1] > deg_in[:, None]):
        col, row = block_plan(mask)
        assert col is not None and row is not None  # the staircase pays: blocks are used
        covered = np.zeros(mask.shape, bool)
        for c0, c1, r0, r1 in col:
            covered[r0:r1, c0:c1] = True
        assert not np.any(mask & ~covered)
        w = (rng.normal(size=mask.shape) * mask).astype(dtype)
        x = rng.normal(size=(33, 70)).astype(dtype)
        b = rng.normal(size=90).astype(dtype)
        y = np.empty((33, 90), dtype)
        cpu.masked_linear_act(x, w, b, col, 0, 0.0, y)
        np.testing.assert_allclose(y, x.astype(np.float64) @ w + b, **_tol(dtype))
        dy = rng.normal(size=(33, 90)).astype(dtype)
        dx = np.empty((33, 70), dtype)
        cpu.masked_matmul_nt(dy, w, row, dx)
        np.testing.assert_allclose(dx, dy.astype(np.float64) @ w.T, **_tol(dtype))
        dw = np.ones(mask.shape, dtype)
        cpu.masked_matmul_tn_acc(x, dy, mask.astype(dtype), col, dw)
        np.testing.assert_allclose(dw, 1 + (x.T.astype(np.float64) @ dy) * mask, **_tol(dtype))
    # no staircase (a random mask): the plan says dense
    assert block_plan(rng.random((64, 64)) < 0.5) == (None, None)


def test_max_abs_is_the_largest_magnitude_and_propagates_nan(rng):
    for dt in (np.float32, np.float64):
        a = rng.normal(size=(7, 5)).astype(dt)
        assert cpu.max_abs(a) == float(np.max(np.abs(a)))
        a[3, 2] = np.nan
        assert np.isnan(cpu.max_abs(a))
        a[3, 2] = -np.inf
        assert cpu.max_abs(a) == np.inf
    assert cpu.max_abs(np.zeros((0, 3))) == 0.0
