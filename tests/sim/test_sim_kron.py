"""The kron family's CUDA code paths under the CUDA simulator (csrc/kron/kron_cuda.cu,
csrc/kron/grid_kernel_cuda.cu and the device branches of kron_torch.cpp / grid_kernel_torch.cpp),
against the float64 references of kernelfuse.reference.kron / .gp.

torch.ops.kernelfuse_sim.* run the device branch of the glue on CPU tensors: the launch sequences
of csrc/kron/kron_runner.cpp with the eigendecompositions and the mode-product GEMMs as ATen ops
(what cuSOLVER / cuBLAS do on a GPU), and every kernel between them runs under the simulator:

  kron: scale_kernel      kron_gp_mll (Weight::Inv with the quad + logdet block reductions),
                          kron_gp_mll_bwd (Inv without reductions; Others, one launch per axis),
                          kron_posterior_var (PostVar / SqOverDenom on the training grid, Inv without
                          an input for grid and scattered targets)
  kron: trace_kernel      kron_gp_mll_bwd when grad_nll is given and noise or factors need a grad
  kron: rowwise_kernel    kron_posterior_var(targets="scattered") (D - 1 rest axes, D = 1: none)
  kron: mll_rows_kernel   kron_gp_mll_bwd: the rotated dy, U and the noise gradient's dot product
                          (a block reduction + atomicAdd; with and without grad_nll / grad_alpha)
  kron: mll_scalars_kernel  kron_gp_mll (nll from quad / logdet), kron_gp_mll_bwd (the batch sum of
                          grad_nll, dnoise, the trace diagonals of the factor gradients)
  kron: symmetrize_kernel kron_gp_mll_bwd, per factor (n x n, n = 300 crosses the 256-thread block)
  grid_kernel: direct_kernel           toeplitz 0 / -1 (on the device -1 is the direct path)
  grid_kernel: lag_kernel, fill_kernel  toeplitz 1
  grid_kernel: lagsum_kernel + bwd_kernel   grid_kernel_bwd, toeplitz 1
  grid_kernel: bwd_kernel (direct)          grid_kernel_bwd, toeplitz 0

Launch-shape branches reached: a grid that crosses the 256-thread block (N = 323, 384; n1 n2 = 323;
Toeplitz lags L = 257, 1024), several batch rows (blockIdx.y), a rowwise stride over R > 256 rest
elements, scattered targets in two GEMM chunks (two rowwise launches on offset pointers), empty
inputs and empty axes (no launch), Q = 0 (no launch). Not reached: the grid-stride second passes
behind the launch caps (scale / trace: N > 65535 * 256 elements; scale: B > 65535 batch rows;
rowwise: M > 65535 targets): B = 65537 alone is 65535 blocks of 256 fibers with 10 barriers each,
about 5 minutes of simulation; the loops are the plain grid-stride form, checked by reading.
The kernels have no device-attribute dependent configuration; one case per op family still runs
under arch=80 as well as the default arch=90.

Backward ops are called directly (the sim library has no autograd registration) and compared with
torch.autograd.grad through the float64 reference, for every subset of inputs needing a gradient.

The tests: this file (kron_matmul, kron_gp_mll, kron_gp_mll_bwd), test_sim_kron_posterior.py
(kron_posterior_var, empty axes), test_sim_kron_grid.py (grid_kernel, issue 13 on the device path);
the shared inputs and tolerances: sim_kron_common.py.
"""

import math
from itertools import product

import pytest
import torch
from conftest import configure, run_schedules, sim_ops
from kernelfuse.reference import kron as ref
from sim_kron_common import DTYPES, F64, _close, _d64, _factors, _kfactor, _randn, _s2


def _schedules_close(fn, rtol=1e-13):
    """Like run_schedules, for results accumulated with atomics in the order the threads of a block
    run (trace_kernel's c_d[k]): equal to rounding under every schedule, not bitwise."""
    outs = []
    for s in ("forward", "reverse", "random"):
        configure(s, seed=777)
        r = fn()
        outs.append(r if isinstance(r, (tuple, list)) else (r,))
    configure()
    for o in outs[1:]:
        for a, b in zip(outs[0], o):
            if isinstance(a, torch.Tensor) and a.numel():
                torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * max(1.0, a.abs().max().item()))
    return outs[0]


