"""CUDA simulator tests of the features family (csrc/features/features_cuda.cu): fwht,
random_features(_bwd), structured_features(_bwd), run as torch.ops.kernelfuse_sim.* (the CUDA branch of
the torch glue, every launch under the simulator) and compared with the float64 references of
kernelfuse.reference.features. Backward ops are compared with torch.autograd.grad through the
float64 reference.

Launch shapes reached (features_cuda.cu):
  fwht_smem_kernel      sizeof(T) * n <= 32 KB per row: n up to 2^13 (float32) / 2^12 (float64);
                        threads = clamp(n/2, 32, 256): n <= 64 -> 32, 128..512 -> n/2, >= 512 -> 256
  fwht_stage_kernel     longer rows: one launch per butterfly stage (2^14 float32, 2^13 float64)
  rf_gemm_kernel        64 x 64 tiles, 16-deep k slices: N, D across 64, d across 16, D % 64 != 0, N = 1
  positive_rows_kernel  kind "positive" (every stabiliser), D and d over the 256 threads
  global_max_kernel     stabilize "global", N over the 1024 threads (grid-stride)
  global_rescale_kernel stabilize "global"
  structured_kernel     SORF and Fastfood, P from 1 to 4096 (float32) / 2048 (float64), stacked
                        blocks, D % P != 0, threads = clamp(P/2, 32, 256)
  structured_adjoint_kernel, colsum_partial_kernel, colsum_final_kernel   structured_features_bwd

Here: fwht, random_features(_bwd) and their regressions; structured_features(_bwd):
test_sim_features_structured.py; shared helpers: sim_features_common.py.
"""

import math
from itertools import product

import pytest
import torch
from conftest import configure, run_schedules, sim_ops  # tests/sim/conftest.py
from kernelfuse.reference import features as ref
from sim_features_common import KINDS, F, _close, _gen, _grad_close, _Launched, _ref_grads


# ====================================================================== fwht
def _fwht_check(x, normalized, dtype):
    out = sim_ops.fwht(x.to(dtype), normalized)
    n = x.shape[-1]
    assert out.shape == x.shape and out.dtype == dtype
    expected = ref.fwht(x.to(dtype).double(), normalized=normalized)
    _close(out, expected, dtype, atol_scale=math.sqrt(n) * (1 if normalized else math.sqrt(n)) * 4)
    return out


@pytest.mark.parametrize("dtype", F)
@pytest.mark.parametrize("normalized", [True, False])
def test_fwht_smem_path_thread_buckets(dtype, normalized):
    # n = 1, 2 (one active pair of 32 threads), 64 (32 threads), 128 / 256 (n/2 threads), 1024 (256 threads,
    # two pairs each); rows: 1, prime, batched leading dims
    g = _gen(0)
    for n, shape in [(1, (3,)), (2, (1,)), (8, (5,)), (64, (7,)), (128, (2, 3)), (256, (1,)), (1024, (3,))]:
        _fwht_check(torch.randn(*shape, n, generator=g, dtype=torch.float64), normalized, dtype)


@pytest.mark.parametrize("dtype,n", [(torch.float32, 1 << 13), (torch.float64, 1 << 12)])
def test_fwht_smem_path_largest_row(dtype, n):
    # exactly 32 KB of shared memory per row: the last size of the one-block-per-row path
    x = torch.randn(2, n, generator=_gen(1), dtype=torch.float64)
    with _Launched("fwht_smem_kernel"), _Launched("fwht_stage_kernel", exactly=False):
        _fwht_check(x, True, dtype)


@pytest.mark.parametrize("dtype,n", [(torch.float32, 1 << 14), (torch.float64, 1 << 13)])
@pytest.mark.parametrize("normalized", [True, False])
def test_fwht_multi_stage_path(dtype, n, normalized):
    # over 32 KB per row: a copy, then one global-memory launch per stage (the scale on the last)
    x = torch.randn(3, n, generator=_gen(2), dtype=torch.float64)
    with _Launched("fwht_stage_kernel"), _Launched("fwht_smem_kernel", exactly=False):
        out = _fwht_check(x, normalized, dtype)
    if dtype == torch.float64 and normalized:  # orthonormal and symmetric: an involution
        torch.testing.assert_close(sim_ops.fwht(out, True), x)


