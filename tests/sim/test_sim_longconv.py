"""Long-convolution family under the CUDA simulator: the CUDA code paths of fftconv (+ fftconv_bwd)
and ssm_kernel (+ ssm_kernel_bwd), run as torch.ops.kernelfuse_sim.* and compared with the float64
references (kernelfuse.reference.longconv / .ssm; backward ops with torch.autograd.grad through the
float64 reference on the same, rounded, inputs).

Kernels (csrc/longconv/):
  fftconv_cuda.cu     stage_kernel<T, A>         pointwise stages around cuFFT (ATen's FFT in the
                                                 simulator), T in {float, double, half, bf16}: pack
                                                 input / grad (+ dD block reduction: shuffles + smem) /
                                                 kernel (causal, circular, bidirectional taps), unpack
                                                 output / postgate grad / input grad, gather dk
                      spectral_kernel<A>         A in {float, double}: MulKernel, MulConjKernel,
                                                 CorrAccumulate (shared kernels), Corr (per batch)
  fftconv_tc_cuda.cu  kernel_spectrum_kernel<T>  fp32 radix-r / radix-16 DIF passes of k, in place,
                                                 and the exponent of max |K| (block max)
                      fftconv_tc_kernel<T>       fused WMMA Monarch FFT conv, fp16 / bf16, causal,
                                                 shared kernel, N = 2^m in [256, 32768]; nsb in
                                                 {1, 2, 4} sequences per block from the SM count
  ssm_kernel_cuda.cu  ssm_fwd_kernel<T>          (l tile, h) blocks (heads strided over grid.y),
                                                 states staged in smem blockDim.x at a time
                      ssm_bwd_kernel<T>          (n, h) blocks, smem tree reduction over l, atomicAdd
Not reachable at simulated sizes: the glue's multi-block / multi-task device partitions (rows * n >
2^26 elements), hence stage / spectral launches with row0 > 0 or kbase > 0, and the grid-stride
loops of stage_kernel (> 2^20 rows) and spectral_kernel (> 2^28 elements).
The TC path's pass list depends on N: r = 2^(log2 N mod 4) (a radix-r CUDA-core pass first when
r > 1), then radix-16 passes S = N / r, ..., 16 (shape A for S >= 256, shape B for S = 16). Distinct
lists: r in {1, 2, 4, 8} x (2 or 3 radix-16 passes), i.e. N = 256, 512, 1024, 2048 (two passes)
and N = 4096 ... 32768 (three).
"""

import math

import pytest
import torch
from conftest import assert_close_to_ref, configure, run_schedules, sim_ops
from conftest import count_launches as _Count
from kernelfuse.reference import longconv as ref
from kernelfuse.reference import longconv_ssm as ssm_ref
from kf_inputs import fftconv_inputs as _inputs

MODES = ["causal", "bidirectional", "circular"]
HALF = [torch.float16, torch.bfloat16]
STAGE = "fftconv: stage_kernel"
SPECTRAL = "fftconv: spectral_kernel"
TC = "fftconv_tc: fftconv_tc_kernel"
TC_SPEC = "fftconv_tc: kernel_spectrum_kernel"
SSM_FWD = "ssm_kernel: ssm_fwd_kernel"
SSM_BWD = "ssm_kernel: ssm_bwd_kernel"


# ================================================================== fftconv helpers
def _d(t):
    return None if t is None else t.double()


def _ref(u, k, D, pre, post, mode, skip="input"):
    """float64 reference on the (rounded) inputs."""
    return ref.fftconv(_d(u), _d(k), _d(D), pregate=_d(pre), postgate=_d(post), mode=mode, skip=skip)


def _fwd(u, k, D, pre, post, mode, fft_size=None, skip="input"):
    return sim_ops.fftconv(u, k, D, pre, post, mode, fft_size, skip)


NEED_NAMES = ("u", "k", "D", "pregate", "postgate")


def _ref_grads(gy, u, k, D, pre, post, mode, skip="input"):
    """{name: float64 gradient} by autograd through the float64 reference (present inputs only)."""
    xs = {n: _d(t).requires_grad_(True) for n, t in zip(NEED_NAMES, (u, k, D, pre, post)) if t is not None}
    y = ref.fftconv(
        xs["u"], xs["k"], xs.get("D"), pregate=xs.get("pregate"), postgate=xs.get("postgate"), mode=mode, skip=skip
    )
    gs = torch.autograd.grad(y, list(xs.values()), gy.double())
    return dict(zip(xs.keys(), gs))


