"""NNGP / NTK kernels (csrc/nngp, kernelfuse.ops.nngp, kernelfuse.features._nngp) against the float64
reference (kernelfuse.reference.nngp), the reference against Monte Carlo and closed forms, gradients,
opcheck, torch.compile, bad inputs, exact inference, random features and wide networks."""

import itertools
import math

import kernelfuse
import numpy as np
import pytest
import torch
from conftest import assert_close_to_ref
from kernelfuse import features as F
from kernelfuse.features import exact_kernel
from kernelfuse.reference import nngp as ref

ACTS = ("relu", "erf", "step")
SIZES = [
    (1, 1, 1, None),
    (7, 13, 3, 1),
    (31, 129, 5, 3),
    (0, 5, 3, 2),
    (5, 0, 3, 2),
    (17, 33, 67, None),
    (19, 131, 2, 9),
]


def _data(m, n, d, c, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = (
        torch.randn(n, generator=g, dtype=torch.float64)
        if c is None
        else torch.randn(n, c, generator=g, dtype=torch.float64)
    )
    return x.to(dtype), y.to(dtype), w.to(dtype)


# ---------------------------------------------------------------- the reference itself
def test_reference_relu_layer_is_the_arccos_kernel():
    x, y, _ = _data(6, 5, 4, 1, torch.float64)
    sw2, d = 1.7, 4
    K = ref.nngp_kernel(x, y, 1, "relu", sigma_w2=sw2, sigma_b2=0.0)
    s = math.sqrt(sw2 / d)
    expected = sw2 * 0.5 * exact_kernel("arccos1", x * s, y * s)
    torch.testing.assert_close(K, expected, rtol=1e-12, atol=1e-12)
    K0 = ref.nngp_kernel(x, y, 1, "step", sigma_w2=sw2, sigma_b2=0.3)
    aug = lambda t: torch.cat([t * s, torch.full_like(t[:, :1], math.sqrt(0.3))], 1)  # noqa: E731 (Sigma_1's angle)
    torch.testing.assert_close(K0, sw2 * 0.5 * exact_kernel("arccos0", aug(x), aug(y)) + 0.3, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", ACTS)
def test_reference_expectations_monte_carlo(act):
    """E[phi(u) phi(v)] and E[phi'(u) phi'(v)] of the closed forms against 2e6 Gaussian samples."""
    g = torch.Generator().manual_seed(3)
    k11, k22, k12 = (
        torch.tensor(1.3, dtype=torch.float64),
        torch.tensor(0.7, dtype=torch.float64),
        torch.tensor(-0.4, dtype=torch.float64),
    )
    L = torch.linalg.cholesky(torch.tensor([[k11, k12], [k12, k22]]))
    z = torch.randn(2_000_000, 2, generator=g, dtype=torch.float64) @ L.T
    u, v = z[:, 0], z[:, 1]
    phi = {"relu": torch.relu, "erf": torch.erf, "step": lambda t: (t > 0).double()}[act]
    dphi = {
        "relu": lambda t: (t > 0).double(),
        "erf": lambda t: 2 / math.sqrt(math.pi) * torch.exp(-t * t),
        "step": lambda t: torch.zeros_like(t),
    }[act]
    Fv, Gv = ref._expectations(act, k11, k12, k22)
    assert abs(float((phi(u) * phi(v)).mean() - Fv)) < 4e-3
    assert abs(float((dphi(u) * dphi(v)).mean() - Gv)) < 4e-3


def test_scale_mixture_is_a_student_t():
    """y | s ~ N(0, s k), s ~ InvGamma(a, b): the marginal is Student-t (2a dof, scale^2 = b k / a),
    by quadrature over s; its variance b k / (a - 1) is what nngp_kernel(scale_mixture) returns."""
    scipy_stats = pytest.importorskip("scipy.stats")
    from scipy import integrate

    a, b, k = 2.5, 1.5, 0.8
    for yv in (0.0, 0.7, 2.9):
        dens = integrate.quad(
            lambda s: scipy_stats.norm.pdf(yv, scale=math.sqrt(s * k)) * scipy_stats.invgamma.pdf(s, a, scale=b),
            0,
            np.inf,
        )[0]
        t = scipy_stats.t.pdf(yv, df=2 * a, scale=math.sqrt(b * k / a))
        assert abs(dens - t) < 1e-8
    var = integrate.quad(lambda s: s * k * scipy_stats.invgamma.pdf(s, a, scale=b), 0, np.inf)[0]
    x, y, _ = _data(4, 3, 2, 1, torch.float64)
    K = F.nngp_kernel(x, y, 2, "relu", scale_mixture=(a, b))
    torch.testing.assert_close(K, ref.nngp_kernel(x, y, 2, "relu") * var / k, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- the fused op against the reference
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("ntk", [False, True])
@pytest.mark.parametrize("act", ACTS)
def test_matmul_matches_reference(act, ntk, dtype):
    for i, (m, n, d, c) in enumerate(SIZES):
        for depth in (0, 1, 3):
            x, y, w = _data(m, n, d, c, dtype, seed=i)
            sw2, sb2 = (2.0, 0.0) if i % 2 else (1.3, 0.2)
            out = kernelfuse.nngp_matmul(x, y, w, depth=depth, activation=act, sigma_w2=sw2, sigma_b2=sb2, ntk=ntk)
            exp = ref.nngp_matmul(x.double(), y.double(), w.double(), depth, act, sw2, sb2, ntk)
            assert out.shape == exp.shape and out.dtype == dtype
            # the float32 tolerance: 32-bit inner products and transcendental functions per pair
            assert_close_to_ref(
                out,
                exp,
                dtype,
                factor=1.0 if dtype == torch.float64 else 20.0,
                atol_scale=max(1.0, float(w.abs().sum(0).max()) if n else 1.0),
            )


@pytest.mark.parametrize("ntk", [False, True])
@pytest.mark.parametrize("act", ACTS)
def test_kernel_matrix_matches_reference(act, ntk):
    x, y, _ = _data(37, 130, 9, 1, torch.float64, seed=5)
    K = (F.ntk_kernel if ntk else F.nngp_kernel)(x, y, 3, act, sigma_w2=1.6, sigma_b2=0.1)
    E = (ref.ntk_kernel if ntk else ref.nngp_kernel)(x, y, 3, act, sigma_w2=1.6, sigma_b2=0.1)
    assert_close_to_ref(K, E, torch.float64)
    # x1 is x2: the diagonal (x parallel to itself) and the symmetric Gram matrix
    G = (F.ntk_kernel if ntk else F.nngp_kernel)(x, None, 2, act)
    E = (ref.ntk_kernel if ntk else ref.nngp_kernel)(x, x, 2, act)
    torch.testing.assert_close(G, E, rtol=1e-7, atol=1e-7)  # acos at c = 1 -+ ulp: sqrt(ulp) for the NTK
    torch.testing.assert_close(torch.diagonal(G), F.kernel_diag(x, 2, act, ntk=ntk), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("act", ACTS)
def test_tiles_threads_and_deep_networks(act):
    """Several point tiles (128) with a partial last one, query blocks (16) with a partial last one,
    the threaded path (and the threaded packing of the points), and depths past the CPU kernel's
    layer group (8 layers' point quantities at a time): values and all three gradients."""
    x, y, w = _data(70, 1031, 5, 3, torch.float64, seed=7)
    depth = 9
    for ntk in (False, True):
        xs = [t.clone().requires_grad_(True) for t in (x, y, w)]
        out = kernelfuse.nngp_matmul(*xs, depth=depth, activation=act, sigma_w2=1.4, sigma_b2=0.05, ntk=ntk)
        xd = [t.clone().requires_grad_(True) for t in (x, y, w)]
        exp = ref.nngp_matmul(*xd, depth, act, 1.4, 0.05, ntk)
        assert_close_to_ref(out, exp, torch.float64, atol_scale=float(w.abs().sum(0).max()))
        g = torch.randn_like(out)
        for a, b in zip(torch.autograd.grad(out, xs, g), torch.autograd.grad(exp, xd, g)):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9 * float(b.abs().max()))


def test_zero_rows():
    x = torch.zeros(3, 4, dtype=torch.float64)
    y = torch.randn(5, 4, dtype=torch.float64)
    w = torch.randn(5, 2, dtype=torch.float64)
    for act in ACTS:
        for ntk in (False, True):
            out = kernelfuse.nngp_matmul(x, y, w, depth=2, activation=act, sigma_b2=0.0, ntk=ntk)
            torch.testing.assert_close(out, ref.nngp_matmul(x, y, w, 2, act, 2.0, 0.0, ntk), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- gradients, opcheck, compile
@pytest.mark.parametrize("ntk", [False, True])
@pytest.mark.parametrize("act", ACTS)
def test_gradcheck(act, ntk):
    x, y, w = _data(5, 7, 3, 2, torch.float64, seed=11)
    x.requires_grad_(True), y.requires_grad_(True), w.requires_grad_(True)
    f = lambda a, b, c: kernelfuse.nngp_matmul(
        a,
        b,
        c,
        depth=2,
        activation=act,
        sigma_w2=1.5,
        sigma_b2=0.1,  # noqa
        ntk=ntk,
    )
    assert torch.autograd.gradcheck(f, (x, y, w), eps=1e-6, atol=1e-7)
    fk = lambda a, b: F.ntk_kernel(a, b, 2, act) if ntk else F.nngp_kernel(a, b, 2, act)  # noqa
    assert torch.autograd.gradcheck(fk, (x, y), eps=1e-6, atol=1e-7)
    # the closed-form derivatives against autograd of the reference
    out = f(x, y, w)
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, (x, y, w), g)
    theirs = torch.autograd.grad(ref.nngp_matmul(x, y, w, 2, act, 1.5, 0.1, ntk), (x, y, w), g)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_gradients_float32_and_vector_weights():
    x, y, w = _data(33, 140, 6, None, torch.float32, seed=2)
    xs = [t.clone().requires_grad_(True) for t in (x, y, w)]
    out = kernelfuse.nngp_matmul(*xs, depth=3, activation="erf", ntk=True)
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, xs, g)
    xd = [t.double().requires_grad_(True) for t in (x, y, w)]
    theirs = torch.autograd.grad(ref.nngp_matmul(*xd, 3, "erf", 2.0, 0.0, True), xd, g.double())
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert_close_to_ref(a, b, torch.float32, factor=30.0)


NEEDS = list(itertools.product([False, True], repeat=3))  # (need_x, need_y, need_weights)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("act", ACTS)
def test_backward_every_need_subset(act, dtype):
    """nngp_matmul_bwd for every (need_x, need_y, need_weights): each gradient bit for bit the one
    requested alone (x: its GradX pass; y: the swapped GradX pass; weights alone: the forward with
    the sides swapped), so the fused y + weights pass (GradX's second output) gives the weights
    gradient of the separate forward pass exactly (the same K values, the same reduction code);
    unrequested ones empty; and each close to autograd through the float64 reference. Sizes: the
    swapped pass's points (m) over and under the 128-point tile, several columns, vector weights,
    empty sides."""
    op = torch.ops.kernelfuse.nngp_matmul_bwd
    cfg = (3, act, 1.5, 0.1)
    for i, (m, n, d, c) in enumerate([(131, 19, 5, 9), (33, 140, 6, None), (1, 1, 1, 1), (0, 5, 3, 2), (5, 0, 3, 2)]):
        x, y, w = _data(m, n, d, c, dtype, seed=20 + i)
        for ntk in (False, True):
            g = torch.randn((m,) + tuple(w.shape[1:]), dtype=dtype, generator=torch.Generator().manual_seed(i))
            alone = [op(g, x, y, w, *cfg, ntk, *(k == j for j in range(3)))[k] for k in range(3)]
            for need in NEEDS:
                res = op(g, x, y, w, *cfg, ntk, *need)
                for k in range(3):
                    if need[k]:
                        assert torch.equal(res[k], alone[k]), (need, k)
                    else:
                        assert res[k].numel() == 0
            xd, yd, wd = (t.double().requires_grad_(True) for t in (x, y, w))
            out = ref.nngp_matmul(xd, yd, wd, *cfg, ntk)
            exp = torch.autograd.grad(out, (xd, yd, wd), g.double(), allow_unused=True)
            exp = [torch.zeros_like(t) if e is None else e for e, t in zip(exp, (xd, yd, wd))]
            for a, b in zip(alone, exp):
                assert a.shape == b.shape
                assert_close_to_ref(a, b, dtype, factor=1.0 if dtype == torch.float64 else 50.0)


@pytest.mark.parametrize("ntk", [False, True])
def test_gradcheck_y_and_weights(ntk):
    """The fused y + weights pass alone (x constant) and the weights alone, float64 gradcheck."""
    x, y, w = _data(6, 5, 3, 3, torch.float64, seed=12)
    y.requires_grad_(True), w.requires_grad_(True)
    for act in ACTS:
        f = lambda b, c: kernelfuse.nngp_matmul(x, b, c, depth=2, activation=act, sigma_b2=0.1, ntk=ntk)  # noqa
        assert torch.autograd.gradcheck(f, (y, w), eps=1e-6, atol=1e-7)
        assert torch.autograd.gradcheck(lambda c: f(y.detach(), c), (w,), eps=1e-6, atol=1e-7)


def test_opcheck():
    x, y, w = _data(5, 9, 3, 2, torch.float64, seed=4)
    for t in (x, y, w):
        t.requires_grad_(True)
    for act, ntk in (("relu", True),):
        torch.library.opcheck(torch.ops.kernelfuse.nngp_matmul.default, (x, y, w, 2, act, 1.5, 0.1, ntk))
        torch.library.opcheck(torch.ops.kernelfuse.nngp_kernel.default, (x, y, 2, act, 1.5, 0.1, ntk))
        g = torch.randn(5, 2, dtype=torch.float64)
        torch.library.opcheck(
            torch.ops.kernelfuse.nngp_matmul_bwd.default,
            (g, x.detach(), y.detach(), w.detach(), 2, act, 1.5, 0.1, ntk, True, False, True),
        )
        torch.library.opcheck(
            torch.ops.kernelfuse.nngp_kernel_bwd.default,
            (torch.randn(5, 9, dtype=torch.float64), x.detach(), y.detach(), 2, act, 1.5, 0.1, ntk, True, True),
        )


def test_torch_compile_fullgraph():
    x, y, w = _data(11, 17, 4, 3, torch.float32, seed=8)
    x.requires_grad_(True)

    def f(a, b, c):
        return (kernelfuse.nngp_matmul(a, b, c, depth=2, activation="relu", ntk=True) ** 2).sum() + F.nngp_kernel(
            a, b, 1, "erf"
        ).sum()

    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    v1 = cf(x, y, w)
    (g1,) = torch.autograd.grad(v1, x)
    v2 = f(x, y, w)
    (g2,) = torch.autograd.grad(v2, x)
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(g1, g2)


def test_autocast_runs_in_float32():
    x, y, w = _data(6, 9, 3, 2, torch.float32, seed=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = kernelfuse.nngp_matmul(x.bfloat16(), y.bfloat16(), w.bfloat16(), depth=2)
        K = F.nngp_kernel(x.bfloat16(), y.bfloat16(), 2)
    assert out.dtype == torch.float32 and K.dtype == torch.float32
    exp = kernelfuse.nngp_matmul(x.bfloat16().float(), y.bfloat16().float(), w.bfloat16().float(), depth=2)
    torch.testing.assert_close(out, exp)


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs():
    x, y, w = _data(4, 5, 3, 2, torch.float64)
    op = kernelfuse.nngp_matmul
    with pytest.raises(ValueError, match="'activation'.*tanh"):
        op(x, y, w, activation="tanh")
    with pytest.raises(ValueError, match="'depth'"):
        op(x, y, w, depth=-1)
    with pytest.raises(ValueError, match="'sigma_w2'"):
        op(x, y, w, sigma_w2=0.0)
    with pytest.raises(ValueError, match="'sigma_b2'"):
        op(x, y, w, sigma_b2=-1.0)
    with pytest.raises(ValueError, match=r"argument 'x': expected shape \(m, d\)"):
        op(x[0], y, w)
    with pytest.raises(ValueError, match="argument 'y': expected 3 columns"):
        op(x, y[:, :2], w)
    with pytest.raises(ValueError, match="argument 'weights': expected 5 rows"):
        op(x, y, w[:4])
    with pytest.raises(ValueError, match="argument 'y': expected dtype"):
        op(x, y.float(), w)
    with pytest.raises(ValueError, match="argument 'x': expected dtype float32 or float64"):
        op(x.long(), y.long(), w.long())
    with pytest.raises(ValueError, match="argument 'x': expected at least one column"):
        op(x[:, :0], y[:, :0], w)
    with pytest.raises(TypeError, match="argument 'weights' must be a torch.Tensor"):
        op(x, y, [1.0])
    with pytest.raises(ValueError, match="argument 'x2': expected 3 columns"):
        F.nngp_kernel(x, y[:, :2])
    with pytest.raises(ValueError, match="'scale_mixture'"):
        F.nngp_kernel(x, y, scale_mixture=(0.5, 1.0))
    with pytest.raises(ValueError, match="argument 'grad': expected shape"):
        torch.ops.kernelfuse.nngp_matmul_bwd(w, x, y, w, 1, "relu", 2.0, 0.0, False, True, True, True)


# ---------------------------------------------------------------- exact inference
def _regression_data(n=150, m=40, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Xs = torch.randn(m, d, generator=g, dtype=torch.float64)
    f = lambda t: torch.sin(t[:, 0]) + 0.5 * t[:, 1] * t[:, 2]  # noqa: E731
    return X, torch.stack([f(X), f(X) ** 2], 1), Xs


@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
def test_posterior_matches_dense_solve(kernel):
    X, Y, Xs = _regression_data()
    kw = dict(depth=2, activation="relu", sigma_w2=2.0, sigma_b2=0.05)
    noise = 1e-2
    res = F.nngp_posterior(X, Y, Xs, kernel=kernel, noise=noise, tol=1e-10, return_var=kernel == "nngp", **kw)
    kf = ref.ntk_kernel if kernel == "ntk" else ref.nngp_kernel
    K = kf(X, X, 2, "relu", sigma_w2=2.0, sigma_b2=0.05)
    Ks = kf(Xs, X, 2, "relu", sigma_w2=2.0, sigma_b2=0.05)
    A = K + noise * torch.eye(len(X), dtype=torch.float64)
    torch.testing.assert_close(res[0], Ks @ torch.linalg.solve(A, Y), rtol=1e-7, atol=1e-7)
    info = res[-1]
    assert info["iterations"] < 150  # preconditioned: far fewer than n iterations would be without
    if kernel == "nngp":
        var = torch.diagonal(kf(Xs, Xs, 2, "relu", sigma_w2=2.0, sigma_b2=0.05)) - (
            Ks * torch.linalg.solve(A, Ks.T).T
        ).sum(1)
        torch.testing.assert_close(res[1], var, rtol=1e-6, atol=1e-8)


def test_ntk_gradient_flow():
    X, Y, Xs = _regression_data(n=40, m=10)
    kw = dict(depth=2, activation="erf", sigma_w2=1.5, sigma_b2=0.1)
    assert float(F.ntk_gradient_flow(X, Y, Xs, 0.0, **kw).abs().max()) == 0.0
    # t -> inf: (ridgeless) NTK kernel regression, interpolating the training targets
    fit = F.ntk_gradient_flow(X, Y, X, math.inf, **kw)
    torch.testing.assert_close(fit, Y, rtol=1e-6, atol=1e-6)
    # the linearised function-space dynamics df/dt = -Theta (f - y): on the training points
    # f_t = (I - expm(-Theta t)) y, elsewhere f_t(x) = int_0^t Theta(x, X) expm(-Theta s) y ds
    T = ref.ntk_kernel(X, X, 2, "erf", sigma_w2=1.5, sigma_b2=0.1)
    Ts = ref.ntk_kernel(Xs, X, 2, "erf", sigma_w2=1.5, sigma_b2=0.1)
    t = 0.3
    torch.testing.assert_close(
        F.ntk_gradient_flow(X, Y, X, t, **kw), Y - torch.linalg.matrix_exp(-t * T) @ Y, rtol=1e-8, atol=1e-8
    )
    nodes, wts = np.polynomial.legendre.leggauss(40)  # Gauss-Legendre in s over [0, t]
    fs = sum(
        float(wq) * 0.5 * t * (Ts @ (torch.linalg.matrix_exp(-0.5 * t * (1 + float(sq)) * T) @ Y))
        for sq, wq in zip(nodes, wts)
    )
    torch.testing.assert_close(F.ntk_gradient_flow(X, Y, Xs, t, **kw), fs, rtol=1e-7, atol=1e-7)


def test_regressor_sklearn_api():
    sk = pytest.importorskip("sklearn.base")
    X, Y, Xs = _regression_data()
    r = F.NNGPRegressor(kernel="nngp", depth=2, alpha=1e-2)
    assert sk.clone(r).get_params() == r.get_params()
    r.fit(X.numpy(), Y[:, 0].numpy())
    mean, std = r.predict(Xs.numpy(), return_std=True)
    assert isinstance(mean, np.ndarray) and mean.shape == (40,) and std.shape == (40,) and (std > 0).all()
    exp, _ = F.nngp_posterior(X, Y[:, 0], Xs, depth=2, noise=1e-2, tol=1e-10)
    np.testing.assert_allclose(mean, exp.numpy(), rtol=1e-5, atol=1e-5)
    assert r.score(X.numpy(), Y[:, 0].numpy()) > 0.9
    # the scale mixture: same mean, Student-t predictive std
    rm = F.NNGPRegressor(depth=2, alpha=1e-2, scale_mixture=(3.0, 2.0)).fit(X, Y[:, 0])
    m2, s2 = rm.predict(Xs, return_std=True)
    np.testing.assert_allclose(m2.numpy(), mean, rtol=1e-5, atol=1e-5)
    assert not np.allclose(s2.numpy(), std)
    rt = F.NNGPRegressor(kernel="ntk", depth=1, t=5.0).fit(X, Y)
    assert rt.predict(Xs).shape == (40, 2)
    with pytest.raises(ValueError, match="unknown parameter"):
        r.set_params(bogus=1)
    with pytest.raises(ValueError, match="'t'"):
        F.NNGPRegressor(kernel="nngp", t=1.0).fit(X, Y)


# ---------------------------------------------------------------- random features
@pytest.mark.parametrize("ntk", [False, True])
@pytest.mark.parametrize("act", ["relu", "erf"])
def test_random_features_converge(act, ntk):
    X, _, _ = _regression_data(n=60)
    E = (ref.ntk_kernel if ntk else ref.nngp_kernel)(X, X, 2, act, sigma_w2=2.0, sigma_b2=0.1)
    errs = []
    for D in (64, 2048):
        e = []
        for seed in range(2):
            phi = F.NNGPRandomFeatures(5, width=D, depth=2, activation=act, sigma_b2=0.1, ntk=ntk, seed=seed)(X)
            e.append(float((phi @ phi.T - E).norm() / E.norm()))
        errs.append(sum(e) / len(e))
    assert errs[1] < 0.2 and errs[1] < errs[0] / 3, errs  # ~ 1/sqrt(D): a factor 5.7 from 64 to 2048


# ---------------------------------------------------------------- wide networks converge to ours
def _mlp(d, width, depth, act, sw2, sb2, seed):
    g = torch.Generator().manual_seed(seed)
    sizes = [d] + [width] * depth + [1]
    return [
        (torch.randn(a, b, generator=g, dtype=torch.float64), torch.randn(b, generator=g, dtype=torch.float64))
        for a, b in zip(sizes[:-1], sizes[1:])
    ]


def _forward(params, x, act, sw2, sb2):
    phi = {"relu": torch.relu, "erf": torch.erf}[act]
    h = x
    for i, (W, b) in enumerate(params):
        z = math.sqrt(sw2 / W.shape[0]) * h @ W + math.sqrt(sb2) * b
        h = z if i == len(params) - 1 else phi(z)
    return h[:, 0]


def empirical_ntk(params, x, act, sw2, sb2):
    flat = [p.clone().requires_grad_(True) for Wb in params for p in Wb]
    out = _forward([(flat[2 * i], flat[2 * i + 1]) for i in range(len(params))], x, act, sw2, sb2)
    J = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, flat, retain_graph=True)]) for o in out])
    return J @ J.T


