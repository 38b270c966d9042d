"""Kronecker GP algebra (kron_matmul, kron_gp_mll, kron_solve, kron_posterior) against dense float64
linear algebra (kernelfuse.reference.kron: torch.kron + solve / slogdet), on small grids with odd
sizes, a factor of size 1 and jitter 1e-6; gradcheck, opcheck, torch.compile, bad input, and the
exact MLL of GPyTorch on a 2-D grid GP."""

import math

import kernelfuse as kf
import pytest
import torch
from conftest import assert_close_to_ref as _close
from kernelfuse.reference import kron as ref

GRIDS = [(5,), (3, 4), (7, 1, 3), (2, 3, 5), (1, 6), (4, 4)]
RECT = [((4, 3),), ((4, 3), (2, 5)), ((3, 3), (1, 4), (5, 2)), ((1, 1), (3, 2))]


def _rbf(n, ls, g, jitter=0.0, dtype=torch.float64, device="cpu"):
    x = torch.rand(n, 1, generator=g, dtype=torch.float64) * 3
    K = torch.exp(-0.5 * (x - x.T) ** 2 / ls**2) + jitter * torch.eye(n, dtype=torch.float64)
    return K.to(dtype=dtype, device=device)


def _factors(dims, seed=0, dtype=torch.float64, device="cpu", jitter=0.0, ls=0.7):
    g = torch.Generator().manual_seed(seed)
    return [_rbf(n, ls, g, jitter, dtype, device) for n in dims]


def _randn(*shape, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


def _d64(ts):
    return [t.double().cpu() for t in ts]


# ------------------------------------------------------------------ kron_matmul
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shapes", RECT)
def test_matmul_matches_dense(shapes, dtype, device):
    g = torch.Generator().manual_seed(1)
    fs = [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype=dtype, device=device) for s in shapes]
    M = math.prod(s[1] for s in shapes)
    N = math.prod(s[0] for s in shapes)
    for lead in [(), (3,), (2, 2)]:
        x = _randn(*lead, M, seed=2, dtype=dtype, device=device)
        out = kf.kron_matmul(fs, x)
        assert out.shape == (*lead, N) and out.dtype == dtype
        _close(out, ref.kron_matmul(_d64(fs), x.double().cpu()), dtype, factor=10)
        xt = _randn(*lead, N, seed=3, dtype=dtype, device=device)
        outt = kf.kron_matmul(fs, xt, transpose=True)
        assert outt.shape == (*lead, M)
        _close(outt, ref.kron_matmul(_d64(fs), xt.double().cpu(), transpose=True), dtype, factor=10)


def test_matmul_matrix_convention_and_strided_factors(device):
    fs = [_randn(6, 4, seed=4, device=device).T, _randn(3, 5, seed=5, device=device)]  # a transposed view
    X = _randn(6 * 5, 7, seed=6, device=device)  # (M, r): pass X.T, transpose back
    out = kf.kron_matmul(fs, X.T).T
    torch.testing.assert_close(out.cpu(), ref.kron_dense(_d64(fs)) @ X.cpu())


def test_matmul_larger_grid_multithreaded():
    # big enough for the threaded GEMM tiles and every micro-kernel edge (63 = 5 * 12 + 3)
    fs = [_randn(63, 40, seed=7), _randn(17, 63, seed=8), _randn(30, 29, seed=9)]
    x = _randn(2, 40 * 63 * 29, seed=10)
    out = kf.kron_matmul(fs, x)
    expected = x.reshape(2, 40, 63, 29)
    expected = torch.einsum("ia,xajk->xijk", fs[0], expected)
    expected = torch.einsum("jb,xibk->xijk", fs[1], expected)
    expected = torch.einsum("kc,xijc->xijk", fs[2], expected)
    torch.testing.assert_close(out, expected.reshape(2, -1))
    xf = x.float()
    torch.testing.assert_close(
        kf.kron_matmul([f.float() for f in fs], xf).double(),
        expected.reshape(2, -1),
        rtol=1e-4,
        atol=1e-4 * expected.abs().max().item(),
    )