def _check_bwd(out, exp, present, needs, dtype, factor=1.0):
    """out: the 5-tuple of fftconv_bwd; exp: _ref_grads; needs: the five flags passed."""
    for name, o, need in zip(NEED_NAMES, out, needs):
        if need and name in present:
            e = exp[name]
            assert o.dtype == dtype and o.shape == e.shape, (name, o.dtype, o.shape, e.shape)
            assert not torch.isnan(o.double()).any(), f"d{name}: NaN (unwritten elements?)"
            assert_close_to_ref(o, e, dtype, factor=factor)
        else:
            assert o.numel() == 0, f"d{name} not wanted (need={need}, present={name in present}) but returned {o.shape}"


def _bwd(gy, u, k, D, pre, post, mode, needs=(True,) * 5, fft_size=None, skip="input"):
    return sim_ops.fftconv_bwd(gy, u, k, D, pre, post, mode, fft_size, *needs, skip)


def _present(D, pre, post):
    return (
        {"u", "k"}
        | ({"D"} if D is not None else set())
        | ({"pregate"} if pre is not None else set())
        | ({"postgate"} if post is not None else set())
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
def _half_check(out, exp, dtype, factor=1.0):
    assert out.dtype == dtype and not torch.isnan(out.double()).any()
    assert_close_to_ref(out, exp, dtype, factor=factor)


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


# ================================================================== fftconv: tensor-core path
def _tc_n(L, Lk):
    need = L + Lk - 1
    n = 256
    while n < need:
        n *= 2
    return n


def _tc_run(u, k, D, pre, post, fft_size=None):
    with _Count(TC, TC_SPEC, STAGE) as c:
        y = _fwd(u, k, D, pre, post, "causal", fft_size)
    assert c.n[TC] == 1 and c.n[TC_SPEC] == 1 and c.n[STAGE] == 0, f"the tensor-core path did not run: {c.n}"
    return y


def _tc_fallback(u, k, D, pre, post, env_switch):
    env_switch("KERNELFUSE_NO_TC_FFTCONV", "1")
    try:
        with _Count(TC, STAGE) as c:
            y = _fwd(u, k, D, pre, post, "causal")
        assert c.n[TC] == 0 and c.n[STAGE] > 0
    finally:
        env_switch("KERNELFUSE_NO_TC_FFTCONV", None)
    return y


# The fused kernel keeps the signal in fp16 / bf16 between its 2 (log16 N + [r > 1]) FFT passes
# (a rounding of every element each, plus the rounded DFT tables), but the error spreads over the
# row: measured, the worst elementwise |error| / (atol + rtol |ref|) with the TOL of the dtype is
# 0.13 - 0.40 at N = 256 ... 8192 (the cuFFT path: 0.03 - 0.10), so no wider tolerance is needed.
TC_FACTOR = 1.0

# (L, Lk) giving each FFT size N (some with L + Lk - 1 == N exactly, the edge of the size choice)
TC_SIZES = {
    256: (200, 57),
    512: (300, 100),
    1024: (1000, 25),
    2048: (1500, 549),
    4096: (3001, 1000),
    8192: (8000, 100),
    16384: (10000, 6385),
    32768: (30000, 2769),
}
TC_NS = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768]


def _tc_case(N, dtype, B=3, H=2, D=True, gates=True, kshape="shared", seed=0, env_switch=None):
    L, Lk = TC_SIZES[N]
    assert _tc_n(L, Lk) == N
    u, k, Dv, pre, post = _inputs(B, H, L, Lk, "causal", dtype, kshape, D=D, gates=gates, seed=seed)
    exp = _ref(u, k, Dv, pre, post, "causal")
    y = _tc_run(u, k, Dv, pre, post)
    _half_check(y, exp, dtype, TC_FACTOR)
    if env_switch is not None:
        _half_check(_tc_fallback(u, k, Dv, pre, post, env_switch), exp, dtype)
    return y, exp


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("N", TC_NS)
def test_fftconv_tc_sizes(N, dtype, env_switch):
    """Every pass list: r = 1, 2, 4, 8 with two radix-16 passes (N = 256 ... 2048) and with three
    (N = 4096 ... 32768, the largest size), odd B (the last complex sequence has a zero imaginary
    row), against the reference; the cuFFT fallback (KERNELFUSE_NO_TC_FFTCONV=1) on the same inputs."""
    B, H = (3, 2) if N <= 4096 else (1, 1)
    _tc_case(N, dtype, B=B, H=H, seed=N, env_switch=env_switch)


