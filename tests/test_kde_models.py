"""Tests of the kernelfuse.kde estimators: KernelDensity (vs scikit-learn) and GaussianKDE (vs scipy).

Exactness tests run in float64. scikit-learn and scipy are test dependencies only.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from kernelfuse.kde import (
    FewPointsWarning,
    GaussianKDE,
    KernelDensity,
    NotFittedError,
    log_kernel_normaliser,
)

sklearn = pytest.importorskip("sklearn")
scipy = pytest.importorskip("scipy")
from scipy import integrate, special, stats  # noqa: E402
from sklearn import datasets  # noqa: E402
from sklearn.neighbors import KernelDensity as SkKernelDensity  # noqa: E402

SK_KERNELS = ("gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine")
DENSITY_KERNELS = ("gaussian", "laplacian", "matern32", "matern52", "tophat", "epanechnikov", "linear", "cosine")
COMPACT = ("tophat", "epanechnikov", "linear", "cosine")
RTOL_SKLEARN = 1e-6
RTOL_SCIPY = 1e-8


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def profile_np(kernel: str, r):
    """Unnormalised kernel profile k(r), written independently of the library (numpy)."""
    r = np.asarray(r, dtype=np.float64)
    inside = r < 1
    if kernel == "gaussian":
        return np.exp(-0.5 * r * r)
    if kernel in ("laplacian", "exponential"):
        return np.exp(-r)
    if kernel == "cauchy":
        return 1.0 / (1.0 + r * r)
    if kernel == "matern32":
        a = math.sqrt(3) * r
        return (1 + a) * np.exp(-a)
    if kernel == "matern52":
        a = math.sqrt(5) * r
        return (1 + a + a * a / 3) * np.exp(-a)
    if kernel == "tophat":
        return inside * 1.0
    if kernel == "epanechnikov":
        return inside * (1 - r * r)
    if kernel == "linear":
        return inside * (1 - r)
    if kernel == "cosine":
        return inside * np.cos(0.5 * np.pi * np.minimum(r, 1))
    if kernel == "rational_quadratic":
        return (1 + r * r / 4) ** -2
    raise AssertionError(kernel)


def log_sphere_area(d: int) -> float:
    return math.log(2) + d / 2 * math.log(math.pi) - special.gammaln(d / 2)


def sphere_area(d: int) -> float:
    return math.exp(log_sphere_area(d))


def radial_moment(kernel: str, d: int, p: int) -> float:
    """int_0^inf r^(d-1+p) k(r) dr by adaptive quadrature."""
    upper = 1.0 if kernel in COMPACT else np.inf
    val, _ = integrate.quad(
        lambda r: r ** (d - 1 + p) * profile_np(kernel, r), 0, upper, epsabs=0, epsrel=1e-12, limit=400
    )
    return val


def _cached(fn):
    cache = {}

    def wrapper():
        if "v" not in cache:
            cache["v"] = fn()
        return cache["v"]

    return wrapper


@_cached
def real_datasets():
    """name -> (X, bandwidths). Bandwidths avoid exact ties |x - y| == h on gridded data."""
    iris = datasets.load_iris().data
    wine = datasets.load_wine().data
    wine = (wine - wine.mean(0)) / wine.std(0)
    bc = datasets.load_breast_cancer().data
    bc = (bc - bc.mean(0)) / bc.std(0)
    digits = datasets.load_digits().data
    return {
        "iris": (iris, (0.37, 1.13, "scott", "silverman")),
        "wine": (wine, (0.83, 2.71, "scott", "silverman")),
        "breast_cancer": (bc, (1.57, 4.33, "scott", "silverman")),
        "digits": (digits, (6.37, 13.3, "scott", "silverman")),
    }


def queries_for(X, n=40, seed=0):
    """Some training rows (the self term included) and jittered rows."""
    rng = np.random.RandomState(seed)
    idx = rng.choice(X.shape[0], size=n, replace=False)
    jitter = X[idx[: n // 2]] + 0.05 * X.std(0) * rng.standard_normal((n // 2, X.shape[1]))
    return np.vstack([X[idx[n // 2 :]], jitter])


def sklearn_scores(X, Q, kernel, bandwidth, sample_weight=None):
    with np.errstate(all="ignore"):
        sk = SkKernelDensity(bandwidth=bandwidth, kernel=kernel, rtol=0, atol=0)
        return sk.fit(X, sample_weight=sample_weight).score_samples(Q)


def max_rel_err(ours, ref):
    """Max relative error over finite reference values; the -inf pattern must match exactly."""
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(ref))
    f = np.isfinite(ref)
    if not f.any():
        return 0.0
    return float(np.max(np.abs(ours[f] - ref[f]) / np.abs(ref[f])))


def compare_with_sklearn(ours, ref, X, Q, kernel, h, sample_weight=None):
    """Max relative error vs sklearn, after checking where the density is zero by brute force.

    scikit-learn's tree (1.9.1, rtol=0, atol=0) returns spurious tiny finite values for compact
    kernels at some queries with no data point within h (its node bounds leak mass): where we
    are -inf, we check there is indeed no (positively weighted) point within h instead.
    """
    if kernel in COMPACT:
        w = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight)
        dist = np.sqrt(((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1))
        reached = ((dist < h) & (w > 0)[None, :]).any(1)
        np.testing.assert_array_equal(np.isfinite(ours), reached)
        assert not np.any(np.isfinite(ours) & ~np.isfinite(ref))  # never finite where sklearn is 0
        keep = np.isfinite(ours)
        return max_rel_err(ours[keep], ref[keep])
    return max_rel_err(ours, ref)


def quiet_fit(**kw):
    kw.setdefault("min_neff", None)
    return KernelDensity(**kw)


# ----------------------------------------------------------------------------------------------
# normalisers
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", DENSITY_KERNELS)
@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 6, 7, 13, 20, 64])
def test_normaliser_matches_radial_quadrature(kernel, d):
    expected = log_sphere_area(d) + math.log(radial_moment(kernel, d, 0))
    assert log_kernel_normaliser(kernel, d) == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_normaliser_cauchy_and_imq():
    assert log_kernel_normaliser("cauchy", 1) == pytest.approx(math.log(math.pi), rel=1e-14)
    with pytest.raises(ValueError, match="kernel: the cauchy kernel .* not integrable"):
        log_kernel_normaliser("cauchy", 2)
    with pytest.raises(ValueError, match="kernel: the inverse_multiquadric kernel .* not integrable"):
        log_kernel_normaliser("inverse_multiquadric", 1)
    assert log_kernel_normaliser("exponential", 3) == log_kernel_normaliser("laplacian", 3)


def test_kernel_table_matches_reference_and_rational_quadratic_normaliser():
    # the C++ table of profiles (csrc/kde/profiles.h) lists the reference's kernels, in order
    from kernelfuse import _C
    from kernelfuse.reference import kde as ref

    assert tuple(_C.kde_kernels()) == ref.KERNELS
    for d in (1, 2, 3):
        expected = log_sphere_area(d) + math.log(radial_moment("rational_quadratic", d, 0))
        assert log_kernel_normaliser("rational_quadratic", d) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="kernel: the rational_quadratic kernel .* not integrable in d=4"):
        log_kernel_normaliser("rational_quadratic", 4)


@pytest.mark.parametrize("d", [1, 3])
def test_sample_radial_law_rational_quadratic(d):
    test_sample_radial_law_chi_square("rational_quadratic", d)


def test_cosine_normaliser_stable_in_high_dimension():
    # For large d, int_0^1 r^(d-1) cos(pi r/2) dr -> (pi/2) / (d (d+1)) (1 + O(1/d)).
    for d in (100, 300, 1000):
        val, _ = integrate.quad(
            lambda r: r ** (d - 1) * np.cos(0.5 * np.pi * r),
            0,
            1,
            epsabs=0,
            epsrel=1e-13,
            limit=400,
            points=[1 - 10 / d],
        )
        expected = log_sphere_area(d) + math.log(val)
        assert log_kernel_normaliser("cosine", d) == pytest.approx(expected, rel=1e-11)


# ----------------------------------------------------------------------------------------------
# normalisation of the fitted density by numerical integration
# ----------------------------------------------------------------------------------------------
_GL_T, _GL_W = np.polynomial.legendre.leggauss(32)


def gauss_legendre(f, breaks, left_tail=False, right_tail=False, panels=8):
    """int f over [breaks[0], breaks[-1]] (plus the infinite tails if asked) in ONE batched call.

    Composite 32-point Gauss-Legendre on ``panels`` equal panels between consecutive break
    points (put them at every kink of the integrand); tails by x = b +- t / (1 - t), t in (0, 1).
    f maps a 1-D array of abscissae to the integrand values.
    """
    xs, ws = [], []

    def add(a, b, transform=None):
        edges = np.linspace(a, b, panels + 1)
        for lo, hi in zip(edges[:-1], edges[1:]):
            t = 0.5 * (hi - lo) * _GL_T + 0.5 * (hi + lo)
            w = 0.5 * (hi - lo) * _GL_W
            if transform is None:
                xs.append(t)
                ws.append(w)
            else:
                x, jac = transform(t)
                xs.append(x)
                ws.append(w * jac)

    for a, b in zip(breaks[:-1], breaks[1:]):
        if b > a:
            add(a, b)
    if right_tail:
        b = breaks[-1]
        add(0.0, 1.0, lambda t: (b + t / (1 - t), 1 / (1 - t) ** 2))
    if left_tail:
        a = breaks[0]
        add(0.0, 1.0, lambda t: (a - t / (1 - t), 1 / (1 - t) ** 2))
    x, w = np.concatenate(xs), np.concatenate(ws)
    return float(np.sum(w * f(x)))


@pytest.mark.parametrize("kernel", DENSITY_KERNELS + ("cauchy",))
def test_density_integrates_to_one_1d(kernel):
    centres = np.array([[-1.3], [0.2], [0.25], [2.0]])
    w = np.array([0.5, 1.0, 2.0, 0.25])
    h = 0.6
    kde = quiet_fit(bandwidth=h, kernel=kernel).fit(centres, sample_weight=w)
    breaks = np.unique(np.concatenate([centres[:, 0] - h, centres[:, 0], centres[:, 0] + h]))
    infinite = kernel not in COMPACT
    total = gauss_legendre(
        lambda x: np.exp(kde.score_samples(x[:, None])), breaks, left_tail=infinite, right_tail=infinite, panels=16
    )
    assert total == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("kernel", DENSITY_KERNELS)
@pytest.mark.parametrize("d", [2, 3, 4, 6, 13])
def test_density_integrates_to_one_radially(kernel, d):
    """int_{R^d} p = |S^{d-1}| int_0^inf r^(d-1) p(r e) dr for a one-point model (isotropic)."""
    h = 0.7
    centre = np.full((1, d), 0.3)
    kde = quiet_fit(bandwidth=h, kernel=kernel).fit(centre)
    e = np.ones(d) / math.sqrt(d)

    def f(r):
        return r ** (d - 1) * np.exp(kde.score_samples(centre + r[:, None] * e[None, :]))

    if kernel in COMPACT:
        val = gauss_legendre(f, np.array([0.0, h]), panels=16)
    else:
        val = gauss_legendre(f, np.array([0.0, h, 10 * h, 40 * h]), right_tail=True, panels=16)
    assert sphere_area(d) * val == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("kernel", COMPACT + ("gaussian",))
@pytest.mark.parametrize("d", [2, 3])
def test_density_integrates_to_one_cartesian_qmc(kernel, d):
    """Cartesian check: scrambled Sobol points over a box holding (nearly) all the mass."""
    rng = np.random.RandomState(1)
    centres = rng.uniform(-1, 1, size=(5, d))
    w = rng.uniform(0.2, 2.0, size=5)
    h = 0.8
    kde = quiet_fit(bandwidth=h, kernel=kernel).fit(centres, sample_weight=w)
    pad = h if kernel in COMPACT else 9 * h
    lo, hi = centres.min(0) - pad, centres.max(0) + pad
    u = stats.qmc.Sobol(d, scramble=True, seed=3).random_base2(17)
    pts = lo + u * (hi - lo)
    total = np.prod(hi - lo) * np.exp(kde.score_samples(pts)).mean()
    assert total == pytest.approx(1.0, abs=2e-3)


# ----------------------------------------------------------------------------------------------
# agreement with scikit-learn on real data
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "digits"])
@pytest.mark.parametrize("kernel", [k for k in SK_KERNELS if k != "cosine"])
def test_matches_sklearn_real_data(name, kernel):
    X, bandwidths = real_datasets()[name]
    Q = queries_for(X)
    for bw in bandwidths:
        kde = quiet_fit(bandwidth=bw, kernel=kernel).fit(X)
        ours = kde.score_samples(Q)
        ref = sklearn_scores(X, Q, kernel, bw)
        assert compare_with_sklearn(ours, ref, X, Q, kernel, kde.bandwidth_) < RTOL_SKLEARN, (name, kernel, bw)


@pytest.mark.parametrize("name", ["iris", "wine", "digits"])
@pytest.mark.parametrize("kernel", [k for k in SK_KERNELS if k != "cosine"])
def test_matches_sklearn_sample_weight(name, kernel):
    X, bandwidths = real_datasets()[name]
    rng = np.random.RandomState(2)
    w = rng.uniform(0.0, 3.0, size=X.shape[0])
    w[rng.choice(X.shape[0], 5, replace=False)] = 0.0
    Q = queries_for(X, seed=4)
    for bw in (bandwidths[1], "scott"):
        kde = quiet_fit(bandwidth=bw, kernel=kernel).fit(X, sample_weight=w)
        ours = kde.score_samples(Q)
        ref = sklearn_scores(X, Q, kernel, bw, sample_weight=w)
        err = compare_with_sklearn(ours, ref, X, Q, kernel, kde.bandwidth_, sample_weight=w)
        assert err < RTOL_SKLEARN, (name, kernel, bw)


@pytest.mark.parametrize("cols", [[0], [2], [0, 1, 2], [0, 1, 2, 3, 4]])
def test_cosine_matches_sklearn_where_sklearn_is_right(cols):
    """sklearn's cosine normaliser is right (to rounding) at d = 1, 3, 5 (odd and small)."""
    wine = real_datasets()["wine"][0][:, cols]
    Q = queries_for(wine)
    w = np.random.RandomState(0).uniform(0.5, 1.5, size=wine.shape[0])
    for bw, sw in ((0.77, None), ("scott", None), ("silverman", w), (1.9, w)):
        kde = quiet_fit(bandwidth=bw, kernel="cosine").fit(wine, sample_weight=sw)
        ours = kde.score_samples(Q)
        ref = sklearn_scores(wine, Q, "cosine", bw, sample_weight=sw)
        assert compare_with_sklearn(ours, ref, wine, Q, "cosine", kde.bandwidth_, sw) < RTOL_SKLEARN