@pytest.mark.parametrize("shapes", [((200, 193), (3, 2)), ((5, 4), (197, 200)), ((3, 2), (200, 200), (2, 3))])
def test_matmul_large_axes(shapes):
    # first / last axes with a, n >= 192 take ATen's GEMM on CPU, middle ones the torch-free kernel
    fs = [_randn(*s, seed=i) for i, s in enumerate(shapes)]
    x = _randn(2, math.prod(s[1] for s in shapes), seed=9)
    torch.testing.assert_close(kf.kron_matmul(fs, x), ref.kron_matmul(fs, x))
    xt = _randn(math.prod(s[0] for s in shapes), seed=10)
    torch.testing.assert_close(kf.kron_matmul(fs, xt, transpose=True), ref.kron_matmul(fs, xt, transpose=True))


@pytest.mark.slow
def test_aten_gemm_path_env():
    # KERNELFUSE_KRON_GEMM=aten (read once per process): the cyclic ATen-GEMM path gives the same results.
    # Slow (a fresh interpreter, ~5-15 s) and an alternative path only: marked slow.
    import subprocess
    import sys

    code = (
        "import torch, kernelfuse as kf\n"
        "from kernelfuse.reference import kron as ref\n"
        "g = torch.Generator().manual_seed(0)\n"
        "fs = [torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)]\n"
        "x = torch.randn(2, 18, generator=g, dtype=torch.float64)\n"
        "torch.testing.assert_close(kf.kron_matmul(fs, x), ref.kron_matmul(fs, x))\n"
        "K = [f @ f.T for f in fs]\n"
        "y = torch.randn(20, generator=g, dtype=torch.float64)\n"
        "torch.testing.assert_close(kf.kron_gp_mll(K, y, 0.1)[0], ref.kron_gp_mll(K, y, torch.tensor(0.1, dtype=torch.float64))[0])\n"
    )
    env = dict(__import__("os").environ, KERNELFUSE_KRON_GEMM="aten")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]


def test_matmul_gradcheck():
    fs = [
        _randn(3, 2, seed=11).requires_grad_(),
        _randn(1, 3, seed=12).requires_grad_(),
        _randn(2, 4, seed=13).requires_grad_(),
    ]
    x = _randn(2, 24, seed=14).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c, x: kf.kron_matmul([a, b, c], x), (*fs, x))
    xt = _randn(2, 6, seed=15).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c, x: kf.kron_matmul([a, b, c], x, transpose=True), (*fs, xt))


def test_matmul_grad_only_some_inputs():
    a = _randn(3, 3, seed=16).requires_grad_()
    b = _randn(2, 2, seed=17)
    x = _randn(6, seed=18)
    kf.kron_matmul([a, b], x).sum().backward()
    ar = a.detach().clone().requires_grad_()
    ref.kron_matmul([ar, b], x).sum().backward()
    torch.testing.assert_close(a.grad, ar.grad)


# ------------------------------------------------------------------ kron_gp_mll / kron_solve
@pytest.mark.parametrize("dims", GRIDS)
@pytest.mark.parametrize("noise", [0.1, 1e-6])
def test_mll_value_and_alpha(dims, noise, device):
    fs = _factors(dims, seed=sum(dims), jitter=1e-6, device=device)
    N = math.prod(dims)
    y = _randn(N, seed=1, device=device)
    s2 = torch.tensor(noise, dtype=torch.float64, device=device)
    nll, alpha = kf.kron_gp_mll(fs, y, s2)
    rnll, ralpha = ref.kron_gp_mll(_d64(fs), y.cpu(), s2.cpu())
    assert nll.shape == () and alpha.shape == (N,)
    # the conditioning of A (up to ~1e6 / noise) bounds what any float64 method can agree on
    rel = 1e-10 if noise == 0.1 else 1e-5
    torch.testing.assert_close(nll.cpu(), rnll, rtol=rel, atol=rel * (1 + rnll.abs().item()))
    torch.testing.assert_close(alpha.cpu(), ralpha, rtol=rel, atol=rel * ralpha.abs().max().item())
    torch.testing.assert_close(kf.kron_solve(fs, y, s2).cpu(), alpha.cpu(), rtol=0, atol=0)