@pytest.mark.parametrize("dtype", HALF)
def test_fftconv_tc_small_and_odd(dtype, env_switch):
    """Tiny L (N = 256, the minimum), B = 1 / 2 / 5, D and gates absent, (1, H, taps) kernels, B = 1
    with a (B, H, taps) kernel (shared), an explicit fft_size (ignored by the TC path)."""
    cases = [
        dict(B=1, H=1, L=1, Lk=1),
        dict(B=2, H=3, L=5, Lk=2, D=False, gates=False),
        dict(B=5, H=1, L=17, Lk=17, kshape="one"),
        dict(B=1, H=2, L=31, Lk=4, kshape="batch", D=False),
        dict(B=4, H=3, L=64, Lk=64, gates=False),
        dict(B=3, H=2, L=70, Lk=20, gates="pre"),
        dict(B=2, H=2, L=70, Lk=20, gates="post"),
    ]
    for i, c in enumerate(cases):
        c = dict(c)
        L, Lk = c.pop("L"), c.pop("Lk")
        B, H = c.pop("B"), c.pop("H")
        only = c.pop("gates", True)
        u, k, Dv, pre, post = _inputs(B, H, L, Lk, "causal", dtype, seed=50 + i, gates=bool(only), **c)
        if only == "pre":
            post = None
        elif only == "post":
            pre = None
        exp = _ref(u, k, Dv, pre, post, "causal")
        _half_check(_tc_run(u, k, Dv, pre, post), exp, dtype, TC_FACTOR)
        _half_check(_tc_fallback(u, k, Dv, pre, post, env_switch), exp, dtype)
    u, k, Dv, pre, post = _inputs(2, 2, 40, 10, "causal", dtype, seed=59)
    _half_check(_tc_run(u, k, Dv, pre, post, fft_size=1000), _ref(u, k, Dv, pre, post, "causal"), dtype, TC_FACTOR)


@pytest.mark.parametrize("dtype", HALF)
def test_fftconv_tc_skip_gated(dtype, env_switch):
    """The tensor-core path with skip "gated" (D * u * pregate in its store loop): N = 256 and
    1024, odd B (the imaginary row's skip), pregate with and without a postgate; the cuFFT fallback."""
    for i, (B, L, Lk, post_on) in enumerate([(3, 200, 57, True), (2, 1000, 25, False)]):
        u, k, D, pre, post = _inputs(B, 2, L, Lk, "causal", dtype, seed=72 + i)
        post = post if post_on else None
        exp = _ref(u, k, D, pre, post, "causal", "gated")
        with _Count(TC, TC_SPEC, STAGE) as c:
            y = _fwd(u, k, D, pre, post, "causal", skip="gated")
        assert c.n[TC] == 1 and c.n[STAGE] == 0
        _half_check(y, exp, dtype, TC_FACTOR)
        assert ((y.double() - _ref(u, k, D, pre, post, "causal")).norm() / exp.norm()).item() > 1e-2
        env_switch("KERNELFUSE_NO_TC_FFTCONV", "1")
        _half_check(_fwd(u, k, D, pre, post, "causal", skip="gated"), exp, dtype)
        env_switch("KERNELFUSE_NO_TC_FFTCONV", None)


def test_fftconv_tc_schedules():
    """The fused kernel (smem passes, per-warp scratch, WMMA, the block max of the input scaling)
    and the spectrum kernel under the forward / reverse / random thread schedules: bitwise equal."""
    for dtype, N, B in ((torch.float16, 512, 3), (torch.bfloat16, 8192, 1)):  # r = 2 + two / three radix-16
        L, Lk = TC_SIZES[N]
        u, k, D, pre, post = _inputs(B, 1, L, Lk, "causal", dtype, seed=60)
        y = run_schedules(lambda: _tc_run(u, k, D, pre, post))
        _half_check(y, _ref(u, k, D, pre, post, "causal"), dtype, TC_FACTOR)