@pytest.mark.parametrize("d", [2, 4, 6])
def test_cosine_differs_from_sklearn_only_by_its_normaliser(d):
    """At even d sklearn's cosine normaliser is wrong (d=2: x2.75, d=6: x222; d=4: NaN).

    The kernel sums agree: the difference of log-densities is the constant log(Z_sklearn / Z_exact).
    """
    X = real_datasets()["breast_cancer"][0][:, :d]
    Q = queries_for(X)
    ours = quiet_fit(bandwidth=1.3, kernel="cosine").fit(X).score_samples(Q)
    ref = sklearn_scores(X, Q, "cosine", 1.3)
    f = np.isfinite(ours)
    assert f.any()
    if d == 4:
        assert np.all(np.isnan(ref[f]))
        return
    diff = ours[f] - ref[f]
    np.testing.assert_allclose(diff, diff[0], atol=1e-9)
    from sklearn.neighbors._kd_tree import kernel_norm

    sk_log_z = -kernel_norm(1.0, d, "cosine", return_log=True)
    assert diff[0] == pytest.approx(sk_log_z - log_kernel_normaliser("cosine", d), rel=1e-9)
    assert abs(diff[0]) > 1.0  # a factor e or more: not a rounding issue


def test_matches_sklearn_1d_all_kernels():
    x = real_datasets()["iris"][0][:, 2:3]
    Q = np.linspace(0.5, 7.5, 57)[:, None]
    for kernel in SK_KERNELS:
        for bw in (0.23, "scott"):
            kde = quiet_fit(bandwidth=bw, kernel=kernel).fit(x)
            ours = kde.score_samples(Q)
            ref = sklearn_scores(x, Q, kernel, bw)
            assert compare_with_sklearn(ours, ref, x, Q, kernel, kde.bandwidth_) < RTOL_SKLEARN, (kernel, bw)


