"""fftconv of the long-convolution family under the CUDA simulator: the CUDA code paths of fftconv
(+ fftconv_bwd) through cuFFT (ATen's FFT in the simulator), run as torch.ops.kernelfuse_sim.* and
compared with the float64 reference (kernelfuse.reference.longconv; fftconv_bwd with
torch.autograd.grad through the float64 reference on the same, rounded, inputs).

Kernels (csrc/longconv/):
  fftconv_cuda.cu     stage_kernel<T, A>         pointwise stages around cuFFT (ATen's FFT in the
                                                 simulator), T in {float, double, half, bf16}: pack
                                                 input / grad (+ dD block reduction: shuffles + smem) /
                                                 kernel (causal, circular, bidirectional taps), unpack
                                                 output / postgate grad / input grad, gather dk
                      spectral_kernel<A>         A in {float, double}: MulKernel, MulConjKernel,
                                                 CorrAccumulate (shared kernels), Corr (per batch)
Not reachable at simulated sizes: the glue's multi-block / multi-task device partitions (rows * n >
2^26 elements), hence stage / spectral launches with row0 > 0 or kbase > 0, and the grid-stride
loops of stage_kernel (> 2^20 rows) and spectral_kernel (> 2^28 elements).
The tensor-core path: test_sim_longconv_tc.py; mixed precision: test_sim_longconv_mixed.py;
ssm_kernel: test_sim_longconv_ssm.py; shared helpers: sim_longconv_common.py.
"""

import pytest
import torch
from conftest import assert_close_to_ref, run_schedules
from conftest import count_launches as _Count
from kf_inputs import fftconv_inputs as _inputs
from sim_longconv_common import (
    HALF,
    MODES,
    SPECTRAL,
    STAGE,
    TC,
    _bwd,
    _check_bwd,
    _fwd,
    _half_check,
    _present,
    _ref,
    _ref_grads,
)