def test_fftconv_tc_size_limit_falls_back(env_switch):
    """L + Lk - 1 = 32769 > kTCMaxN: the cuFFT path (half storage), not the TC kernel."""
    u, k, D, pre, post = _inputs(1, 1, 32768, 2, "causal", torch.float16, seed=61)
    with _Count(TC, STAGE) as c:
        y = _fwd(u, k, D, pre, post, "causal")
    assert c.n[TC] == 0 and c.n[STAGE] > 0
    _half_check(y, _ref(u, k, D, pre, post, "causal"), torch.float16)


# Sequences per block: nsb doubles (up to 4) while ceil(nseq / (2 nsb)) >= 2 * SMs (108 on sm_80,
# 132 on sm_90) and the shared memory fits (it always does for N <= 16384 at nsb <= 4, so the
# SM count is what differs by arch). nseq = ceil(B / 2) * H.
#   nseq = 501: arch 80 -> nsb 2 (251 blocks, the last with 1 sequence), arch 90 -> nsb 1
#   nseq = 863: arch 80 -> nsb 4 (216 blocks, the last with 3 sequences), arch 90 -> nsb 2 (the last with 1)
# (B odd, H = 1: one kernel spectrum, and the last sequence of the batch has a zero imaginary row.)
@pytest.mark.parametrize("arch", [80, 90])
def test_fftconv_tc_arch_one_sequence_per_block(arch):
    """Few sequences: nsb = 1 on both archs (the device attributes are queried all the same)."""
    configure(arch=arch)
    u, k, D, pre, post = _inputs(3, 5, 100, 50, "causal", torch.bfloat16, seed=64)
    _half_check(_tc_run(u, k, D, pre, post), _ref(u, k, D, pre, post, "causal"), torch.bfloat16, TC_FACTOR)


@pytest.mark.parametrize("arch", [80, pytest.param(90, marks=pytest.mark.slow)])
def test_fftconv_tc_arch_sequences_per_block(arch):
    """nsb = 2 on sm_80 (two sequences per block; a last block with one), 1 on sm_90."""
    configure(arch=arch)
    u, k, D, pre, post = _inputs(1001, 1, 40, 9, "causal", torch.float16, seed=62)
    _half_check(_tc_run(u, k, D, pre, post), _ref(u, k, D, pre, post, "causal"), torch.float16, TC_FACTOR)


@pytest.mark.slow
@pytest.mark.parametrize("arch,dtype", [(80, torch.float16), (90, torch.bfloat16)])
def test_fftconv_tc_arch_four_sequences_per_block(arch, dtype):
    """nsb = 4 on sm_80 (the last block with 3 sequences), 2 on sm_90 (the last with 1)."""
    configure(arch=arch)
    u, k, D, pre, post = _inputs(1725, 1, 30, 7, "causal", dtype, seed=63)
    _half_check(_tc_run(u, k, D, pre, post), _ref(u, k, D, pre, post, "causal"), dtype, TC_FACTOR)