@pytest.mark.parametrize("dims", [(3, 4), (2, 1, 5)])
def test_mll_batched_and_float32(dims, device):
    fs = _factors(dims, seed=3, device=device)
    N = math.prod(dims)
    y = _randn(2, 3, N, seed=2, device=device)
    nll, alpha = kf.kron_gp_mll(fs, y, 0.05)
    rnll, ralpha = ref.kron_gp_mll(_d64(fs), y.cpu(), torch.tensor(0.05, dtype=torch.float64))
    assert nll.shape == (2, 3) and alpha.shape == y.shape
    torch.testing.assert_close(nll.cpu(), rnll)
    torch.testing.assert_close(alpha.cpu(), ralpha)
    nll32, alpha32 = kf.kron_gp_mll([f.float() for f in fs], y.float(), torch.tensor(0.05, device=device))
    assert nll32.dtype == torch.float32
    torch.testing.assert_close(nll32.double().cpu(), rnll, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(alpha32.double().cpu(), ralpha, rtol=1e-3, atol=1e-3 * ralpha.abs().max().item())


def test_mll_empty_batch():
    fs = _factors((3, 2))
    nll, alpha = kf.kron_gp_mll(fs, torch.zeros(0, 6, dtype=torch.float64), 0.1)
    assert nll.shape == (0,) and alpha.shape == (0, 6)


@pytest.mark.parametrize("dims", [(3, 4), (7, 1, 3), (5,)])
def test_mll_gradient_matches_dense(dims, device):
    fs = _factors(dims, seed=5, jitter=1e-6, device=device)
    N = math.prod(dims)
    y = _randn(2, N, seed=6, device=device)
    s2 = torch.tensor(0.03, dtype=torch.float64, device=device)
    wn = torch.tensor([0.7, -1.3], dtype=torch.float64, device=device)
    wa = _randn(2, N, seed=7, device=device)

    def loss(fn, fs, y, s2):
        nll, alpha = fn(fs, y, s2)
        return (nll * wn).sum() + (alpha * wa).sum()

    ins = [f.clone().requires_grad_() for f in fs] + [y.clone().requires_grad_(), s2.clone().requires_grad_()]
    g = torch.autograd.grad(loss(kf.kron_gp_mll, ins[:-2], ins[-2], ins[-1]), ins)
    rins = [t.detach().cpu().clone().requires_grad_() for t in ins]
    wn, wa = wn.cpu(), wa.cpu()
    rg = torch.autograd.grad(loss(ref.kron_gp_mll, rins[:-2], rins[-2], rins[-1]), rins)
    for a, b in zip(g, rg):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-8, atol=1e-8 * max(1.0, b.abs().max().item()))
    for a in g[: len(fs)]:  # gradients w.r.t. symmetric factors are symmetric
        torch.testing.assert_close(a, a.T)


def test_mll_nll_only_gradient_and_repeated_eigenvalues():
    # identical factors and an identity factor: repeated eigenvalues (where eigh's own backward fails)
    K = _factors((4,), seed=8)[0]
    fs = [K.clone().requires_grad_(), torch.eye(3, dtype=torch.float64).requires_grad_(), K.clone().requires_grad_()]
    y = _randn(48, seed=9)
    nll, _ = kf.kron_gp_mll(fs, y, 0.2)
    g = torch.autograd.grad(nll, fs)
    rfs = [f.detach().clone().requires_grad_() for f in fs]
    rg = torch.autograd.grad(ref.kron_gp_mll(rfs, y, torch.tensor(0.2, dtype=torch.float64))[0], rfs)
    for a, b in zip(g, rg):
        torch.testing.assert_close(a, b)


def test_same_tensor_twice():
    K = _factors((5,), seed=10)[0].requires_grad_()
    y = _randn(25, seed=11)
    nll, alpha = kf.kron_gp_mll([K, K], y, 0.1)
    (gK,) = torch.autograd.grad(nll + alpha.sum(), K)
    Kr = K.detach().clone().requires_grad_()
    rn, ra = ref.kron_gp_mll([Kr, Kr], y, torch.tensor(0.1, dtype=torch.float64))
    (rgK,) = torch.autograd.grad(rn + ra.sum(), Kr)
    torch.testing.assert_close(nll, rn)
    torch.testing.assert_close(gK, rgK)


def test_logdet_is_not_clamped():
    # rank-one factors: eigenvalues 0 (or -1e-17 from rounding) with jitter 1e-8; GPyTorch-style
    # clamping of eigenvalues at 1e-7 would change the log-det by ~ N log(10) nats.
    fs = [torch.ones(4, 4, dtype=torch.float64), torch.ones(3, 3, dtype=torch.float64)]
    y = _randn(12, seed=12)
    nll, _ = kf.kron_gp_mll(fs, y, 1e-8)
    A = ref.kron_dense(fs) + 1e-8 * torch.eye(12, dtype=torch.float64)
    logdet = torch.linalg.slogdet(A)[1]
    quad = y @ torch.linalg.solve(A, y)
    expected = 0.5 * quad + 0.5 * logdet + 6 * math.log(2 * math.pi)
    torch.testing.assert_close(nll, expected, rtol=1e-6, atol=0)