# ================================================================== fftconv: float32 / float64 forward
# (L, Lk): tiny, odd, prime, L = Lk, and n > 256 so the stage kernel's thread loop wraps.
FWD_SIZES = [(1, 1), (7, 3), (13, 13), (97, 40), (300, 77)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kshape", ["shared", "one", "batch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fftconv_forward(mode, kshape, dtype):
    for i, (L, Lk) in enumerate(FWD_SIZES):
        u, k, D, pre, post = _inputs(2, 3, L, Lk, mode, dtype, kshape, seed=i)
        with _Count(STAGE, SPECTRAL) as c:
            y = _fwd(u, k, D, pre, post, mode)
        assert c.n[STAGE] >= 3 and c.n[SPECTRAL] == 1
        assert y.dtype == dtype and y.shape == u.shape
        assert_close_to_ref(y, _ref(u, k, D, pre, post, mode), dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("D,gates", [(False, False), (True, False), (False, True)])
def test_fftconv_forward_skip_and_gates(mode, D, gates):
    for kshape in ("shared", "batch"):
        u, k, Dv, pre, post = _inputs(3, 2, 37, 11, mode, torch.float32, kshape, D=D, gates=gates, seed=5)
        assert_close_to_ref(_fwd(u, k, Dv, pre, post, mode), _ref(u, k, Dv, pre, post, mode), torch.float32)
    # one gate at a time
    u, k, Dv, pre, post = _inputs(2, 3, 20, 6, mode, torch.float64, seed=6)
    assert_close_to_ref(_fwd(u, k, Dv, pre, None, mode), _ref(u, k, Dv, pre, None, mode), torch.float64)
    assert_close_to_ref(_fwd(u, k, Dv, None, post, mode), _ref(u, k, Dv, None, post, mode), torch.float64)


@pytest.mark.parametrize("mode", MODES)
def test_fftconv_explicit_fft_size(mode):
    L, Lk = 50, 20
    u, k, D, pre, post = _inputs(2, 3, L, Lk, mode, torch.float64, "batch", seed=7)
    exp = _ref(u, k, D, pre, post, mode)
    least = {"causal": L + Lk - 1, "bidirectional": L + Lk, "circular": L}[mode]
    sizes = [L] if mode == "circular" else [least, least + 1, 128, 3 * L + 1]
    for n in sizes:
        assert_close_to_ref(_fwd(u, k, D, pre, post, mode, n), exp, torch.float64)
        gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
        _check_bwd(
            _bwd(gy, u, k, D, pre, post, mode, fft_size=n),
            _ref_grads(gy, u, k, D, pre, post, mode),
            _present(D, pre, post),
            (True,) * 5,
            torch.float64,
        )


def test_fftconv_empty_batch_or_heads():
    for dtype in (torch.float32, torch.float16):
        for B, H in [(0, 3), (2, 0)]:
            u, k, D, pre, post = _inputs(B, H, 10, 4, "causal", dtype)
            y = _fwd(u, k, D, pre, post, "causal")
            assert y.shape == (B, H, 10) and y.dtype == dtype
            out = _bwd(u.clone(), u, k, D, pre, post, "causal")
            assert out[0].shape == u.shape and out[3].shape == u.shape and out[4].shape == u.shape
            assert torch.equal(out[1], torch.zeros_like(k)) and torch.equal(out[2], torch.zeros_like(D))


# ================================================================== fftconv: backward
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kshape", ["shared", "one", "batch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fftconv_backward(mode, kshape, dtype):
    # B = 1: the glue's by-heads partition (kernel gradient gathered per task), else partial sums
    for i, (B, H, L, Lk) in enumerate([(2, 3, 1, 1), (3, 2, 13, 5), (1, 3, 29, 11), (2, 3, 300, 77)]):
        u, k, D, pre, post = _inputs(B, H, L, Lk, mode, dtype, kshape, seed=10 + i)
        gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        out = _bwd(gy.to(dtype), u, k, D, pre, post, mode)
        _check_bwd(out, _ref_grads(gy.to(dtype), u, k, D, pre, post, mode), _present(D, pre, post), (True,) * 5, dtype)


def _need_subsets(kshape):
    """Shared kernels: all 32 subsets of need_*. Per-batch kernels: the 8 subsets of (u, k, postgate)
    (need_pregate acts like need_u and need_D only adds PackGrad's reduction: both covered above)."""
    if kshape == "shared":
        return [tuple(bool(m >> j & 1) for j in range(5)) for m in range(32)]
    return [(bool(m & 1), bool(m & 2), False, False, bool(m & 4)) for m in range(8)]


@pytest.mark.parametrize("kshape", ["shared", "batch"])
def test_fftconv_backward_every_need_subset(kshape):
    """Subsets of need_* (they select which spectra, stages and spectral ops run: need_k alone is
    the CorrAccumulate / Corr path, need_postgate alone the recomputed forward, ...)."""
    u, k, D, pre, post = _inputs(2, 2, 23, 9, "causal", torch.float64, kshape, seed=20)
    gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exp = _ref_grads(gy, u, k, D, pre, post, "causal")
    for needs in _need_subsets(kshape):
        _check_bwd(_bwd(gy, u, k, D, pre, post, "causal", needs), exp, _present(D, pre, post), needs, torch.float64)


@pytest.mark.parametrize("D,gates", [(False, False), (True, False), (False, True)])
def test_fftconv_backward_absent_inputs(D, gates):
    """D / gates absent: their gradients are empty even when asked for; the rest still correct."""
    for mode in MODES:
        u, k, Dv, pre, post = _inputs(2, 3, 19, 7, mode, torch.float32, "shared", D=D, gates=gates, seed=21)
        gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(4))
        _check_bwd(
            _bwd(gy, u, k, Dv, pre, post, mode),
            _ref_grads(gy, u, k, Dv, pre, post, mode),
            _present(Dv, pre, post),
            (True,) * 5,
            torch.float32,
        )
        # postgate alone, then pregate alone
        if gates:
            for p1, p2 in ((None, post), (pre, None)):
                _check_bwd(
                    _bwd(gy, u, k, Dv, p1, p2, mode),
                    _ref_grads(gy, u, k, Dv, p1, p2, mode),
                    _present(Dv, p1, p2),
                    (True,) * 5,
                    torch.float32,
                )


# skip "gated" (D on u * pregate, H3 / Hyena): the skip branches of PackGrad (dD), UnpackOutput,
# UnpackPostGrad and UnpackInputGrad (D * dz joins dv before the pregate), float32 / float64 / half.
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_fftconv_skip_gated_forward_backward(mode, dtype):
    for kshape in ("shared", "batch"):
        for gates in ("both", "pre"):
            u, k, D, pre, post = _inputs(3, 2, 37, 11, mode, dtype, kshape, seed=70)
            post = post if gates == "both" else None
            y = _fwd(u, k, D, pre, post, mode, skip="gated")  # (fp16 causal shared: the TC path)
            assert_close_to_ref(y, _ref(u, k, D, pre, post, mode, "gated"), dtype)
            gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(8)).to(dtype)
            exp = _ref_grads(gy, u, k, D, pre, post, mode, "gated")
            for needs in ((True,) * 5, (False, False, True, True, False), (True, False, False, False, True)):
                _check_bwd(
                    _bwd(gy, u, k, D, pre, post, mode, needs, skip="gated"), exp, _present(D, pre, post), needs, dtype
                )


