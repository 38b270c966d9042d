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
"""

import functools
import math
from itertools import product

import pytest
import torch
from conftest import TOL, assert_close_to_ref, configure, run_schedules, sim_ops
from kernelfuse.ops.kron_grid import KINDS, MAX_ORDER, NPARAMS
from kernelfuse.reference import kron as ref
from kernelfuse.reference import kron_grid as gref

F64, F32 = torch.float64, torch.float32
DTYPES = [F64, F32]


# ------------------------------------------------------------------ inputs
def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=_gen(seed), dtype=F64).to(dtype)


def _rbf(n, g, ls=0.7, jitter=1e-6):
    x = torch.rand(n, 1, generator=g, dtype=F64) * 3
    return torch.exp(-0.5 * (x - x.T) ** 2 / ls**2) + jitter * torch.eye(n, dtype=F64)


def _factors(dims, seed=0, dtype=F64, jitter=1e-6):
    g = _gen(seed)
    return [_rbf(n, g, jitter=jitter).to(dtype) for n in dims]


def _d64(ts):
    return [t.double() for t in ts]


def _s2(v, dtype=F64):
    return torch.tensor(v, dtype=dtype)


# float64: the table's tolerance (measured: under 5 % of it). float32: 100x the table's (measured: up
# to ~70x): the factors are decomposed by a float32 eigh, so the errors are eps32 times the
# conditioning of A = K + s^2 I (max(lam) / s^2 ~ 1e2 here), amplified in the gradients.
def _kfactor(dtype):
    return 100.0 if dtype == F32 else 1.0


def _close(out, exp, dtype, factor=1.0):
    assert out.dtype == dtype, (out.dtype, dtype)
    assert_close_to_ref(out, exp, dtype, factor=factor)


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


# ================================================================== kron_posterior_var
def _pv_ref(fs, s2, cs=None, targets="grid", prior=None):
    y = torch.zeros(math.prod(f.shape[0] for f in fs), dtype=F64)
    return ref.kron_posterior(
        _d64(fs),
        y,
        s2.double(),
        cross_factors=None if cs is None else _d64(cs),
        targets=targets,
        prior_var=None if prior is None else prior.double(),
    )[1]


PV_GRIDS = [(5,), (1,), (3, 4), (7, 1, 3), (17, 19), (2, 3, 2, 2), (2, 1, 2, 1, 3, 1, 2, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", PV_GRIDS, ids=lambda d: "x".join(map(str, d)))
def test_kron_posterior_var_train(dims, dtype):
    fs = _factors(dims, seed=15, dtype=dtype)
    N = math.prod(dims)
    s2 = _s2(0.1, dtype)
    fac = _kfactor(dtype)
    var = sim_ops.kron_posterior_var(fs, s2, [], "train", None, None)  # PostVar
    _close(var, _pv_ref(fs, s2), dtype, factor=fac)
    pv = torch.full((N,), 1.5, dtype=dtype)
    var = sim_ops.kron_posterior_var(fs, s2, [], "train", pv, None)  # SqOverDenom
    _close(var, _pv_ref(fs, s2, prior=pv), dtype, factor=fac)
    _, _, eig, _ = sim_ops.kron_gp_mll(fs, torch.zeros(1, N, dtype=dtype), s2)  # precomputed eig
    var = sim_ops.kron_posterior_var(fs, s2, [], "train", None, eig)
    _close(var, _pv_ref(fs, s2), dtype, factor=fac)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "dims,mdims",
    [
        ((3, 4), (5, 2)),
        ((7, 1, 3), (2, 3, 4)),
        ((5,), (6,)),
        ((1,), (1,)),
        ((17, 19), (3, 1)),
        ((2, 1, 2, 1, 3, 1, 2, 2), (1, 2, 1, 3, 1, 1, 2, 1)),
    ],
    ids=lambda d: "x".join(map(str, d)),
)
def test_kron_posterior_var_grid(dims, mdims, dtype):
    fs = _factors(dims, seed=17, dtype=dtype)
    g = _gen(18)
    cs = [(torch.rand(m, n, generator=g, dtype=F64) * 0.5).to(dtype) for m, n in zip(mdims, dims)]
    M = math.prod(mdims)
    s2 = _s2(0.05, dtype)
    pv = torch.full((M,), 2.0, dtype=dtype)
    exp = _pv_ref(fs, s2, cs, "grid", pv)
    _close(sim_ops.kron_posterior_var(fs, s2, cs, "grid", pv, None), exp, dtype, factor=_kfactor(dtype))
    _, _, eig, _ = sim_ops.kron_gp_mll(fs, torch.zeros(1, math.prod(dims), dtype=dtype), s2)
    _close(sim_ops.kron_posterior_var(fs, s2, cs, "grid", pv, eig), exp, dtype, factor=_kfactor(dtype))


SCAT = [
    ((5,), 11),
    ((1,), 3),
    ((3, 4), 11),
    ((7, 1, 3), 11),
    ((2, 3, 2, 2), 11),
    ((2, 1, 2, 1, 3, 1, 2, 2), 7),  # 7 rest axes
    ((17, 19, 2), 5),  # R = 323 rest elements: the threads stride past 256
    ((4, 3), 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims,M", SCAT, ids=lambda d: "x".join(map(str, d)) if isinstance(d, tuple) else str(d))
def test_kron_posterior_var_scattered(dims, M, dtype):
    fs = _factors(dims, seed=20, dtype=dtype)
    g = _gen(21)
    cs = [(torch.rand(M, n, generator=g, dtype=F64) * 0.5).to(dtype) for n in dims]
    s2 = _s2(0.1, dtype)
    pv = torch.full((M,), 1.0, dtype=dtype)
    exp = _pv_ref(fs, s2, cs, "scattered", pv)
    _close(sim_ops.kron_posterior_var(fs, s2, cs, "scattered", pv, None), exp, dtype, factor=_kfactor(dtype))
    _, _, eig, _ = sim_ops.kron_gp_mll(fs, torch.zeros(1, math.prod(dims), dtype=dtype), s2)
    _close(sim_ops.kron_posterior_var(fs, s2, cs, "scattered", pv, eig), exp, dtype, factor=_kfactor(dtype))


def test_kron_posterior_var_scattered_equals_grid_and_schedules():
    """The scattered path on the points of a grid equals the grid path; rowwise_kernel's block
    reduction (and scale_kernel without an input) under every schedule."""
    dims = (17, 19, 2)
    fs = _factors(dims, seed=22)
    g = _gen(23)
    cg = [torch.rand(m, n, generator=g, dtype=F64) for m, n in zip((2, 3, 2), dims)]
    s2 = _s2(0.1)
    pv = torch.ones(12, dtype=F64)
    vg = sim_ops.kron_posterior_var(fs, s2, cg, "grid", pv, None)
    idx = torch.cartesian_prod(torch.arange(2), torch.arange(3), torch.arange(2))
    rows = [c[idx[:, d]] for d, c in enumerate(cg)]
    vs = run_schedules(lambda: sim_ops.kron_posterior_var(fs, s2, rows, "scattered", pv, None))
    torch.testing.assert_close(vs, vg, rtol=1e-12, atol=1e-12)
    _close(vs, _pv_ref(fs, s2, rows, "scattered", pv), F64)
    configure(arch=80)
    torch.testing.assert_close(sim_ops.kron_posterior_var(fs, s2, rows, "scattered", pv, None), vs, rtol=0, atol=0)


def test_kron_posterior_var_empty_targets():
    fs = _factors((3, 4), seed=24)
    s2 = _s2(0.1)
    cs = [torch.zeros(0, 3, dtype=F64), torch.zeros(0, 4, dtype=F64)]
    assert sim_ops.kron_posterior_var(fs, s2, cs, "scattered", torch.zeros(0, dtype=F64), None).shape == (0,)
    cs = [torch.zeros(0, 3, dtype=F64), torch.rand(2, 4, dtype=F64)]
    assert sim_ops.kron_posterior_var(fs, s2, cs, "grid", torch.zeros(0, dtype=F64), None).shape == (0,)


def test_regression_posterior_var_empty_axis():
    """Bug: kron_posterior_var(targets="scattered") with an empty last axis (a 0 x 0 factor: no
    training points) divided by zero in the glue (R = N / n_last: SIGFPE, the process died), and an
    empty axis just before it divided by zero in the CPU contraction. With no training data the
    posterior variance is the prior (as the dense reference gives)."""
    K3 = _factors((3,), seed=30)[0]
    Z = torch.zeros(0, 0, dtype=F64)
    s2 = _s2(0.1)
    pv = torch.tensor([1.0, 2.0], dtype=F64)
    for fs in ([K3, Z], [Z, K3], [K3, Z, K3], [Z]):
        cs = [torch.rand(2, f.shape[0], generator=_gen(31), dtype=F64) for f in fs]
        exp = _pv_ref(fs, s2, cs, "scattered", pv)
        torch.testing.assert_close(sim_ops.kron_posterior_var(fs, s2, cs, "scattered", pv, None), exp)
        cg = [torch.rand(1 + d, f.shape[0], generator=_gen(32), dtype=F64) for d, f in enumerate(fs)]
        pg = torch.ones(math.prod(c.shape[0] for c in cg), dtype=F64)
        torch.testing.assert_close(sim_ops.kron_posterior_var(fs, s2, cg, "grid", pg, None), pg)
        assert sim_ops.kron_posterior_var(fs, s2, [], "train", None, None).shape == (0,)


def test_empty_axes_matmul_and_mll():
    """Factors with 0 rows / columns / a 0 x 0 factor: no kernel launch, the shapes and values of the
    (empty) algebra."""
    K3 = _factors((3,), seed=33)[0]
    assert sim_ops.kron_matmul([torch.zeros(0, 3, dtype=F64)], torch.ones(2, 3, dtype=F64), False).shape == (2, 0)
    out = sim_ops.kron_matmul([torch.zeros(3, 0, dtype=F64), K3], torch.ones(2, 0, dtype=F64), False)
    assert torch.equal(out, torch.zeros(2, 9, dtype=F64))
    dx, dfs = sim_ops.kron_matmul_bwd(
        torch.ones(2, 9, dtype=F64), [torch.zeros(3, 0, dtype=F64), K3], torch.ones(2, 0, dtype=F64), False, True, True
    )
    assert dx.shape == (2, 0) and dfs[0].shape == (3, 0) and torch.equal(dfs[1], torch.zeros(3, 3, dtype=F64))
    Z = torch.zeros(0, 0, dtype=F64)
    s2 = _s2(0.1)
    nll, alpha, eig, rot = sim_ops.kron_gp_mll([K3, Z], torch.ones(1, 0, dtype=F64), s2)
    assert torch.equal(nll, torch.zeros(1, dtype=F64)) and alpha.shape == (1, 0)
    dy, dn, dfs = sim_ops.kron_gp_mll_bwd(
        torch.ones(1, dtype=F64), torch.ones(1, 0, dtype=F64), [K3, Z], s2, eig, rot, True, True, True
    )
    assert dy.shape == (1, 0) and dn.item() == 0 and torch.equal(dfs[0], torch.zeros(3, 3, dtype=F64))


def test_kron_posterior_var_scattered_two_chunks():
    """More targets than one chunk of the last-axis GEMM (chunk = 2^22 / R targets, R = 16384 rest
    elements: 256): rowwise_kernel runs once per chunk on offset W / out pointers. The oracle is an
    independent float64 transcription of the variance (eigh of the factors, the dense M x N cross
    matrix of the squared rotated cross factors): a dense N x N solve of N = 32768 is out of reach."""
    dims = (128, 128, 2)
    fs = _factors(dims, seed=25)
    M = 257 + 3
    g = _gen(26)
    cs = [torch.rand(M, n, generator=g, dtype=F64) * 0.3 for n in dims]
    s2 = _s2(0.1)
    pv = torch.ones(M, dtype=F64)
    var = sim_ops.kron_posterior_var(fs, s2, cs, "scattered", pv, None)
    eigs = [torch.linalg.eigh(0.5 * (f + f.T)) for f in fs]
    lam = ref._kron_vec([e[0] for e in eigs])
    W = [(c @ e[1]) ** 2 for c, e in zip(cs, eigs)]
    exp = pv - ref.scattered_cross(W) @ (1.0 / (lam + 0.1))
    _close(var, exp, F64)


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
