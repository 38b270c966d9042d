"""kde family under the CUDA simulator: csrc/kde/kernel_sum_cuda.cu (the one templated kernel
``kernel_sum_kernel<A, Mode, DB, CW>``, launched by launch_kernel_sum) through the CUDA branch of
csrc/kde/kde_torch.cpp, against the float64 references of kernelfuse.reference.kde.

Forward ops (kernel_sum, kernel_logsumexp, kernel_logsumexp_sq) are compared with the reference;
the backward ops (kernel_sum_bwd, kernel_logsumexp_bwd, called directly, no autograd of ours) with
torch.autograd.grad through the float64 reference (kernel_logsumexp_bwd gets the reference's
forward output rounded to the input dtype as its `out`).

What picks a different instantiation / launch shape in the .cu, and where it is reached here:
  A (accumulation)   float (float32, float16, bfloat16 storage: a runtime switch) / double
  Mode               Sum, LogSumExp (aux: the _sq op), Backward (has_log: the logsumexp twin)
  DB (dims bucket)   d <= 2 -> 2, d <= 4 -> 4, d <= reg_max -> reg_max (early exit every 8 dims),
                     else 0 (generic: DC-dimension chunks, Backward: one split per chunk)
                     reg_max: float 64 (Backward 32), double 32 (Backward 16); DC: float 32, double 16
  CW (columns)       1 when c == 1, else 8 (c > 8: several column splits; Backward: per-pair
                     coefficient over all columns from global memory)
  grid.x             [role-0 blocks (rows = queries: out)][role-1 blocks (rows = points: out_y,
                     out_w)], each role = 128-row blocks x max(gradient, column) splits
  grid.y             min(batch, 65535), striding over the batch
Sizes cross the 128-row block and the item tiles (register path 64 items; generic: float 32,
double 16 items).
"""

import itertools
import math

import pytest
import torch
from conftest import assert_close_to_ref, configure, cpu_ops, kernels_executed, run_schedules, sim_ops
from kernelfuse.reference import kde as ref

KERNELS = ref.KERNELS
COMPACT = ref.COMPACT_KERNELS
F64, F32, F16, BF16 = torch.float64, torch.float32, torch.float16, torch.bfloat16


def _dt(v):
    return str(v).replace("torch.", "")


def reg_max(dtype, bwd):
    return (32 if dtype == F64 else 64) // (2 if bwd else 1)


def chunk(dtype):
    return 16 if dtype == F64 else 32


def bucket_dims(dtype, bwd):
    """d values that reach every dimension bucket and its edges: 2, 4, reg_max (first step, a
    partial step, exactly reg_max), generic (one dim past reg_max, several chunks, partial last)."""
    k, dc = reg_max(dtype, bwd), chunk(dtype)
    return sorted({1, 2, 3, 4, 5, 9, k, k + 1, 2 * dc + 3})


# ---------------------------------------------------------------- data and calls
def _acc(dtype):
    return F64 if dtype == F64 else F32


def _pts(shape, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=F64) * scale).to(dtype)


