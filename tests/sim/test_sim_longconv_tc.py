"""fftconv's tensor-core path under the CUDA simulator (csrc/longconv/fftconv_tc_cuda.cu):
kernel_spectrum_kernel<T> (fp32 radix-r / radix-16 DIF passes of k, in place, and the exponent of
max |K|) and fftconv_tc_kernel<T> (fused WMMA Monarch FFT conv, fp16 / bf16, causal, shared kernel,
N = 2^m in [256, 32768]; nsb in {1, 2, 4} sequences per block from the SM count), against the
float64 reference on the same rounded inputs, and the cuFFT-path fallback on the same inputs.
The TC path's pass list depends on N: r = 2^(log2 N mod 4) (a radix-r CUDA-core pass first when
r > 1), then radix-16 passes S = N / r, ..., 16 (shape A for S >= 256, shape B for S = 16). Distinct
lists: r in {1, 2, 4, 8} x (2 or 3 radix-16 passes), i.e. N = 256, 512, 1024, 2048 (two passes)
and N = 4096 ... 32768 (three).
"""

import pytest
import torch
from conftest import configure, run_schedules
from conftest import count_launches as _Count
from kf_inputs import fftconv_inputs as _inputs
from sim_longconv_common import HALF, STAGE, TC, TC_SPEC, _fwd, _half_check, _ref


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
