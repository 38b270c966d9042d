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

Here: butterfly_multiply (+ _bwd) and monarch_multiply (+ _bwd); monarch_fft, rfft / irfft, the
device cache and the issue-13 views: test_sim_butterfly_fft.py; shared helpers: sim_butterfly_common.py.
"""

import pytest
import torch
from conftest import assert_close_to_ref, configure, run_schedules, sim_ops
from conftest import count_launches as _Count
from kernelfuse.reference import butterfly as ref
from sim_butterfly_common import ALL, _bf_fwd_check, _rand, _real_itemsize, _twiddle, _wide

FWD_SMEM = "butterfly: fwd_smem_kernel"
STAGE = "butterfly: stage_kernel"
STAGE_BWD = "butterfly: stage_bwd_kernel"


def _fwd_uses_smem(n, dtype):
    """The launcher's choice (butterfly_cuda.cu forward_impl): a row of n values in <= 32 KiB."""
    return n * (2 if dtype.is_complex else 1) * _real_itemsize(dtype) <= 32 * 1024


# Largest n of the shared-memory forward per dtype; 2x that runs one launch per stage.
SMEM_MAX_N = {torch.float32: 8192, torch.float64: 4096, torch.complex64: 4096, torch.complex128: 2048}


# ================================================================== butterfly_multiply (forward)
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
