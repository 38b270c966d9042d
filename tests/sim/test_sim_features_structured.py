"""CUDA simulator tests of the features family (csrc/features/features_cuda.cu, the launch shapes:
test_sim_features.py): structured_features (SORF and Fastfood: structured_kernel) and
structured_features_bwd (structured_adjoint_kernel, colsum_partial_kernel, colsum_final_kernel),
run as torch.ops.kernelfuse_sim.* and compared with the float64 references of
kernelfuse.reference.features (a matrix-free chain of the reference beyond P = 256), the backward
with torch.autograd.grad through it; and their regressions.
"""

import math
from itertools import product

import pytest
import torch
from conftest import configure, run_schedules, sim_ops  # tests/sim/conftest.py
from kernelfuse.reference import features as ref
from kf_inputs import structured_inputs as _sf_inputs
from sim_features_common import KINDS, F, _close, _gen, _grad_close, _Launched, _ref_grads


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
