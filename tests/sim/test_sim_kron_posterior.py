"""kron_posterior_var under the CUDA simulator (csrc/kron/kron_cuda.cu: scale_kernel with the
PostVar / SqOverDenom / Inv weights, rowwise_kernel for scattered targets, the map of the kernels:
test_sim_kron.py) against the float64 reference: the training grid, another grid, scattered targets
(in one and in two GEMM chunks), empty targets and empty axes (no launch) for kron_posterior_var,
kron_matmul and kron_gp_mll."""

import math

import pytest
import torch
from conftest import configure, run_schedules, sim_ops
from kernelfuse.reference import kron as ref
from sim_kron_common import DTYPES, F64, _close, _d64, _factors, _gen, _kfactor, _s2


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
