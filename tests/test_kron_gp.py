"""grid_kernel against its torch.func reference (every kind and order pair, Toeplitz vs direct,
gradcheck, opcheck, compile, errors), and the grid GP models: GridGPRegressor against a dense
float64 GP, GPPDESolver on a small 1-D Poisson problem."""

import math

import kernelfuse as kf
import numpy as np
import pytest
import torch
from conftest import TOL
from kernelfuse.ops.kron_grid import KINDS, MAX_ORDER, NPARAMS
from kernelfuse.reference import kron_grid as ref

PAIRS = [(a, b) for a in range(3) for b in range(3)]


def _params(kind, Q, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    if NPARAMS[kind] == 2:
        p = torch.stack(
            [
                0.3 * torch.randn(Q, generator=g, dtype=torch.float64),
                math.log(0.4) + 0.3 * torch.randn(Q, generator=g, dtype=torch.float64),
            ],
            1,
        )
    else:
        p = torch.stack(
            [
                0.3 * torch.randn(Q, generator=g, dtype=torch.float64),
                6.0 * torch.rand(Q, generator=g, dtype=torch.float64),
                math.log(0.5) + 0.3 * torch.randn(Q, generator=g, dtype=torch.float64),
            ],
            1,
        )
    return p.to(dtype)


def _pts(n, dtype=torch.float64, seed=1, uniform=False):
    if uniform:
        return torch.linspace(-1.0, 1.3, n, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1).to(dtype)


def _close(out, exp, dtype):
    tol = TOL[dtype]
    scale = max(1.0, exp.abs().max().item()) if exp.numel() else 1.0
    rtol = tol["rtol"] * (50 if dtype == torch.float32 else 1)  # float32 inputs: tau rounding, times k^(n+1)
    torch.testing.assert_close(out.double(), exp, rtol=rtol, atol=max(tol["atol"], rtol) * scale)


# ------------------------------------------------------------------ values vs the reference
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_reference_every_order(kind, dtype):
    Q = 1 if NPARAMS[kind] == 2 else 3
    p = _params(kind, Q, seed=len(kind))
    for n1, n2 in [(7, 5), (1, 1), (13, 1)]:
        x1, x2 = _pts(n1, seed=n1), _pts(n2, seed=n2 + 100)
        for a, b in PAIRS:
            if a + b > MAX_ORDER[kind]:
                continue
            out = kf.grid_kernel(x1.to(dtype), x2.to(dtype), kind, p.to(dtype), orders=(a, b))
            exp = ref.grid_kernel(
                x1.to(dtype).double(), x2.to(dtype).double(), kind, p.to(dtype).double(), orders=(a, b)
            )
            assert out.dtype == dtype and out.shape == (n1, n2)
            _close(out, exp, dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_coincident_points_and_toeplitz(kind):
    """x1 == x2 on a uniform grid: tau = 0 on the diagonal (the Matern kinks), Toeplitz = direct = ref."""
    Q = 2
    p = _params(kind, Q, seed=3)
    for n in (1, 2, 11):
        x = _pts(n, uniform=True)
        for a, b in PAIRS:
            if a + b > MAX_ORDER[kind]:
                continue
            fast = kf.grid_kernel(x, x, kind, p, orders=(a, b))  # detected
            forced = kf.grid_kernel(x, x, kind, p, orders=(a, b), toeplitz=True)
            direct = kf.grid_kernel(x, x, kind, p, orders=(a, b), toeplitz=False)
            exp = ref.grid_kernel(x, x, kind, p, orders=(a, b))
            _close(direct, exp, torch.float64)
            torch.testing.assert_close(fast, direct, rtol=1e-12, atol=1e-12 * max(1.0, exp.abs().max().item()))
            torch.testing.assert_close(forced, direct, rtol=1e-12, atol=1e-12 * max(1.0, exp.abs().max().item()))


def test_toeplitz_decreasing_grid_and_float32():
    p = _params("sm", 4)
    x = torch.linspace(2.0, -1.0, 37, dtype=torch.float64)
    for a, b in [(1, 0), (0, 1), (2, 1)]:
        fast = kf.grid_kernel(x, x, "sm", p, orders=(a, b))
        exp = ref.grid_kernel(x, x, "sm", p, orders=(a, b))
        _close(fast, exp, torch.float64)
    x32 = torch.linspace(0, 1, 101)
    out = kf.grid_kernel(x32, x32, "rbf", _params("rbf", 1).float(), orders=(1, 1))
    exp = ref.grid_kernel(x32.double(), x32.double(), "rbf", _params("rbf", 1), orders=(1, 1))
    _close(out, exp, torch.float32)


def test_toeplitz_is_o_n_work():
    """The Toeplitz path's kernel work is O(n Q): a 600 x 600 sm matrix with Q = 10 builds much
    faster than the direct O(n^2 Q) path."""
    import time

    x = torch.linspace(0, 1, 600, dtype=torch.float64)
    p = _params("sm", 10)
    kf.grid_kernel(x, x, "sm", p)
    t0 = time.perf_counter()
    fast = kf.grid_kernel(x, x, "sm", p)
    t1 = time.perf_counter()
    slow = kf.grid_kernel(x, x, "sm", p, toeplitz=False)
    t2 = time.perf_counter()
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    assert (t1 - t0) * 5 < (t2 - t1)


def test_empty_and_no_components():
    x = _pts(5)
    assert kf.grid_kernel(x[:0], x, "rbf", _params("rbf", 1)).shape == (0, 5)
    z = kf.grid_kernel(x, x, "sm", torch.zeros(0, 3, dtype=torch.float64))
    assert torch.equal(z, torch.zeros(5, 5, dtype=torch.float64))


# ------------------------------------------------------------------ autograd
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_params(kind):
    p = _params(kind, 2, seed=5).requires_grad_(True)
    x1, x2 = _pts(6, seed=7), _pts(4, seed=8)
    xu = _pts(5, uniform=True)
    for a, b in PAIRS:
        if a + b > MAX_ORDER[kind]:
            continue
        torch.autograd.gradcheck(lambda p: kf.grid_kernel(x1, x2, kind, p, orders=(a, b)), (p,))
        torch.autograd.gradcheck(lambda p: kf.grid_kernel(xu, xu, kind, p, orders=(a, b)), (p,))  # Toeplitz


@pytest.mark.parametrize("kind", ["rbf", "sm", "matern52", "stm"])
def test_gradcheck_points(kind):
    p = _params(kind, 2, seed=9)
    x1 = _pts(5, seed=10).requires_grad_(True)
    x2 = _pts(4, seed=11).requires_grad_(True)
    for a, b in [(0, 0), (1, 0), (1, 1), (2, 1)]:
        if a + b + 1 > MAX_ORDER[kind]:
            continue
        torch.autograd.gradcheck(lambda x1, x2: kf.grid_kernel(x1, x2, kind, p, orders=(a, b)), (x1, x2))


def test_param_grad_matches_reference():
    p = _params("stm", 3, seed=12).requires_grad_(True)
    p2 = p.detach().clone().requires_grad_(True)
    x = _pts(9, uniform=True)
    G = torch.randn(9, 9, dtype=torch.float64)
    (kf.grid_kernel(x, x, "stm", p, orders=(2, 0)) * G).sum().backward()
    (ref.grid_kernel(x, x, "stm", p2, orders=(2, 0)) * G).sum().backward()
    torch.testing.assert_close(p.grad, p2.grad, rtol=1e-9, atol=1e-9)


def test_opcheck():
    p = _params("sm", 2).requires_grad_(True)
    x1, x2 = _pts(5), _pts(3, seed=4)
    xu = _pts(6, uniform=True)
    torch.library.opcheck(torch.ops.kernelfuse.grid_kernel, (x1, x2, "sm", p, 1, 0, -1))
    torch.library.opcheck(torch.ops.kernelfuse.grid_kernel, (xu, xu, "sm", p, 2, 0, -1))
    G = torch.randn(5, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.kernelfuse.grid_kernel_bwd, (G, x1, x2, "sm", p.detach(), 1, 0, -1))


def test_compile():
    p = _params("sm", 3)
    x = _pts(8, uniform=True)

    def f(x, p):
        return kf.grid_kernel(x, x, "sm", p, orders=(2, 0)).sum(0) * 2

    got = torch.compile(f, fullgraph=True)(x, p)
    torch.testing.assert_close(got, f(x, p))


# ------------------------------------------------------------------ bad input
def test_bad_inputs():
    x = _pts(4)
    p = _params("rbf", 1)
    with pytest.raises(ValueError, match="'kind'"):
        kf.grid_kernel(x, x, "gauss", p)
    with pytest.raises(ValueError, match="'orders'.*matern12"):
        kf.grid_kernel(x, x, "matern12", p, orders=(1, 0))
    with pytest.raises(ValueError, match="'orders'.*matern32"):
        kf.grid_kernel(x, x, "matern32", p, orders=(2, 1))
    with pytest.raises(ValueError, match="'orders'"):
        kf.grid_kernel(x, x, "rbf", p, orders=(3, 0))
    with pytest.raises(ValueError, match="'orders'"):
        kf.grid_kernel(x, x, "rbf", p, orders=(1,))
    with pytest.raises(ValueError, match="'params'.*\\(Q, 3\\)"):
        kf.grid_kernel(x, x, "sm", p)
    with pytest.raises(ValueError, match="'x1'.*1-D"):
        kf.grid_kernel(x[:, None], x, "rbf", p)
    with pytest.raises(ValueError, match="'x2'.*dtype"):
        kf.grid_kernel(x, x.float(), "rbf", p)
    with pytest.raises(ValueError, match="'params'.*dtype"):
        kf.grid_kernel(x, x, "rbf", p.float())
    with pytest.raises(ValueError, match="'x1'.*float32 or float64"):
        kf.grid_kernel(x.long(), x.long(), "rbf", p.long())
    with pytest.raises(ValueError, match="'toeplitz'.*same size"):
        kf.grid_kernel(x, x[:3], "rbf", p, toeplitz=True)
    with pytest.raises(TypeError, match="'x1'"):
        kf.grid_kernel([1.0, 2.0], x, "rbf", p)
    with pytest.raises(TypeError, match="'toeplitz'"):
        kf.grid_kernel(x, x, "rbf", p, toeplitz=1)


# ------------------------------------------------------------------ GridGPRegressor
def _dense_gp(axes, y, kinds_params, noise, xs=None):
    """Dense float64 GP on the full grid (the product kernel as an explicit N x N matrix)."""
    mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    K = torch.ones(mesh.shape[0], mesh.shape[0], dtype=torch.float64)
    for d, (k, p) in enumerate(kinds_params):
        K = K * ref.grid_kernel(mesh[:, d], mesh[:, d], k, p)
    A = K + noise * torch.eye(K.shape[0], dtype=torch.float64)
    L = torch.linalg.cholesky(A)
    alpha = torch.cholesky_solve(y.reshape(-1, 1), L)[:, 0]
    nll = 0.5 * y.reshape(-1) @ alpha + torch.log(torch.diagonal(L)).sum() + 0.5 * y.numel() * math.log(2 * math.pi)
    if xs is None:
        Ks = K
        kss = torch.diagonal(K)
    else:
        Ks = torch.ones(xs.shape[0], mesh.shape[0], dtype=torch.float64)
        kss = torch.ones(xs.shape[0], dtype=torch.float64)
        for d, (k, p) in enumerate(kinds_params):
            Ks = Ks * ref.grid_kernel(xs[:, d], mesh[:, d], k, p)
            kss = kss * torch.diagonal(ref.grid_kernel(xs[:, d], xs[:, d], k, p))
    mean = Ks @ alpha
    var = kss - (Ks * torch.cholesky_solve(Ks.T, L).T).sum(1)
    return nll, mean, var


def test_regressor_matches_dense_gp():
    g = torch.Generator().manual_seed(0)
    axes = [torch.linspace(0, 1, 9, dtype=torch.float64), torch.linspace(-1, 1, 7, dtype=torch.float64)]
    X, Y = torch.meshgrid(*axes, indexing="ij")
    y = torch.sin(4 * X) * torch.cos(3 * Y) + 0.05 * torch.randn(X.shape, generator=g, dtype=torch.float64)
    gp = kf.gp.GridGPRegressor(kernel="rbf", noise=0.01, max_iter=30).fit(axes, y)
    kp = [(k, p.detach()) for k, p in zip(gp.kinds_, gp._factor_params())]
    s2 = gp.hyperparameters_["noise"]
    xs = torch.rand(11, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0]) - torch.tensor([0.0, 1.0])
    nll, m_grid, v_grid = _dense_gp(axes, y, kp, s2)
    assert abs(-gp.log_marginal_likelihood() - float(nll)) < 1e-8 * max(1.0, abs(float(nll)))
    mean, var = gp.predict(return_var=True)
    torch.testing.assert_close(mean.reshape(-1), m_grid, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(var.reshape(-1), v_grid, rtol=1e-7, atol=1e-9)
    _, m_s, v_s = _dense_gp(axes, y, kp, s2, xs)
    mean, var = gp.predict(xs, return_var=True)
    torch.testing.assert_close(mean, m_s, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(var, v_s, rtol=1e-7, atol=1e-9)
    # another grid = scattered points of its mesh
    ax2 = [torch.tensor([0.1, 0.5], dtype=torch.float64), torch.tensor([-0.3, 0.2, 0.9], dtype=torch.float64)]
    mg, vg = gp.predict(ax2, return_var=True)
    mesh2 = torch.stack(torch.meshgrid(*ax2, indexing="ij"), -1).reshape(-1, 2)
    ms, vs = gp.predict(mesh2, return_var=True)
    torch.testing.assert_close(mg.reshape(-1), ms, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(vg.reshape(-1), vs, rtol=1e-8, atol=1e-10)


def test_regressor_recovers_hyperparameters_and_numpy_io():
    rng = np.random.default_rng(0)
    axes = [np.linspace(0, 1, 40), np.linspace(0, 1, 30)]
    # a draw from the prior: rbf lengthscale 0.2 on both axes, variance 1.5, noise 0.01
    Ks = [1.5 ** (d == 0) * np.exp(-0.5 * (a[:, None] - a[None, :]) ** 2 / 0.2**2) for d, a in enumerate(axes)]
    Ls = [np.linalg.cholesky(K + 1e-8 * np.eye(len(K))) for K in Ks]
    f = Ls[0] @ rng.standard_normal((40, 30)) @ Ls[1].T
    y = f + 0.1 * rng.standard_normal(f.shape)
    gp = kf.gp.GridGPRegressor(kernel="rbf", noise=0.1, max_iter=60).fit(axes, y)
    hp = gp.hyperparameters_
    assert 0.12 < hp["axis0"]["lengthscale"] < 0.3 and 0.12 < hp["axis1"]["lengthscale"] < 0.3
    assert 0.005 < hp["noise"] < 0.02
    mean, var = gp.predict(return_var=True)
    assert isinstance(mean, np.ndarray) and mean.shape == (40, 30) and var.shape == (40, 30)
    assert np.sqrt(np.mean((mean - f) ** 2)) < 0.08
    s = gp.sample_posterior(3, generator=torch.Generator().manual_seed(0))
    assert isinstance(s, np.ndarray) and s.shape == (3, 40, 30)
    assert np.sqrt(np.mean((s - mean) ** 2)) < 3 * np.sqrt(var.mean())


def test_regressor_bad_inputs():
    axes = [np.linspace(0, 1, 5), np.linspace(0, 1, 4)]
    with pytest.raises(ValueError, match="'noise'"):
        kf.gp.GridGPRegressor(noise=-1.0)
    with pytest.raises(ValueError, match="'optimizer'"):
        kf.gp.GridGPRegressor(optimizer="sgd")
    with pytest.raises(ValueError, match="'y'.*\\(5, 4\\)"):
        kf.gp.GridGPRegressor().fit(axes, np.zeros((4, 5)))
    with pytest.raises(ValueError, match="'y'.*NaN"):
        kf.gp.GridGPRegressor().fit(axes, np.full((5, 4), np.nan))
    with pytest.raises(ValueError, match="'grid\\[1\\]'.*monotone"):
        kf.gp.GridGPRegressor().fit([axes[0], np.array([0.0, 0.5, 0.5, 1.0])], np.zeros((5, 4)))
    with pytest.raises(ValueError, match="'kernel'"):
        kf.gp.GridGPRegressor(kernel="nope").fit(axes, np.zeros((5, 4)))
    with pytest.raises(RuntimeError, match="fit"):
        kf.gp.GridGPRegressor().predict()
    gp = kf.gp.GridGPRegressor(max_iter=2).fit(axes, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="'x'.*\\(M, 2\\)"):
        gp.predict(np.zeros((3, 3)))


# ------------------------------------------------------------------ GPPDESolver
def test_pde_poisson_1d_small():
    """u = sin(20 x) on [0, 1]: u_xx = -400 sin(20 x). 100 collocation points, 10 sm components.
    Documented bound (docs/kron_gp.md): relative L2 error < 1e-4 on the grid and at held-out points,
    after one round of hyper-parameter steps; the collocation solve reaches the same order."""
    sol = lambda x: np.sin(20 * x)  # noqa: E731
    src = lambda x: -400 * np.sin(20 * x)  # noqa: E731
    pde = kf.gp.GPPDESolver.poisson_1d(src, sol, n_grid=100, num_mixtures=10, max_freq=40.0)
    pde.fit(max_iter=1)
    err = pde.relative_l2_error(sol)
    assert err < 1e-4, err
    xt = np.linspace(0, 1, 333)
    assert pde.relative_l2_error(sol, xt) < 1e-4
    assert pde.predict(xt).shape == (333,)
    assert pde.predict([xt]).shape == (333,)
    assert np.isfinite(pde.history_).all()
    col = kf.gp.GPPDESolver.poisson_1d(src, sol, n_grid=100, num_mixtures=10, max_freq=40.0)
    col.fit(max_iter=0, u_solver="collocation")
    assert col.relative_l2_error(sol, xt) < 1e-3


def test_pde_allen_cahn_and_advection_run():
    """The nonlinear (Gauss-Newton) and space-time constructors: small grids, a loose bound."""
    sol = lambda x: np.sin(6 * x)  # noqa: E731
    ac = kf.gp.GPPDESolver.allen_cahn_1d(
        lambda x: -36 * np.sin(6 * x) + np.sin(6 * x) * (np.sin(6 * x) ** 2 - 1),
        sol,
        n_grid=60,
        num_mixtures=6,
        max_freq=15.0,
    )
    ac.fit(max_iter=0)
    assert ac.relative_l2_error(sol) < 1e-3
    ex = lambda x, t: np.sin(x - 2.0 * t)  # noqa: E731
    adv = kf.gp.GPPDESolver.advection_1d(np.sin, 2.0, n_grid=(24, 16), num_mixtures=6, max_freq=(3.0, 6.0))
    adv.fit(max_iter=0)
    assert adv.relative_l2_error(ex) < 1e-2


def test_pde_bad_inputs():
    with pytest.raises(TypeError, match="'source'"):
        kf.gp.GPPDESolver.poisson_1d(3.0, lambda x: 0 * x)
    with pytest.raises(ValueError, match="'n_grid'"):
        kf.gp.GPPDESolver.poisson_1d(lambda x: x, lambda x: 0 * x, n_grid=2)
    with pytest.raises(ValueError, match="'jitter'"):
        kf.gp.GPPDESolver.poisson_1d(lambda x: x, lambda x: 0 * x, jitter=0.0)
    with pytest.raises(ValueError, match="'source'.*NaN"):
        kf.gp.GPPDESolver.poisson_1d(lambda x: x / 0.0 * 0.0, lambda x: 0 * x)
    with pytest.raises(ValueError, match="'kernel'"):
        kf.gp.GPPDESolver.poisson_1d(lambda x: x, lambda x: 0 * x, kernel="matern32")
    with pytest.raises(RuntimeError, match="fit"):
        kf.gp.GPPDESolver.poisson_1d(lambda x: x, lambda x: 0 * x).predict(np.zeros(3))