# ================================================================== kron_matmul (glue + ATen GEMMs)
# On the device kron_matmul is a chain of cuBLAS GEMMs (at::mm / at::matmul) with no kernelfuse
# kernel; the device branch of the glue (natural-layout mode products, transposed operands, the
# identity axes of the backward) is still checked here against the dense reference.
RECT = [
    ((4, 3),),
    ((1, 1),),
    ((7, 5), (3, 11)),
    ((4, 3), (2, 5)),
    ((3, 3), (1, 4), (5, 2)),
    ((1, 1), (3, 2)),
    ((2, 1), (1, 2), (3, 2), (1, 1), (2, 3), (1, 2), (2, 1), (2, 2)),
]  # the last: 8 axes (max D)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", RECT, ids=lambda s: "x".join(f"{a}.{b}" for a, b in s))
def test_kron_matmul(shapes, dtype):
    fs = [_randn(*s, seed=10 + i, dtype=dtype) for i, s in enumerate(shapes)]
    M, N = math.prod(s[1] for s in shapes), math.prod(s[0] for s in shapes)
    for B in (1, 3):
        x = _randn(B, M, seed=2, dtype=dtype)
        _close(sim_ops.kron_matmul(fs, x, False), ref.kron_matmul(_d64(fs), x.double()), dtype)
        xt = _randn(B, N, seed=3, dtype=dtype)
        _close(sim_ops.kron_matmul(fs, xt, True), ref.kron_matmul(_d64(fs), xt.double(), transpose=True), dtype)
    assert sim_ops.kron_matmul(fs, torch.zeros(0, M, dtype=dtype), False).shape == (0, N)


