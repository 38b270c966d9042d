"""Butterfly family under the CUDA simulator (the kernel map: test_sim_butterfly.py): monarch_fft
(monarch_fft_cuda.cu: monarch_fft_kernel<T> for N = N1 N2 with N1 <= N2 <= 64 and the intermediate in
<= 40 KiB; the glue's ATen GEMM levels otherwise) and monarch_rfft / monarch_irfft built on it,
against torch.fft in complex128; the bounded device cache, and the issue-13 views and named errors of
the family's ops on the CUDA branch of the glue.
"""

import math

import kernelfuse.ops.butterfly as bf_ops
import pytest
import torch
from conftest import assert_close_to_ref, configure, run_schedules, sim_ops
from conftest import count_launches as _Count
from kernelfuse.reference import butterfly as ref
from sim_butterfly_common import CPLX, REAL, _bf_fwd_check, _rand, _real_itemsize, _twiddle

FFT = "monarch_fft: monarch_fft_kernel"


# ================================================================== monarch_fft
def _split(N, dtype):
    """(N1, N2) the fused kernel takes for N (monarch_fft_cuda.cu), or None: N1 the largest divisor
    <= sqrt N, N2 = N / N1, both <= 64, 2 (N1 (N2 + 1) + N1 + N2) values of the real dtype in 40 KiB."""
    if N < 2:
        return None
    a = math.isqrt(N)
    while N % a:
        a -= 1
    b = N // a
    if a > 64 or b > 64 or _real_itemsize(dtype) * 2 * (a * (b + 1) + a + b) > 40 * 1024:
        return None
    return a, b


def _fused_lengths(dtype):
    return [N for N in range(2, 4097) if _split(N, dtype)]


NORMS = ["backward", "ortho", "forward"]


def _close_fft(y, exp, dtype):
    """TOL of the dtype with atol relative to max|exp| itself: the helper's default floor of 1 would
    loosen the check of the 1/N- and 1/sqrt(N)-scaled transforms, whose values are << 1."""
    assert_close_to_ref(y, exp, dtype, atol_scale=exp.abs().max().item())


def _fft_check(x, inverse, norm, dtype, expect_fused):
    with _Count(FFT) as c:
        y = sim_ops.monarch_fft(x, inverse, norm)
    assert y.shape == x.shape and y.dtype == dtype
    assert c[FFT] == (1 if expect_fused and x.numel() else 0), (x.shape, c.n)
    if x.numel() == 0:  # (torch.fft with MKL rejects an empty batch)
        return y
    exp = ref.monarch_fft(x.to(torch.complex128), inverse=inverse, norm=norm)
    _close_fft(y, exp, dtype)
    return y


# structured lengths: N1 = 1 (2, 3, primes up to 64), squares, N1 < N2, both threads-per-block
# buckets (128 below N = 256, 256 from it), the largest splits per dtype
FFT_LENGTHS = [
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    12,
    31,
    61,
    64,
    96,
    100,
    121,
    128,
    210,
    255,
    256,
    360,
    1000,
    1024,
    2048,
    2401,
    2419,
    4096,
]


@pytest.mark.parametrize("dtype", CPLX)
@pytest.mark.parametrize("inverse", [False, True])
def test_monarch_fft_fused(dtype, inverse):
    for i, N in enumerate(FFT_LENGTHS):
        fused = _split(N, dtype) is not None
        if not fused:
            continue
        rows = [1, 3, 5, 2][i % 4]
        x = _rand((rows, N), dtype, seed=N)
        _fft_check(x, inverse, NORMS[i % 3], dtype, True)


