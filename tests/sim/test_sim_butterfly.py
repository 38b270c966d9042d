"""Butterfly family under the CUDA simulator: the CUDA code paths of butterfly_multiply (+ _bwd),
monarch_multiply (+ _bwd) and monarch_fft (and monarch_rfft / monarch_irfft built on it), run as
torch.ops.kernelfuse_sim.* and compared with the float64 references (kernelfuse.reference.butterfly,
torch.fft in complex128; backward ops with torch.autograd.grad through the float64 reference).

Kernels (csrc/butterfly/):
  butterfly_cuda.cu    fwd_smem_kernel<T, C>   forward when a row fits in 32 KiB of shared memory
                                               (n * (C ? 2 : 1) * sizeof(T) <= 32768; threads =
                                               clamp(n / 2, 32, 512))
                       stage_kernel<T, C>      forward above that (one launch per stage), and the
                                               backward's recomputation of the stage inputs
                       stage_bwd_kernel<T, C>  backward, one launch per stage (atomicAdd twiddle grads)
  monarch_fft_cuda.cu  monarch_fft_kernel<T>   N = N1 N2 with N1 <= N2 <= 64 and the intermediate in
                                               <= 40 KiB (monarch_fft_cuda_supported); other lengths
                                               use the glue's ATen GEMM path (no kernel)
monarch_multiply's device path is ATen bmm_out on strided views in the glue (no kernel of ours); it is
checked here all the same, since the simulator library runs that branch of the glue.
"""

import math

import kernelfuse.ops.butterfly as bf_ops
import pytest
import torch
from conftest import assert_close_to_ref, configure, run_schedules, sim_ops
from conftest import count_launches as _Count
from kernelfuse.reference import butterfly as ref

REAL = [torch.float32, torch.float64]
CPLX = [torch.complex64, torch.complex128]
ALL = REAL + CPLX

FWD_SMEM = "butterfly: fwd_smem_kernel"
STAGE = "butterfly: stage_kernel"
STAGE_BWD = "butterfly: stage_bwd_kernel"
FFT = "monarch_fft: monarch_fft_kernel"


def _wide(dtype):
    return torch.complex128 if dtype.is_complex else torch.float64


def _rand(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=_wide(dtype)).to(dtype)