def test_score_and_bandwidth_rules_match_sklearn():
    X, _ = real_datasets()["wine"]
    w = np.random.RandomState(0).uniform(0.1, 2.0, size=X.shape[0])
    for bw in ("scott", "silverman", 0.9):
        ours = quiet_fit(bandwidth=bw).fit(X, sample_weight=w)
        sk = SkKernelDensity(bandwidth=bw, rtol=0, atol=0).fit(X, sample_weight=w)
        assert ours.bandwidth_ == pytest.approx(sk.bandwidth_, rel=1e-15)
        assert ours.score(X[:30]) == pytest.approx(sk.score(X[:30]), rel=1e-9)
    assert ours.n_features_in_ == X.shape[1]


# ----------------------------------------------------------------------------------------------
# effective number of contributing points
# ----------------------------------------------------------------------------------------------
def test_neff_values_and_weights():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((50, 3))
    w = rng.uniform(0.1, 1.0, size=50)
    Q = rng.standard_normal((7, 3))
    kde = quiet_fit(bandwidth=0.8, kernel="epanechnikov").fit(X, sample_weight=w)
    kde.score_samples(Q)
    r = np.linalg.norm(Q[:, None, :] - X[None, :, :], axis=-1) / 0.8
    a = w * profile_np("epanechnikov", r)
    expected = np.where(a.sum(1) > 0, a.sum(1) ** 2 / np.maximum((a * a).sum(1), 1e-300), 0.0)
    np.testing.assert_allclose(kde.n_eff_, expected, rtol=1e-10)
    # a query reached by no data point: density 0, n_eff 0
    far = np.full((1, 3), 100.0)
    assert kde.score_samples(far)[0] == -np.inf and kde.n_eff_[0] == 0.0


