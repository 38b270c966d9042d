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
"""

import math
from itertools import product

import pytest
import torch
from conftest import assert_close_to_ref, configure, count_launches, run_schedules, sim_ops  # tests/sim/conftest.py
from kernelfuse.reference import features as ref
from kf_inputs import structured_inputs as _sf_inputs

_close = assert_close_to_ref

KINDS = ["cos", "cos_sin", "positive", "relu", "step"]
F = [torch.float32, torch.float64]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


class _Launched(count_launches):
    """with _Launched("fwht_stage_kernel"): ... asserts the block launched that kernel (the branch was taken)
    and, with exactly=False, that it did not."""

    def __init__(self, *kernels, exactly=True):
        super().__init__(*(f"features: {k}" for k in kernels))
        self.expect = exactly

    def __exit__(self, *exc):
        super().__exit__(*exc)
        if exc[0] is None:
            for k in self.names:
                assert (self.n[k] > 0) == self.expect, (k, self.expect)


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
def _ref_grads(fn, inputs, need, grad):
    """d<fn(inputs), grad>/d(inputs[i]) for need[i], by autograd through the float64 reference; None
    elsewhere. Zero where the output does not depend on the input (step)."""
    leaves = [t.detach().double().requires_grad_(n) if t is not None else None for t, n in zip(inputs, need)]
    y = fn(*leaves)
    want = [t for t, n in zip(leaves, need) if n and t is not None]
    if not want:
        return [None] * len(inputs)
    gs = torch.autograd.grad(y, want, grad.double(), allow_unused=True) if y.requires_grad else [None] * len(want)
    it = iter(gs)
    res = []
    for t, n in zip(leaves, need):
        if n and t is not None:
            g = next(it)
            res.append(torch.zeros_like(t) if g is None else g)
        else:
            res.append(None)
    return res


def _grad_close(got, expected, dtype, factor=1.0):
    if expected is None:
        assert got.numel() == 0
        return
    assert got.shape == expected.shape and got.dtype == dtype
    _close(got, expected, dtype, factor=factor)


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


# ====================================================================== structured_features
def _sf_z(x, signs, perm, b, D, block):
    """The pre-activations z (N, D) in float64, matrix-free: the chain of the reference's docstring with
    the reference FWHT (ref.structured_matrix costs O(P^3): minutes at P = 4096 under ASan).
    test_matrix_free_reference_matches_reference checks it against ref.structured_features."""
    x, signs = x.double(), signs.double()
    nb, _, P = signs.shape
    xp = torch.nn.functional.pad(x, (0, P - x.shape[-1]))
    zs = []
    for k in range(nb):
        s0, s1, s2 = signs[k]
        if block == "sorf":  # sqrt(P) Hn s0 Hn s1 Hn s2 x (H symmetric: x @ Hn == Hn x per row)
            v = ref.fwht(ref.fwht(ref.fwht(xp * s2) * s1) * s0) * math.sqrt(P)
        else:  # s2 sqrt(P) Hn s1 Perm Hn s0 x, (Perm v)[i] = v[perm[i]]
            v = s2 * ref.fwht(s1 * ref.fwht(xp * s0)[..., perm[k]]) * math.sqrt(P)
        zs.append(v)
    z = torch.cat(zs, -1)[..., :D]
    return z if b is None else z + b.double()


def _sf_ref(x, signs, perm, b, D, kind, block, scale, stab):
    """The float64 reference map: ref.structured_features up to P = 256, the matrix-free chain with
    the reference's epilogue beyond."""
    if signs.shape[-1] <= 256:
        return ref.structured_features(
            x.double(),
            signs.double(),
            kind=kind,
            block=block,
            perm=perm,
            b=None if b is None else b.double(),
            n_features=D,
            scale=scale,
            stabilize=stab,
        )
    return ref._apply(_sf_z(x, signs, perm, b, D, block), x.double(), kind, scale, stab)