def test_kron_matmul_strided_factor_and_batch():
    fs = [_randn(6, 4, seed=4).T, _randn(3, 5, seed=5)]  # a transposed view
    x = _randn(7, 30, seed=6)[:, :].T.contiguous().T  # a non-contiguous batch
    torch.testing.assert_close(sim_ops.kron_matmul(fs, x, False), ref.kron_matmul(fs, x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize(
    "shapes", [((3, 2), (1, 3), (2, 4)), ((7, 5), (3, 11)), ((4, 3),), RECT[-1]], ids=["3ax", "prime", "1ax", "8ax"]
)
def test_kron_matmul_bwd(shapes, transpose, dtype):
    fs = [_randn(*s, seed=20 + i, dtype=dtype) for i, s in enumerate(shapes)]
    M, N = math.prod(s[1] for s in shapes), math.prod(s[0] for s in shapes)
    if transpose:
        M, N = N, M
    x = _randn(2, M, seed=30, dtype=dtype)
    g = _randn(2, N, seed=31, dtype=dtype)
    rf = [f.double().requires_grad_() for f in fs]
    rx = x.double().requires_grad_()
    exp = torch.autograd.grad((ref.kron_matmul(rf, rx, transpose=transpose) * g.double()).sum(), [rx, *rf])
    for need_x, need_f in product([False, True], repeat=2):
        dx, dfs = sim_ops.kron_matmul_bwd(g, fs, x, transpose, need_x, need_f)
        if need_x:
            _close(dx, exp[0], dtype)
        else:
            assert dx.numel() == 0
        if need_f:
            assert len(dfs) == len(fs)
            for d, e in zip(dfs, exp[1:]):
                _close(d, e, dtype)
        else:
            assert len(dfs) == 0


# ================================================================== kron_gp_mll (scale_kernel: Inv + quad + logdet)
MLL_GRIDS = [
    (5,),
    (1,),
    (3, 4),
    (7, 1, 3),
    (2, 3, 5),
    (1, 6),
    (17, 19),  # N = 323: two blocks of 256
    (2, 1, 2, 1, 3, 1, 2, 2),  # 8 axes (max D)
    (2, 2, 2, 2, 2, 2, 2, 3),
]  # 8 axes, N = 384: two blocks


def _mll_ref(fs, y, s2):
    nll, alpha = ref.kron_gp_mll(_d64(fs), y.double(), s2.double())
    return nll, alpha


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", MLL_GRIDS, ids=lambda d: "x".join(map(str, d)))
def test_kron_gp_mll(dims, dtype):
    fs = _factors(dims, seed=sum(dims), dtype=dtype)
    N = math.prod(dims)
    s2 = _s2(0.1, dtype)
    for B in (1, 3):
        y = _randn(B, N, seed=B, dtype=dtype)
        nll, alpha, eig, rot = sim_ops.kron_gp_mll(fs, y, s2)
        rnll, ralpha = _mll_ref(fs, y, s2)
        assert nll.shape == (B,) and alpha.shape == (B, N) and rot.shape == (B, N)
        assert eig.shape == (sum(n + n * n for n in dims),)
        _close(nll, rnll, dtype, factor=_kfactor(dtype))
        _close(alpha, ralpha, dtype, factor=_kfactor(dtype))


def test_kron_gp_mll_small_noise_and_schedules():
    """s^2 = 1e-6 (cond(A) ~ 1e6: the tolerance is that of any float64 method, as in test_kron.py) and
    the block reductions of scale_kernel (shared memory) under every thread schedule: a grid of two
    blocks and two batch rows (quad per row, logdet once)."""
    dims = (17, 19)
    fs = _factors(dims, seed=3)
    y = _randn(2, 323, seed=4)
    s2 = _s2(1e-6)
    nll, alpha, _, _ = run_schedules(lambda: sim_ops.kron_gp_mll(fs, y, s2))
    rnll, ralpha = _mll_ref(fs, y, s2)
    torch.testing.assert_close(nll, rnll, rtol=1e-5, atol=1e-5 * rnll.abs().max().item())
    torch.testing.assert_close(alpha, ralpha, rtol=1e-5, atol=1e-5 * ralpha.abs().max().item())


def test_kron_gp_mll_arch80():
    configure(arch=80)
    fs = _factors((3, 4), seed=5)
    y = _randn(2, 12, seed=6)
    nll, alpha, _, _ = sim_ops.kron_gp_mll(fs, y, _s2(0.1))
    rnll, ralpha = _mll_ref(fs, y, _s2(0.1))
    _close(nll, rnll, F64)
    _close(alpha, ralpha, F64)


def test_kron_gp_mll_edge_cases():
    # empty batch: no launch, quad of no rows
    fs = _factors((3, 2))
    nll, alpha, _, rot = sim_ops.kron_gp_mll(fs, torch.zeros(0, 6, dtype=F64), _s2(0.1))
    assert nll.shape == (0,) and alpha.shape == (0, 6) and rot.shape == (0, 6)
    # the log-det is not clamped (rank-one factors, eigenvalues 0 or -1e-17, s^2 = 1e-8)
    fs = [torch.ones(4, 4, dtype=F64), torch.ones(3, 3, dtype=F64)]
    y = _randn(1, 12, seed=12)
    nll = sim_ops.kron_gp_mll(fs, y, _s2(1e-8))[0]
    A = ref.kron_dense(fs) + 1e-8 * torch.eye(12, dtype=F64)
    expected = 0.5 * y[0] @ torch.linalg.solve(A, y[0]) + 0.5 * torch.linalg.slogdet(A)[1] + 6 * math.log(2 * math.pi)
    torch.testing.assert_close(nll[0], expected, rtol=1e-6, atol=0)
    # not positive definite: NaN, never clamped
    fs = [-torch.eye(2, dtype=F64), torch.eye(2, dtype=F64)]
    assert torch.isnan(sim_ops.kron_gp_mll(fs, torch.ones(1, 4, dtype=F64), _s2(0.5))[0]).all()


# ================================================================== kron_gp_mll_bwd
# scale_kernel (Inv without reductions, Others per axis) and trace_kernel
def _mll_bwd_expected(fs, y, s2, wn, wa):
    rf = [f.double().requires_grad_() for f in fs]
    ry = y.double().requires_grad_()
    rs = s2.double().requires_grad_()
    nll, alpha = ref.kron_gp_mll(rf, ry, rs)
    loss = 0
    if wn is not None:
        loss = loss + (nll * wn.double()).sum()
    if wa is not None:
        loss = loss + (alpha * wa.double()).sum()
    g = torch.autograd.grad(loss, [ry, rs, *rf])
    return g[0], g[1], g[2:]


BWD_GRIDS = [(5,), (3, 4), (7, 1, 3), (17, 19), (2, 1, 2, 1, 3, 1, 2, 2)]
GRADS = [("nll",), ("alpha",), ("nll", "alpha")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grads", GRADS, ids="+".join)
@pytest.mark.parametrize("dims", BWD_GRIDS, ids=lambda d: "x".join(map(str, d)))
def test_kron_gp_mll_bwd(dims, grads, dtype):
    fs = _factors(dims, seed=5 + len(dims), dtype=dtype)
    N = math.prod(dims)
    B = 2
    y = _randn(B, N, seed=6, dtype=dtype)
    s2 = _s2(0.1, dtype)
    wn = torch.tensor([0.7, -1.3], dtype=dtype) if "nll" in grads else None
    wa = _randn(B, N, seed=7, dtype=dtype) if "alpha" in grads else None
    _, _, eig, rot = sim_ops.kron_gp_mll(fs, y, s2)
    edy, edn, edf = _mll_bwd_expected(fs, y, s2, wn, wa)
    fac = _kfactor(dtype)
    for need_y, need_n, need_f in product([False, True], repeat=3):
        dy, dn, dfs = sim_ops.kron_gp_mll_bwd(wn, wa, fs, s2, eig, rot, need_y, need_n, need_f)
        if need_y:
            _close(dy, edy, dtype, factor=fac)
        else:
            assert dy.numel() == 0
        if need_n:
            assert dn.dim() == 0
            _close(dn, edn, dtype, factor=fac)
        else:
            assert dn.numel() == 0
        if need_f:
            assert len(dfs) == len(fs)
            for d, e in zip(dfs, edf):
                _close(d, e, dtype, factor=fac)
                torch.testing.assert_close(d, d.T)
        else:
            assert len(dfs) == 0


def test_kron_gp_mll_noise_values_and_noncontiguous_operands():
    """Noise variances 2.5 and 1e-3, a noise of shape (1,), and transposed (non-contiguous) y,
    alpha_rot, grad_alpha, grad_nll views through the forward and backward."""
    dims = (3, 5)
    fs = _factors(dims, seed=40)
    y = _randn(15, 2, seed=41).T  # (2, 15), non-contiguous
    for v in (2.5, 1e-3):
        s2 = torch.tensor([v], dtype=F64)
        nll, alpha, eig, rot = sim_ops.kron_gp_mll(fs, y, s2)
        rnll, ralpha = _mll_ref(fs, y, _s2(v))
        _close(nll, rnll, F64)
        _close(alpha, ralpha, F64)
    s2 = _s2(0.1)
    _, _, eig, rot = sim_ops.kron_gp_mll(fs, y, s2)
    wn = torch.tensor([[0.5, -2.0]], dtype=F64).T[:, 0]  # a strided view
    wa = _randn(15, 2, seed=42).T
    got = sim_ops.kron_gp_mll_bwd(wn, wa, fs, s2, eig, rot.T.contiguous().T, True, True, True)
    edy, edn, edf = _mll_bwd_expected(fs, y, s2, wn, wa)
    _close(got[0], edy, F64)
    _close(got[1], edn, F64)
    for d, e in zip(got[2], edf):
        _close(d, e, F64)
    # an empty batch through the backward: zero gradients (the trace term has weight sum(grad_nll) = 0)
    _, _, eig0, rot0 = sim_ops.kron_gp_mll(fs, torch.zeros(0, 15, dtype=F64), s2)
    dy, dn, dfs = sim_ops.kron_gp_mll_bwd(
        torch.zeros(0, dtype=F64), torch.zeros(0, 15, dtype=F64), fs, s2, eig0, rot0, True, True, True
    )
    assert dy.shape == (0, 15) and dn.item() == 0 and all(torch.equal(d, torch.zeros_like(d)) for d in dfs)


def test_kron_gp_mll_bwd_repeated_eigenvalues_and_same_tensor():
    K = _factors((4,), seed=8)[0]
    fs = [K, torch.eye(3, dtype=F64), K]  # the same tensor twice: decomposed once
    y = _randn(1, 48, seed=9)
    s2 = _s2(0.2)
    _, _, eig, rot = sim_ops.kron_gp_mll(fs, y, s2)
    wn = torch.ones(1, dtype=F64)
    _, _, dfs = sim_ops.kron_gp_mll_bwd(wn, None, fs, s2, eig, rot, False, False, True)
    _, _, edf = _mll_bwd_expected([K.clone(), torch.eye(3, dtype=F64), K.clone()], y, s2, wn, None)
    for d, e in zip(dfs, edf):
        _close(d, e, F64)


def test_kron_gp_mll_bwd_schedules():
    """trace_kernel and scale_kernel(Others) under every schedule. One axis: every c_0[k] gets one
    contribution and the trace is a block reduction per block (run sequentially), so the results
    are bitwise equal; several axes: c_d[k] sums its contributions with atomicAdd in the order the
    threads run, equal to rounding only."""
    s2 = _s2(0.1)
    wn = torch.tensor([0.5, 1.5], dtype=F64)
    wa = _randn(2, 300, seed=11)
    fs1 = _factors((300,), seed=10)  # two blocks
    y1 = _randn(2, 300, seed=12)
    _, _, eig1, rot1 = sim_ops.kron_gp_mll(fs1, y1, s2)
    r = run_schedules(
        lambda: (lambda dy, dn, dfs: (dy, dn, *dfs))(
            *sim_ops.kron_gp_mll_bwd(wn, wa, fs1, s2, eig1, rot1, True, True, True)
        )
    )
    edy, edn, edf = _mll_bwd_expected(fs1, y1, s2, wn, wa)
    _close(r[0], edy, F64)
    _close(r[1], edn, F64)
    _close(r[2], edf[0], F64)
    fs2 = _factors((17, 19), seed=13)
    y2 = _randn(2, 323, seed=14)
    wa2 = _randn(2, 323, seed=15)
    _, _, eig2, rot2 = sim_ops.kron_gp_mll(fs2, y2, s2)
    r = _schedules_close(
        lambda: (lambda dy, dn, dfs: (dy, dn, *dfs))(
            *sim_ops.kron_gp_mll_bwd(wn, wa2, fs2, s2, eig2, rot2, True, True, True)
        )
    )
    edy, edn, edf = _mll_bwd_expected(fs2, y2, s2, wn, wa2)
    _close(r[0], edy, F64)
    _close(r[1], edn, F64)
    for d, e in zip(r[2:], edf):
        _close(d, e, F64)