def test_few_points_warning_in_high_dimension():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((1000, 64))
    Q = rng.standard_normal((100, 64))
    kde = KernelDensity(bandwidth="scott").fit(X)
    with pytest.warns(FewPointsWarning, match="extreme-value regime"):
        kde.score_samples(Q)
    assert np.median(kde.n_eff_) < 2
    assert np.all(kde.n_eff_ >= 1 - 1e-12)
    # the threshold is a parameter; None disables the warning
    kde.set_params(min_neff=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewPointsWarning)
        kde.score_samples(Q)


def test_no_few_points_warning_well_sampled_2d():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((500, 2))
    Q = rng.standard_normal((100, 2))
    kde = KernelDensity(bandwidth="scott").fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewPointsWarning)
        kde.score_samples(Q)
    assert np.median(kde.n_eff_) > 20


# ----------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------
SAMPLE_KERNELS = ("gaussian", "tophat", "epanechnikov", "laplacian", "linear", "cosine", "matern32", "matern52")


@pytest.mark.parametrize("kernel", SAMPLE_KERNELS)
@pytest.mark.parametrize("d", [1, 3])
def test_sample_radial_law_chi_square(kernel, d):
    """|x - c| / h of samples from a one-point model follows density ~ r^(d-1) k(r)."""
    h, n = 0.5, 20000
    c = np.full((1, d), 2.0)
    s = KernelDensity(bandwidth=h, kernel=kernel).fit(c).sample(n, random_state=0)
    assert s.shape == (n, d)
    r = np.linalg.norm(s - c, axis=1) / h
    upper = 1.0 if kernel in COMPACT else 60.0
    edges = (
        np.linspace(0, upper, 21)
        if kernel in COMPACT
        else np.concatenate([np.quantile(r, np.linspace(0, 1, 21)[:-1]), [np.inf]])
    )
    edges[0] = 0.0
    z = radial_moment(kernel, d, 0)
    probs = (
        np.array(
            [
                integrate.quad(lambda t: t ** (d - 1) * profile_np(kernel, t), a, b, epsabs=1e-13, limit=200)[0]
                for a, b in zip(edges[:-1], edges[1:])
            ]
        )
        / z
    )
    counts = np.histogram(r, bins=edges)[0]
    assert counts.sum() == n
    chi2 = ((counts - n * probs) ** 2 / (n * probs)).sum()
    assert stats.chi2.sf(chi2, len(probs) - 1) > 1e-4