def test_fwht_empty_and_noncontiguous():
    assert sim_ops.fwht(torch.zeros(0, 8), True).shape == (0, 8)
    assert sim_ops.fwht(torch.zeros(2, 0, 16, dtype=torch.float64), False).shape == (2, 0, 16)
    x = torch.randn(16, 6, dtype=torch.float64, generator=_gen(3)).T  # (6, 16) non-contiguous
    torch.testing.assert_close(sim_ops.fwht(x, True), ref.fwht(x.contiguous()))
    xx = x.clone()  # the input is left alone
    sim_ops.fwht(x, True)
    assert torch.equal(x, xx)


def test_fwht_schedules():
    x = torch.randn(3, 512, generator=_gen(4))  # smem path, 256 threads
    out = run_schedules(lambda: sim_ops.fwht(x, True))
    _close(out, ref.fwht(x.double()), torch.float32, atol_scale=4 * math.sqrt(512))
    xl = torch.randn(2, 1 << 14, generator=_gen(5))  # multi-stage path
    run_schedules(lambda: sim_ops.fwht(xl, False), schedules=("forward", "random"))


def test_fwht_arch80():
    configure(arch=80)
    x = torch.randn(2, 1 << 13, generator=_gen(6), dtype=torch.float64)  # stage path in float64
    torch.testing.assert_close(sim_ops.fwht(x, True), ref.fwht(x))


# ====================================================================== random_features
def _rf_inputs(N, d, D, dtype, bias, seed=0, xscale=0.5):
    g = _gen(seed)
    x = torch.randn(N, d, generator=g, dtype=torch.float64) * xscale
    W = torch.randn(d, D, generator=g, dtype=torch.float64)
    b = torch.rand(D, generator=g, dtype=torch.float64) * 2 * math.pi if bias else None
    cv = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cv(x), cv(W), cv(b)


def _rf_close(out, expected, x, W, b, kind, dtype):
    """The tolerance of tests/test_features.py: float32 errors in z grow with sum_k |x_k W_kj|; step's
    decisions at z ~ 0 may flip in float32 (those entries are left out)."""
    N = x.shape[0]
    if kind == "step" and dtype == torch.float32:
        z = x.double() @ W.double() + (0 if b is None else b.double())
        mask = z.abs() > 1e-4
        _close(out.double()[mask], expected[mask], dtype)
        return
    zabs = (x.double().abs() @ W.double().abs()).max().item() if N and x.shape[1] else 0.0
    amax = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    _close(out, expected, dtype, atol_scale=amax * max(1.0, zabs / 4))


# (N, d, D): 1 x 1 x 1; N = 1; d = 0; exact 64 x 64 tile and 16-deep slice; N and D across 64
# (partial tiles), d across several 16-slices with a remainder; D % 64 != 0; gx = 3
RF_SIZES = [(1, 1, 1), (1, 17, 65), (3, 0, 5), (64, 16, 64), (67, 33, 130), (5, 50, 7), (130, 3, 193)]


@pytest.mark.parametrize("dtype", F)
@pytest.mark.parametrize("kind", KINDS)
def test_random_features_matches_reference(kind, dtype):
    for i, (N, d, D) in enumerate(RF_SIZES):
        if kind == "positive" and N > 100:
            continue  # 130 rows of positive_rows_kernel: slow; the tiling is the same for every kind
        for bias in (False, True):
            x, W, b = _rf_inputs(N, d, D, dtype, bias, seed=10 * i + bias)
            scale = 0.7 if bias else 1.0
            out = sim_ops.random_features(x, W, b, kind, scale, "row")
            assert out.shape == (N, 2 * D if kind == "cos_sin" else D) and out.dtype == dtype
            expected = ref.random_features(
                x.double(), W.double(), None if b is None else b.double(), kind=kind, scale=scale
            )
            _rf_close(out, expected, x, W, b, kind, dtype)