@pytest.mark.parametrize("dtype", CPLX)
@pytest.mark.parametrize("norm", NORMS)
def test_monarch_fft_norms_and_rows(dtype, norm):
    # scale of every norm in both directions; awkward batch shapes (1, odd, multi-dim, empty)
    for N, batch in [
        (48, (1,)),
        (64, (7,)),
        (300, (2, 3)),
        (4096 if dtype == torch.complex64 else 2304, (3,)),
        (20, (0,)),
        (35, ()),
    ]:
        for inverse in (False, True):
            x = _rand((*batch, N), dtype, seed=N + inverse)
            _fft_check(x, inverse, norm, dtype, True)


@pytest.mark.parametrize("dtype", CPLX)
def test_monarch_fft_fallback(dtype):
    # lengths the fused kernel does not take: N = 1, a prime > 64, a factor > 64, the float64
    # shared-memory limit (2419 = 41 x 59 fits exactly in 40 KiB, 2420 = 44 x 55 does not), 64 x 64
    # in float64
    cases = [1, 67, 134, 4097, 8192, 2420, 4096]
    for i, N in enumerate(cases):
        fused = _split(N, dtype) is not None
        if dtype == torch.complex64:
            assert fused == (N in (2420, 4096)), N
        else:
            assert not fused, N
        x = _rand(((1, 3)[i % 2], N), dtype, seed=N)
        _fft_check(x, bool(i % 2), NORMS[i % 3], dtype, fused)
    assert _split(2419, torch.complex128) == (41, 59)


def test_monarch_fft_views_and_arch80():
    x = _rand((4, 40), torch.complex128, 1)[:, 4:36]
    _fft_check(x.conj(), False, "ortho", torch.complex128, True)
    # the launcher reads no device attribute (40 KiB < the 48 KiB default): same result on sm_80
    x = _rand((3, 1000), torch.complex64, 2)
    a = sim_ops.monarch_fft(x, True, "backward")
    configure(arch=80)
    b = sim_ops.monarch_fft(x, True, "backward")
    configure()
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", CPLX)
def test_monarch_fft_schedules(dtype):
    # the shared tables and the intermediate A between two __syncthreads: bitwise equal under
    # every schedule. 1000 = 25 x 40 (256 threads, several elements each), 31 = 1 x 31 (128 threads)
    for N, rows in [(1000, 2), (31, 3)]:
        x = _rand((rows, N), dtype, seed=N)
        y = run_schedules(lambda: sim_ops.monarch_fft(x, False, "ortho"))
        _close_fft(y, ref.monarch_fft(x.to(torch.complex128), norm="ortho"), dtype)


@pytest.fixture
def sim_python_layer(monkeypatch):
    """kernelfuse.monarch_fft / monarch_rfft / monarch_irfft calling the simulator's ops."""
    monkeypatch.setattr(bf_ops, "_ops", sim_ops)
    return bf_ops


