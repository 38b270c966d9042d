"""Distance metrics of the kernel-sum ops (metric=, p=) and the exact support test of the compact
kernels, against the float64 reference (kernelfuse.reference.kde) and an exact integer computation."""

import itertools
import math

import kernelfuse as kf
import numpy as np
import pytest
import torch
from conftest import assert_close_to_ref as _assert_close
from kernelfuse.ops.kde import kernel_logsumexp_sq
from kernelfuse.reference import kde as ref

METRICS = ("euclidean", "manhattan", "chebyshev", "minkowski", "haversine")
KERNELS6 = ("gaussian", "laplacian", "tophat", "epanechnikov", "linear", "cosine")
COMPACT = ref.COMPACT_KERNELS
P = 3.0  # Minkowski order of the tests (p = 1 / 2 run the manhattan / euclidean paths)
SIZES = [0, 1, 7, 131]
_ops = torch.ops.kernelfuse


def _dims(metric):
    return (2,) if metric == "haversine" else (1, 2, 5)


def _data(metric, m, n, d, dtype, device, seed=0, batch=None):
    g = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    if metric == "haversine":  # (lat, lon) in radians, a region of the sphere (antipodes excluded)

        def pts(k):
            lat = (torch.rand(*lead, k, 1, generator=g, dtype=torch.float64) - 0.5) * 2.0
            lon = (torch.rand(*lead, k, 1, generator=g, dtype=torch.float64) - 0.5) * 4.0
            return torch.cat([lat, lon], -1)

        x, y = pts(m), pts(n)
    else:
        x = torch.randn(*lead, m, d, generator=g, dtype=torch.float64)
        y = torch.randn(*lead, n, d, generator=g, dtype=torch.float64)
    return x.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)


def _h(metric, d, kernel, per_dim=False, dtype=torch.float64):
    """A bandwidth that puts pairs inside and outside the compact supports."""
    if metric == "haversine":
        return 0.8
    base = {
        "euclidean": 1.2 * math.sqrt(d),
        "manhattan": 1.1 * d,
        "chebyshev": 1.3 + 0.2 * d,
        "minkowski": 1.2 * d ** (1 / P),
    }[metric]
    if kernel not in COMPACT:
        base *= 0.8
    if not per_dim:
        return base
    f = torch.tensor([0.8, 1.0, 1.25, 0.9, 1.1], dtype=torch.float64)[:d]
    return (base * f).to(dtype)


def _weights(kind, n, dtype, device, batch=None, seed=1):
    if kind is None:
        return None
    g = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    shape = (*lead, n) if kind == "vec" else (*lead, n, 3)
    return (0.1 + torch.rand(*shape, generator=g, dtype=torch.float64)).to(dtype=dtype, device=device)


def _d64(t):
    return None if t is None else t.detach().double().cpu()


def _h64(h):
    return h.double().cpu() if isinstance(h, torch.Tensor) else h


def _check_lse(out, exp, dtype, factor=1.0):
    """log-domain results: -inf pattern exact, finite values within the dtype tolerance (x factor:
    a compact kernel's log-sum carried by points near the support's edge, k = 1 - s ~ 1e-2, has a
    condition number ~1/k in float32)."""
    assert out.shape == exp.shape
    out = out.cpu()
    fin = torch.isfinite(exp)
    assert torch.equal(torch.isfinite(out), fin)  # -inf exactly where no point is in the support
    assert (out[~fin] == -math.inf).all()
    if fin.any():
        _assert_close(out[fin], exp[fin], dtype, factor=factor)