def test_not_positive_definite_gives_nan():
    fs = [-torch.eye(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)]
    nll, _ = kf.kron_gp_mll(fs, torch.ones(4, dtype=torch.float64), 0.5)
    assert torch.isnan(nll)


def test_mll_gradcheck():
    fs = _factors((3, 1, 2), seed=13)
    ins = [f.requires_grad_() for f in fs] + [
        _randn(2, 6, seed=14).requires_grad_(),
        torch.tensor(0.3, dtype=torch.float64, requires_grad=True),
    ]
    assert torch.autograd.gradcheck(lambda a, b, c, y, s: kf.kron_gp_mll([a, b, c], y, s), ins)
    assert torch.autograd.gradcheck(lambda a, b, c, y, s: kf.kron_solve([a, b, c], y, s), ins)
    assert torch.autograd.gradcheck(lambda a, b, c, y, s: kf.kron_gp_mll([a, b, c], y, s)[0], ins)


# (factors: none / only the first / all, y, noise): every subset that needs a gradient, each a
# different need_* combination of kron_gp_mll_bwd (and of kron_matmul_bwd below)
_SUBSETS = [(f, y, s) for f in ("none", "first", "all") for y in (False, True) for s in (False, True)]
_SUBSETS = [m for m in _SUBSETS if m != ("none", False, False)]


@pytest.mark.parametrize("outputs", ["nll+alpha", "nll"])
@pytest.mark.parametrize("subset", _SUBSETS, ids=lambda m: f"f-{m[0]}_y{int(m[1])}_s{int(m[2])}")
def test_mll_gradcheck_every_subset(subset, outputs):
    want_f, want_y, want_s = subset
    fs = _factors((3, 1, 2), seed=23)
    for i, f in enumerate(fs):
        f.requires_grad_(want_f == "all" or (want_f == "first" and i == 0))
    y = _randn(2, 6, seed=24).requires_grad_(want_y)
    s2 = torch.tensor(0.3, dtype=torch.float64, requires_grad=want_s)

    def fn(a, b, c, y, s):
        nll, alpha = kf.kron_gp_mll([a, b, c], y, s)
        return (nll, alpha) if outputs == "nll+alpha" else nll

    assert torch.autograd.gradcheck(fn, (*fs, y, s2))


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("subset", [("all", True), ("first", False), ("all", False), ("none", True)])
def test_matmul_gradcheck_every_subset(subset, transpose):
    want_f, want_x = subset
    fs = [_randn(3, 2, seed=31), _randn(1, 3, seed=32), _randn(2, 4, seed=33)]
    for i, f in enumerate(fs):
        f.requires_grad_(want_f == "all" or (want_f == "first" and i == 0))
    x = _randn(2, 6 if transpose else 24, seed=34).requires_grad_(want_x)
    assert torch.autograd.gradcheck(lambda a, b, c, x: kf.kron_matmul([a, b, c], x, transpose=transpose), (*fs, x))