def _sf_close(out, expected, kind, dtype, x, signs, perm, b, D, block):
    """float32: cos / sin of z inherit z's rounding through the FWHT chains, measured ~3 eps max|z| (the
    float32 entry of TOL assumes |z| ~ 1: atol_scale max(1, max|z| / 2) below, as tests/test_features.py
    scales by |x| |W|); step's decisions at z ~ 0 may flip (those entries are left out)."""
    z = _sf_z(x, signs, perm, b, D, block)
    if dtype == torch.float32 and kind == "step":
        mask = z.abs() > 1e-4
        _close(out.double()[mask], expected[mask], dtype)
        return
    if dtype == torch.float32 and kind in ("cos", "cos_sin") and z.numel():
        _close(out, expected, dtype, atol_scale=max(1.0, z.abs().max().item() / 2))
        return
    _close(out, expected, dtype)


def test_matrix_free_reference_matches_reference():
    for block in ("sorf", "fastfood"):
        signs, perm, P = _sf_inputs(200, 2, block, seed=3)
        x = torch.randn(3, 200, generator=_gen(4), dtype=torch.float64)
        b = torch.rand(500, generator=_gen(5), dtype=torch.float64)
        for kind in ("cos_sin", "positive"):
            torch.testing.assert_close(
                ref._apply(_sf_z(x, signs, perm, b, 500, block), x, kind, 0.5, "row"),
                _sf_ref(x, signs, perm, b, 500, kind, block, 0.5, "row"),
            )


# (N, d, nblocks, D): d = 1 (P = 1); D < P; D == P; stacked with D % P != 0; d not a power of two
# (zero padding); P = 64 (32 threads), 128 (64 threads), 1024 (256 threads, 2 pairs each)
SF_SIZES = [
    (1, 1, 2, 2),
    (3, 5, 1, 5),
    (9, 7, 3, 20),
    (4, 13, 2, 32),
    (2, 64, 2, 100),
    (2, 100, 1, 128),
    (1, 600, 2, 1500),
]


@pytest.mark.parametrize("dtype", F)
@pytest.mark.parametrize("block", ["sorf", "fastfood"])
@pytest.mark.parametrize("kind", KINDS)
def test_structured_features_matches_reference(kind, block, dtype):
    for i, (N, d, nb, D) in enumerate(SF_SIZES):
        signs, perm, P = _sf_inputs(d, nb, block, seed=d + D, dtype=dtype)
        g = _gen(N + i)
        x = (torch.randn(N, d, generator=g, dtype=torch.float64) * 0.3).to(dtype)
        b = (torch.rand(D, generator=g, dtype=torch.float64) * 6).to(dtype) if i % 2 else None
        scale = 0.5 if i % 3 else 1.0
        out = sim_ops.structured_features(x, signs, perm, b, D, kind, block, scale, "row")
        assert out.shape == (N, 2 * D if kind == "cos_sin" else D)
        expected = _sf_ref(x, signs, perm, b, D, kind, block, scale, "row")
        _sf_close(out, expected, kind, dtype, x, signs, perm, b, D, block)


@pytest.mark.parametrize("block", ["sorf", "fastfood"])
@pytest.mark.parametrize("stabilize", ["row", "global", "none"])
def test_structured_features_positive_stabilizers(stabilize, block):
    signs, perm, P = _sf_inputs(6, 3, block, seed=31)
    x = torch.randn(11, 6, generator=_gen(32), dtype=torch.float64)
    out = sim_ops.structured_features(x, signs, perm, None, 21, "positive", block, 0.4, stabilize)
    torch.testing.assert_close(out, _sf_ref(x, signs, perm, None, 21, "positive", block, 0.4, stabilize))


