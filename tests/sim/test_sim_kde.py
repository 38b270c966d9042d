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

Here: every profile and mode, the dimension buckets, weight columns, need subsets, exclude_self,
batches, thread schedules and the count of instantiations. Half types, empty / degenerate sizes and
odd inputs: test_sim_kde_inputs.py; distance metrics: test_sim_kde_metrics.py; shared inputs and
calls: sim_kde_common.py.
"""

import itertools

import pytest
import torch
from conftest import assert_close_to_ref, configure, kernels_executed, run_schedules, sim_ops
from sim_kde_common import (
    BF16,
    COMPACT,
    F16,
    F32,
    F64,
    KERNELS,
    _bandwidth,
    _dt,
    _fwd_ref,
    _fwd_sim,
    _pts,
    _ref_grads,
    _weights,
    bucket_dims,
    reg_max,
    run_bwd,
    run_fwd,
)


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