# ================================================================== ssm_kernel
DISCS = ("zoh", "bilinear")
CDT = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _ssm_params(H, N, dtype=torch.float64, seed=0, with_B=True, dt_range=(1e-3, 1e-1)):
    """S4D-Lin-like parameters (as tests/test_longconv_ssm.py); B, C as (re, im) pairs (H, N, 2)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = math.log(dt_range[0]), math.log(dt_range[1])
    log_dt = lo + (hi - lo) * torch.rand(H, generator=g, dtype=torch.float64)
    A_real = -0.5 * torch.exp(0.3 * torch.randn(H, N, generator=g, dtype=torch.float64))
    A_imag = (
        math.pi
        * torch.arange(N, dtype=torch.float64)
        * (1 + 0.05 * torch.randn(H, N, generator=g, dtype=torch.float64))
    )
    B = torch.randn(H, N, 2, generator=g, dtype=torch.float64) if with_B else None
    C = torch.randn(H, N, 2, generator=g, dtype=torch.float64)
    cv = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cv(log_dt), cv(A_real), cv(A_imag), cv(B), cv(C)


def _cplx(t):
    return None if t is None else torch.view_as_complex(t.double().contiguous())


def _ssm_ref(args, L, disc):
    log_dt, Ar, Ai, B, C = args
    return ssm_ref.ssm_kernel(log_dt.double(), Ar.double(), Ai.double(), _cplx(B), _cplx(C), L, discretization=disc)


def _ssm_ref_grads(g, args, disc):
    """float64 autograd through the reference: grads of (log_dt, A_real, A_imag, B pairs, C pairs)."""
    xs = [None if t is None else t.double().clone().requires_grad_(True) for t in args]
    log_dt, Ar, Ai, B, C = xs
    K = ssm_ref.ssm_kernel(
        log_dt,
        Ar,
        Ai,
        None if B is None else torch.view_as_complex(B),
        torch.view_as_complex(C),
        g.shape[1],
        discretization=disc,
    )
    want = [t for t in xs if t is not None]
    gs = iter(torch.autograd.grad(K, want, g.double(), allow_unused=True))
    out = []
    for t in xs:
        if t is None:
            out.append(None)
        else:
            gr = next(gs)
            out.append(torch.zeros_like(t) if gr is None else gr)
    return out


def _ssm_fwd(args, L, disc):
    return sim_ops.ssm_kernel(*args, L, disc)


def _ssm_bwd(g, args, disc):
    return sim_ops.ssm_kernel_bwd(g, *args, disc)


def _check_ssm_bwd(out, exp, dtype, factor=1.0):
    names = ("log_dt", "A_real", "A_imag", "B", "C")
    for name, o, e in zip(names, out, exp):
        if e is None:
            assert o.numel() == 0, name
            continue
        assert o.dtype == dtype and o.shape == e.shape, (name, o.shape, e.shape)
        assert not torch.isnan(o).any(), name
        assert_close_to_ref(o, e, dtype, factor=factor)


# L: 1, odd, prime, around the 256-wide l tile; N: 1, 3, one n tile (256) and one past it.
# Threads per block follow L (32 for L <= 32, 64 for L = 40, 256 from L = 256 on), and the states are
# staged blockDim.x at a time, so N = 300 at L = 13 is 10 tiles, N = 70 at L = 40 two (one partial).
SSM_LN = [(1, 1), (7, 3), (256, 5), (257, 256), (1009, 257), (13, 300), (40, 70)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_B", [True, False])
@pytest.mark.parametrize("disc", DISCS)
def test_ssm_kernel_forward(disc, with_B, dtype):
    for i, (L, N) in enumerate(SSM_LN):
        H = 3 if L * N < 20000 else 1
        args = _ssm_params(H, N, dtype, seed=i, with_B=with_B)
        with _Count(SSM_FWD) as c:
            K = _ssm_fwd(args, L, disc)
        assert c.n[SSM_FWD] == 1
        assert K.shape == (H, L) and K.dtype == dtype
        assert_close_to_ref(K, _ssm_ref(args, L, disc), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_B", [True, False])
@pytest.mark.parametrize("disc", DISCS)
def test_ssm_kernel_backward(disc, with_B, dtype):
    # L: 1, prime, > 256 (several l per thread), 0 (empty: zero gradients); N: 1, odd, > 256 blocks
    # threads: 32 (L <= 32), 128 (L = 100), 256 (L = 700: several l per thread)
    for i, (H, N, L) in enumerate([(2, 1, 1), (3, 5, 13), (2, 3, 100), (2, 7, 700), (1, 300, 3), (2, 4, 0)]):
        args = _ssm_params(H, N, dtype, seed=10 + i, with_B=with_B)
        g = torch.randn(H, L, generator=torch.Generator().manual_seed(i), dtype=torch.float64).to(dtype)
        with _Count(SSM_BWD) as c:
            out = _ssm_bwd(g, args, disc)
        assert c.n[SSM_BWD] == 1
        # float32: the float64 sums rounded per state; g_log_dt sums N float32 terms (atomicAdd)
        _check_ssm_bwd(out, _ssm_ref_grads(g, args, disc), dtype)


def test_ssm_kernel_empty():
    args = _ssm_params(3, 4)
    assert _ssm_fwd(args, 0, "zoh").shape == (3, 0)
    e = _ssm_params(0, 4)
    assert _ssm_fwd(e, 5, "zoh").shape == (0, 5)
    out = _ssm_bwd(torch.zeros(0, 5, dtype=torch.float64), e, "zoh")
    assert [t.shape for t in out] == [(0,), (0, 4), (0, 4), (0, 4, 2), (0, 4, 2)]
    # N = 0: K = 0; gradients: log_dt zero (memset), the others empty
    z = _ssm_params(2, 0)
    with _Count(SSM_FWD, SSM_BWD) as c:
        K = _ssm_fwd(z, 9, "bilinear")
        out = _ssm_bwd(torch.randn(2, 9, dtype=torch.float64), z, "bilinear")
    assert torch.equal(K, torch.zeros(2, 9, dtype=torch.float64))
    assert c.n[SSM_BWD] == 0
    assert torch.equal(out[0], torch.zeros(2, dtype=torch.float64)) and out[1].shape == (2, 0)


def test_ssm_kernel_schedules():
    """smem staging (forward) and the smem tree reduction (backward) under every schedule."""
    for disc in DISCS:
        args = _ssm_params(2, 300, torch.float64, seed=70)  # 2 l tiles x 2 heads, 2 n tiles each
        K = run_schedules(lambda: _ssm_fwd(args, 300, disc))
        assert_close_to_ref(K, _ssm_ref(args, 300, disc), torch.float64)
        args = _ssm_params(2, 3, torch.float64, seed=71)
        for L in (300, 40):  # 256 threads (2 l per thread), 64 threads
            g = torch.randn(2, L, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
            out = run_schedules(lambda: _ssm_bwd(g, args, disc))
            _check_ssm_bwd(out, _ssm_ref_grads(g, args, disc), torch.float64)


# ================================================================== regressions
@pytest.mark.parametrize("dtype", HALF)
def test_regression_tc_fp16_overflow(dtype):
    """fftconv_tc_kernel kept v and the spectral product unscaled in fp16: a DC-heavy row's first
    spectral bin is ~ L / sqrt(N) times its values, so u ~ 6000 (L = 200, N = 256), u ~ 2000 at
    N = 4096, or a kernel with |K| ~ 6000 overflowed to inf (NaN outputs) although every input and
    output is representable and the cuFFT path is exact. Fixed by power-of-two scalings of each
    sequence (max |v| -> [0.5, 1)) and each channel's spectrum, undone in fp32 at the output."""
    g = torch.Generator().manual_seed(80)
    for B, H, L, Lk, amp, kamp in [
        (1, 2, 200, 57, 6000.0, 1.0),
        (3, 1, 200, 9, 1.0, 6000.0),
        (2, 1, 4000, 96, 2000.0, 1.0),
        (2, 2, 100, 30, 1e-4, 1e-3),
    ]:
        u = (amp * (1 + 0.1 * torch.randn(B, H, L, generator=g, dtype=torch.float64))).to(dtype)
        k = 1e-3 * torch.randn(H, Lk, generator=g, dtype=torch.float64)
        k[:, 0] = 1.0
        k = (kamp * k).to(dtype)
        exp = _ref(u, k, None, None, None, "causal")
        y = _tc_run(u, k, None, None, None)
        assert torch.isfinite(y.float()).all(), f"amp {amp}, kamp {kamp}: inf / NaN from the TC path"
        _half_check(y, exp, dtype, TC_FACTOR)