@pytest.mark.parametrize("dtype,P", [(torch.float32, 4096), (torch.float64, 2048)])
def test_structured_features_largest_P(dtype, P):
    # P * sizeof(T) = 16 KB: the largest block the kernel takes (2 P values of shared memory)
    for block in ("sorf", "fastfood"):
        signs, perm, _ = _sf_inputs(P, 1, block, seed=33, dtype=dtype)
        x = (torch.randn(1, P - 3, generator=_gen(34), dtype=torch.float64) * 0.1).to(dtype)
        out = sim_ops.structured_features(x, signs, perm, None, 37, "cos", block, 1.0, "row")
        _sf_close(
            out,
            _sf_ref(x, signs, perm, None, 37, "cos", block, 1.0, "row"),
            "cos",
            dtype,
            x,
            signs,
            perm,
            None,
            37,
            block,
        )


@pytest.mark.parametrize("dtype,P", [(torch.float32, 8192), (torch.float64, 4096)])
def test_structured_features_P_limit_error(dtype, P):
    signs, perm, _ = _sf_inputs(P, 1, "sorf", dtype=dtype)
    x = torch.zeros(1, 5, dtype=dtype)
    with pytest.raises(
        RuntimeError,
        match=rf"kernelfuse\.structured_features: on CUDA, supports P \* sizeof\(dtype\) <= 24 KB "
        rf"\(P = {P}\)",
    ):
        sim_ops.structured_features(x, signs, None, None, 3, "cos", "sorf", 1.0, "row")


def test_structured_features_empty_and_batched():
    signs, perm, P = _sf_inputs(5, 2, "fastfood")
    assert sim_ops.structured_features(
        torch.zeros(0, 5, dtype=torch.float64), signs, perm, None, 9, "cos_sin", "fastfood", 1.0, "row"
    ).shape == (0, 18)
    assert sim_ops.structured_features(
        torch.zeros(3, 5, dtype=torch.float64), signs, perm, None, 0, "positive", "fastfood", 1.0, "global"
    ).shape == (3, 0)
    x = torch.randn(2, 3, 5, generator=_gen(35), dtype=torch.float64)
    out = sim_ops.structured_features(x, signs, perm, None, 13, "relu", "fastfood", 1.0, "row")
    torch.testing.assert_close(
        out.reshape(6, 13), _sf_ref(x.reshape(6, 5), signs, perm, None, 13, "relu", "fastfood", 1.0, "row")
    )


def test_structured_features_schedules():
    for block in ("sorf", "fastfood"):
        signs, perm, P = _sf_inputs(100, 2, block, seed=36, dtype=torch.float32)  # P = 128: 64 threads
        x = torch.randn(3, 100, generator=_gen(37)) * 0.2
        b = torch.rand(200, generator=_gen(38)) * 6
        out = run_schedules(lambda: sim_ops.structured_features(x, signs, perm, b, 200, "cos", block, 1.0, "row"))
        _sf_close(
            out,
            _sf_ref(x, signs, perm, b, 200, "cos", block, 1.0, "row"),
            "cos",
            torch.float32,
            x,
            signs,
            perm,
            b,
            200,
            block,
        )


def test_structured_features_arch80():
    configure(arch=80)
    signs, perm, P = _sf_inputs(9, 2, "fastfood", seed=39)
    x = torch.randn(4, 9, generator=_gen(40), dtype=torch.float64)
    torch.testing.assert_close(
        sim_ops.structured_features(x, signs, perm, None, 30, "cos_sin", "fastfood", 1.0, "row"),
        _sf_ref(x, signs, perm, None, 30, "cos_sin", "fastfood", 1.0, "row"),
    )


# ---------------------------------------------------------------- structured_features_bwd (CUDA kernel new)
def _sf_bwd_case(N, d, nb, D, kind, block, dtype, bias, stab="row", seed=0, xscale=0.3, P=None, scale=0.6):
    signs, perm, P = _sf_inputs(d, nb, block, seed=seed, dtype=dtype, P=P)
    g = _gen(seed + 1)
    x = (torch.randn(N, d, generator=g, dtype=torch.float64) * xscale).to(dtype)
    b = (torch.rand(D, generator=g, dtype=torch.float64) * 6).to(dtype) if bias else None
    out = sim_ops.structured_features(x, signs, perm, b, D, kind, block, scale, stab)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)
    return x, signs, perm, b, out, grad


