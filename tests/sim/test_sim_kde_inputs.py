"""kde family under the CUDA simulator (csrc/kde/kernel_sum_cuda.cu, the map of its instantiations:
test_sim_kde.py): float16 / bfloat16 storage, empty and degenerate sizes, non-contiguous inputs,
zero weights and -inf log-weights, the kink of some profiles at distance 0, long float32
accumulations, NaN propagation and the glue's view / None checks on the CUDA branch."""

import math

import pytest
import torch
from conftest import assert_close_to_ref, cpu_ops, sim_ops
from kernelfuse.reference import kde as ref
from sim_kde_common import (
    BF16,
    F16,
    F32,
    F64,
    _acc,
    _bandwidth,
    _dt,
    _pts,
    _weights,
    run_bwd,
    run_fwd,
)


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