def test_plain_torch_mode_product_references():
    # the benchmarks' plain-torch baselines agree with the dense references
    fs = _factors((3, 1, 4), seed=44)
    y = _randn(2, 12, seed=45)
    s2 = torch.tensor(0.1, dtype=torch.float64)
    rect = [_randn(2, 3, seed=46), _randn(4, 1, seed=47)]
    torch.testing.assert_close(
        ref.kron_matmul_modes(rect, _randn(3, seed=48)), ref.kron_matmul(rect, _randn(3, seed=48))
    )
    for a, b in zip(ref.kron_gp_mll_eig(fs, y, s2), ref.kron_gp_mll(fs, y, s2)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(ref.kron_posterior_var_eig(fs, s2), ref.kron_posterior(fs, y, s2)[1])


# ------------------------------------------------------------------ kron_posterior
@pytest.mark.parametrize("dims", [(3, 4), (7, 1, 3), (5,)])
@pytest.mark.parametrize("noise", [0.1, 1e-6])
def test_posterior_training_grid(dims, noise, device):
    fs = _factors(dims, seed=15, jitter=1e-6, device=device)
    N = math.prod(dims)
    y = _randn(2, N, seed=16, device=device)
    s2 = torch.tensor(noise, dtype=torch.float64, device=device)
    mean, var = kf.kron_posterior(fs, y, s2)
    rmean, rvar = ref.kron_posterior(_d64(fs), y.cpu(), s2.cpu())
    assert mean.shape == (2, N) and var.shape == (N,)
    rel = 1e-9 if noise == 0.1 else 1e-4
    torch.testing.assert_close(mean.cpu(), rmean, rtol=rel, atol=rel * rmean.abs().max().item())
    torch.testing.assert_close(var.cpu(), rvar, rtol=rel, atol=rel)
    assert (var >= -1e-12).all()
    # with an explicit prior variance
    pv = torch.full((N,), 1.5, dtype=torch.float64, device=device)
    _, var2 = kf.kron_posterior(fs, y, s2, prior_var=pv)
    _, rvar2 = ref.kron_posterior(_d64(fs), y.cpu(), s2.cpu(), prior_var=pv.cpu())
    torch.testing.assert_close(var2.cpu(), rvar2, rtol=rel, atol=rel)


@pytest.mark.parametrize("dims,mdims", [((3, 4), (5, 2)), ((7, 1, 3), (2, 3, 4)), ((5,), (6,))])
def test_posterior_cross_grid(dims, mdims, device):
    fs = _factors(dims, seed=17, jitter=1e-6, device=device)
    g = torch.Generator().manual_seed(18)
    cs = [torch.rand(m, n, generator=g, dtype=torch.float64).to(device) * 0.5 for m, n in zip(mdims, dims)]
    N = math.prod(dims)
    y = _randn(N, seed=19, device=device)
    mean, var = kf.kron_posterior(fs, y, 0.05, cross_factors=cs, prior_var=2.0)
    rmean, rvar = ref.kron_posterior(
        _d64(fs),
        y.cpu(),
        torch.tensor(0.05, dtype=torch.float64),
        cross_factors=_d64(cs),
        prior_var=torch.tensor(2.0, dtype=torch.float64),
    )
    assert mean.shape == (math.prod(mdims),) and var.shape == (math.prod(mdims),)
    torch.testing.assert_close(mean.cpu(), rmean)
    torch.testing.assert_close(var.cpu(), rvar)
    # per-axis prior variance vectors
    pv = [torch.full((m,), 1.2, dtype=torch.float64, device=device) for m in mdims]
    _, var2 = kf.kron_posterior(fs, y, 0.05, cross_factors=cs, prior_var=pv)
    torch.testing.assert_close(var2.cpu(), rvar - 2.0 + 1.2 ** len(mdims))


@pytest.mark.parametrize("dims", [(3, 4), (7, 1, 3), (5,), (2, 3, 2, 2)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_posterior_scattered(dims, dtype, device):
    fs = _factors(dims, seed=20, jitter=1e-6, dtype=dtype, device=device)
    M = 11
    g = torch.Generator().manual_seed(21)
    cs = [(torch.rand(M, n, generator=g, dtype=torch.float64) * 0.5).to(dtype=dtype, device=device) for n in dims]
    N = math.prod(dims)
    y = _randn(3, N, seed=22, dtype=dtype, device=device)
    mean, var = kf.kron_posterior(fs, y, 0.1, cross_factors=cs, targets="scattered", prior_var=1.0)
    rmean, rvar = ref.kron_posterior(
        _d64(fs),
        y.double().cpu(),
        torch.tensor(0.1, dtype=torch.float64),
        cross_factors=_d64(cs),
        targets="scattered",
        prior_var=torch.tensor(1.0, dtype=torch.float64),
    )
    assert mean.shape == (3, M) and var.shape == (M,) and var.dtype == dtype
    rel = 1.0 if dtype == torch.float64 else 100.0
    _close(mean, rmean, dtype, factor=rel * 100)
    _close(var, rvar, dtype, factor=rel * 100)
    # the scattered path equals the grid path on the points of a grid
    if dtype == torch.float64 and len(dims) == 2:
        cg = [torch.rand(3, n, generator=g, dtype=torch.float64).to(device) for n in dims]
        mg, vg = kf.kron_posterior(fs, y, 0.1, cross_factors=cg, prior_var=1.0)
        rows = [cg[0].repeat_interleave(3, 0), cg[1].repeat(3, 1)]
        ms, vs = kf.kron_posterior(fs, y, 0.1, cross_factors=rows, targets="scattered", prior_var=1.0)
        torch.testing.assert_close(ms, mg)
        torch.testing.assert_close(vs, vg)


def test_posterior_scattered_many_targets_chunked():
    # more targets than one chunk of the Python mean path (2^22 / (B * N / n_D) targets)
    dims = (40, 30)
    fs = _factors(dims, seed=23, jitter=1e-6)
    M = 5000
    g = torch.Generator().manual_seed(24)
    cs = [torch.rand(M, n, generator=g, dtype=torch.float64) * 0.3 for n in dims]
    y = _randn(1200, seed=25)
    from kernelfuse.ops import kron as kops

    mean = kops._rowwise_contract(cs, y.reshape(1, -1), list(dims), chunk_elems=4096).reshape(-1)
    torch.testing.assert_close(mean, ref.scattered_cross(cs) @ y)
    mean2, var = kf.kron_posterior(fs, y, 0.1, cross_factors=cs, targets="scattered", prior_var=1.0)
    assert torch.isfinite(var).all() and var.shape == (M,)


def test_posterior_mean_gradient():
    fs = _factors((3, 2), seed=26)
    cs = [_randn(4, 3, seed=27).requires_grad_(), _randn(4, 2, seed=28).requires_grad_()]
    y = _randn(6, seed=29).requires_grad_()
    ins = [f.requires_grad_() for f in fs] + cs + [y]
    assert torch.autograd.gradcheck(
        lambda a, b, c, d, y: kf.kron_posterior(
            [a, b], y, 0.2, cross_factors=[c, d], targets="scattered", prior_var=1.0
        )[0],
        ins,
    )
    assert torch.autograd.gradcheck(
        lambda a, b, c, d, y: kf.kron_posterior([a, b], y, 0.2, cross_factors=[c, d], prior_var=1.0)[0], ins
    )
    m, v = kf.kron_posterior(fs, y, 0.2, return_var=False)
    assert v is None and m.requires_grad


# ------------------------------------------------------------------ opcheck, torch.compile
def test_opcheck():
    fs = _factors((3, 2), seed=30)
    y = _randn(2, 6, seed=31)
    s2 = torch.tensor(0.1, dtype=torch.float64)
    ops = torch.ops.kernelfuse
    rect = [_randn(4, 3, seed=32), _randn(2, 2, seed=33)]
    torch.library.opcheck(ops.kron_matmul, ([f.requires_grad_() for f in rect], _randn(2, 6, seed=34), False))
    torch.library.opcheck(ops.kron_matmul, (rect, _randn(2, 8, seed=35).requires_grad_(), True))
    fr = [f.clone().requires_grad_() for f in fs]
    torch.library.opcheck(ops.kron_gp_mll, (fr, y.clone().requires_grad_(), s2.clone().requires_grad_()))
    _, _, eig, rot = ops.kron_gp_mll(fs, y, s2)
    torch.library.opcheck(
        ops.kron_gp_mll_bwd, (torch.ones(2, dtype=torch.float64), None, fs, s2, eig, rot, True, True, True)
    )
    rect = [r.detach() for r in rect]
    torch.library.opcheck(ops.kron_matmul_bwd, (_randn(2, 8, seed=36), rect, _randn(2, 6, seed=37), False, True, True))
    for kind, cs, pv in [
        ("train", [], None),
        ("grid", [_randn(2, 3, seed=38), _randn(5, 2, seed=39)], torch.ones(10, dtype=torch.float64)),
        ("scattered", [_randn(4, 3, seed=40), _randn(4, 2, seed=41)], torch.ones(4, dtype=torch.float64)),
    ]:
        torch.library.opcheck(ops.kron_posterior_var, (fs, s2, cs, kind, pv, eig if kind != "train" else None))


def test_torch_compile_fullgraph():
    fs = _factors((3, 4), seed=42)
    y = _randn(12, seed=43)
    s2 = torch.tensor(0.1, dtype=torch.float64)

    def f(a, b, y, s2):
        nll, alpha = kf.kron_gp_mll([a, b], y, s2)
        m = kf.kron_matmul([a, b], alpha)
        mean, var = kf.kron_posterior([a, b], y, s2)
        return nll + m.sum() + mean.sum() + var.sum()

    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    a, b = [t.clone().requires_grad_() for t in fs]
    out = cf(a, b, y, s2)
    out.backward()
    a2, b2 = [t.clone().requires_grad_() for t in fs]
    out2 = f(a2, b2, y, s2)
    out2.backward()
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(b.grad, b2.grad)


# ------------------------------------------------------------------ bad input
def test_bad_input():
    fs = _factors((3, 4))
    y = _randn(12)
    with pytest.raises(ValueError, match="factors\\[1\\].*square"):
        kf.kron_gp_mll([fs[0], _randn(4, 3)], y, 0.1)
    with pytest.raises(ValueError, match="'y'.*12"):
        kf.kron_gp_mll(fs, _randn(11), 0.1)
    with pytest.raises(ValueError, match="'y'"):
        kf.kron_solve(fs, _randn(2, 13), 0.1)
    with pytest.raises(TypeError, match="factors\\[1\\].*float64"):
        kf.kron_gp_mll([fs[0], fs[1].float()], y, 0.1)
    with pytest.raises(TypeError, match="'y'.*float64"):
        kf.kron_gp_mll(fs, y.float(), 0.1)
    with pytest.raises(ValueError, match="'noise'"):
        kf.kron_gp_mll(fs, y, torch.ones(2, dtype=torch.float64))
    with pytest.raises(TypeError, match="'noise'"):
        kf.kron_gp_mll(fs, y, "a")
    with pytest.raises(ValueError, match="'x'.*12"):
        kf.kron_matmul(fs, _randn(13))
    with pytest.raises(ValueError, match="factors\\[0\\].*2-D"):
        kf.kron_matmul([_randn(3)], _randn(3))
    with pytest.raises(TypeError, match="'factors'"):
        kf.kron_matmul(fs[0], y)
    with pytest.raises(ValueError, match="'factors'.*empty"):
        kf.kron_matmul([], y)
    with pytest.raises(TypeError, match="int64"):
        kf.kron_matmul([torch.ones(2, 2, dtype=torch.int64)], torch.ones(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="at most 8"):
        kf.kron_gp_mll([torch.ones(1, 1, dtype=torch.float64)] * 9, torch.ones(1, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="'prior_var'"):
        kf.kron_posterior(fs, y, 0.1, cross_factors=[_randn(2, 3), _randn(2, 4)])
    with pytest.raises(ValueError, match="cross_factors\\[1\\].*\\(m, 4\\)"):
        kf.kron_posterior(fs, y, 0.1, cross_factors=[_randn(2, 3), _randn(2, 5)], prior_var=1.0)
    with pytest.raises(ValueError, match="cross_factors\\[1\\].*same number of rows"):
        kf.kron_posterior(fs, y, 0.1, cross_factors=[_randn(2, 3), _randn(3, 4)], targets="scattered", prior_var=1.0)
    with pytest.raises(ValueError, match="'targets'"):
        kf.kron_posterior(fs, y, 0.1, targets="points")
    with pytest.raises(ValueError, match="'prior_var'"):
        kf.kron_posterior(fs, y, 0.1, cross_factors=[_randn(2, 3), _randn(2, 4)], prior_var=torch.ones(3))
    # the C++ checks name the argument too (direct op calls)
    with pytest.raises(ValueError, match="'y'.*\\(B, 12\\)"):
        torch.ops.kernelfuse.kron_gp_mll(fs, _randn(1, 11), torch.tensor(0.1, dtype=torch.float64))
    with pytest.raises(ValueError, match="factors\\[1\\].*square"):
        torch.ops.kernelfuse.kron_gp_mll([fs[0], _randn(4, 3)], _randn(1, 12), torch.tensor(0.1, dtype=torch.float64))


@pytest.mark.cuda
def test_cuda_device_mismatch():
    fs = _factors((3, 4))
    with pytest.raises(ValueError, match="'y'.*device"):
        kf.kron_gp_mll(fs, _randn(12).cuda(), 0.1)


# ------------------------------------------------------------------ GPyTorch
def test_matches_gpytorch_exact_mll():
    gpytorch = pytest.importorskip("gpytorch", reason="gpytorch not installed (pip install gpytorch)")
    from linear_operator.operators import DenseLinearOperator, KroneckerProductLinearOperator

    torch.manual_seed(0)
    n1, n2 = 9, 7
    x1 = torch.linspace(0, 1, n1, dtype=torch.float64)
    x2 = torch.linspace(0, 2, n2, dtype=torch.float64)
    X = torch.cartesian_prod(x1, x2)
    y = torch.sin(3 * X[:, 0]) * torch.cos(2 * X[:, 1]) + 0.1 * torch.randn(n1 * n2, dtype=torch.float64)
    noise = 0.05

    class GP(gpytorch.models.ExactGP):
        def __init__(self, X, y, lik):
            super().__init__(X, y, lik)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = gpytorch.kernels.RBFKernel(ard_num_dims=2)

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    model = GP(X, y, lik).double()
    model.covar_module.lengthscale = torch.tensor([[0.3, 0.5]], dtype=torch.float64)
    lik.noise = noise
    model.train()
    lik.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    with gpytorch.settings.max_cholesky_size(10**6):
        out = model(X)
        gp_nll = -mll(out, y) * (n1 * n2)  # ExactMarginalLogLikelihood divides by N

    ls = model.covar_module.lengthscale.detach()[0]
    K1 = torch.exp(-0.5 * (x1[:, None] - x1[None, :]) ** 2 / ls[0] ** 2)
    K2 = torch.exp(-0.5 * (x2[:, None] - x2[None, :]) ** 2 / ls[1] ** 2)
    nll, _ = kf.kron_gp_mll([K1, K2], y, torch.tensor(lik.noise.item(), dtype=torch.float64))
    torch.testing.assert_close(nll, gp_nll.detach(), rtol=1e-9, atol=1e-8)
    # linear_operator's Kronecker operator: the same matrix
    kop = KroneckerProductLinearOperator(DenseLinearOperator(K1), DenseLinearOperator(K2))
    torch.testing.assert_close(kf.kron_matmul([K1, K2], y), kop @ y)


def test_regression_posterior_var_empty_axis_cpu():
    # An empty training grid (a 0 x 0 factor) divided by zero (SIGFPE) in kron_posterior_var; with no
    # training data the posterior variance is the prior. (The device path: tests/sim/test_sim_kron_posterior.py.)
    K3 = torch.eye(3, dtype=torch.float64) + 0.5
    Z = torch.zeros(0, 0, dtype=torch.float64)
    s2 = torch.tensor(0.1, dtype=torch.float64)
    pv = torch.tensor([1.0, 2.0], dtype=torch.float64)
    for fs in ([K3, Z], [Z, K3], [K3, Z, K3], [Z]):
        cs = [torch.rand(2, f.shape[0], dtype=torch.float64) for f in fs]
        torch.testing.assert_close(torch.ops.kernelfuse.kron_posterior_var(fs, s2, cs, "scattered", pv, None), pv)


def test_empty_axes_matmul_and_mll_cpu():
    """Factors with 0 rows / columns and a 0 x 0 factor through the CPU ops and their backwards (the
    runner's early returns: an empty factor may have no data but keeps its shape; it is not the
    identity of an untransformed axis)."""
    F64 = torch.float64
    ops = torch.ops.kernelfuse
    K3 = _factors((3,), seed=33)[0]
    assert ops.kron_matmul([torch.zeros(0, 3, dtype=F64)], torch.ones(2, 3, dtype=F64), False).shape == (2, 0)
    out = ops.kron_matmul([torch.zeros(3, 0, dtype=F64), K3], torch.ones(2, 0, dtype=F64), False)
    assert torch.equal(out, torch.zeros(2, 9, dtype=F64))
    for tr in (False, True):
        f0 = torch.zeros(0, 3, dtype=F64) if tr else torch.zeros(3, 0, dtype=F64)
        dx, dfs = ops.kron_matmul_bwd(
            torch.ones(2, 9, dtype=F64), [f0, K3], torch.ones(2, 0, dtype=F64), tr, True, True
        )
        assert dx.shape == (2, 0) and dfs[0].shape == f0.shape and torch.equal(dfs[1], torch.zeros(3, 3, dtype=F64))
    Z = torch.zeros(0, 0, dtype=F64)
    s2 = torch.tensor(0.1, dtype=F64)
    nll, alpha, eig, rot = ops.kron_gp_mll([K3, Z], torch.ones(1, 0, dtype=F64), s2)
    assert torch.equal(nll, torch.zeros(1, dtype=F64)) and alpha.shape == (1, 0)
    dy, dn, dfs = ops.kron_gp_mll_bwd(
        torch.ones(1, dtype=F64), torch.ones(1, 0, dtype=F64), [K3, Z], s2, eig, rot, True, True, True
    )
    assert dy.shape == (1, 0) and dn.item() == 0 and torch.equal(dfs[0], torch.zeros(3, 3, dtype=F64))
    assert dfs[1].shape == (0, 0)