def _sf_bwd(x, signs, perm, b, out, grad, D, kind, block, scale, stab, nx, nb):
    return sim_ops.structured_features_bwd(grad, out, x, signs, perm, b, D, kind, block, scale, stab, nx, nb)


def _sf_bwd_ref(x, signs, perm, b, grad, D, kind, block, scale, stab, nx, nb):
    """Gradients by autograd through the float64 reference map (_sf_ref)."""
    fn = lambda x, b: _sf_ref(x, signs, perm, b, D, kind, block, scale, stab)  # noqa: E731
    return _ref_grads(fn, (x, b), (nx, nb), grad)


# (N, d, nblocks, D): P = 1; D < P; D == P; stacked, D % P != 0; d not a power of two; P = 128 (64 threads);
# N = 70 (two chunks of the gb column sum)
SF_BWD_SIZES = [(2, 1, 3, 3), (3, 5, 1, 6), (4, 8, 1, 8), (5, 7, 3, 19), (2, 100, 2, 150), (70, 3, 2, 7)]


@pytest.mark.parametrize("block", ["sorf", "fastfood"])
@pytest.mark.parametrize("kind", KINDS)
def test_structured_features_bwd_matches_reference_grads(kind, block):
    for i, (N, d, nb, D) in enumerate(SF_BWD_SIZES):
        bias = i % 2 == 1
        x, signs, perm, b, out, grad = _sf_bwd_case(N, d, nb, D, kind, block, torch.float64, bias, seed=40 + i)
        gx, gb = _sf_bwd(x, signs, perm, b, out, grad, D, kind, block, 0.6, "row", True, True)
        ex, eb = _sf_bwd_ref(x, signs, perm, b, grad, D, kind, block, 0.6, "row", True, True)
        _grad_close(gx, ex, torch.float64)
        _grad_close(gb, eb, torch.float64)


@pytest.mark.parametrize("block", ["sorf", "fastfood"])
@pytest.mark.parametrize(
    "kind,stab", [("cos", "row"), ("positive", "row"), ("positive", "global"), ("positive", "none"), ("cos_sin", "row")]
)
def test_structured_features_bwd_every_subset_of_needs(kind, stab, block):
    x, signs, perm, b, out, grad = _sf_bwd_case(
        6, 5, 2, 13, kind, block, torch.float64, True, stab=stab, seed=50, xscale=0.8
    )
    for nx, nb in product((False, True), repeat=2):
        gx, gb = _sf_bwd(x, signs, perm, b, out, grad, 13, kind, block, 0.6, stab, nx, nb)
        ex, eb = _sf_bwd_ref(x, signs, perm, b, grad, 13, kind, block, 0.6, stab, nx, nb)
        _grad_close(gx, ex, torch.float64)
        _grad_close(gb, eb, torch.float64)
    # b None: no gb even when asked
    out0 = sim_ops.structured_features(x, signs, perm, None, 13, kind, block, 0.6, stab)
    gx, gb = _sf_bwd(x, signs, perm, None, out0, grad, 13, kind, block, 0.6, stab, True, True)
    ex, _ = _sf_bwd_ref(x, signs, perm, None, grad, 13, kind, block, 0.6, stab, True, False)
    _grad_close(gx, ex, torch.float64)
    assert gb.numel() == 0


@pytest.mark.parametrize("block", ["sorf", "fastfood"])
@pytest.mark.parametrize("kind", ["cos", "cos_sin", "positive", "relu"])
def test_structured_features_bwd_float32(kind, block):
    x, signs, perm, b, out, grad = _sf_bwd_case(9, 20, 3, 70, kind, block, torch.float32, True, seed=60)
    gx, gb = _sf_bwd(x, signs, perm, b, out, grad, 70, kind, block, 0.6, "row", True, True)
    ex, eb = _sf_bwd_ref(x, signs, perm, b, grad, 70, kind, block, 0.6, "row", True, True)
    _grad_close(gx, ex, torch.float32)  # within TOL (measured: <= 0.3 of it)
    _grad_close(gb, eb, torch.float32)