def _twiddle(nblocks, n, dtype, seed=1):
    log_n = max(n.bit_length() - 1, 0)
    return _rand((nblocks, log_n, n // 2, 2, 2), dtype, seed) * math.sqrt(0.5)


def _real_itemsize(dtype):
    return (
        torch.empty(0, dtype=dtype).real.element_size()
        if dtype.is_complex
        else torch.empty(0, dtype=dtype).element_size()
    )


def _fwd_uses_smem(n, dtype):
    """The launcher's choice (butterfly_cuda.cu forward_impl): a row of n values in <= 32 KiB."""
    return n * (2 if dtype.is_complex else 1) * _real_itemsize(dtype) <= 32 * 1024


# Largest n of the shared-memory forward per dtype; 2x that runs one launch per stage.
SMEM_MAX_N = {torch.float32: 8192, torch.float64: 4096, torch.complex64: 4096, torch.complex128: 2048}


# ================================================================== butterfly_multiply (forward)
def _bf_fwd_check(x, tw, inc, dtype):
    out = sim_ops.butterfly_multiply(x, tw, inc)
    assert out.shape == x.shape and out.dtype == dtype
    exp = ref.butterfly_multiply(x.to(_wide(dtype)), tw.to(_wide(dtype)), increasing_stride=inc)
    assert_close_to_ref(out, exp, dtype)
    return out


@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("inc", [True, False])
def test_butterfly_forward_smem(dtype, inc):
    # n = 2..32: 32 threads, some idle; 128: 64 threads; 2048: 512 threads, two pairs each
    for n, nblocks, batch in [
        (2, 1, (1,)),
        (2, 3, (5,)),
        (4, 2, (2, 3)),
        (8, 1, (7,)),
        (32, 3, (3,)),
        (128, 2, (5,)),
        (2048, 1, (1,)),
    ]:
        assert _fwd_uses_smem(n, dtype)
        x = _rand((*batch, n), dtype, seed=n + nblocks)
        tw = _twiddle(nblocks, n, dtype, seed=nblocks)
        with _Count(FWD_SMEM, STAGE) as c:
            _bf_fwd_check(x, tw, inc, dtype)
        assert c[FWD_SMEM] == 1 and c[STAGE] == 0, (n, c.n)


@pytest.mark.parametrize("dtype", ALL)
def test_butterfly_forward_smem_threshold(dtype):
    # the largest n that runs in shared memory (exactly 32 KiB per row), and twice that: one launch
    # per stage over all rows (test_butterfly_forward_per_stage: more rows and blocks there)
    n = SMEM_MAX_N[dtype]
    assert _fwd_uses_smem(n, dtype) and not _fwd_uses_smem(2 * n, dtype)
    x = _rand((1, n), dtype, seed=3)
    tw = _twiddle(1, n, dtype, seed=4)
    with _Count(FWD_SMEM, STAGE) as c:
        _bf_fwd_check(x, tw, False, dtype)
    assert c[FWD_SMEM] == 1 and c[STAGE] == 0, c.n
    n2 = 2 * n
    nblocks = 2 if dtype == torch.complex128 else 1
    x = _rand((1, n2), dtype, seed=5)
    tw = _twiddle(nblocks, n2, dtype, seed=6)
    with _Count(FWD_SMEM, STAGE) as c:
        _bf_fwd_check(x, tw, True, dtype)
    assert c[FWD_SMEM] == 0 and c[STAGE] == nblocks * (n2.bit_length() - 1), c.n


@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("inc", [True, False])
def test_butterfly_forward_per_stage(dtype, inc):
    # per-stage path with several rows (odd), nblocks = 3 (the direction alternates twice): the
    # smallest n of the path for the dtype, kept cheap for complex128 / float64
    n = 2 * SMEM_MAX_N[dtype]
    rows, nblocks = (3, 3) if n <= 4096 else (1, 2)
    x = _rand((rows, n), dtype, seed=7)
    tw = _twiddle(nblocks, n, dtype, seed=8)
    with _Count(FWD_SMEM, STAGE) as c:
        _bf_fwd_check(x, tw, inc, dtype)
    assert c[FWD_SMEM] == 0 and c[STAGE] == nblocks * (n.bit_length() - 1), c.n


def test_butterfly_forward_empty_and_n1():
    for dtype in ALL:
        x = _rand((0, 16), dtype)
        tw = _twiddle(2, 16, dtype)
        with _Count(FWD_SMEM, STAGE) as c:
            out = sim_ops.butterfly_multiply(x, tw, True)
        assert out.shape == (0, 16) and c[FWD_SMEM] == c[STAGE] == 0
        x = _rand((3, 1), dtype)
        out = sim_ops.butterfly_multiply(x, _twiddle(2, 1, dtype), False)
        assert torch.equal(out, x)


def test_butterfly_forward_views():
    # a non-contiguous x and lazily conjugated x / twiddle: the glue materialises them
    x = _rand((6, 24), torch.float64)[:, 3:19]
    tw = _twiddle(2, 16, torch.float64)
    _bf_fwd_check(x, tw, True, torch.float64)
    xc = _rand((5, 8), torch.complex128, 2)
    twc = _twiddle(1, 8, torch.complex128, 3)
    out = sim_ops.butterfly_multiply(xc.conj(), twc.conj(), False)
    exp = ref.butterfly_multiply(xc.conj().resolve_conj(), twc.conj().resolve_conj(), increasing_stride=False)
    assert_close_to_ref(out, exp, torch.complex128)


def test_butterfly_forward_arch80():
    # no device attribute enters the butterfly launchers: the same path and result on sm_80
    x = _rand((3, 256), torch.complex64, 1)
    tw = _twiddle(2, 256, torch.complex64, 2)
    a = sim_ops.butterfly_multiply(x, tw, True)
    configure(arch=80)
    b = sim_ops.butterfly_multiply(x, tw, True)
    configure()
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex128])
def test_butterfly_forward_schedules(dtype):
    # fwd_smem_kernel: one __syncthreads per stage; a missing barrier shows as a schedule-dependent
    # result. n = 64 (32 threads, one pair each), n = 2048 (512 threads, two pairs each).
    for n, nblocks, rows in [(64, 2, 3), (2048, 1, 1)]:
        x = _rand((rows, n), dtype, seed=n)
        tw = _twiddle(nblocks, n, dtype, seed=1)
        out = run_schedules(lambda: sim_ops.butterfly_multiply(x, tw, False))
        exp = ref.butterfly_multiply(x.to(_wide(dtype)), tw.to(_wide(dtype)), increasing_stride=False)
        assert_close_to_ref(out, exp, dtype)


# ================================================================== butterfly_multiply_bwd
def _bf_ref_grads(g, x, tw, inc):
    w = _wide(x.dtype)
    xr = x.to(w).requires_grad_()
    tr = tw.to(w).requires_grad_()
    y = ref.butterfly_multiply(xr, tr, increasing_stride=inc)
    return torch.autograd.grad(y, (xr, tr), g.to(w))