# ------------------------------------------------------------------ values vs the reference
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kernel", KERNELS6)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_metric_matches_reference(metric, kernel, dtype, device):
    """Every metric x kernel at awkward sizes (m, n in {0, 1, 7, 131}, d in {1, 2, 5}; haversine d = 2),
    kernel_sum, kernel_logsumexp and kernel_logsumexp_sq, weight forms None / (n,) / (n, c)."""
    for (m, n), d in itertools.product(itertools.product(SIZES, SIZES), _dims(metric)):
        x, y = _data(metric, m, n, d, dtype, device, seed=m * 1000 + n + d)
        h = _h(metric, d, kernel)
        kw = dict(kernel=kernel, bandwidth=h, metric=metric, p=P)
        wkind = (None, "vec", "cols")[(m + n + d) % 3]
        w = _weights(wkind, n, dtype, device)
        out = kf.kernel_sum(x, y, w, **kw)
        exp = ref.kernel_sum(_d64(x), _d64(y), _d64(w), **kw)
        assert out.dtype == dtype and out.shape == exp.shape
        _assert_close(out, exp, dtype)
        lw = None if w is None else w.log()
        f = 50.0 if (kernel in COMPACT and dtype == torch.float32) else 1.0
        _check_lse(
            kf.kernel_logsumexp(x, y, lw, **kw), ref.kernel_logsumexp(_d64(x), _d64(y), _d64(lw), **kw), dtype, f
        )
        if m == 7 and n == 131:
            lse, lse2 = kernel_logsumexp_sq(x, y, lw, **kw)
            e1, e2 = ref.kernel_logsumexp_sq(_d64(x), _d64(y), _d64(lw), **kw)
            _check_lse(lse, e1, dtype, f)
            _check_lse(lse2, e2, dtype, f)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kernel", ["gaussian", "epanechnikov", "cosine"])
def test_metric_batched_weighted_per_dim(metric, kernel, device):
    """Batched inputs, (B, n, c) / shared (n, c) / (B, n) weights, per-dimension bandwidth (the
    coordinate metrics; haversine takes a scalar)."""
    B, m, n = 3, 11, 29
    d = 2 if metric == "haversine" else 4
    x, y = _data(metric, m, n, d, torch.float64, device, batch=B, seed=5)
    h = _h(metric, d, kernel, per_dim=metric != "haversine")
    for w in (
        None,
        _weights("vec", n, torch.float64, device, batch=B),
        _weights("cols", n, torch.float64, device),
        _weights("cols", n, torch.float64, device, batch=B),
    ):
        kw = dict(kernel=kernel, bandwidth=h, metric=metric, p=P)
        out = kf.kernel_sum(x, y, w, **kw)
        wr = w if (w is None or w.dim() == 3 or tuple(w.shape) == (B, n)) else w.expand(B, *w.shape)
        _assert_close(out, ref.kernel_sum(_d64(x), _d64(y), _d64(wr), **kw), torch.float64)
        lw = None if w is None else w.log()
        lwr = None if wr is None else wr.log()
        _check_lse(
            kf.kernel_logsumexp(x, y, lw, **kw), ref.kernel_logsumexp(_d64(x), _d64(y), _d64(lwr), **kw), torch.float64
        )


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kernel", KERNELS6)
def test_metric_exclude_self(metric, kernel, device):
    d = 2 if metric == "haversine" else 3
    x, _ = _data(metric, 45, 1, d, torch.float64, device, seed=9)
    kw = dict(kernel=kernel, bandwidth=_h(metric, d, kernel), metric=metric, p=P, exclude_self=True)
    _assert_close(kf.kernel_sum(x, x, **kw), ref.kernel_sum(x.cpu(), x.cpu(), **kw), torch.float64)
    _check_lse(kf.kernel_logsumexp(x, x, **kw), ref.kernel_logsumexp(x.cpu(), x.cpu(), **kw), torch.float64)


def test_minkowski_p1_p2_are_manhattan_euclidean():
    x, y = _data("minkowski", 20, 50, 3, torch.float64, "cpu")
    for p, name in ((1.0, "manhattan"), (2.0, "euclidean")):
        a = kf.kernel_sum(x, y, bandwidth=1.5, metric="minkowski", p=p)
        torch.testing.assert_close(a, kf.kernel_sum(x, y, bandwidth=1.5, metric=name), rtol=0, atol=0)
    a = kf.kernel_sum(x, y, bandwidth=1.5, metric="minkowski", p=1.5)
    torch.testing.assert_close(a, ref.kernel_sum(x, y, bandwidth=1.5, metric="minkowski", p=1.5))