@pytest.mark.parametrize("dtype", REAL)
def test_monarch_rfft_irfft(sim_python_layer, dtype):
    # even n: a complex FFT of n / 2 (fused for 128 -> 64 = 8 x 8, 4096 -> 2048 = 32 x 64 in
    # float32); odd n: the promoted complex transform
    bf = sim_python_layer
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    for n in [1, 2, 7, 16, 100, 128, 135, 4096 if dtype == torch.float32 else 2048]:
        x = _rand((3, n), dtype, seed=n)
        for norm in NORMS:
            with _Count(FFT) as c:
                X = bf.monarch_rfft(x, norm=norm)
            assert c[FFT] == (1 if _split(n // 2 if n % 2 == 0 else n, cdt) else 0), (n, c.n)
            _close_fft(X, torch.fft.rfft(x.double(), norm=norm), dtype)
            Xr = _rand((3, n // 2 + 1), cdt, seed=n + 1)
            y = bf.monarch_irfft(Xr, n, norm=norm)
            _close_fft(y, torch.fft.irfft(Xr.to(torch.complex128), n, norm=norm), dtype)
        y = bf.monarch_fft(x, inverse=True, norm="forward")  # real input promoted
        _close_fft(y, torch.fft.ifft(x.double(), norm="forward"), dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", CPLX)
def test_monarch_fft_every_fused_split(dtype):
    # every length whose split the fused kernel accepts (1262 in float32, 1050 in float64)
    for i, N in enumerate(_fused_lengths(dtype)):
        x = _rand(((1, 2, 3)[i % 3], N), dtype, seed=N)
        _fft_check(x, bool(i % 2), NORMS[i % 3], dtype, True)


# ================================================================== issue 13: bounded cache, views, sizes
def test_monarch_fft_device_cache_bounded_and_right_after_eviction():
    # fallback lengths (a factor > 64 or over the fused kernel's shared memory) run the glue's GEMM
    # levels with the DFT / twiddle tables in the (device) cache: bounded by the cap, LRU-evicted,
    # results unchanged after eviction
    prev = sim_ops.monarch_fft_cache(-1, True)[2]
    cap = 64 * 1024
    try:
        sim_ops.monarch_fft_cache(cap, True)
        lengths = [67 * k for k in range(1, 13)] + [4097, 8192]
        first = {}
        for N in lengths:
            x = _rand((2, N), torch.complex128, seed=N)
            y = sim_ops.monarch_fft(x, False, "backward")
            first[N] = (x, y)
            _close_fft(y, torch.fft.fft(x), torch.complex128)
            assert sim_ops.monarch_fft_cache(-1, False)[0] <= cap
        b, entries, limit, hits, misses, evictions = sim_ops.monarch_fft_cache(-1, False)
        assert limit == cap and evictions > 0 and entries > 0 and misses > 0
        for N in (lengths[0], lengths[-1]):
            x, y = first[N]
            assert torch.equal(sim_ops.monarch_fft(x, False, "backward"), y)
        assert sim_ops.monarch_fft_cache(0, False)[:2] == [0, 0]  # cap 0: nothing kept, still right
        x, y = first[lengths[3]]
        assert torch.equal(sim_ops.monarch_fft(x, False, "backward"), y)
        assert sim_ops.monarch_fft_cache(-1, False)[0] == 0
    finally:
        sim_ops.monarch_fft_cache(prev, True)


def test_butterfly_ops_offset_expanded_views_and_named_errors(sim_python_layer):
    bf = sim_python_layer
    x = torch.randn(17, dtype=torch.float64)[1:]  # storage offset 1 (view_as_complex refused it)
    _close_fft(bf.monarch_rfft(x), torch.fft.rfft(x), torch.float64)
    xe = _rand((1, 24), torch.float64, 3).expand(3, 24)
    _close_fft(bf.monarch_rfft(xe), torch.fft.rfft(xe), torch.float64)
    _close_fft(
        sim_ops.monarch_fft(xe.to(torch.complex128)[:, 1:], False, "ortho"),
        torch.fft.fft(xe.to(torch.complex128)[:, 1:], norm="ortho"),
        torch.complex128,
    )
    xb = _rand((1, 16), torch.float64, 4).expand(5, 16)
    tw = _twiddle(2, 16, torch.float64)
    _bf_fwd_check(xb, tw, True, torch.float64)
    dx, dt = sim_ops.butterfly_multiply_bwd(xb, xb, tw, True, True, True)
    x64, tw64 = xb.clone().requires_grad_(True), tw.clone().requires_grad_(True)
    ex, et = torch.autograd.grad(ref.butterfly_multiply(x64, tw64), [x64, tw64], xb)
    assert_close_to_ref(dx, ex, torch.float64)
    assert_close_to_ref(dt, et, torch.float64)
    # (the size checks of 2^40-element copies are CPU-tested only: under ASan a refused allocation aborts)
    with pytest.raises(ValueError, match=r"argument 'twiddle'.*None"):
        sim_ops.butterfly_multiply(xb, None, True)
    with pytest.raises(ValueError, match=r"argument 'w1'.*None"):
        sim_ops.monarch_multiply(xb, None, torch.randn(2, 2, 2, dtype=torch.float64))