@pytest.mark.parametrize("kernel", SAMPLE_KERNELS)
def test_sample_moments_weighted_mixture(kernel):
    rng = np.random.RandomState(5)
    d, h, n = 3, 0.4, 60000
    X = rng.standard_normal((6, d)) * np.array([1.0, 2.0, 0.5])
    w = np.array([1.0, 0.0, 2.0, 0.5, 3.0, 1.0])
    s = (
        KernelDensity(bandwidth=h, kernel=kernel)
        .fit(X, sample_weight=w)
        .sample(n, random_state=np.random.default_rng(1))
    )
    p = w / w.sum()
    mean = p @ X
    er2 = radial_moment(kernel, d, 2) / radial_moment(kernel, d, 0)
    cov = (X - mean).T @ ((X - mean) * p[:, None]) + h * h * er2 / d * np.eye(d)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(s.mean(0) - mean) < 5 * sd / math.sqrt(n))
    emp = np.cov(s.T, bias=True)
    # sampling s.d. of a covariance entry <= sqrt(E[x^4]) / sqrt(n); kurtosis bounded for these laws
    assert np.all(np.abs(emp - cov) < 5 * 3 * np.outer(sd, sd) / math.sqrt(n))
    # the zero-weight centre is never the nearest centre of a sample from a compact kernel
    if kernel in COMPACT:
        near = np.linalg.norm(s[:, None, :] - X[None], axis=-1) < h
        only_1 = near[:, 1] & ~near[:, [0, 2, 3, 4, 5]].any(1)
        assert not only_1.any()