def test_haversine_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics.pairwise")
    x, y = _data("haversine", 30, 40, 2, torch.float64, "cpu", seed=4)
    D = torch.from_numpy(sk.haversine_distances(x.numpy(), y.numpy()))
    torch.testing.assert_close(ref.haversine(x, y), D)
    h = 0.7
    exp = torch.exp(-0.5 * (D / h) ** 2).sum(1)
    torch.testing.assert_close(kf.kernel_sum(x, y, bandwidth=h, metric="haversine"), exp)


# ------------------------------------------------------------------ gradients
def _away_from_kinks(metric, m, n, d, seed):
    """float64 inputs with distinct |x_k - y_k| per pair (no chebyshev ties, no zero differences)."""
    return _data(metric, m, n, d, torch.float64, "cpu", seed=seed)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("log_domain", [False, True])
@pytest.mark.parametrize("kernel", ["gaussian", "epanechnikov"])
def test_metric_gradcheck(metric, log_domain, kernel):
    d = 2 if metric == "haversine" else 3
    x, y = _away_from_kinks(metric, 5, 7, d, seed=11)
    w = _weights("cols", 7, torch.float64, "cpu")
    if kernel in COMPACT:  # wide enough that every query has a point in the support
        hv = 2.5 if metric == "haversine" else 3.0 * _h(metric, d, kernel)
    else:
        hv = _h(metric, d, kernel)
    for per_dim in [False] if metric == "haversine" else [False, True]:
        h = (
            torch.tensor([hv * 0.9, hv, hv * 1.2], dtype=torch.float64)
            if per_dim
            else torch.tensor(hv, dtype=torch.float64)
        )
        leaves = [t.clone().requires_grad_(True) for t in (x, y, w.log() if log_domain else w, h)]
        fn = kf.kernel_logsumexp if log_domain else kf.kernel_sum

        def f(x_, y_, w_, h_):
            return fn(x_, y_, w_, kernel=kernel, bandwidth=h_, metric=metric, p=P)

        assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kernel", ["gaussian", "tophat", "epanechnikov", "linear", "cosine", "laplacian"])
def test_metric_gradients_match_reference_autograd(metric, kernel):
    """Every input's gradient vs autograd through the float64 reference, batched, both ops."""
    d = 2 if metric == "haversine" else 4
    x, y = _away_from_kinks(metric, 17, 23, d, seed=12)
    x, y = torch.stack([x, x.flip(0)]), torch.stack([y, y.flip(0)])
    w = _weights("vec", 23, torch.float64, "cpu", batch=2)
    hv = 2.0 if metric == "haversine" else 2.0 * _h(metric, d, kernel)
    f64 = torch.float64
    for h in (
        [torch.tensor(hv, dtype=f64)]
        if metric == "haversine"
        else [torch.tensor(hv, dtype=f64), torch.tensor([hv, 0.8 * hv, 1.1 * hv, 1.3 * hv], dtype=f64)]
    ):
        for log_domain in (False, True):
            fn, rf = (kf.kernel_logsumexp, ref.kernel_logsumexp) if log_domain else (kf.kernel_sum, ref.kernel_sum)
            wi = w.log() if log_domain else w
            g = torch.randn(2, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
            a = [t.clone().requires_grad_(True) for t in (x, y, wi, h)]
            b = [t.clone().requires_grad_(True) for t in (x, y, wi, h)]
            kw = dict(kernel=kernel, metric=metric, p=P)
            out = fn(*a[:3], bandwidth=a[3], **kw)
            exp = rf(*b[:3], bandwidth=b[3], **kw)
            assert torch.isfinite(exp).all()
            ga = torch.autograd.grad(out, a, g, allow_unused=True)
            gb = torch.autograd.grad(exp, b, g, allow_unused=True)  # tophat: no path to x, y, h
            for u, v, t in zip(ga, gb, a):
                u = torch.zeros_like(t) if u is None else u
                v = torch.zeros_like(t) if v is None else v
                torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("metric", ["manhattan", "chebyshev", "haversine"])
def test_every_subset_of_inputs_requiring_grad(metric):
    d = 2 if metric == "haversine" else 3
    x, y = _away_from_kinks(metric, 8, 13, d, seed=13)
    w = _weights("vec", 13, torch.float64, "cpu")
    h = torch.tensor(1.3, dtype=torch.float64)
    full = [t.clone().requires_grad_(True) for t in (x, y, w, h)]
    kw = dict(kernel="gaussian", metric=metric)
    gfull = torch.autograd.grad(kf.kernel_sum(*full[:3], bandwidth=full[3], **kw).sum(), full)
    for need in itertools.product([False, True], repeat=4):
        if not any(need):
            continue
        lv = [t.clone().requires_grad_(n) for t, n in zip((x, y, w, h), need)]
        got = torch.autograd.grad(
            kf.kernel_sum(*lv[:3], bandwidth=lv[3], **kw).sum(), [t for t, n in zip(lv, need) if n]
        )
        for u, v in zip(got, [g for g, n in zip(gfull, need) if n]):
            torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-14)