def _bf_bwd_check(x, tw, inc, need_x, need_tw, dtype, seed=0):
    g = _rand(x.shape, dtype, seed=seed + 100)
    dx, dtw = sim_ops.butterfly_multiply_bwd(g, x, tw, inc, need_x, need_tw)
    ex, et = _bf_ref_grads(g, x, tw, inc)
    if need_x:
        assert dx.shape == x.shape and dx.dtype == dtype
        assert_close_to_ref(dx, ex, dtype)
    else:
        assert dx.numel() == 0
    if need_tw:
        assert dtw.shape == tw.shape and dtw.dtype == dtype
        assert_close_to_ref(dtw, et, dtype)
    else:
        assert dtw.numel() == 0


NEEDS = [(True, True), (True, False), (False, True), (False, False)]


@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("inc", [True, False])
def test_butterfly_backward(dtype, inc):
    # n = 2 with nblocks = 1: one stage, no forward recomputation; n < 512: a block of 256 threads
    # spans several rows (atomics of several rows on one pair); n = 512: one row per block;
    # n = 1024: a row over two blocks
    for n, nblocks, batch in [
        (2, 1, (1,)),
        (2, 2, (3,)),
        (8, 3, (5,)),
        (64, 2, (2, 3)),
        (512, 1, (3,)),
        (1024, 1, (1,)),
    ]:
        S = nblocks * (n.bit_length() - 1)
        for k, (nx, nt) in enumerate(NEEDS):
            x = _rand((*batch, n), dtype, seed=n + k)
            tw = _twiddle(nblocks, n, dtype, seed=nblocks + k)
            with _Count(STAGE, STAGE_BWD) as c:
                _bf_bwd_check(x, tw, inc, nx, nt, dtype, seed=k)
            assert c[STAGE] == S - 1 and c[STAGE_BWD] == S, (n, nblocks, c.n)


@pytest.mark.parametrize("dtype", ALL)
def test_butterfly_backward_odd_rows_subsets(dtype):
    # 37 rows: blocks that end mid-row (n = 16: 8 pairs a row, 256 threads a block)
    n = 16
    for k, (nx, nt) in enumerate(NEEDS):
        x = _rand((37, n), dtype, seed=k)
        tw = _twiddle(2, n, dtype, seed=k + 1)
        _bf_bwd_check(x, tw, k % 2 == 0, nx, nt, dtype, seed=k)


def test_butterfly_backward_empty_and_n1():
    for dtype in ALL:
        x = _rand((0, 8), dtype)
        tw = _twiddle(2, 8, dtype)
        g = _rand((0, 8), dtype)
        for nx, nt in NEEDS:
            dx, dtw = sim_ops.butterfly_multiply_bwd(g, x, tw, True, nx, nt)
            assert dx.numel() == 0
            if nt:
                assert dtw.shape == tw.shape and torch.equal(dtw, torch.zeros_like(tw))  # zero-filled on device
            else:
                assert dtw.numel() == 0
        x = _rand((4, 1), dtype)
        tw = _twiddle(1, 1, dtype)
        g = _rand((4, 1), dtype, 1)
        dx, dtw = sim_ops.butterfly_multiply_bwd(g, x, tw, False, True, True)
        assert torch.equal(dx, g) and dtw.shape == tw.shape and dtw.numel() == 0


def test_butterfly_backward_views():
    xc = _rand((5, 16), torch.complex128, 2)
    twc = _twiddle(2, 16, torch.complex128, 3)
    g = _rand((5, 16), torch.complex128, 4)
    dx, dtw = sim_ops.butterfly_multiply_bwd(g.conj(), xc.conj(), twc.conj(), True, True, True)
    ex, et = _bf_ref_grads(g.conj().resolve_conj(), xc.conj().resolve_conj(), twc.conj().resolve_conj(), True)
    assert_close_to_ref(dx, ex, torch.complex128)
    assert_close_to_ref(dtw, et, torch.complex128)