def _bandwidth(kind, d, dtype, kernel):
    """A bandwidth in the accumulation type (what the glue passes to the kernel; the reference gets
    the same values in float64). Scaled with sqrt(2 d) so s = |x - y|^2 / h^2 is O(1) in every d:
    compact kernels see points inside and outside their support."""
    base = math.sqrt(2.0 * max(d, 1)) * (1.1 if kernel in COMPACT else 0.8)
    if kind == "scalar":
        return torch.tensor(base, dtype=_acc(dtype))
    f = torch.tensor([0.8, 1.0, 1.25, 0.9, 1.1], dtype=F64).repeat(d // 5 + 1)[:d]
    return (base * f).to(_acc(dtype))


def _weights(kind, n, dtype, seed, B=None):
    """None; "vec" (n,) / (B, n); c (int): (n, c) / (B, n, c); ("shared", c): (n, c) for a batch,
    expanded as the Python wrapper does (batch stride 0)."""
    if kind is None:
        return None
    g = torch.Generator().manual_seed(seed)
    lead = () if B is None else (B,)
    if kind == "vec":
        w = 0.2 + torch.rand(*lead, n, generator=g, dtype=F64)
    elif isinstance(kind, tuple):
        w = (0.2 + torch.rand(n, kind[1], generator=g, dtype=F64)).expand(B, n, kind[1])
    else:
        w = 0.2 + torch.rand(*lead, n, kind, generator=g, dtype=F64)
    return w.to(dtype)


def _d64(t):
    return None if t is None else t.double()


def _fwd_ref(op, x, y, w, h, kernel, excl, metric="euclidean", p=2.0):
    kw = dict(kernel=kernel, bandwidth=h.double(), exclude_self=excl, metric=metric, p=p)
    if op == "sum":
        return (ref.kernel_sum(x.double(), y.double(), _d64(w), **kw),)
    if op == "lse":
        return (ref.kernel_logsumexp(x.double(), y.double(), _d64(w), **kw),)
    return ref.kernel_logsumexp_sq(x.double(), y.double(), _d64(w), **kw)


def _fwd_sim(op, x, y, w, h, kernel, excl, metric="euclidean", p=2.0):
    if op == "sum":
        return (sim_ops.kernel_sum(x, y, w, h, kernel, excl, metric, p),)
    if op == "lse":
        return (sim_ops.kernel_logsumexp(x, y, w, h, kernel, excl, metric, p),)
    return tuple(sim_ops.kernel_logsumexp_sq(x, y, w, h, kernel, excl, metric, p))


def _check_fwd(outs, exps, dtype, factor=1.0):
    for out, exp in zip(outs, exps):
        assert out.dtype == dtype and out.shape == exp.shape, (out.dtype, out.shape, exp.shape)
        out = out.double()
        fin = torch.isfinite(exp)
        # -inf exactly where no point is in the support (log domain); no NaN anywhere
        assert torch.equal(torch.isfinite(out), fin), (out[~fin], exp[~fin])
        assert torch.equal(out[~fin], exp[~fin])
        if fin.any():
            assert_close_to_ref(out[fin], exp[fin], dtype, factor=factor)


def run_fwd(op, x, y, w, h, kernel="gaussian", excl=False, factor=1.0, sim=None, metric="euclidean", p=2.0):
    """op: "sum" (w: weights), "lse" / "lse_sq" (w: log-weights)."""
    outs = _fwd_sim(op, x, y, w, h, kernel, excl, metric, p) if sim is None else sim()
    _check_fwd(outs, _fwd_ref(op, x, y, w, h, kernel, excl, metric, p), x.dtype, factor)
    return outs


def _ref_grads(op, grad, x, y, w, h, kernel, excl, metric="euclidean", p=2.0, with_h=False):
    """(gx, gy, gw, out) by autograd through the float64 reference (with_h: (gx, gy, gw, out, gh))."""
    x64 = x.double().clone().requires_grad_(True)  # clone: x may be y (and .double() of float64 is x)
    y64 = y.double().clone().requires_grad_(True)
    w64 = None if w is None else w.double().clone().requires_grad_(True)
    h64 = h.double().clone().requires_grad_(with_h)
    kw = dict(kernel=kernel, bandwidth=h64, exclude_self=excl, metric=metric, p=p)
    fn = ref.kernel_sum if op == "sum" else ref.kernel_logsumexp
    out = fn(x64, y64, w64, **kw)
    leaves = [x64, y64] + ([w64] if w is not None else []) + ([h64] if with_h else [])
    g = torch.autograd.grad(out, leaves, grad.double(), allow_unused=True)
    g = [torch.zeros_like(t) if gi is None else gi for t, gi in zip(leaves, g)]
    res = g[0], g[1], (g[2] if w is not None else None), out.detach()
    return res + (g[-1],) if with_h else res


def run_bwd(
    op,
    x,
    y,
    w,
    h,
    kernel="gaussian",
    excl=False,
    need=(True, True, True),
    factor=1.0,
    seed=7,
    sim_out=None,
    metric="euclidean",
    p=2.0,
    need_h=False,
):
    """kernel_sum_bwd (op "sum") / kernel_logsumexp_bwd (op "lse") against reference autograd
    (need_h: also the in-pass bandwidth gradient of a scalar bandwidth)."""
    dtype = x.dtype
    fshape = x.shape[:-1] + ((w.shape[-1],) if (w is not None and w.dim() == y.dim()) else ())
    grad = _pts(fshape, dtype, seed)
    egx, egy, egw, eout, *egh = _ref_grads(op, grad, x, y, w, h, kernel, excl, metric, p, with_h=need_h)
    nx, ny, nw = need
    tail = (metric, p, need_h)
    if op == "sum":
        gx, gy, gw, gh = sim_ops.kernel_sum_bwd(grad, x, y, w, h, kernel, excl, nx, ny, nw, *tail)
    else:
        out = eout.to(dtype) if sim_out is None else sim_out
        gx, gy, gw, gh = sim_ops.kernel_logsumexp_bwd(grad, out, x, y, w, h, kernel, excl, nx, ny, nw, *tail)
    if need_h:
        assert gh.shape == h.shape and torch.isfinite(gh).all()
        assert_close_to_ref(gh, egh[0], dtype, factor=factor * 4)  # one sum over all pairs
    else:
        assert gh.numel() == 0
    for got, exp, want in ((gx, egx, nx), (gy, egy, ny), (gw, egw, nw and w is not None)):
        if not want:
            assert got.numel() == 0
            continue
        assert got.dtype == dtype and got.shape == exp.shape, (got.shape, exp.shape)
        assert torch.isfinite(got).all()
        assert_close_to_ref(got, exp, dtype, factor=factor)
    return gx, gy, gw


# ---------------------------------------------------------------- every profile, every mode
@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("kernel", KERNELS)
def test_forward_profiles(kernel, dtype):
    """Every profile in every forward mode: 67 points (a full and a partial 64-item tile),
    per-dimension bandwidth, 3 weight columns."""
    m, n, d = 41, 67, 3
    x, y = _pts((m, d), dtype, 1), _pts((n, d), dtype, 2)
    h = _bandwidth("dim", d, dtype, kernel)
    w = _weights(3, n, dtype, 3)
    run_fwd("sum", x, y, w, h, kernel)
    run_fwd("lse", x, y, w.log(), h, kernel)
    run_fwd("lse_sq", x, y, None, h, kernel)


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("kernel", KERNELS)
def test_backward_profiles(kernel, dtype):
    """Every profile in both backward ops, all three gradients, c == 1 (vector weights)."""
    m, n, d = 37, 70, 3
    x, y = _pts((m, d), dtype, 4), _pts((n, d), dtype, 5)
    h = _bandwidth("scalar", d, dtype, kernel)
    if kernel in COMPACT:  # log domain: every query needs a point in the support
        h = h * 2.0
    w = _weights("vec", n, dtype, 6)
    run_bwd("sum", x, y, w, h, kernel)
    run_bwd("lse", x, y, w.log(), h, kernel)


# ---------------------------------------------------------------- dimension buckets
@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("op", ["sum", "lse", "lse_sq"])
def test_forward_dimension_buckets(op, dtype):
    """Every d bucket (2, 4, reg_max with its 8-dim early exits, generic with 1..k chunks)."""
    m, n = 29, 70
    for i, d in enumerate(bucket_dims(dtype, bwd=False)):
        x, y = _pts((m, d), dtype, 10 + i), _pts((n, d), dtype, 40 + i)
        kernel = ("gaussian", "epanechnikov", "laplacian")[i % 3]
        h = _bandwidth("dim" if i % 2 else "scalar", d, dtype, kernel)
        w = _weights("vec" if i % 2 else 2, n, dtype, 7 + i)
        run_fwd(op, x, y, w if op == "sum" else w.log(), h, kernel)


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("op", ["sum", "lse"])
def test_backward_dimension_buckets(op, dtype):
    """Backward in every d bucket: generic d gives one block split per DC dimensions."""
    m, n = 21, 40
    for i, d in enumerate(bucket_dims(dtype, bwd=True)):
        x, y = _pts((m, d), dtype, 60 + i), _pts((n, d), dtype, 80 + i)
        kernel = ("matern52", "cauchy", "cosine")[i % 3]
        h = _bandwidth("dim" if i % 2 else "scalar", d, dtype, kernel) * (2.0 if kernel in COMPACT else 1.0)
        w = _weights(3 if i % 2 else "vec", n, dtype, 9 + i)
        run_bwd(op, x, y, w if op == "sum" else w.log(), h, kernel)


# ---------------------------------------------------------------- weight columns
CW_CASES = [None, "vec", 1, 2, 8, 9, 17]  # c = 1 (CW 1), 2..8 (CW 8, one split), 9, 17 (2 / 3 splits)


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("wkind", CW_CASES, ids=str)
def test_forward_columns(wkind, dtype):
    m, n, d = 131, 66, 5
    x, y = _pts((m, d), dtype, 21), _pts((n, d), dtype, 22)
    h = _bandwidth("dim", d, dtype, "matern32")
    w = _weights(wkind, n, dtype, 23)
    run_fwd("sum", x, y, w, h, "matern32")
    run_fwd("lse_sq", x, y, None if w is None else w.log(), h, "matern32")


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("wkind", CW_CASES, ids=str)
def test_backward_columns(wkind, dtype):
    """c > 8: role-1 blocks split over columns (out_w) and the per-pair coefficient over all columns."""
    m, n, d = 45, 70, 4
    x, y = _pts((m, d), dtype, 24), _pts((n, d), dtype, 25)
    h = _bandwidth("scalar", d, dtype, "gaussian")
    w = _weights(wkind, n, dtype, 26)
    run_bwd("sum", x, y, w, h, "gaussian")
    run_bwd("lse", x, y, None if w is None else w.log(), h, "inverse_multiquadric")


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("d_extra,c", [(3, 3), (3, 17), (2 * 16 + 5, 9), (0, 12)])
def test_backward_generic_splits_vs_columns(d_extra, c, dtype):
    """Generic-path backward where the role-1 blocks' split count comes from the gradient dims
    (nsg > nsc) or from the columns (nsc > nsg): blocks with gradient only / columns only."""
    d = reg_max(dtype, True) + 1 + d_extra
    m, n = 19, 35
    x, y = _pts((m, d), dtype, 27), _pts((n, d), dtype, 28)
    h = _bandwidth("dim", d, dtype, "gaussian")
    w = _weights(c, n, dtype, 29)
    for need in [(True, True, True), (False, True, True), (False, False, True), (False, True, False)]:
        run_bwd("sum", x, y, w, h, "gaussian", need=need)
    run_bwd("lse", x, y, w.log(), h, "laplacian")


# ---------------------------------------------------------------- backward: each set of outputs
NEEDS = list(itertools.product([False, True], repeat=3))


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("need", NEEDS, ids=lambda t: "".join("xyw"[i] if v else "-" for i, v in enumerate(t)))
@pytest.mark.parametrize("op", ["sum", "lse"])
def test_backward_need_subsets(op, need, dtype):
    """Each subset of need_x / need_y / need_weights: role-0 only, role-1 only (out_y, out_w or
    both), both roles, nothing (no launch); register path with 3 columns and generic path."""
    for m, n, d in ((129, 65, 3), (9, 20, reg_max(dtype, True) + 5)):
        x, y = _pts((m, d), dtype, 30 + d), _pts((n, d), dtype, 31 + d)
        h = _bandwidth("scalar", d, dtype, "matern32")
        w = _weights(3, n, dtype, 32)
        run_bwd(op, x, y, w if op == "sum" else w.log(), h, "matern32", need=need)
    # weights None: need_weights asks for nothing
    x, y = _pts((13, 2), dtype, 33), _pts((30, 2), dtype, 34)
    run_bwd(op, x, y, None, _bandwidth("scalar", 2, dtype, "gaussian"), "gaussian", need=need)


# ---------------------------------------------------------------- exclude_self
@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("path", ["reg", "generic"])
def test_exclude_self(path, dtype):
    """The skipped pair in every tile position: m = n = 131 (two row blocks, three 64-item tiles) on
    the register path, n = 37 (three generic tiles) on the generic path; x is y (s = 0 on the
    diagonal) in the forward; in the backward mostly distinct x, y with m == n (exclude_self only
    needs equal counts; the reference's autograd is NaN through sqrt at s = 0)."""
    n = 131 if path == "reg" else 37
    d = 3 if path == "reg" else reg_max(dtype, False) + 3
    x = _pts((n, d), dtype, 35)
    w = _weights(3, n, dtype, 37)
    run_fwd("sum", x, x, w, _bandwidth("dim", d, dtype, "tophat"), "tophat", excl=True)
    x, w = x[:70], w[:70]
    run_fwd("lse", x, x, w.log(), _bandwidth("dim", d, dtype, "linear"), "linear", excl=True)
    run_fwd("lse_sq", x, x, None, _bandwidth("dim", d, dtype, "gaussian"), "gaussian", excl=True)
    n = 70 if path == "reg" else 37
    db = reg_max(dtype, True) + 3 if path == "generic" else 3
    xb, yb = _pts((n, db), dtype, 38), _pts((n, db), dtype, 39)
    hb = _bandwidth("scalar", db, dtype, "gaussian")
    wv = _weights("vec", n, dtype, 40)
    run_bwd("sum", xb, yb, wv, hb, "laplacian", excl=True)
    run_bwd("lse", xb, yb, wv.log(), hb, "gaussian", excl=True)
    run_bwd("sum", xb, xb, wv, hb, "gaussian", excl=True, need=(True, False, True))  # x is y
    run_bwd("sum", xb, yb, _weights(10, n, dtype, 41), hb, "cauchy", excl=True)  # c > 8 path


# ---------------------------------------------------------------- batches
@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("wkind", [None, "vec", 3, ("shared", 3), 9], ids=str)
def test_batched(wkind, dtype):
    """B = 3: per-batch operands (batch strides), weights shared by the batch (stride 0)."""
    B, m, n, d = 3, 9, 20, 3
    x, y = _pts((B, m, d), dtype, 42), _pts((B, n, d), dtype, 43)
    h = _bandwidth("dim", d, dtype, "gaussian")
    w = _weights(wkind, n, dtype, 44, B=B)
    lw = None if w is None else w.log()
    run_fwd("sum", x, y, w, h, "gaussian")
    run_fwd("lse_sq", x, y, lw, h, "epanechnikov")
    run_bwd("sum", x, y, w, h, "gaussian")
    run_bwd("lse", x, y, lw, h, "matern52")
    xg, yg = _pts((B, 5, 70), dtype, 45), _pts((B, 7, 70), dtype, 46)  # generic path, batched
    hg = _bandwidth("scalar", 70, dtype, "gaussian")
    wg = _weights(wkind, 7, dtype, 47, B=B)
    run_fwd("lse", xg, yg, None if wg is None else wg.log(), hg, "gaussian")
    run_bwd("sum", xg, yg, wg, hg, "gaussian")


def test_batched_exclude_self():
    B, n, d = 2, 70, 2
    x, y = _pts((B, n, d), F32, 48), _pts((B, n, d), F32, 49)
    h = _bandwidth("scalar", d, F32, "gaussian")
    w = _weights("vec", n, F32, 50, B=B)
    run_fwd("sum", x, x, w, h, "cosine", excl=True)
    run_bwd("lse", x, y, w.log(), h, "gaussian", excl=True)


@pytest.mark.slow
def test_batch_above_grid_y_limit():
    """B = 65537 > 65535 (the grid.y limit): blocks stride over the batch, the last two batches
    are done by blockIdx.y = 0 and 1 on their second pass."""
    B = 65537
    x, y = _pts((B, 1, 2), F32, 51), _pts((B, 2, 2), F32, 52)
    h = _bandwidth("scalar", 2, F32, "gaussian")
    w = _weights("vec", 2, F32, 53, B=B)
    run_fwd("sum", x, y, w, h, "gaussian")


# ---------------------------------------------------------------- half types
@pytest.mark.parametrize("dtype", [F16, BF16], ids=_dt)
@pytest.mark.parametrize("path", ["d2", "d4", "reg_max", "generic"])
def test_half_types(path, dtype):
    """float16 / bfloat16 storage (float accumulation): every load (ld, ld_row) and store branch in
    every mode and bucket. The reference sees the same rounded inputs; TOL covers the output
    rounding."""
    d = {"d2": 2, "d4": 3, "reg_max": 9, "generic": 70}[path]
    m, n = (130, 67) if path != "generic" else (20, 35)
    x, y = _pts((m, d), dtype, 54), _pts((n, d), dtype, 55)
    h = _bandwidth("dim", d, dtype, "gaussian")
    w = _weights(3, n, dtype, 56)
    lw = w.log()
    run_fwd("sum", x, y, w, h, "gaussian")
    run_fwd("lse", x, y, lw, h, "epanechnikov")
    run_fwd("lse_sq", x, y, lw, h, "gaussian")
    xb, yb = x[:17], y[:30]
    run_bwd("sum", xb, yb, w[:30], h, "gaussian")
    run_bwd("lse", xb, yb, lw[:30], h, "matern32")
    wv = _weights("vec", 30, dtype, 57)
    run_bwd("sum", xb, yb, wv, h, "laplacian")
    run_bwd("lse", xb, yb, wv.log(), h * 2, "cosine", need=(True, False, True))


def test_half_types_wide_columns():
    """c > 8 with half storage: the per-pair coefficient's global loads (coef_all_cols)."""
    for dtype in (F16, BF16):
        x, y = _pts((33, 4), dtype, 58), _pts((40, 4), dtype, 59)
        h = _bandwidth("scalar", 4, dtype, "gaussian")
        w = _weights(10, 40, dtype, 60)
        run_fwd("sum", x, y, w, h, "gaussian")
        run_bwd("sum", x, y, w, h, "gaussian")
        run_bwd("lse", x, y, w.log(), h, "gaussian")


# ---------------------------------------------------------------- empty and degenerate sizes
@pytest.mark.parametrize("dtype", [F64, F32, F16], ids=_dt)
def test_empty_and_degenerate(dtype):
    h1 = torch.tensor(1.25, dtype=_acc(dtype))
    x, y = _pts((5, 3), dtype, 61), _pts((7, 3), dtype, 62)
    e0 = y[:0]
    # n == 0: zeros / -inf, and the gradient of x is zero
    assert torch.equal(sim_ops.kernel_sum(x, e0, None, h1, "gaussian", False).double(), torch.zeros(5, dtype=F64))
    lo, lo2 = sim_ops.kernel_logsumexp_sq(x, e0, torch.zeros(0, 2, dtype=dtype), h1, "cosine", False)
    assert lo.shape == (5, 2) and (lo == -math.inf).all() and (lo2 == -math.inf).all()
    gx, gy, gw, _ = sim_ops.kernel_sum_bwd(
        torch.ones(5, dtype=dtype), x, e0, None, h1, "gaussian", False, True, True, True
    )
    assert torch.equal(gx.double(), torch.zeros(5, 3, dtype=F64)) and gy.shape == (0, 3)
    # m == 0: empty outputs; the backward still writes the points' gradients (zeros)
    assert sim_ops.kernel_sum(x[:0], y, None, h1, "gaussian", False).shape == (0,)
    assert sim_ops.kernel_logsumexp(x[:0], y, torch.zeros(7, 2, dtype=dtype), h1, "gaussian", False).shape == (0, 2)
    w = _weights(2, 7, dtype, 63)
    gx, gy, gw, _ = sim_ops.kernel_sum_bwd(
        torch.ones(0, 2, dtype=dtype), x[:0], y, w, h1, "gaussian", False, True, True, True
    )
    assert gx.shape == (0, 3) and torch.equal(gy.double(), torch.zeros(7, 3, dtype=F64))
    assert torch.equal(gw.double(), torch.zeros(7, 2, dtype=F64))
    # c == 0: empty forward outputs; backward position gradients are zeros
    w0 = torch.ones(7, 0, dtype=dtype)
    assert sim_ops.kernel_sum(x, y, w0, h1, "gaussian", False).shape == (5, 0)
    gx, gy, gw, _ = sim_ops.kernel_sum_bwd(
        torch.ones(5, 0, dtype=dtype), x, y, w0, h1, "gaussian", False, True, True, True
    )
    assert torch.equal(gx.double(), torch.zeros(5, 3, dtype=F64))
    assert torch.equal(gy.double(), torch.zeros(7, 3, dtype=F64)) and gw.shape == (7, 0)
    # B == 0
    assert sim_ops.kernel_sum(
        torch.empty(0, 5, 3, dtype=dtype), torch.empty(0, 7, 3, dtype=dtype), None, h1, "gaussian", False
    ).shape == (0, 5)
    # d == 0: every s is 0, k(0) = 1 (and the backward's weight gradient still runs)
    xd, yd = x[:, :0], y[:, :0]
    run_fwd("sum", xd, yd, w, h1, "gaussian")
    run_fwd("lse", xd, yd, w.log(), h1, "cauchy")
    run_bwd("sum", xd, yd, w, h1, "gaussian")
    run_bwd("sum", xd, yd, w, h1, "gaussian", need_h=True)  # the bandwidth sums: zeros (glue)
    run_bwd("lse", x, e0, None, h1, "gaussian", need_h=True, metric="manhattan")  # n == 0
    # one row, one point, one dimension
    run_fwd("sum", x[:1, :1], y[:1, :1], None, h1, "laplacian")
    run_bwd("lse", x[:1, :1], y[:1, :1], None, h1, "laplacian")


def test_non_contiguous_inputs():
    """The glue's rows_contiguous copies; expanded / sliced operands reach the kernel as strided
    batches."""
    x = _pts((40, 6), F32, 64)[:, ::2]  # column stride 2: copied by the glue
    y = _pts((3, 60, 3), F32, 65)[:, :50]  # rows contiguous, batch stride 180
    xb = x.contiguous()[None].expand(3, 40, 3)  # batch stride 0
    h = _bandwidth("dim", 3, F32, "gaussian")
    w = _weights(4, 50, F32, 66).t().contiguous().t()
    run_fwd("sum", x, y[0], w, h, "gaussian")
    run_fwd("lse", xb, y, None, h, "gaussian")
    run_bwd("sum", xb, y, w.expand(3, 50, 4), h, "gaussian")


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
def test_zero_weights_and_minus_inf_log_weights(dtype):
    """Log-sum-exp state with -inf terms: a column of zero weights (-inf everywhere: out = -inf), a
    first 64-item tile of -inf then finite terms (the tile merge from an empty state), scattered
    zeros; and the same zeros in the linear domain."""
    m, n, d = 20, 70, 3
    x, y = _pts((m, d), dtype, 80), _pts((n, d), dtype, 81)
    h = _bandwidth("dim", d, dtype, "gaussian")
    w = _weights(3, n, dtype, 82)
    w[:, 1] = 0
    w[:64, 2] = 0
    w[::3, 0] = 0
    run_fwd("sum", x, y, w, h, "gaussian")
    run_fwd("lse", x, y, w.log(), h, "gaussian")
    run_fwd("lse_sq", x, y, w.log(), h, "epanechnikov")
    run_bwd("sum", x, y, w, h, "gaussian")
    wf = w[:, [0, 2]]  # finite outputs: the reference's autograd is NaN for an all -inf column
    run_bwd("lse", x, y, wf.log(), h, "gaussian")
    run_bwd("lse", x, y, wf[:, :1].log(), h, "matern32")  # c == 1


def test_exclude_self_single_row():
    """m = n = 1 with exclude_self: no pair at all."""
    x = _pts((1, 2), F32, 83)
    h = torch.tensor(1.0)
    assert sim_ops.kernel_sum(x, x, None, h, "gaussian", True).item() == 0
    assert sim_ops.kernel_logsumexp(x, x, None, h, "gaussian", True).item() == -math.inf
    gx, gy, _, _ = sim_ops.kernel_sum_bwd(torch.ones(1), x, x, None, h, "laplacian", True, True, True, False)
    assert torch.equal(gx, torch.zeros(1, 2)) and torch.equal(gy, torch.zeros(1, 2))


@pytest.mark.parametrize("kernel", ["laplacian", "linear", "cosine"])
def test_kink_at_zero_distance(kernel):
    """x is y without exclude_self: s = 0 on the diagonal, where these profiles have a kink and the
    kernels use the subgradient 0 (dk/ds finite, times x - y = 0). The reference's autograd is NaN
    there (sqrt at 0), so the backward is compared with the CPU op in float64 (tests/test_kde.py
    checks it against the reference by gradcheck), and the forward with the reference."""
    x = _pts((70, 3), F64, 84)
    h = _bandwidth("scalar", 3, F64, kernel)
    w = _weights(2, 70, F64, 85)
    run_fwd("sum", x, x, w, h, kernel)
    run_fwd("lse", x, x, w.log(), h, kernel)
    g = _pts((70, 2), F64, 86)
    for op in ("sum", "lse"):
        if op == "sum":
            got = sim_ops.kernel_sum_bwd(g, x, x, w, h, kernel, False, True, True, True)
            exp = cpu_ops.kernel_sum_bwd(g, x, x, w, h, kernel, False, True, True, True)
        else:
            out = ref.kernel_logsumexp(x, x, w.log(), kernel=kernel, bandwidth=h)
            got = sim_ops.kernel_logsumexp_bwd(g, out, x, x, w.log(), h, kernel, False, True, True, True)
            exp = cpu_ops.kernel_logsumexp_bwd(g, out, x, x, w.log(), h, kernel, False, True, True, True)
        for a, b in zip(got, exp):
            assert torch.isfinite(a).all()
            assert_close_to_ref(a, b, F64)


def test_long_accumulation_float32():
    """m = 5 queries, n = 4099 points (65 tiles): per-tile float partials and the double totals /
    Kahan-compensated gradients keep float32 within TOL of float64."""
    x, y = _pts((5, 3), F32, 87), _pts((4099, 3), F32, 88)
    h = _bandwidth("scalar", 3, F32, "gaussian") * 2
    w = _weights(2, 4099, F32, 89)
    run_fwd("sum", x, y, w, h, "gaussian")
    run_fwd("lse_sq", x, y, w.log(), h, "cosine")
    run_bwd("sum", x, y, w, h, "gaussian")
    run_bwd("lse", x, y, w.log(), h, "cosine")


# ---------------------------------------------------------------- distance metrics
# metric is a runtime switch of the same 48 instantiations (uniform across the grid): the
# register path (whole rows: every metric, haversine at d == 2) and the generic path (distances
# accumulated per DC chunk; chebyshev's first maximiser tracked against the block's gradient
# chunk). With a scalar bandwidth the compact kernels decide dist < h on unscaled distances.
METRICS = ref.METRICS
P = 3.0


def _mpts(metric, shape, dtype, seed):
    if metric != "haversine":
        return _pts(shape, dtype, seed)
    g = torch.Generator().manual_seed(seed)
    lat = (torch.rand(*shape[:-1], 1, generator=g, dtype=F64) - 0.5) * 2.0
    lon = (torch.rand(*shape[:-1], 1, generator=g, dtype=F64) - 0.5) * 4.0
    return torch.cat([lat, lon], -1).to(dtype)


def _mbandwidth(metric, kind, d, dtype, kernel):
    """s = (dist / h)^2 of order 1 for every metric and d (compact kernels: points on both sides)."""
    if metric == "haversine":
        return torch.tensor(0.9 if kernel in COMPACT else 0.6, dtype=_acc(dtype))
    if metric == "euclidean":
        return _bandwidth(kind, d, dtype, kernel)
    f = 1.1 if kernel in COMPACT else 0.8
    base = {
        "manhattan": 1.13 * d,
        "chebyshev": 1.41 * (0.8 + math.sqrt(2 * math.log(max(d, 2)))),
        "minkowski": (4.51 * d) ** (1 / P),
    }[metric] * f
    if kind == "scalar":
        return torch.tensor(base, dtype=_acc(dtype))
    fd = torch.tensor([0.8, 1.0, 1.25, 0.9, 1.1], dtype=F64).repeat(d // 5 + 1)[:d]
    return (base * fd).to(_acc(dtype))


def _metric_dims(metric, dtype, bwd):
    """Register buckets 2 / 4 / reg_max (d = 9) and the generic path (two chunks and a partial one)."""
    if metric == "haversine":
        return [2]
    return [2, 3, 9, reg_max(dtype, bwd) + 1 if bwd else 2 * chunk(dtype) + 3 + reg_max(dtype, False)]


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("metric", METRICS)
def test_forward_metrics(metric, dtype):
    """Every metric, forward modes, compact (exact support with a scalar bandwidth) and smooth
    kernels, scalar and per-dimension bandwidths, every dimension bucket / the generic path."""
    m, n = 37, 70
    for i, d in enumerate(_metric_dims(metric, dtype, False)):
        x, y = _mpts(metric, (m, d), dtype, 100 + i), _mpts(metric, (n, d), dtype, 110 + i)
        w = _weights(3 if i % 2 else "vec", n, dtype, 120 + i)
        for kernel, kind in (
            ("gaussian", "dim"),
            ("epanechnikov", "scalar"),
            ("tophat", "dim"),
            ("cosine", "scalar"),
            ("laplacian", "scalar"),
            ("linear", "dim"),
        ):
            if metric == "haversine":
                kind = "scalar"
            h = _mbandwidth(metric, kind, d, dtype, kernel)
            kw = dict(metric=metric, p=P)
            run_fwd("sum", x, y, w, h, kernel, **kw)
            f = 50.0 if kernel != "gaussian" and dtype == F32 else 1.0  # compact: k ~ 1e-2 at the edge
            if kernel in ("gaussian", "epanechnikov", "linear"):
                run_fwd("lse", x, y, w.log(), h, kernel, factor=f, **kw)
            if kernel == "cosine":
                run_fwd("lse_sq", x, y, None, h, kernel, factor=50.0 if dtype == F32 else 1.0, **kw)


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("metric", METRICS)
def test_backward_metrics(metric, dtype):
    """Every metric in both backward ops, all gradients (x, y, weights, and the in-pass bandwidth
    gradient of a scalar bandwidth), register buckets and the generic path (split gradient chunks)."""
    m, n = 33, 70
    for i, d in enumerate(_metric_dims(metric, dtype, True)):
        x, y = _mpts(metric, (m, d), dtype, 130 + i), _mpts(metric, (n, d), dtype, 140 + i)
        w = _weights(2 if i % 2 else "vec", n, dtype, 150 + i)
        for kernel, kind in (("gaussian", "scalar"), ("epanechnikov", "dim"), ("cosine", "scalar")):
            if metric == "haversine":
                kind = "scalar"
            h = _mbandwidth(metric, kind, d, dtype, kernel)
            if kernel in COMPACT:  # log domain: every query needs a point in the support
                h = h * 2.0
            kw = dict(metric=metric, p=P, need_h=kind == "scalar")
            f = 4.0 if metric in ("minkowski", "haversine") else 2.0  # pow / trig chains in float32
            run_bwd("sum", x, y, w, h, kernel, factor=f, **kw)
            run_bwd("lse", x, y, w.log(), h, kernel, factor=f, **kw)


@pytest.mark.parametrize("metric", ["chebyshev", "haversine", "minkowski"])
@pytest.mark.parametrize("need", list(itertools.product([False, True], repeat=3)), ids=str)
def test_backward_metric_need_subsets(metric, need):
    """Every need_x / need_y / need_weights subset, with the bandwidth gradient on and off."""
    d = 2 if metric == "haversine" else 40  # 40: the generic Backward path (float reg_max 32)
    x, y = _mpts(metric, (20, d), F32, 160), _mpts(metric, (30, d), F32, 161)
    w = _weights(3, 30, F32, 162)
    h = _mbandwidth(metric, "scalar", d, F32, "gaussian")
    for need_h in (False, True):
        run_bwd("sum", x, y, w, h, "gaussian", need=need, metric=metric, p=P, need_h=need_h, factor=4.0)
        run_bwd("lse", x, y, w.log(), h, "gaussian", need=need, metric=metric, p=P, need_h=need_h, factor=4.0)


@pytest.mark.parametrize("d", [3, 9, 40, 70])
def test_chebyshev_ties_first_coordinate(d):
    """Integer data: many chebyshev ties. The gradient goes to the first maximising coordinate on
    every path (register: argmax in registers; generic d = 40 / 70: the chunk flag), as on the CPU."""
    g = torch.Generator().manual_seed(163)
    x = torch.randint(0, 4, (25, d), generator=g).double()
    y = torch.randint(0, 4, (60, d), generator=g).double()
    w = _weights("vec", 60, F64, 164)
    gr = _pts((25,), F64, 165)
    for kernel in ("gaussian", "epanechnikov"):
        h = torch.tensor(3.5 if kernel == "gaussian" else 4.5, dtype=F64)
        for hh in (h, h.expand(d).contiguous()):
            got = sim_ops.kernel_sum_bwd(gr, x, y, w, hh, kernel, False, True, True, True, "chebyshev", 2.0, False)
            exp = cpu_ops.kernel_sum_bwd(gr, x, y, w, hh, kernel, False, True, True, True, "chebyshev", 2.0, False)
            for a, b in zip(got[:3], exp[:3]):
                assert_close_to_ref(a, b, F64)
            # the rule itself: no row of the x gradient has two nonzero entries for one pair
            one = sim_ops.kernel_sum_bwd(
                gr[:1], x[:1], y[:1], None, hh, kernel, False, True, False, False, "chebyshev", 2.0, False
            )[0]
            assert int((one != 0).sum()) <= 1


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize(
    "metric,d",
    [("euclidean", 3), ("euclidean", 64), ("euclidean", 70), ("manhattan", 5), ("chebyshev", 40), ("chebyshev", 70)],
)
def test_exact_support_integer_boundary(metric, d, dtype):
    """Integer data with many pairs at exactly dist = h: the tophat count is exact (unscaled
    distances against h^2 / h), on the register and the generic path, float32 included."""
    g = torch.Generator().manual_seed(166)
    x = torch.randint(0, 5, (40, d), generator=g)
    y = torch.randint(0, 5, (70, d), generator=g)
    diff = (x[:, None, :] - y[None, :, :]).abs()
    D = (diff * diff).sum(-1) if metric == "euclidean" else (diff.sum(-1) if metric == "manhattan" else diff.amax(-1))
    if metric == "euclidean":  # an integer h with h^2 an attained squared distance, near the median
        med = D.double().median().sqrt().item()
        h = float(min((k for k in range(1, 40) if (D == k * k).any()), key=lambda k: abs(k - med)))
    else:
        h = float(D.flatten().median().item())  # an attained integer distance
    thr = h * h if metric == "euclidean" else h
    assert int((D.double() == thr).sum()) > 0  # boundary pairs exist
    count = (D.double() < thr).sum(1).double()
    ht = torch.tensor(h, dtype=_acc(dtype))
    out = sim_ops.kernel_sum(x.to(dtype), y.to(dtype), None, ht, "tophat", False, metric, 2.0)
    assert torch.equal(out.double(), count)
    lo = sim_ops.kernel_logsumexp(x.to(dtype), y.to(dtype), None, ht, "epanechnikov", False, metric, 2.0)
    run_fwd(
        "lse", x.to(dtype), y.to(dtype), None, ht, "epanechnikov", metric=metric, factor=50.0 if dtype == F32 else 1.0
    )
    assert torch.equal(torch.isfinite(lo), count > 0)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=_dt)
def test_half_types_metrics(dtype):
    """float16 / bfloat16 storage (float accumulation) with the other metrics."""
    for metric, d in (("manhattan", 3), ("chebyshev", 40), ("haversine", 2), ("minkowski", 5)):
        x, y = _mpts(metric, (30, d), dtype, 167), _mpts(metric, (50, d), dtype, 168)
        w = _weights("vec", 50, dtype, 169)
        h = _mbandwidth(metric, "scalar", d, dtype, "gaussian")
        run_fwd("sum", x, y, w, h, "gaussian", metric=metric, p=P)
        run_fwd("lse", x, y, w.log(), h, "epanechnikov", metric=metric, p=P)
        run_bwd("sum", x, y, w, h, "gaussian", metric=metric, p=P, need_h=True)


# ---------------------------------------------------------------- thread schedules (races)
SCHED_CASES = [
    ("sum", F32, 3, 3),
    ("lse_sq", F32, 9, 1),
    ("sum", F32, 70, 9),
    ("lse", F64, 40, 2),
    ("bwd_sum", F32, 3, 3),
    ("bwd_lse", F32, 9, 10),
    ("bwd_sum", F32, 40, 3),
    ("bwd_lse", F64, 20, 1),
    ("sum", BF16, 70, 3),
    ("bwd_lse", F16, 40, 3),
]


@pytest.mark.parametrize("op,dtype,d,c", SCHED_CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_thread_schedules(op, dtype, d, c):
    """Shared-memory tiles under forward / reverse / random thread order: bitwise-equal results
    (register and generic path of every mode), and equal to the reference."""
    m, n = 130, 70
    x, y = _pts((m, d), dtype, 70), _pts((n, d), dtype, 71)
    h = _bandwidth("dim", d, dtype, "gaussian")
    w = _weights(c if c > 1 else "vec", n, dtype, 72)
    if op in ("sum", "lse", "lse_sq"):
        ww = w if op == "sum" else w.log()

        def sim():
            r = run_schedules(lambda: _fwd_sim(op, x, y, ww, h, "gaussian", False))
            return r if isinstance(r, tuple) else (r,)

        run_fwd(op, x, y, ww, h, sim=sim)
    else:
        o = "sum" if op == "bwd_sum" else "lse"
        ww = w if o == "sum" else w.log()
        xb, yb = x[:40], y
        exp = _fwd_ref(o, xb, yb, ww, h, "gaussian", False)[0].to(dtype)
        g = _pts(exp.shape, dtype, 73)
        fn = (
            (lambda: sim_ops.kernel_sum_bwd(g, xb, yb, ww, h, "gaussian", False, True, True, True))
            if o == "sum"
            else (lambda: sim_ops.kernel_logsumexp_bwd(g, exp, xb, yb, ww, h, "gaussian", False, True, True, True))
        )
        got = run_schedules(fn)
        egx, egy, egw, _ = _ref_grads(o, g, xb, yb, ww, h, "gaussian", False)
        for a, b in zip(got, (egx, egy, egw)):
            assert_close_to_ref(a, b, dtype)


def test_arch_independent():
    """The launch configuration does not depend on device attributes: sm_80 gives the same bits."""
    x, y = _pts((130, 40), F32, 74), _pts((70, 40), F32, 75)
    h = _bandwidth("scalar", 40, F32, "gaussian")
    w = _weights(3, 70, F32, 76)
    outs = []
    for arch in (90, 80):
        configure(arch=arch)
        outs.append(sim_ops.kernel_sum_bwd(torch.ones(130, 3), x, y, w, h, "gaussian", False, True, True, True))
    configure()
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- coverage of the instantiations
def test_every_instantiation_ran():
    """Runs one small case of each of the 48 (A, Mode, DB, CW) instantiations and checks that the
    simulator saw 48 distinct kernel_sum_kernel variants (the count includes earlier tests)."""
    for dtype in (F64, F32):
        for bwd in (False, True):
            for d in (2, 4, 9, reg_max(dtype, bwd) + 1):
                x, y = _pts((3, d), dtype, 77), _pts((5, d), dtype, 78)
                h = _bandwidth("scalar", d, dtype, "gaussian")
                for c in ("vec", 2):
                    w = _weights(c, 5, dtype, 79)
                    if bwd:
                        run_bwd("sum", x, y, w, h)
                    else:
                        run_fwd("sum", x, y, w, h)
                        run_fwd("lse", x, y, w.log(), h)
                    if bwd:
                        run_bwd("lse", x, y, w.log(), h)
    launches, variants = kernels_executed()["kernel_sum: kernel_sum_kernel"]
    assert variants == 48, variants


def test_sim_logsumexp_nan_in_nan_out():
    """The glue's NaN propagation on the CUDA branch (issue 13): NaN query -> NaN row, NaN point -> all NaN."""
    import torch as _t

    x = _t.randn(6, 3, dtype=_t.float32, generator=_t.Generator().manual_seed(0))
    y = _t.randn(9, 3, dtype=_t.float32, generator=_t.Generator().manual_seed(1))
    h = _t.tensor(0.8)
    xn = x.clone()
    xn[3, 0] = float("nan")
    out = sim_ops.kernel_logsumexp(xn, y, None, h, "tophat", False)
    assert _t.isnan(out[3]) and not _t.isnan(out[[0, 1, 2, 4, 5]]).any()
    yn = y.clone()
    yn[0, 2] = float("nan")
    assert _t.isnan(sim_ops.kernel_logsumexp(x, yn, None, h, "gaussian", False)).all()


def test_sim_expanded_views_and_none_named():
    """Expanded / strided views and None checks on the CUDA branch of the glue (issue 13; the size
    checks of huge copies are CPU-tested only: under ASan a refused allocation aborts)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, generator=g).expand(5, 3)
    y = torch.randn(7, 3, generator=g)[::2]
    w = torch.rand(1, generator=g).expand(4)
    h = torch.tensor(0.9)
    out = sim_ops.kernel_sum(x, y, w, h, "gaussian", False)
    assert_close_to_ref(out, ref.kernel_sum(x.double(), y.double(), w.double(), bandwidth=0.9), torch.float32)
    with pytest.raises(ValueError, match=r"argument 'y'.*None"):
        sim_ops.kernel_logsumexp(x, None, None, h, "gaussian", False)
    with pytest.raises(ValueError, match=r"argument 'grad'.*None"):
        sim_ops.kernel_sum_bwd(None, x, y, None, h, "gaussian", False, True, True, False)