def test_fftconv_skip_gated_schedules():
    u, k, D, pre, post = _inputs(2, 3, 300, 77, "causal", torch.float32, "shared", seed=71)
    gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(9))
    y = run_schedules(lambda: _fwd(u, k, D, pre, post, "causal", skip="gated"))
    assert_close_to_ref(y, _ref(u, k, D, pre, post, "causal", "gated"), torch.float32)
    out = run_schedules(lambda: _bwd(gy, u, k, D, pre, post, "causal", skip="gated"))
    _check_bwd(
        out, _ref_grads(gy, u, k, D, pre, post, "causal", "gated"), _present(D, pre, post), (True,) * 5, torch.float32
    )


def test_fftconv_schedules():
    """Thread-schedule independence of every stage (PackGrad's dD reduction: shuffles + smem) and
    spectral op, forward and backward, shared and per-batch kernels."""
    for kshape in ("shared", "batch"):
        u, k, D, pre, post = _inputs(2, 3, 300, 77, "bidirectional", torch.float32, kshape, seed=22)
        gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(5))
        y = run_schedules(lambda: _fwd(u, k, D, pre, post, "bidirectional"))
        assert_close_to_ref(y, _ref(u, k, D, pre, post, "bidirectional"), torch.float32)
        out = run_schedules(lambda: _bwd(gy, u, k, D, pre, post, "bidirectional"))
        _check_bwd(
            out, _ref_grads(gy, u, k, D, pre, post, "bidirectional"), _present(D, pre, post), (True,) * 5, torch.float32
        )


# ================================================================== fftconv: half types, cuFFT path
@pytest.mark.parametrize("dtype", HALF)
def test_fftconv_half_cufft_path(dtype, env_switch):
    """Half storage read as is, float computation: the modes / kernel kinds the TC path does not
    take (bidirectional, circular, per-batch kernels), and causal shared with the TC path disabled."""
    cases = [("bidirectional", "shared"), ("circular", "one"), ("causal", "batch"), ("bidirectional", "batch")]
    for i, (mode, kshape) in enumerate(cases):
        u, k, D, pre, post = _inputs(3, 2, 97, 33, mode, dtype, kshape, seed=30 + i)
        with _Count(TC, STAGE) as c:
            y = _fwd(u, k, D, pre, post, mode)
        assert c.n[TC] == 0 and c.n[STAGE] > 0
        _half_check(y, _ref(u, k, D, pre, post, mode), dtype)
    env_switch("KERNELFUSE_NO_TC_FFTCONV", "1")
    u, k, D, pre, post = _inputs(3, 2, 97, 33, "causal", dtype, "shared", seed=35)
    with _Count(TC, STAGE) as c:
        y = _fwd(u, k, D, pre, post, "causal")
    assert c.n[TC] == 0 and c.n[STAGE] > 0
    _half_check(y, _ref(u, k, D, pre, post, "causal"), dtype)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("mode", MODES)
def test_fftconv_half_backward(dtype, mode):
    """fftconv_bwd in fp16 / bf16 (always the cuFFT path): float computation, half results."""
    for kshape in ("shared", "batch"):
        u, k, D, pre, post = _inputs(3, 2, 41, 17, mode, dtype, kshape, seed=40)
        gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(6)).to(dtype)
        out = _bwd(gy, u, k, D, pre, post, mode)
        _check_bwd(out, _ref_grads(gy, u, k, D, pre, post, mode), _present(D, pre, post), (True,) * 5, dtype)