@pytest.mark.parametrize("dtype", F)
@pytest.mark.parametrize("stabilize", ["row", "global", "none"])
def test_random_features_positive_stabilizers(stabilize, dtype):
    # D and d over positive_rows_kernel's 256 threads (strided loops); large |x| so that the stabiliser
    # matters; global: the max over the row maxima, then the rescale
    for N, d, D, xs in [(1, 1, 1, 1.0), (9, 3, 40, 1.5), (4, 260, 300, 0.2), (70, 5, 17, 1.0)]:
        x, W, b = _rf_inputs(N, d, D, dtype, True, seed=N + d, xscale=xs)
        out = sim_ops.random_features(x, W, b, "positive", 0.3, stabilize)
        expected = ref.random_features(
            x.double(), W.double(), b.double(), kind="positive", scale=0.3, stabilize=stabilize
        )
        _rf_close(out, expected, x, W, b, "positive", dtype)


@pytest.mark.slow
def test_random_features_global_max_grid_stride():
    # N = 1100 rows: global_max_kernel's 1024 threads stride over the row maxima; the row holding the
    # global maximum is past the first 1024
    x, W, _ = _rf_inputs(1100, 2, 3, torch.float64, False, seed=7)
    x[1050] = 3.0
    with _Launched("global_max_kernel", "global_rescale_kernel"):
        out = sim_ops.random_features(x, W, None, "positive", 1.0, "global")
    torch.testing.assert_close(out, ref.random_features(x, W, kind="positive", scale=1.0, stabilize="global"))


def test_random_features_empty():
    x, W, b = _rf_inputs(0, 3, 5, torch.float32, True)
    assert sim_ops.random_features(x, W, b, "cos_sin", 1.0, "row").shape == (0, 10)
    x, W, b = _rf_inputs(4, 3, 0, torch.float32, False)
    assert sim_ops.random_features(x, W, None, "positive", 1.0, "global").shape == (4, 0)
    # batched leading dims pass through
    x, W, b = _rf_inputs(6, 5, 9, torch.float64, True)
    out = sim_ops.random_features(x.reshape(2, 3, 5), W, b, "cos", 1.0, "row")
    torch.testing.assert_close(out.reshape(6, 9), ref.random_features(x, W, b, kind="cos", scale=1.0))


def test_random_features_schedules():
    x, W, b = _rf_inputs(67, 33, 70, torch.float32, True, seed=11)
    out = run_schedules(lambda: sim_ops.random_features(x, W, b, "cos_sin", 0.5, "row"))
    _rf_close(
        out,
        ref.random_features(x.double(), W.double(), b.double(), kind="cos_sin", scale=0.5),
        x,
        W,
        b,
        "cos_sin",
        torch.float32,
    )
    x, W, b = _rf_inputs(5, 260, 300, torch.float64, True, seed=12, xscale=0.2)
    run_schedules(lambda: sim_ops.random_features(x, W, b, "positive", 0.5, "global"))


def test_random_features_arch80():
    configure(arch=80)
    x, W, b = _rf_inputs(20, 17, 70, torch.float64, True, seed=13)
    torch.testing.assert_close(
        sim_ops.random_features(x, W, b, "relu", 1.0, "row"), ref.random_features(x, W, b, kind="relu", scale=1.0)
    )