def _small_ints(shape, dtype, seed, lo=-2, hi=3):
    g = torch.Generator().manual_seed(seed)
    v = torch.randint(lo, hi, shape + ((2,) if dtype.is_complex else ()), generator=g).to(torch.float64)
    return torch.view_as_complex(v).to(dtype) if dtype.is_complex else v.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_butterfly_backward_schedules_and_workers(dtype):
    # stage_bwd_kernel accumulates the twiddle gradient with atomicAdd from every (row, pair)
    # thread, so its summation order depends on the schedule (and on real GPUs is not fixed):
    # with small-integer data every sum is exact, and the results must be bitwise equal under
    # every thread schedule and with 4 OS threads running blocks concurrently (real atomics).
    n, nblocks, rows = 64, 2, 9
    x = _small_ints((rows, n), dtype, 1)
    tw = _small_ints((nblocks, 6, n // 2, 2, 2), dtype, 2, -1, 2)
    g = _small_ints((rows, n), dtype, 3)
    fn = lambda: sim_ops.butterfly_multiply_bwd(g, x, tw, False, True, True)  # noqa: E731
    dx, dtw = run_schedules(fn)
    ex, et = _bf_ref_grads(g, x, tw, False)
    assert torch.equal(dx, ex.to(dtype)) and torch.equal(dtw, et.to(dtype))
    configure(workers=4)
    dx4, dtw4 = fn()
    configure()
    assert torch.equal(dx4, dx) and torch.equal(dtw4, dtw)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ALL)
def test_butterfly_slow_large(dtype):
    # the per-stage forward at 2x the shared-memory limit with odd rows and 2 blocks, and the
    # backward of an n a few thousand long
    n = 2 * SMEM_MAX_N[dtype]
    x = _rand((3, n), dtype, seed=11)
    tw = _twiddle(2, n, dtype, seed=12)
    with _Count(STAGE) as c:
        _bf_fwd_check(x, tw, False, dtype)
    assert c[STAGE] == 2 * (n.bit_length() - 1)
    n = 4096
    x = _rand((3, n), dtype, seed=13)
    tw = _twiddle(2, n, dtype, seed=14)
    _bf_bwd_check(x, tw, True, True, True, dtype, seed=5)


# ================================================================== monarch_multiply (+ _bwd)
MONARCH_SHAPES = [  # (k, q, p), (l, s, r) with l r = k q
    ((4, 4, 4), (4, 4, 4)),
    ((3, 5, 4), (5, 2, 3)),
    ((3, 5, 4), (3, 7, 5)),
    ((1, 6, 7), (2, 1, 3)),
    ((6, 1, 1), (1, 3, 6)),
    ((2, 3, 5), (6, 4, 1)),
    ((1, 1, 1), (1, 1, 1)),
    ((8, 16, 16), (16, 8, 8)),
]


@pytest.mark.parametrize("dtype", ALL)
def test_monarch_multiply(dtype):
    for (k, q, p), (l, s, r) in MONARCH_SHAPES:
        for batch in [(9,), (2, 3), (0,), (), (1,)]:
            x = _rand((*batch, k * p), dtype, seed=k + q)
            w1 = _rand((k, q, p), dtype, seed=2)
            w2 = _rand((l, s, r), dtype, seed=3)
            out = sim_ops.monarch_multiply(x, w1, w2)
            assert out.shape == (*batch, l * s) and out.dtype == dtype
            w = _wide(dtype)
            exp = ref.monarch_multiply(x.to(w), w1.to(w), w2.to(w))
            assert_close_to_ref(out, exp, dtype)


@pytest.mark.parametrize("dtype", ALL)
def test_monarch_multiply_bwd(dtype):
    w = _wide(dtype)
    for (k, q, p), (l, s, r) in MONARCH_SHAPES:
        for batch in [(7,), (2, 3), ()]:
            x = _rand((*batch, k * p), dtype, seed=k)
            w1 = _rand((k, q, p), dtype, seed=q)
            w2 = _rand((l, s, r), dtype, seed=s)
            g = _rand((*batch, l * s), dtype, seed=9)
            xr, w1r, w2r = (t.to(w).requires_grad_() for t in (x, w1, w2))
            exp = torch.autograd.grad(ref.monarch_multiply(xr, w1r, w2r), (xr, w1r, w2r), g.to(w))
            for need in [
                (True, True, True),
                (True, False, False),
                (False, True, False),
                (False, False, True),
                (False, True, True),
                (False, False, False),
            ]:
                got = sim_ops.monarch_multiply_bwd(g, x, w1, w2, *need)
                for gt, et, nd, like in zip(got, exp, need, (x, w1, w2)):
                    if nd:
                        assert gt.shape == like.shape and gt.dtype == dtype
                        assert_close_to_ref(gt, et, dtype)
                    else:
                        assert gt.numel() == 0


def test_monarch_multiply_empty_and_views():
    x = _rand((0, 12), torch.float64)
    w1, w2 = _rand((3, 5, 4), torch.float64, 1), _rand((5, 2, 3), torch.float64, 2)
    assert sim_ops.monarch_multiply(x, w1, w2).shape == (0, 10)
    dx, d1, d2 = sim_ops.monarch_multiply_bwd(torch.zeros(0, 10, dtype=torch.float64), x, w1, w2, True, True, True)
    assert dx.shape == (0, 12) and torch.equal(d1, torch.zeros_like(w1)) and torch.equal(d2, torch.zeros_like(w2))
    xc = _rand((4, 20), torch.complex128, 3)[:, 4:16]
    w1c, w2c = _rand((3, 5, 4), torch.complex128, 4), _rand((5, 2, 3), torch.complex128, 5)
    out = sim_ops.monarch_multiply(xc.conj(), w1c.conj(), w2c)
    assert_close_to_ref(out, ref.monarch_multiply(xc.conj(), w1c.conj(), w2c), torch.complex128)


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
