"""ssm_kernel (+ ssm_kernel_bwd) of the long-convolution family under the CUDA simulator
(csrc/longconv/ssm_kernel_cuda.cu), run as torch.ops.kernelfuse_sim.* and compared with the float64
reference (kernelfuse.reference.longconv_ssm; the backward with torch.autograd.grad through it on the
same, rounded, inputs).

Kernels:
  ssm_kernel_cuda.cu  ssm_fwd_kernel<T>          (l tile, h) blocks (heads strided over grid.y),
                                                 states staged in smem blockDim.x at a time
                      ssm_bwd_kernel<T>          (n, h) blocks, smem tree reduction over l, atomicAdd
"""

import math

import pytest
import torch
from conftest import assert_close_to_ref, configure, run_schedules, sim_ops
from conftest import count_launches as _Count
from kernelfuse.reference import longconv_ssm as ssm_ref

SSM_FWD = "ssm_kernel: ssm_fwd_kernel"
SSM_BWD = "ssm_kernel: ssm_bwd_kernel"


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
