"""Tests of the kernelfuse.kde estimators, KernelDensity: the normalisers against quadrature, the
fitted density integrating to one, the effective number of contributing points, sampling laws.
Agreement with scikit-learn and the API: tests/test_kde_models_sklearn.py; GaussianKDE vs scipy:
tests/test_kde_models_scipy.py.

Exactness tests run in float64. scikit-learn and scipy are test dependencies only.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from kernelfuse.kde import FewPointsWarning, KernelDensity, log_kernel_normaliser

sklearn = pytest.importorskip("sklearn")
scipy = pytest.importorskip("scipy")
from kde_models_common import COMPACT, DENSITY_KERNELS, quiet_fit  # noqa: E402
from scipy import integrate, special, stats  # noqa: E402


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