def empirical_nngp(params, x, act, sw2, sb2):
    """The readout's output covariance given the hidden layers of this network."""
    phi = {"relu": torch.relu, "erf": torch.erf}[act]
    h = x
    for W, b in params[:-1]:
        h = phi(math.sqrt(sw2 / W.shape[0]) * h @ W + math.sqrt(sb2) * b)
    return sw2 * h @ h.T / h.shape[1] + sb2


def test_wide_networks_converge_to_ours():
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for act in ("relu", "erf"):
        K = F.nngp_kernel(x, x, 2, act, sigma_b2=0.1)
        T = F.ntk_kernel(x, x, 2, act, sigma_b2=0.1)
        err = {}
        for width in (32, 512):
            e1, e2 = [], []
            for seed in range(4):
                p = _mlp(4, width, 2, act, 2.0, 0.1, seed)
                e1.append(float((empirical_nngp(p, x, act, 2.0, 0.1) - K).norm() / K.norm()))
                e2.append(float((empirical_ntk(p, x, act, 2.0, 0.1) - T).norm() / T.norm()))
            err[width] = (np.mean(e1), np.mean(e2))
        # 1/sqrt(width): a factor 4 from 32 to 512; demand at least 2.2 (4 seeds)
        assert err[512][0] < err[32][0] / 2.2 and err[512][1] < err[32][1] / 2.2, err