@pytest.mark.slow
def test_regression_ssm_grid_y_limit():
    """ssm_fwd_kernel / ssm_bwd_kernel put the H heads on grid.y, whose limit is 65535: H = 65536
    failed to launch (cudaErrorInvalidConfiguration). Fixed by striding over heads in y."""
    configure(workers=2)
    H = 65536
    args = _ssm_params(H, 1, seed=81)
    K = _ssm_fwd(args, 1, "zoh")
    assert_close_to_ref(K, _ssm_ref(args, 1, "zoh"), torch.float64)
    g = torch.randn(H, 1, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    out = _ssm_bwd(g, args, "zoh")
    _check_ssm_bwd(out, _ssm_ref_grads(g, args, "zoh"), torch.float64)


def test_regression_ssm_log_dt_float32_sum():
    """ssm_bwd_kernel added each state's dt dLoss/ddt into g_log_dt with a float32 atomicAdd: N
    rounded terms summed in float (and in a run-dependent order on a GPU), 1.6e-5 relative error
    here against 2e-8 on the CPU (which sums in double and rounds once). Fixed: per-state terms in
    a double workspace, summed per head in double in a fixed order (ssm_dt_reduce_kernel)."""
    for H, N, L in [(1, 300, 3), (2, 1000, 50)]:
        args = _ssm_params(H, N, torch.float32, seed=14, with_B=False)
        g = torch.randn(H, L, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(torch.float32)
        out = _ssm_bwd(g, args, "zoh")
        exp = _ssm_ref_grads(g, args, "zoh")
        assert_close_to_ref(out[0], exp[0], torch.float32)