# ---------------------------------------------------------------- random_features_bwd
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [False, True])
def test_random_features_bwd_every_subset_of_needs(kind, bias):
    for stab in ["row", "global", "none"] if kind == "positive" else ["row"]:
        x, W, b = _rf_inputs(13, 7, 9, torch.float64, bias, seed=21, xscale=0.8)
        out = sim_ops.random_features(x, W, b, kind, 0.7, stab)
        grad = torch.randn(out.shape, generator=_gen(22), dtype=torch.float64)
        fn = lambda x, W, b: ref.random_features(x, W, b, kind=kind, scale=0.7, stabilize=stab)  # noqa: E731
        for nx, nW, nb in product((False, True), repeat=3):
            gx, gW, gb = sim_ops.random_features_bwd(grad, out, x, W, b, kind, 0.7, stab, nx, nW, nb)
            ex, eW, eb = _ref_grads(fn, (x, W, b), (nx, nW, nb), grad)
            _grad_close(gx, ex, torch.float64)
            _grad_close(gW, eW, torch.float64)
            _grad_close(gb, eb, torch.float64)


@pytest.mark.parametrize("kind", ["cos", "cos_sin", "positive", "relu"])
def test_random_features_bwd_float32_and_batched(kind):
    x, W, b = _rf_inputs(70, 20, 65, torch.float32, True, seed=23, xscale=0.3)
    x = x.reshape(2, 35, 20)
    out = sim_ops.random_features(x, W, b, kind, 0.5, "row")
    grad = torch.randn(out.shape, generator=_gen(24)).float()
    gx, gW, gb = sim_ops.random_features_bwd(grad, out, x, W, b, kind, 0.5, "row", True, True, True)
    ex, eW, eb = _ref_grads(
        lambda x, W, b: ref.random_features(x, W, b, kind=kind, scale=0.5), (x, W, b), (True, True, True), grad
    )
    for got, e in ((gx, ex), (gW, eW), (gb, eb)):  # within TOL (measured: <= 0.3 of it)
        _grad_close(got, e, torch.float32)


# ====================================================================== regressions
def test_regression_zero_input_dim():
    # d = 0 (x of shape (N, 0)): the glue's x.reshape({-1, d}) threw "cannot reshape tensor of 0
    # elements into shape [-1, 0]"; z = b then
    x = torch.zeros(3, 0, dtype=torch.float64)
    W = torch.zeros(0, 5, dtype=torch.float64)
    b = torch.rand(5, dtype=torch.float64, generator=_gen(103))
    out = sim_ops.random_features(x, W, b, "cos", 1.0, "row")
    torch.testing.assert_close(out, ref.random_features(x, W, b, kind="cos", scale=1.0))
    gx, gW, gb = sim_ops.random_features_bwd(torch.ones_like(out), out, x, W, b, "cos", 1.0, "row", True, True, True)
    assert gx.shape == (3, 0) and gW.shape == (0, 5)
    torch.testing.assert_close(gb, -torch.sin(b) * 3)
    signs = torch.ones(2, 3, 1, dtype=torch.float64)
    out = sim_ops.structured_features(x, signs, None, b[:2], 2, "relu", "sorf", 1.0, "row")
    torch.testing.assert_close(out, torch.relu(b[:2]).expand(3, 2))


def test_nan_propagates_like_the_reference():
    """Issue 13: a NaN pre-activation makes relu / step NaN (not 0) and, for positive, its row (global:
    every row) NaN, as torch.max does in the reference: the CUDA reductions propagate NaN."""
    g = _gen(13)
    x = torch.randn(70, 5, generator=g, dtype=torch.float64) * 0.5
    W = torch.randn(5, 9, generator=g, dtype=torch.float64)
    W[2, 3] = float("nan")
    for dtype in F:
        for kind, stab in (
            ("relu", "row"),
            ("step", "row"),
            ("positive", "row"),
            ("positive", "global"),
            ("positive", "none"),
            ("cos", "row"),
        ):
            out = sim_ops.random_features(x.to(dtype), W.to(dtype), None, kind, 0.5, stab)
            exp = ref.random_features(x.to(dtype).double(), W.to(dtype).double(), kind=kind, scale=0.5, stabilize=stab)
            assert torch.equal(out.isnan(), exp.isnan()) and out.isnan().any(), (kind, stab, dtype)
