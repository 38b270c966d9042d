"""grid_kernel / grid_kernel_bwd under the CUDA simulator (csrc/kron/grid_kernel_cuda.cu: the direct
kernel, the Toeplitz lag / fill kernels, lagsum + bwd, the map of the kernels: test_sim_kron.py)
against kernelfuse.reference.kron_grid, for every kind and derivative order, and the non-finite
input checks of issue 13 on the device path (grid_kernel, kron_gp_mll, kron_gp_mll_bwd)."""

import functools
import math

import pytest
import torch
from conftest import TOL, configure, run_schedules, sim_ops
from kernelfuse.ops.kron_grid import KINDS, MAX_ORDER, NPARAMS
from kernelfuse.reference import kron_grid as gref
from sim_kron_common import DTYPES, F64, _factors, _gen, _randn, _s2


# ================================================================== grid_kernel
# Inputs are float32-representable (points, parameters and incoming gradients rounded to float32,
# uniform grids with dyadic steps), so the float32 and float64 runs share one cached reference and
# tau = x1[i] - x2[j] (or (i - j) step on the Toeplitz path) is exact in both: the kernels compute in
# double, and a float32 result differs from the reference by its final rounding only, within the
# table's tolerance.
def _f32r(t):
    return t.float().double()


def _params(kind, Q, seed=0):
    g = _gen(seed)
    if NPARAMS[kind] == 2:
        p = torch.stack(
            [
                0.3 * torch.randn(Q, generator=g, dtype=F64),
                math.log(0.4) + 0.3 * torch.randn(Q, generator=g, dtype=F64),
            ],
            1,
        )
    else:
        p = torch.stack(
            [
                0.3 * torch.randn(Q, generator=g, dtype=F64),
                6.0 * torch.rand(Q, generator=g, dtype=F64),
                math.log(0.5) + 0.3 * torch.randn(Q, generator=g, dtype=F64),
            ],
            1,
        )
    return _f32r(p)


def _pts(n, seed=1):
    return _f32r(2 * torch.rand(n, generator=_gen(seed), dtype=F64) - 1)


def _uniform(n, x0=-1.0, step=0.25):
    return x0 + step * torch.arange(n, dtype=F64)  # exact in float32 and float64


# (kind-independent) cases: name -> (x1, x2, Q, toeplitz flag)
GK_CASES = {
    "7x5": (lambda: (_pts(7, 7), _pts(5, 105)), 1, 0),
    "1x1": (lambda: (_pts(1, 1), _pts(1, 101)), 3, 0),
    "13x1": (lambda: (_pts(13, 13), _pts(1, 113)), 2, 0),
    "17x19": (lambda: (_pts(17, 17), _pts(19, 119)), 3, 0),  # 323 entries: two blocks
    "T1": (lambda: (_uniform(1),) * 2, 2, 1),
    "T2": (lambda: (_uniform(2),) * 2, 2, 1),
    "T11": (lambda: (_uniform(11),) * 2, 2, 1),
    "T9dec": (lambda: (_uniform(9, 2.0, -0.375),) * 2, 3, 1),  # decreasing: step < 0
}


@functools.lru_cache(maxsize=None)
def _gk_inputs(kind, case):
    mk, Q, flag = GK_CASES[case]
    x1, x2 = mk()
    p = _params(kind, Q, seed=len(kind) + Q)
    G = _f32r(_randn(x1.shape[0], x2.shape[0], seed=Q + x1.shape[0]))
    return x1, x2, p, G, flag


@functools.lru_cache(maxsize=None)
def _gk_ref(kind, case, a, b):
    x1, x2, p, _, _ = _gk_inputs(kind, case)
    return gref.grid_kernel(x1, x2, kind, p, orders=(a, b))


@functools.lru_cache(maxsize=None)
def _gk_ref_grads(kind, case, a, b):
    """autograd through the reference of sum(G * K): (d/dx1, d/dx2, d/dparams)."""
    x1, x2, p, G, _ = _gk_inputs(kind, case)
    rx1, rx2, rp = (t.clone().requires_grad_() for t in (x1, x2, p))
    return torch.autograd.grad((gref.grid_kernel(rx1, rx2, kind, rp, orders=(a, b)) * G).sum(), [rx1, rx2, rp])