def test_sample_cauchy_1d_and_reproducibility():
    kde = KernelDensity(bandwidth=0.5, kernel="cauchy").fit(np.zeros((1, 1)))
    s = kde.sample(20000, random_state=3)[:, 0]
    assert abs(np.mean(np.abs(s) < 0.5) - 0.5) < 0.015  # P(|x| < h) = 1/2 for a Cauchy of scale h
    kde = KernelDensity(bandwidth=0.3, kernel="gaussian").fit(np.arange(10.0)[:, None])
    np.testing.assert_array_equal(kde.sample(5, random_state=7), kde.sample(5, random_state=7))


def test_sample_torch_in_torch_out():
    X = torch.randn(20, 2, dtype=torch.float32)
    s = KernelDensity(bandwidth=0.3, kernel="epanechnikov").fit(X).sample(11, random_state=0)
    assert isinstance(s, torch.Tensor) and s.shape == (11, 2) and s.dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# API, types, validation
# ----------------------------------------------------------------------------------------------
def test_numpy_and_torch_io_and_float32():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((200, 3))
    Q = rng.standard_normal((13, 3))
    ref = quiet_fit(bandwidth=0.5).fit(X).score_samples(Q)
    assert isinstance(ref, np.ndarray) and ref.dtype == np.float64
    kde_t = quiet_fit(bandwidth=0.5).fit(torch.from_numpy(X))
    out_t = kde_t.score_samples(torch.from_numpy(Q))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.numpy(), ref, rtol=1e-13)
    assert isinstance(kde_t.n_eff_, torch.Tensor)
    # numpy queries on a torch fit give numpy; lists work too
    np.testing.assert_allclose(kde_t.score_samples(Q.tolist()), ref, rtol=1e-13)
    out32 = quiet_fit(bandwidth=0.5, dtype="float32").fit(X).score_samples(Q)
    np.testing.assert_allclose(out32, ref, rtol=1e-5)
    out32t = quiet_fit(bandwidth=0.5).fit(torch.from_numpy(X).float()).score_samples(torch.from_numpy(Q).float())
    assert out32t.dtype == torch.float32
    np.testing.assert_allclose(out32t.double().numpy(), ref, rtol=1e-5)
    assert quiet_fit(bandwidth=0.5, device="cpu").fit(X).data_.device.type == "cpu"