def test_kink_subgradients():
    """sign(0) = 0 (manhattan / minkowski at x_k == y_k); chebyshev ties go to the first coordinate."""
    x = torch.tensor([[0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    (g,) = torch.autograd.grad(kf.kernel_sum(x, y[:1], bandwidth=2.0, metric="manhattan").sum(), x)
    assert g[0, 0] == 0 and g[0, 1] > 0
    (g,) = torch.autograd.grad(kf.kernel_sum(x, y[:1], bandwidth=2.0, metric="minkowski", p=3.0).sum(), x)
    assert g[0, 0] == 0 and g[0, 1] > 0
    # |dx| = (1, 1): a tie, the first coordinate gets the whole gradient
    (g,) = torch.autograd.grad(kf.kernel_sum(x, y[1:], bandwidth=2.0, metric="chebyshev").sum(), x)
    assert g[0, 1] == 0 and g[0, 0] > 0
    r = 1.0 / 2.0  # d/dx_0 exp(-r^2/2), r = (x_0 - y_0) / h: -r exp(-r^2/2) * (1/h) * sign(x_0 - y_0)
    torch.testing.assert_close(g[0, 0], torch.tensor(r * math.exp(-0.5 * r * r) / 2.0, dtype=torch.float64))


def test_need_bandwidth_matches_translation_formula():
    """The in-pass bandwidth gradient (what haversine uses) agrees with the x/y-gradient formula of
    the coordinate metrics."""
    for metric in ("euclidean", "manhattan", "chebyshev", "minkowski"):
        x, y = _away_from_kinks(metric, 9, 21, 3, seed=14)
        w = _weights("cols", 21, torch.float64, "cpu")
        h = torch.tensor(1.7, dtype=torch.float64)
        g = torch.randn(9, 3, dtype=torch.float64)
        for kernel in ("gaussian", "epanechnikov"):
            gx, gy, gw, gh = _ops.kernel_sum_bwd(g, x, y, w, h, kernel, False, True, True, True, metric, P, True)
            hh = h.clone().requires_grad_(True)
            (exp,) = torch.autograd.grad(kf.kernel_sum(x, y, w, kernel=kernel, bandwidth=hh, metric=metric, p=P), hh, g)
            assert gh.shape == h.shape
            torch.testing.assert_close(gh, exp, rtol=1e-10, atol=1e-12)
            lo = kf.kernel_logsumexp(x, y, w.log(), kernel=kernel, bandwidth=h, metric=metric, p=P)
            _, _, _, gh2 = _ops.kernel_logsumexp_bwd(
                g, lo, x, y, w.log(), h, kernel, False, False, False, False, metric, P, True
            )
            (exp2,) = torch.autograd.grad(
                kf.kernel_logsumexp(x, y, w.log(), kernel=kernel, bandwidth=hh, metric=metric, p=P), hh, g
            )
            torch.testing.assert_close(gh2, exp2, rtol=1e-10, atol=1e-12)


def test_float32_metric_gradients_close_to_float64():
    for metric in METRICS:
        d = 2 if metric == "haversine" else 3
        x, y = _away_from_kinks(metric, 40, 300, d, seed=15)
        h = torch.tensor(1.1)
        res = []
        for dt in (torch.float64, torch.float32):
            lv = [t.to(dt).clone().requires_grad_(True) for t in (x, y, h)]
            out = kf.kernel_sum(lv[0], lv[1], bandwidth=lv[2], metric=metric, p=P)
            res.append(torch.autograd.grad(out.sum(), lv))
        for a, b in zip(*res):
            torch.testing.assert_close(b.double(), a, rtol=2e-4, atol=2e-5 * max(1.0, a.abs().max().item()))


# ------------------------------------------------------------------ exact support of compact kernels
NQ = 500  # queries: the first NQ digits; points: all 1797


def _digits():
    datasets = pytest.importorskip("sklearn.datasets")
    X = datasets.load_digits().data.astype(np.int64)  # (1797, 64), integers 0..16
    return X


_DIST = {}


def _int_distances(X, metric):
    """Exact integer distances (NQ, 1797): squared euclidean (int64 matmul), manhattan, chebyshev."""
    if metric not in _DIST:
        Q = X[:NQ]
        if metric == "euclidean":
            _DIST[metric] = (Q * Q).sum(1)[:, None] + (X * X).sum(1)[None, :] - 2 * Q @ X.T
        else:
            out = np.empty((NQ, X.shape[0]), dtype=np.int64)
            for s in range(0, NQ, 50):
                diff = np.abs(Q[s : s + 50, None, :] - X[None, :, :])
                out[s : s + 50] = diff.sum(-1) if metric == "manhattan" else diff.max(-1)
            _DIST[metric] = out
    return _DIST[metric]


def _exact_log_density(D, h, kernel, metric):
    """float64 log sum_i k, the support D < h (D^2 < h^2) decided on the integers."""
    if metric == "euclidean":
        inside = D < h * h
        s = D / (h * h)
    else:
        inside = D < h
        s = (D / h) ** 2
    r = np.sqrt(s)
    k = {
        "tophat": np.ones_like(s),
        "epanechnikov": 1 - s,
        "linear": 1 - r,
        "cosine": np.cos(0.5 * np.pi * np.minimum(r, 1.0)),
    }[kernel]
    with np.errstate(divide="ignore"):
        return np.log(np.where(inside, k, 0.0).sum(1)), np.where(inside, k, 0.0).sum(1)


@pytest.mark.parametrize(
    "metric,hs", [("euclidean", (45.0, 44.9, 45.1)), ("manhattan", (200.0, 199.9)), ("chebyshev", (10.0, 10.1))]
)
@pytest.mark.parametrize("kernel", COMPACT)
def test_exact_support_on_integer_data(metric, hs, kernel):
    """sklearn.datasets.load_digits(): integer data with hundreds of pairs at exactly dist = h.
    dist < h is decided on unscaled distances, so the op matches the exact computation (float64
    and float32), where scaling by 1/h first lets rounding decide those pairs (up to 0.6% in the
    tophat log-density)."""
    X = _digits()
    D = _int_distances(X, metric)
    yt = torch.from_numpy(X.astype(np.float64))
    xt = yt[:NQ]
    for h in hs:
        if h == hs[0]:  # boundary pairs exist, so the test means something
            nb = int((D == (h * h if metric == "euclidean" else h)).sum())
            assert nb > 100, nb
        elog, esum = _exact_log_density(D, h, kernel, metric)
        kw = dict(kernel=kernel, bandwidth=h, metric=metric)
        if h == hs[0]:  # the reference decides the same way (100 queries: it forms the matrix)
            lr = ref.kernel_logsumexp(xt[:100], yt, **kw)
            np.testing.assert_allclose(lr.numpy(), elog[:100], rtol=1e-12)
        # float32: h itself rounds (44.9, 10.1), and k = 1 - s near the edge amplifies it in the
        # smooth compact kernels (2e-5); one misclassified pair of the tophat is >= 1/n ~ 1e-3.
        for dt, rtol, atol in ((torch.float64, 1e-12, 0.0), (torch.float32, 2e-6, 2e-5)):
            lo = kf.kernel_logsumexp(xt.to(dt), yt.to(dt), **kw)
            np.testing.assert_allclose(lo.double().numpy(), elog, rtol=rtol, atol=atol)
            so = kf.kernel_sum(xt.to(dt), yt.to(dt), **kw)
            np.testing.assert_allclose(so.double().numpy(), esum, rtol=max(2 * rtol, atol), atol=0)
            if kernel == "tophat":  # counts: exact
                np.testing.assert_array_equal(so.double().numpy(), esum)


def test_exact_support_per_dim_bandwidth_keeps_scaled_rule():
    """A per-dimension bandwidth decides s < 1 on the scaled coordinates (the reference's rule;
    rounding decides pairs at s == 1, so the bandwidths here keep away from them)."""
    X = torch.from_numpy(_digits()[:200].astype(np.float64))
    h = torch.full((64,), 45.37, dtype=torch.float64)
    h[0] = 44.21
    for kernel in COMPACT:
        out = kf.kernel_logsumexp(X, X, kernel=kernel, bandwidth=h)
        exp = ref.kernel_logsumexp(X, X, kernel=kernel, bandwidth=h)
        torch.testing.assert_close(out, exp)


# ------------------------------------------------------------------ errors
def test_metric_errors_name_the_argument():
    x, y = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"argument 'metric': unknown metric 'cosine'.*euclidean, manhattan"):
        kf.kernel_sum(x, y, metric="cosine")
    for bad in (0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"argument 'p': expected a finite p >= 1 for metric 'minkowski', got"):
            kf.kernel_logsumexp(x, y, metric="minkowski", p=bad)
    with pytest.raises(ValueError, match=r"argument 'metric': 'haversine' expects d == 2 .*got d = 3"):
        kf.kernel_sum(x, y, metric="haversine")
    with pytest.raises(ValueError, match=r"argument 'bandwidth': metric 'haversine' takes a scalar bandwidth"):
        kf.kernel_sum(x[:, :2], y[:, :2], bandwidth=torch.tensor([1.0, 2.0]), metric="haversine")
    # the same checks in the C++ glue (direct op calls)
    h = torch.tensor(1.0)
    with pytest.raises(ValueError, match=r"metric.*unknown metric 'l3'; expected one of: euclidean"):
        _ops.kernel_sum(x, y, None, h, "gaussian", False, "l3", 2.0)
    with pytest.raises(ValueError, match=r"argument 'p'.*expected a finite p >= 1.*got 0.5"):
        _ops.kernel_logsumexp(x, y, None, h, "gaussian", False, "minkowski", 0.5)
    with pytest.raises(ValueError, match=r"'haversine' expects d == 2.*got d = 3"):
        _ops.kernel_sum(x, y, None, h, "gaussian", False, "haversine", 2.0)
    with pytest.raises(ValueError, match=r"bandwidth.*'haversine' takes a scalar bandwidth"):
        _ops.kernel_sum(x[:, :2], y[:, :2], None, torch.ones(2), "gaussian", False, "haversine", 2.0)
    with pytest.raises(ValueError, match=r"need_bandwidth.*needs a scalar bandwidth"):
        _ops.kernel_sum_bwd(
            torch.ones(4), x, y, None, torch.ones(3), "gaussian", False, True, True, False, "manhattan", 2.0, True
        )


# ------------------------------------------------------------------ opcheck, compile
def _opcheck_cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = torch.randn(11, 3, generator=g, dtype=torch.float64)
    w = torch.rand(11, 2, generator=g, dtype=torch.float64) + 0.1
    xh, yh = _data("haversine", 7, 11, 2, torch.float64, "cpu")
    h = torch.tensor(1.3, dtype=torch.float64)
    hd = torch.tensor([1.0, 1.3, 0.9], dtype=torch.float64)
    gr = torch.randn(7, 2, generator=g, dtype=torch.float64)
    lo = _ops.kernel_logsumexp(xh, yh, w.log(), h, "gaussian", False, "haversine", 2.0)
    return [
        (
            _ops.kernel_sum,
            (
                x.clone().requires_grad_(),
                y,
                w.clone().requires_grad_(),
                hd.clone().requires_grad_(),
                "epanechnikov",
                False,
                "manhattan",
                2.0,
            ),
        ),
        (_ops.kernel_sum, (x, y, w, h, "cosine", False, "minkowski", 3.0)),
        (_ops.kernel_logsumexp, (x, y, w.log(), hd, "gaussian", False, "chebyshev", 2.0)),
        (
            _ops.kernel_logsumexp,
            (xh.clone().requires_grad_(), yh, w.log(), h.clone().requires_grad_(), "linear", False, "haversine", 2.0),
        ),
        (_ops.kernel_logsumexp_sq, (x, y, None, h, "tophat", False, "chebyshev", 2.0)),
        (_ops.kernel_sum_bwd, (gr, x, y, w, h, "gaussian", False, True, True, True, "minkowski", 3.0, True)),
        (
            _ops.kernel_logsumexp_bwd,
            (gr, lo, xh, yh, w.log(), h, "gaussian", False, True, False, True, "haversine", 2.0, True),
        ),
    ]


@pytest.mark.parametrize("i", range(7))
def test_metric_opcheck(i):
    op, args = _opcheck_cases()[i]
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("metric", ["manhattan", "haversine"])
def test_metric_torch_compile_fullgraph(metric):
    d = 2 if metric == "haversine" else 3
    x, y = _data(metric, 9, 20, d, torch.float32, "cpu", seed=2)
    w = torch.rand(20) + 0.1

    def f(x_, h_):
        return (
            kf.kernel_logsumexp(x_, y, w.log(), kernel="epanechnikov", bandwidth=h_, metric=metric).sum()
            + kf.kernel_sum(x_, y, w, kernel="gaussian", bandwidth=h_, metric=metric).sum()
        )

    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    h = torch.tensor(2.5)
    xa, ha = x.clone().requires_grad_(True), h.clone().requires_grad_(True)
    xb, hb = x.clone().requires_grad_(True), h.clone().requires_grad_(True)
    ea, eb = f(xa, ha), cf(xb, hb)
    torch.testing.assert_close(eb, ea)
    ga = torch.autograd.grad(ea, (xa, ha))
    gb = torch.autograd.grad(eb, (xb, hb))
    for u, v in zip(gb, ga):
        torch.testing.assert_close(u, v)


@pytest.mark.parametrize("h", [7.0, 11.0, 31.0, 45.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_exact_support_both_cpu_paths(h, dtype):
    """The CPU kernel decides dist < h by one multiplication with a factor of exact rounding where
    one exists, else by clamping (h^2 = 49 in float64, 121 in float32 have none): tophat counts are
    exact either way, for euclidean (h^2) and manhattan / chebyshev (h)."""
    g = torch.Generator().manual_seed(int(h))
    x = torch.randint(0, int(h), (60, 3), generator=g)
    y = torch.randint(0, int(h), (90, 3), generator=g)
    diff = (x[:, None, :] - y[None, :, :]).abs()
    for metric, D, thr in (
        ("euclidean", (diff * diff).sum(-1), h * h),
        ("manhattan", diff.sum(-1), h),
        ("chebyshev", diff.amax(-1), h),
    ):
        count = (D.double() < thr).sum(1).double()
        out = kf.kernel_sum(x.to(dtype), y.to(dtype), kernel="tophat", bandwidth=h, metric=metric)
        assert torch.equal(out.double(), count), metric
        if metric == "euclidean":
            assert int((D.double() == thr).sum()) > 0  # boundary pairs exist