def _gk_close(out, exp, dtype, factor=1.0):
    assert out.dtype == dtype
    tol = TOL[dtype]
    scale = max(1.0, exp.abs().max().item()) if exp.numel() else 1.0
    torch.testing.assert_close(out.double(), exp, rtol=tol["rtol"] * factor, atol=tol["atol"] * scale * factor)


def _orders(kind, extra=0):
    """(a, b) with a, b <= 2 and a + b <= MAX_ORDER (extra=1: also the orders one beyond, a, b <= 3,
    that the x-gradient evaluates through the forward op)."""
    top = MAX_ORDER[kind] + extra
    lim = 2 + extra
    return [(a, b) for a in range(lim + 1) for b in range(lim + 1) if a + b <= top]


def _gk(kind, case, dtype, a, b, flag=None):
    x1, x2, p, _, f = _gk_inputs(kind, case)
    return sim_ops.grid_kernel(x1.to(dtype), x2.to(dtype), kind, p.to(dtype), a, b, f if flag is None else flag)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_grid_kernel_direct(kind, dtype):
    """direct_kernel (toeplitz 0; -1, the direct path on the device, is bitwise the same), Q = 1..3,
    shapes 7x5, 1x1, 13x1 and 17x19 (two blocks), every public order pair, and on 7x5 also the
    orders one beyond (the x-gradient's)."""
    for case in ("7x5", "1x1", "13x1", "17x19"):
        for a, b in _orders(kind, extra=1 if case == "7x5" else 0):
            out = _gk(kind, case, dtype, a, b)
            _gk_close(out, _gk_ref(kind, case, a, b), dtype)
            if case == "7x5":
                torch.testing.assert_close(_gk(kind, case, dtype, a, b, flag=-1), out, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_grid_kernel_toeplitz(kind, dtype):
    """lag_kernel + fill_kernel (toeplitz 1) on uniform grids of n = 1, 2, 11 and a decreasing one
    (step < 0), tau = 0 on the diagonal (the Matern kinks), every order pair (on n = 11 also the
    x-gradient's): against the reference, and equal to the direct path to rounding."""
    for case in ("T1", "T2", "T11", "T9dec"):
        for a, b in _orders(kind, extra=1 if case == "T11" else 0):
            exp = _gk_ref(kind, case, a, b)
            out = _gk(kind, case, dtype, a, b)
            _gk_close(out, exp, dtype)
            _gk_close(_gk(kind, case, dtype, a, b, flag=0), exp, dtype)


def test_grid_kernel_toeplitz_crosses_blocks_and_schedules():
    """n = 257: L = 257 lags (two blocks of lag_kernel / lagsum_kernel), n^2 = 66049 entries (259
    fill blocks); forward and backward under every schedule (bwd_kernel's shared reduction)."""
    n = 257
    x = _uniform(n, -1.0, 1.0 / 128)
    p = _params("sm", 2, seed=4)
    out = run_schedules(lambda: sim_ops.grid_kernel(x, x, "sm", p, 1, 0, 1))
    _gk_close(out, gref.grid_kernel(x, x, "sm", p, orders=(1, 0)), F64)
    G = _randn(n, n, seed=5)
    gp = run_schedules(lambda: sim_ops.grid_kernel_bwd(G, x, x, "sm", p, 1, 0, 1))
    pr = p.clone().requires_grad_()
    (eg,) = torch.autograd.grad((gref.grid_kernel(x, x, "sm", pr, orders=(1, 0)) * G).sum(), pr)
    _gk_close(gp, eg, F64)


def test_grid_kernel_strided_points_and_edges():
    base = _pts(20, seed=6)
    x1, x2 = base[::2], base[1::3]  # strided views
    p = _params("rbf", 2, seed=7)
    _gk_close(
        sim_ops.grid_kernel(x1, x2, "rbf", p, 1, 1, 0),
        gref.grid_kernel(x1.contiguous(), x2.contiguous(), "rbf", p, orders=(1, 1)),
        F64,
    )
    xe = torch.tensor(0.25, dtype=F64).expand(4)  # stride 0
    _gk_close(
        sim_ops.grid_kernel(xe, x2, "rbf", p, 2, 0, 0),
        gref.grid_kernel(xe.contiguous(), x2.contiguous(), "rbf", p, orders=(2, 0)),
        F64,
    )
    # a non-contiguous incoming gradient and parameters
    G = _randn(x2.shape[0], x1.shape[0], seed=8).T
    pt = p.T.contiguous().T
    pr = p.clone().requires_grad_()
    (eg,) = torch.autograd.grad((gref.grid_kernel(x1, x2, "rbf", pr, orders=(1, 0)) * G).sum(), pr)
    _gk_close(sim_ops.grid_kernel_bwd(G, x1, x2, "rbf", pt, 1, 0, 0), eg, F64)
    # empty and no components: no launch
    assert sim_ops.grid_kernel(x1[:0], x2, "rbf", p, 0, 0, 0).shape == (0, x2.shape[0])
    assert sim_ops.grid_kernel(x1[:0], x1[:0], "rbf", p, 0, 0, 1).shape == (0, 0)
    z = sim_ops.grid_kernel(x1, x1, "sm", torch.zeros(0, 3, dtype=F64), 0, 0, 1)
    assert torch.equal(z, torch.zeros(10, 10, dtype=F64))
    assert sim_ops.grid_kernel_bwd(
        torch.zeros(10, 10, dtype=F64), x1, x1, "sm", torch.zeros(0, 3, dtype=F64), 0, 0, 1
    ).shape == (0, 3)
    gz = sim_ops.grid_kernel_bwd(torch.zeros(0, 7, dtype=F64), x1[:0], x2, "rbf", p, 0, 0, 0)
    assert torch.equal(gz, torch.zeros_like(p))
    with pytest.raises(ValueError, match="toeplitz.*same size"):
        sim_ops.grid_kernel(x1, x2, "rbf", p, 0, 0, 1)
    configure(arch=80)
    _gk_close(
        sim_ops.grid_kernel(x1, x2, "rbf", p, 1, 1, 0),
        gref.grid_kernel(x1.contiguous(), x2.contiguous(), "rbf", p, orders=(1, 1)),
        F64,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_grid_kernel_bwd(kind, dtype):
    """bwd_kernel on the direct path (random points; 17x19 crosses a block) and lagsum_kernel +
    bwd_kernel on the Toeplitz path (uniform n = 11, decreasing n = 9), Q = 1..3, every public order
    pair, against autograd through the reference (the kernel sums in double: the table's tolerance)."""
    for case in ("7x5", "17x19", "T11", "T9dec"):
        x1, x2, p, G, flag = _gk_inputs(kind, case)
        for a, b in _orders(kind):
            out = sim_ops.grid_kernel_bwd(G.to(dtype), x1.to(dtype), x2.to(dtype), kind, p.to(dtype), a, b, flag)
            assert out.shape == p.shape
            _gk_close(out, _gk_ref_grads(kind, case, a, b)[2], dtype)


def test_grid_kernel_bwd_schedules_direct():
    x1, x2, p, G, _ = _gk_inputs("stm", "17x19")
    out = run_schedules(lambda: sim_ops.grid_kernel_bwd(G, x1, x2, "stm", p, 2, 1, 0))
    _gk_close(out, _gk_ref_grads("stm", "17x19", 2, 1)[2], F64)


@pytest.mark.parametrize("kind", KINDS)
def test_grid_kernel_x_gradients(kind):
    """The rest of grid_kernel's backward as ops/kron_grid.py composes it: d/dx1 and d/dx2 by the forward op
    at one more order (the op's bwd covers params only; it has no need-flags), on random points
    (direct path), against autograd through the reference."""
    for a, b in _orders(kind):
        x1, x2, p, G, _ = _gk_inputs(kind, "7x5")
        ex1, ex2, _ = _gk_ref_grads(kind, "7x5", a, b)
        g1 = (G * sim_ops.grid_kernel(x1, x2, kind, p, a + 1, b, 0)).sum(1)
        _gk_close(g1, ex1, F64)
        g2 = (G * sim_ops.grid_kernel(x1, x2, kind, p, a, b + 1, 0)).sum(0)
        _gk_close(g2, ex2, F64)


@pytest.mark.slow
def test_grid_kernel_large_toeplitz_and_direct():
    """Bigger grids: n = 1024 on the Toeplitz path (1M entries: 4096 fill blocks; 4 lag / lagsum
    blocks with 1024-long lag sums) and a 300 x 301 direct matrix, forward and backward."""
    n = 1024
    x = _uniform(n, -2.0, 1.0 / 256)
    p = _params("stm", 2, seed=40)
    pr = p.clone().requires_grad_()
    K = gref.grid_kernel(x, x, "stm", pr, orders=(1, 1))
    _gk_close(sim_ops.grid_kernel(x, x, "stm", p, 1, 1, 1), K.detach(), F64)
    G = _randn(n, n, seed=41)
    (eg,) = torch.autograd.grad((K * G).sum(), pr)
    _gk_close(sim_ops.grid_kernel_bwd(G, x, x, "stm", p, 1, 1, 1), eg, F64)
    x1, x2 = _pts(300, seed=42), _pts(301, seed=43)
    pr = p.clone().requires_grad_()
    K = gref.grid_kernel(x1, x2, "stm", pr, orders=(2, 0))
    _gk_close(sim_ops.grid_kernel(x1, x2, "stm", p, 2, 0, 0), K.detach(), F64)
    G = _randn(300, 301, seed=44)
    (eg,) = torch.autograd.grad((K * G).sum(), pr)
    _gk_close(sim_ops.grid_kernel_bwd(G, x1, x2, "stm", p, 2, 0, 0), eg, F64)


# ------------------------------------------------------------------ issue 13 (reliability), device path
def test_issue13_non_finite_points_and_factors_on_the_device_path():
    """A NaN point: NaN row / column at odd orders too on the direct kernel (sign of a NaN lag);
    toeplitz=1 (the device's Toeplitz path) rejects non-finite points naming the argument; a
    non-finite covariance factor is named before the eigendecompositions; raw eig of the wrong
    length is named before slicing; sizes beyond any device are named before allocation."""
    x = _uniform(9)
    x[4] = float("nan")
    p = _params("rbf", 1, seed=3)
    for a, b in [(0, 0), (1, 0), (0, 1), (2, 1)]:
        K = sim_ops.grid_kernel(x, x, "rbf", p, a, b, -1)
        assert torch.isnan(K[4]).all() and torch.isnan(K[:, 4]).all() and torch.isfinite(K[:4, :4]).all()
    with pytest.raises(ValueError, match=r"'x1'.*finite.*nan at \[4\]"):
        sim_ops.grid_kernel(x, x, "rbf", p, 0, 0, 1)
    fs = _factors([2, 3], seed=5)
    fs[1] = fs[1].clone()
    fs[1][0, 2] = float("inf")
    with pytest.raises(ValueError, match=r"'factors\[1\]'.*finite.*inf at \[0, 2\]"):
        sim_ops.kron_gp_mll(fs, _randn(1, 6, seed=6), _s2(0.1))
    fs = _factors([2, 3], seed=5)
    _, _, eig, rot = sim_ops.kron_gp_mll(fs, _randn(1, 6, seed=6), _s2(0.1))
    with pytest.raises(ValueError, match=r"'eig'.*expected shape \(18,\)"):
        sim_ops.kron_gp_mll_bwd(None, None, fs, _s2(0.1), eig[:5], rot, True, True, True)
    with pytest.raises(ValueError, match=r"'x2'.*kernel matrix"):
        big = torch.zeros(1, dtype=F64).expand(10**8)
        sim_ops.grid_kernel(big, big, "rbf", p, 0, 0, 0)