def test_score_samples_gradient_is_the_score_function():
    rng = np.random.RandomState(0)
    X = torch.from_numpy(rng.standard_normal((40, 2)))
    h = 0.6
    kde = quiet_fit(bandwidth=h).fit(X)
    q = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    kde.score_samples(q).sum().backward()
    with torch.no_grad():
        a = -((q[:, None, :] - X[None]) ** 2).sum(-1) / (2 * h * h)
        p = torch.softmax(a, dim=1)
        expected = (p[:, :, None] * (X[None] - q[:, None, :])).sum(1) / (h * h)
    torch.testing.assert_close(q.grad, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore::kernelfuse.kde.FewPointsWarning")  # bandwidth 0.05 is meant to be bad
def test_get_set_params_clone_and_grid_search():
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    kde = KernelDensity(bandwidth=0.5, kernel="exponential")
    params = kde.get_params()
    assert params["bandwidth"] == 0.5 and params["kernel"] == "exponential"
    assert set(params) >= {"bandwidth", "kernel", "dtype", "device", "min_neff"}
    assert clone(kde).set_params(bandwidth=2.0).bandwidth == 2.0
    rng = np.random.RandomState(0)
    X = rng.standard_normal((120, 2))
    grid = GridSearchCV(KernelDensity(), {"bandwidth": [0.05, 0.4, 5.0], "kernel": ["gaussian", "exponential"]}, cv=3)
    grid.fit(X)
    assert grid.best_params_["bandwidth"] == 0.4
    sk_grid = GridSearchCV(
        SkKernelDensity(), {"bandwidth": [0.05, 0.4, 5.0], "kernel": ["gaussian", "exponential"]}, cv=3
    )
    sk_grid.fit(X)
    assert grid.best_params_ == sk_grid.best_params_
    np.testing.assert_allclose(grid.cv_results_["mean_test_score"], sk_grid.cv_results_["mean_test_score"], rtol=1e-9)


@pytest.mark.parametrize("bandwidth", [0, -1.0, float("nan"), float("inf"), "foo", None, [1.0, 2.0], True])
def test_bad_bandwidth(bandwidth):
    with pytest.raises(ValueError, match="bandwidth"):
        KernelDensity(bandwidth=bandwidth).fit(np.zeros((3, 2)))


def test_bad_kernel_and_non_integrable_kernels():
    X = np.random.RandomState(0).standard_normal((5, 2))
    with pytest.raises(ValueError, match=r"kernel.*'gausian'"):  # sklearn's InvalidParameterError when installed
        KernelDensity(kernel="gausian").fit(X)
    with pytest.raises(ValueError, match="kernel: the inverse_multiquadric kernel"):
        KernelDensity(kernel="inverse_multiquadric").fit(X)
    with pytest.raises(ValueError, match="kernel: the cauchy kernel .* d=2"):
        KernelDensity(kernel="cauchy").fit(X)
    KernelDensity(kernel="cauchy").fit(X[:, :1])  # fine in 1-D


# numpy input is validated by scikit-learn's validate_data (its messages), torch input by ours
TWO_D = r"(X: expected a 2-D array|Expected 2D array|Found array with dim 3)"


def test_bad_X_and_sample_weight():
    X = np.random.RandomState(0).standard_normal((5, 2))
    with pytest.raises(ValueError, match=TWO_D):
        KernelDensity().fit(X[:, 0])
    with pytest.raises(ValueError, match=TWO_D):
        KernelDensity().fit(X[None])
    with pytest.raises(ValueError, match=r"X:? contains NaN"):
        KernelDensity().fit(np.where(X > 1, np.nan, X))
    kde = KernelDensity().fit(X)
    with pytest.raises(ValueError, match="X:? has 3 features, but KernelDensity is expecting 2 features"):
        kde.score_samples(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=TWO_D):
        kde.score_samples(np.zeros(2))
    t = torch.from_numpy(X)
    with pytest.raises(ValueError, match="X: expected a 2-D array"):
        KernelDensity().fit(t[:, 0])
    with pytest.raises(ValueError, match="X: complex data is not supported"):
        KernelDensity().fit(t.to(torch.complex128))
    with pytest.raises(ValueError, match="X: has 3 features, but KernelDensity is expecting 2 features"):
        KernelDensity().fit(t).score_samples(torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"sample_weight: expected shape \(5,\)"):
        KernelDensity().fit(X, sample_weight=np.ones(4))
    with pytest.raises(ValueError, match="sample_weight: expected a 1-D array"):
        KernelDensity().fit(X, sample_weight=np.ones((5, 1)))
    with pytest.raises(ValueError, match="sample_weight: must be non-negative"):
        KernelDensity().fit(X, sample_weight=np.array([1.0, -1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="sample_weight: the weights sum to zero"):
        KernelDensity().fit(X, sample_weight=np.zeros(5))
    with pytest.raises(NotFittedError):
        KernelDensity().score_samples(X)
    with pytest.raises(ValueError, match="n_samples"):
        kde.sample(-1)


def test_inverse_multiquadric_not_sampleable_but_others_are():
    # Every kernel that defines a density can be sampled; the non-integrable one cannot be fitted.
    from kernelfuse.kde import SAMPLEABLE_KERNELS

    assert "inverse_multiquadric" not in SAMPLEABLE_KERNELS
    assert set(DENSITY_KERNELS) <= set(SAMPLEABLE_KERNELS)


# ----------------------------------------------------------------------------------------------
# GaussianKDE vs scipy.stats.gaussian_kde
# ----------------------------------------------------------------------------------------------
@_cached
def scipy_cases():
    rng = np.random.RandomState(0)
    iris = datasets.load_iris().data.T
    wine = real_datasets()["wine"][0].T
    x1 = datasets.load_iris().data[:, 2]
    corr = rng.multivariate_normal([0, 1], [[1.0, 0.8], [0.8, 2.0]], size=300).T
    return {
        "1d": (x1, None, rng.uniform(0, 8, size=(1, 25))),
        "1d_weighted": (x1, rng.uniform(0.1, 2.0, size=x1.shape[0]), rng.uniform(0, 8, size=25)),
        "2d_corr": (corr, None, rng.standard_normal((2, 30)) * 2),
        "iris_weighted": (iris, rng.uniform(0.0, 1.0, size=iris.shape[1]), iris[:, ::7] + 0.1),
        "wine_13d": (wine, None, wine[:, ::9] + 0.05),
    }


@pytest.mark.parametrize("case", ["1d", "1d_weighted", "2d_corr", "iris_weighted", "wine_13d"])
@pytest.mark.parametrize("bw_method", [None, "silverman", 0.3, "callable"])
def test_gaussian_kde_matches_scipy(case, bw_method):
    data, weights, points = scipy_cases()[case]
    bw = (lambda k: 0.5 * k.scotts_factor()) if bw_method == "callable" else bw_method
    ref = stats.gaussian_kde(data, bw_method=bw, weights=weights)
    ours = GaussianKDE(data, bw_method=bw, weights=weights, min_neff=None)
    for attr in ("d", "n"):
        assert getattr(ours, attr) == getattr(ref, attr)
    for attr in ("neff", "factor", "log_det"):
        assert getattr(ours, attr) == pytest.approx(getattr(ref, attr), rel=1e-12)
    for attr in ("weights", "covariance", "inv_cov", "cho_cov", "dataset"):
        np.testing.assert_allclose(getattr(ours, attr), getattr(ref, attr), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(ours.logpdf(points), ref.logpdf(points), rtol=RTOL_SCIPY)
    np.testing.assert_allclose(ours.evaluate(points), ref.evaluate(points), rtol=RTOL_SCIPY)
    np.testing.assert_allclose(ours(points), ref(points), rtol=RTOL_SCIPY)
    np.testing.assert_allclose(ours.pdf(points), ref.pdf(points), rtol=RTOL_SCIPY)


def test_gaussian_kde_set_bandwidth_single_point_marginal():
    data, weights, points = scipy_cases()["iris_weighted"]
    ref = stats.gaussian_kde(data, weights=weights)
    ours = GaussianKDE(data, weights=weights, min_neff=None)
    ref.set_bandwidth("silverman")
    ours.set_bandwidth("silverman")
    assert ours.factor == pytest.approx(ref.factor, rel=1e-14)
    assert ours.scotts_factor() == pytest.approx(ref.scotts_factor(), rel=1e-14)
    assert ours.silverman_factor() == pytest.approx(ref.silverman_factor(), rel=1e-14)
    p = points[:, 3]
    np.testing.assert_allclose(ours.logpdf(p), ref.logpdf(p), rtol=RTOL_SCIPY)
    assert ours.logpdf(p).shape == (1,)
    np.testing.assert_allclose(
        ours.marginal([0, 2]).logpdf(points[[0, 2]]), ref.marginal([0, 2]).logpdf(points[[0, 2]]), rtol=RTOL_SCIPY
    )


def test_gaussian_kde_resample_moments_and_torch():
    data, weights, _ = scipy_cases()["2d_corr"]
    kde = GaussianKDE(data, weights=np.linspace(0.5, 1.5, data.shape[1]))
    n = 100000
    s = kde.resample(n, seed=0)
    assert s.shape == (2, n)
    w = kde.weights
    mean = data @ w
    xc = data - mean[:, None]
    cov = (xc * w) @ xc.T + kde.covariance
    np.testing.assert_allclose(s.mean(1), mean, atol=5 * np.sqrt(np.diag(cov).max() / n))
    np.testing.assert_allclose(np.cov(s, bias=True), cov, atol=15 * np.diag(cov).max() / math.sqrt(n))
    assert kde.resample(seed=1).shape == (2, int(kde.neff))
    kt = GaussianKDE(torch.from_numpy(data), min_neff=None)
    out = kt.logpdf(torch.from_numpy(data[:, :5]))
    assert isinstance(out, torch.Tensor) and isinstance(kt.resample(4, seed=0), torch.Tensor)
    np.testing.assert_allclose(out.numpy(), stats.gaussian_kde(data).logpdf(data[:, :5]), rtol=RTOL_SCIPY)
    pts = torch.from_numpy(data[:, :3] + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: kt.logpdf(p), (pts,))


def test_gaussian_kde_errors_and_warning():
    with pytest.raises(
        ValueError, match=r"Number of dimensions is greater than number of samples in `dataset` \(d=3 > n=2\)"
    ):
        GaussianKDE(np.ones((3, 2)))
    with pytest.raises(np.linalg.LinAlgError, match="lower-dimensional subspace"):
        GaussianKDE(np.vstack([np.arange(5.0), np.arange(5.0)]))
    kde = GaussianKDE(np.random.RandomState(0).standard_normal((2, 50)))
    with pytest.raises(ValueError, match="points have dimension 3, dataset has dimension 2"):
        kde.logpdf(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="bw_method"):
        kde.set_bandwidth("bogus")
    with pytest.raises(ValueError, match="weights: should be of length n=50"):
        GaussianKDE(np.zeros((2, 50)) + np.arange(50), weights=np.ones(3))
    rng = np.random.RandomState(0)
    hd = GaussianKDE(rng.standard_normal((64, 500)), min_neff=2.0)  # opt-in under the scipy API
    with pytest.warns(FewPointsWarning):
        hd.logpdf(rng.standard_normal((64, 50)))
    assert np.median(hd.n_eff_) < 2