def test_structured_features_bwd_gb_chunks():
    # the gb column sum: N = 64 (one chunk, written straight to gb), 65 (two chunks), 1030 rows (17
    # chunks), D over the 256 threads of a block (two column blocks)
    # (cos_sin: gz from out alone, which here is the reference's, so only the column sum runs)
    for N, D, dt in [
        (64, 5, torch.float64),
        (65, 3, torch.float64),
        (65, 3, torch.float32),
        (1030, 2, torch.float64),
        (3, 300, torch.float32),
    ]:
        signs, perm, P = _sf_inputs(3, (D + 3) // 4, "sorf", seed=N, dtype=dt)
        x = torch.randn(N, 3, generator=_gen(N), dtype=torch.float64).to(dt)
        b = torch.rand(D, generator=_gen(N + 1), dtype=torch.float64).to(dt)
        out = _sf_ref(x, signs, perm, b, D, "cos_sin", "sorf", 0.6, "row").to(dt)
        grad = torch.randn(out.shape, generator=_gen(N + 2), dtype=torch.float64).to(dt)
        with _Launched("colsum_final_kernel", exactly=N > 64), _Launched("structured_adjoint_kernel", exactly=False):
            gx, gb = _sf_bwd(x, signs, perm, b, out, grad, D, "cos_sin", "sorf", 0.6, "row", False, True)
        assert gx.numel() == 0
        # the reference gradient of the same (float32-rounded) out: gz = g_sin out_cos - g_cos out_sin
        D_ = out.shape[-1] // 2
        egz = grad.double()[:, D_:] * out.double()[:, :D_] - grad.double()[:, :D_] * out.double()[:, D_:]
        _grad_close(gb, egz.sum(0), dt)
        if dt == torch.float64:
            _, eb = _sf_bwd_ref(x, signs, perm, b, grad, D, "cos_sin", "sorf", 0.6, "row", False, True)
            _grad_close(gb, eb, dt)


def test_structured_features_bwd_gb_chunk_cap():
    # N > 1024 * 64: the chunk count is capped at 1024, chunks of 65 rows (the last one shorter)
    N, D = 1024 * 64 + 37, 2
    signs, perm, P = _sf_inputs(1, 2, "sorf", seed=7)
    x = torch.randn(N, 1, generator=_gen(8), dtype=torch.float64)
    b = torch.rand(D, generator=_gen(9), dtype=torch.float64)
    out = _sf_ref(x, signs, perm, b, D, "cos_sin", "sorf", 0.6, "row")
    grad = torch.randn(out.shape, generator=_gen(10), dtype=torch.float64)
    with _Launched("colsum_partial_kernel", "colsum_final_kernel"):
        _, gb = _sf_bwd(x, signs, perm, b, out, grad, D, "cos_sin", "sorf", 0.6, "row", False, True)
    _, eb = _sf_bwd_ref(x, signs, perm, b, grad, D, "cos_sin", "sorf", 0.6, "row", False, True)
    _grad_close(gb, eb, torch.float64)


@pytest.mark.parametrize("dtype,P", [(torch.float32, 4096), (torch.float64, 2048)])
def test_structured_features_bwd_largest_P(dtype, P):
    for block in ("sorf", "fastfood"):
        x, signs, perm, b, out, grad = _sf_bwd_case(1, P - 5, 1, 40, "cos", block, dtype, True, seed=70, xscale=0.05)
        gx, gb = _sf_bwd(x, signs, perm, b, out, grad, 40, "cos", block, 0.6, "row", True, True)
        ex, eb = _sf_bwd_ref(x, signs, perm, b, grad, 40, "cos", block, 0.6, "row", True, True)
        _grad_close(gx, ex, dtype)
        _grad_close(gb, eb, dtype)


@pytest.mark.parametrize("dtype,P", [(torch.float32, 8192), (torch.float64, 4096)])
def test_structured_features_bwd_P_limit_error(dtype, P):
    signs, perm, _ = _sf_inputs(P, 1, "fastfood", dtype=dtype)
    x = torch.zeros(1, 5, dtype=dtype)
    grad = out = torch.zeros(1, 3, dtype=dtype)
    for kind in ("cos", "cos_sin"):  # cos: the z recompute fails first; cos_sin: the adjoint
        with pytest.raises(
            RuntimeError,
            match=rf"kernelfuse\.structured_features_bwd: on CUDA, supports P \* sizeof\(dtype\) <= "
            rf"24 KB \(P = {P}\)",
        ):
            sim_ops.structured_features_bwd(
                grad if kind == "cos" else torch.zeros(1, 6, dtype=dtype),
                out if kind == "cos" else torch.zeros(1, 6, dtype=dtype),
                x,
                signs,
                perm,
                None,
                3,
                kind,
                "fastfood",
                1.0,
                "row",
                True,
                False,
            )


def test_structured_features_bwd_empty_and_batched():
    signs, perm, P = _sf_inputs(5, 2, "fastfood", seed=80)
    b = torch.rand(9, dtype=torch.float64, generator=_gen(81))
    # N = 0: gx (0, d), gb zeros
    x0 = torch.zeros(0, 5, dtype=torch.float64)
    out0 = sim_ops.structured_features(x0, signs, perm, b, 9, "cos", "fastfood", 1.0, "row")
    gx, gb = _sf_bwd(x0, signs, perm, b, out0, torch.zeros_like(out0), 9, "cos", "fastfood", 1.0, "row", True, True)
    assert gx.shape == (0, 5) and torch.equal(gb, torch.zeros(9, dtype=torch.float64))
    # D = 0: gx zeros, gb (0,)
    x = torch.randn(3, 5, dtype=torch.float64, generator=_gen(82))
    e = torch.zeros(0, dtype=torch.float64)
    out = sim_ops.structured_features(x, signs, perm, e, 0, "relu", "fastfood", 1.0, "row")
    gx, gb = _sf_bwd(x, signs, perm, e, out, torch.zeros_like(out), 0, "relu", "fastfood", 1.0, "row", True, True)
    assert torch.equal(gx, torch.zeros(3, 5, dtype=torch.float64)) and gb.shape == (0,)
    # batched leading dims
    xb = torch.randn(2, 3, 5, dtype=torch.float64, generator=_gen(83))
    out = sim_ops.structured_features(xb, signs, perm, b, 9, "cos_sin", "fastfood", 0.5, "row")
    grad = torch.randn(out.shape, dtype=torch.float64, generator=_gen(84))
    gx, gb = _sf_bwd(xb, signs, perm, b, out, grad, 9, "cos_sin", "fastfood", 0.5, "row", True, True)
    ex, eb = _sf_bwd_ref(xb, signs, perm, b, grad, 9, "cos_sin", "fastfood", 0.5, "row", True, True)
    assert gx.shape == xb.shape
    _grad_close(gx, ex, torch.float64)
    _grad_close(gb, eb, torch.float64)


def test_structured_features_bwd_fastfood_non_permutation():
    # perm with repeated indices (accepted, as on the CPU): the transposed gather is a scatter-add
    # (shared-memory atomics); compare with the dense reference
    signs, _, P = _sf_inputs(6, 2, "fastfood", seed=85)
    perm = torch.randint(0, P, (2, P), generator=_gen(86))
    perm[:, 1] = perm[:, 0]
    x = torch.randn(4, 6, dtype=torch.float64, generator=_gen(87)) * 0.5
    out = sim_ops.structured_features(x, signs, perm, None, 12, "cos", "fastfood", 1.0, "row")
    torch.testing.assert_close(out, _sf_ref(x, signs, perm, None, 12, "cos", "fastfood", 1.0, "row"))
    grad = torch.randn(out.shape, dtype=torch.float64, generator=_gen(88))
    gx, _ = _sf_bwd(x, signs, perm, None, out, grad, 12, "cos", "fastfood", 1.0, "row", True, False)
    ex, _ = _sf_bwd_ref(x, signs, perm, None, grad, 12, "cos", "fastfood", 1.0, "row", True, False)
    _grad_close(gx, ex, torch.float64)


def test_structured_features_bwd_schedules():
    for block in ("sorf", "fastfood"):  # P = 128 (64 threads), stacked blocks, permutations (atomics hit once)
        x, signs, perm, b, out, grad = _sf_bwd_case(3, 100, 2, 200, "cos", block, torch.float32, True, seed=90)
        gx, gb = run_schedules(lambda: _sf_bwd(x, signs, perm, b, out, grad, 200, "cos", block, 0.6, "row", True, True))
        ex, eb = _sf_bwd_ref(x, signs, perm, b, grad, 200, "cos", block, 0.6, "row", True, True)
        _grad_close(gx, ex, torch.float32)
        _grad_close(gb, eb, torch.float32)


def test_structured_features_bwd_arch80():
    configure(arch=80)
    x, signs, perm, b, out, grad = _sf_bwd_case(4, 9, 2, 30, "relu", "fastfood", torch.float64, True, seed=95)
    gx, gb = _sf_bwd(x, signs, perm, b, out, grad, 30, "relu", "fastfood", 0.6, "row", True, True)
    ex, eb = _sf_bwd_ref(x, signs, perm, b, grad, 30, "relu", "fastfood", 0.6, "row", True, True)
    _grad_close(gx, ex, torch.float64)
    _grad_close(gb, eb, torch.float64)


# ====================================================================== regressions
def test_regression_structured_bwd_on_device():
    # structured_features_bwd had no CUDA kernel (the glue refused device tensors, and no CUDA
    # registration): autograd through structured_features on a CUDA tensor failed at dispatch
    x, signs, perm, b, out, grad = _sf_bwd_case(3, 5, 2, 11, "cos", "fastfood", torch.float64, True, seed=99)
    # z recomputed by structured_kernel, then the adjoint and the column sum
    with _Launched("structured_kernel", "structured_adjoint_kernel", "colsum_partial_kernel"):
        gx, gb = _sf_bwd(x, signs, perm, b, out, grad, 11, "cos", "fastfood", 0.6, "row", True, True)
    ex, eb = _sf_bwd_ref(x, signs, perm, b, grad, 11, "cos", "fastfood", 0.6, "row", True, True)
    _grad_close(gx, ex, torch.float64)
    _grad_close(gb, eb, torch.float64)


def test_regression_fastfood_perm_out_of_range():
    # perm is validated on the CPU only (no device synchronisation): an index >= P made the kernel
    # read t[perm[i]] past its 2 P values of shared memory (ASan: heap-buffer-overflow). Now that
    # block's features are NaN; the other blocks are unaffected.
    signs, perm, P = _sf_inputs(6, 2, "fastfood", seed=100)
    perm[1, 3] = 2 * P + 5
    x = torch.randn(3, 6, dtype=torch.float64, generator=_gen(101))
    out = sim_ops.structured_features(x, signs, perm, None, 16, "cos_sin", "fastfood", 1.0, "row")
    good = _sf_ref(x, signs[:1], perm[:1], None, 8, "cos_sin", "fastfood", 1.0, "row")
    torch.testing.assert_close(out[:, :8], good[:, :8])
    torch.testing.assert_close(out[:, 16:24], good[:, 8:])
    assert torch.isnan(out[:, 8:16]).any() and torch.isnan(out[:, 24:]).any()
    grad = torch.randn(out.shape, dtype=torch.float64, generator=_gen(102))
    gx, _ = _sf_bwd(x, signs, perm, None, out, grad, 16, "cos_sin", "fastfood", 1.0, "row", True, False)
    assert torch.isnan(gx).all()


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
