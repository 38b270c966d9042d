"""GaussianKDE as a drop-in for scipy.stats.gaussian_kde: integrals, subclassing hooks, dtypes, dataset reassignment.

scipy's own test module runs against GaussianKDE in tests/test_peer_suites.py; these tests pin each
behaviour against scipy.stats.gaussian_kde (or closed forms / quadrature) in float64.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from kernelfuse.kde import FewPointsWarning, GaussianKDE

scipy = pytest.importorskip("scipy")
from scipy import stats  # noqa: E402

RTOL = 1e-10


def _gauss_legendre(lo, hi, panels=200, order=20):
    """Nodes and weights of a composite Gauss-Legendre rule on [lo, hi] (smooth integrands: ~1e-14)."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(lo, hi, panels + 1)
    half = 0.5 * np.diff(edges)[:, None]
    mid = 0.5 * (edges[1:] + edges[:-1])[:, None]
    return (mid + half * x).ravel(), (half * w).ravel()


def _cases():
    rng = np.random.RandomState(3)
    x1 = np.concatenate([rng.standard_normal(60), 3 + 0.5 * rng.standard_normal(40)])
    corr = rng.multivariate_normal([0.0, 1.0], [[1.0, 0.8], [0.8, 2.0]], size=150).T
    d3 = rng.multivariate_normal([0.0, 1.0, -1.0], [[1.0, 0.5, 0.2], [0.5, 2.0, -0.3], [0.2, -0.3, 1.5]], size=80).T
    return {
        "1d": (x1, None),
        "1d_weighted": (x1, rng.uniform(0.0, 2.0, size=x1.size)),
        "2d_corr": (corr, None),
        "2d_weighted": (corr, rng.uniform(0.1, 1.0, size=corr.shape[1])),
        "3d_weighted": (d3, rng.uniform(0.1, 1.0, size=d3.shape[1])),
    }


CASES = _cases()


def _pair(case, **kw):
    data, w = CASES[case]
    return GaussianKDE(data, weights=w, min_neff=None, **kw), stats.gaussian_kde(data, weights=w)


# ----------------------------------------------------------------------------------------------
# integrals
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["1d", "1d_weighted"])
def test_integrate_box_1d_matches_scipy_and_tails(case):
    ours, ref = _pair(case)
    for lo, hi in [(-1.0, 0.5), (-np.inf, 0.3), (2.0, np.inf), (-np.inf, np.inf), (0.5, -1.0), (1.0, 1.0)]:
        got = ours.integrate_box_1d(lo, hi)
        assert isinstance(got, np.float64)
        np.testing.assert_allclose(got, ref.integrate_box_1d(lo, hi), rtol=RTOL, atol=1e-15)
        np.testing.assert_allclose(ours.integrate_box(lo, hi), got, rtol=1e-14, atol=1e-16)
        np.testing.assert_allclose(ours.integrate_box([lo], [hi], maxpts=10, rng=0), got, rtol=1e-14, atol=1e-16)
    assert ours.integrate_box_1d(-np.inf, np.inf) == pytest.approx(1.0, rel=1e-14)
    assert ours.integrate_box_1d(1.0, 1.0) == 0.0
    assert ours.integrate_box_1d(0.5, -1.0) == pytest.approx(-ours.integrate_box_1d(-1.0, 0.5), rel=1e-14)
    # Far tails, where ndtr(b) - ndtr(a) cancels: the upper tail keeps full relative accuracy.
    x = ours.dataset[0]
    sd = math.sqrt(ours.covariance[0, 0])
    w = ours.weights
    for lo, hi in [(x.max() + 12 * sd, x.max() + 13 * sd), (x.min() - 30 * sd, x.min() - 25 * sd)]:
        a, b = (lo - x) / sd, (hi - x) / sd
        exact = np.sum(w * np.where(a > 0, stats.norm.sf(a) - stats.norm.sf(b), stats.norm.cdf(b) - stats.norm.cdf(a)))
        assert exact > 0
        np.testing.assert_allclose(ours.integrate_box_1d(lo, hi), exact, rtol=1e-12)


@pytest.mark.parametrize("case", ["2d_corr", "2d_weighted"])
def test_integrate_box_2d_exact_matches_scipy(case):
    ours, ref = _pair(case)
    for lo, hi in [
        ([-1.0, 0.0], [0.5, 2.0]),
        ([-np.inf, -np.inf], [0.0, 1.0]),
        ([0.0, -1e100], [1e100, 1e100]),
        ([-np.inf, -np.inf], [np.inf, np.inf]),
    ]:
        np.testing.assert_allclose(ours.integrate_box(lo, hi), ref.integrate_box(lo, hi), rtol=RTOL, atol=1e-15)
    assert ours.integrate_box([-np.inf] * 2, [np.inf] * 2) == pytest.approx(1.0, rel=1e-13)
    # independently: the box probability is the 2-D integral of the density
    lo, hi = np.array([-0.5, 0.5]), np.array([0.7, 1.5])
    (x, wx), (y, wy) = _gauss_legendre(lo[0], hi[0], 12), _gauss_legendre(lo[1], hi[1], 12)
    gx, gy = np.meshgrid(x, y, indexing="ij")
    quad = ours.evaluate(np.vstack([gx.ravel(), gy.ravel()])) @ np.outer(wx, wy).ravel()
    np.testing.assert_allclose(ours.integrate_box(lo, hi), quad, rtol=1e-10)


def test_integrate_box_3d_qmc_same_stream_as_scipy():
    ours, ref = _pair("3d_weighted")
    lo, hi = [-1.0, 0.0, -np.inf], [1.0, 2.0, 0.0]
    got = ours.integrate_box(lo, hi, rng=np.random.default_rng(7))
    np.testing.assert_allclose(got, ref.integrate_box(lo, hi, rng=np.random.default_rng(7)), rtol=1e-10)
    # reproducible with a seed; within the QMC tolerance of an independent estimate
    assert ours.integrate_box(lo, hi, rng=np.random.default_rng(7)) == got
    other = ours.integrate_box(lo, hi, rng=np.random.default_rng(8))
    assert abs(other - got) < 1e-4
    # the whole space: each term is 1 (QMC), so the sum of weights is 1
    assert ours.integrate_box([-np.inf] * 3, [np.inf] * 3, rng=0) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_integrate_gaussian_and_kde_match_scipy(case):
    ours, ref = _pair(case)
    d = ours.d
    rng = np.random.RandomState(11)
    mean = rng.standard_normal(d)
    a = rng.standard_normal((d, d))
    cov = a @ a.T + 0.5 * np.eye(d)
    got = ours.integrate_gaussian(mean, cov)
    assert isinstance(got, np.float64)
    np.testing.assert_allclose(got, ref.integrate_gaussian(mean, cov), rtol=RTOL)
    np.testing.assert_allclose(ours.integrate_kde(ours), ref.integrate_kde(ref), rtol=RTOL)
    np.testing.assert_allclose(ours.integrate_kde(ref), ref.integrate_kde(ref), rtol=RTOL)  # scipy object as other
    # different sizes, weights and bandwidths on both sides (either one the smaller set)
    data2 = rng.standard_normal((d, 37)) * 1.5 + 0.3
    w2 = rng.uniform(0.2, 1.0, size=37)
    ours2 = GaussianKDE(data2, bw_method=0.6, weights=w2, min_neff=None)
    ref2 = stats.gaussian_kde(data2, bw_method=0.6, weights=w2)
    np.testing.assert_allclose(ours.integrate_kde(ours2), ref.integrate_kde(ref2), rtol=RTOL)
    np.testing.assert_allclose(ours2.integrate_kde(ours), ref.integrate_kde(ref2), rtol=RTOL)


def test_integrals_1d_against_quadrature():
    ours, _ = _pair("1d_weighted")
    x, w = _gauss_legendre(-20.0, 25.0)
    p = ours.evaluate(x)
    np.testing.assert_allclose(ours.integrate_gaussian(0.7, 1.3**2), p @ (w * stats.norm.pdf(x, 0.7, 1.3)), rtol=1e-11)
    np.testing.assert_allclose(ours.integrate_kde(ours), (p * p) @ w, rtol=1e-11)
    xb, wb = _gauss_legendre(-0.3, 2.2)
    np.testing.assert_allclose(ours.integrate_box_1d(-0.3, 2.2), ours.evaluate(xb) @ wb, rtol=1e-11)


def test_integrals_torch_and_errors():
    data, w = CASES["2d_weighted"]
    ours = GaussianKDE(data, weights=w, min_neff=None)
    kt = GaussianKDE(torch.from_numpy(data), weights=torch.from_numpy(w), min_neff=None)
    for fn, args in [
        ("integrate_gaussian", ([0.0, 1.0], np.eye(2))),
        ("integrate_kde", (ours,)),
        ("integrate_box", ([-1.0, 0.0], [0.5, 2.0])),
    ]:
        t = getattr(kt, fn)(*args)
        assert isinstance(t, torch.Tensor) and t.dim() == 0 and t.dtype == torch.float64
        np.testing.assert_allclose(float(t), getattr(ours, fn)(*args), rtol=1e-12)
    with pytest.raises(ValueError, match="integrate_box_1d: only handles 1-D"):
        ours.integrate_box_1d(0, 1)
    with pytest.raises(ValueError, match="mean: should have dimension 2"):
        ours.integrate_gaussian([0.0, 1.0, 2.0], np.eye(2))
    with pytest.raises(ValueError, match="cov: covariance should have dimension 2"):
        ours.integrate_gaussian([0.0, 1.0], np.eye(3))
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        ours.integrate_gaussian([0.0, 1.0], -10 * np.eye(2))
    with pytest.raises(ValueError, match="not the same dimensionality"):
        ours.integrate_kde(GaussianKDE(CASES["1d"][0]))
    with pytest.raises(ValueError, match="low_bounds, high_bounds: should have dimension 2"):
        ours.integrate_box([0.0, 1.0, 2.0], [1.0, 2.0])


# ----------------------------------------------------------------------------------------------
# subclassing and the covariance hooks
# ----------------------------------------------------------------------------------------------
class _HalfSilverman(GaussianKDE):
    def covariance_factor(self):
        return 0.5 * self.silverman_factor()


class _RefHalfSilverman(stats.gaussian_kde):
    def covariance_factor(self):
        return 0.5 * self.silverman_factor()


class _NoInit(GaussianKDE):
    def __init__(self, dataset):  # scipy's old idiom: no super().__init__
        self.dataset = np.atleast_2d(dataset)
        self.d, self.n = self.dataset.shape
        self.covariance_factor = self.scotts_factor
        self._compute_covariance()


class _PresetFactor(GaussianKDE):
    def __init__(self, dataset):
        self.covariance_factor = self.silverman_factor
        super().__init__(dataset)


@pytest.mark.parametrize("case", ["1d", "2d_weighted"])
def test_subclass_covariance_factor_is_honoured(case):
    data, w = CASES[case]
    pts = np.atleast_2d(data)[:, ::7] + 0.05
    ours = _HalfSilverman(data, weights=w, min_neff=None)
    ref = _RefHalfSilverman(data, weights=w)
    assert ours.factor == pytest.approx(0.5 * ours.silverman_factor(), rel=1e-15)
    assert ours.factor == pytest.approx(ref.factor, rel=1e-14)
    np.testing.assert_allclose(ours.covariance, ref.covariance, rtol=1e-12)
    np.testing.assert_allclose(ours.logpdf(pts), ref.logpdf(pts), rtol=RTOL)
    # an explicit rule replaces the override on the instance (scipy's set_bandwidth); None keeps it
    ours.set_bandwidth()
    assert ours.factor == pytest.approx(0.5 * ours.silverman_factor(), rel=1e-15)
    ours.set_bandwidth("scott")
    assert ours.factor == pytest.approx(ours.scotts_factor(), rel=1e-15)
    # the marginal keeps the factor in use
    assert _HalfSilverman(data, weights=w).marginal([0]).factor == pytest.approx(ref.factor, rel=1e-14)


def test_subclass_idioms_and_monkeypatch():
    x = CASES["1d"][0]
    xs = np.linspace(-4, 6, 41)
    base = GaussianKDE(x, min_neff=None)
    np.testing.assert_allclose(_NoInit(x)(xs), base(xs), rtol=1e-14)
    assert _NoInit(x).neff == pytest.approx(x.size) and _NoInit(x).weights.shape == (x.size,)
    np.testing.assert_allclose(_PresetFactor(x)(xs), GaussianKDE(x, bw_method="silverman")(xs), rtol=1e-14)
    k = GaussianKDE(x, min_neff=None)
    k.covariance_factor = k.silverman_factor
    k._compute_covariance()
    np.testing.assert_allclose(k(xs), GaussianKDE(x, bw_method="silverman")(xs), rtol=1e-14)
    k.covariance_factor = lambda: 0.25
    k._compute_covariance()
    assert k.factor == 0.25
    np.testing.assert_allclose(k.logpdf(xs), stats.gaussian_kde(x, bw_method=0.25).logpdf(xs), rtol=RTOL)


# ----------------------------------------------------------------------------------------------
# dataset reassignment
# ----------------------------------------------------------------------------------------------
def test_dataset_reassignment():
    rng = np.random.RandomState(5)
    a, b, c = rng.standard_normal((2, 50)), rng.standard_normal((2, 50)) * 2 + 1, rng.standard_normal((2, 80))
    pts = rng.standard_normal((2, 9))
    k = GaussianKDE(a, min_neff=None)
    k.dataset = b
    assert k.dataset is b and (k.d, k.n) == (2, 50)
    k.set_bandwidth()
    fresh = GaussianKDE(b, min_neff=None)
    for attr in ("factor", "neff", "log_det"):
        assert getattr(k, attr) == pytest.approx(getattr(fresh, attr), rel=1e-14)
    np.testing.assert_allclose(k.covariance, fresh.covariance, rtol=1e-14)
    np.testing.assert_allclose(k.logpdf(pts), fresh.logpdf(pts), rtol=1e-14)
    np.testing.assert_allclose(
        k.integrate_gaussian([0, 0], np.eye(2)), fresh.integrate_gaussian([0, 0], np.eye(2)), rtol=1e-14
    )
    # unweighted: another size is fine (uniform weights rebuilt)
    k.dataset = c
    k._compute_covariance()
    assert k.n == 80 and k.weights.shape == (80,) and k.neff == pytest.approx(80)
    np.testing.assert_allclose(k.logpdf(pts), stats.gaussian_kde(c).logpdf(pts), rtol=RTOL)
    # weighted: the weights stay with a dataset of the same size; another size is an error
    w = rng.uniform(0.1, 1, 50)
    kw = GaussianKDE(a, weights=w, min_neff=None)
    kw.dataset = b
    kw.set_bandwidth("silverman")
    np.testing.assert_allclose(kw.logpdf(pts), stats.gaussian_kde(b, "silverman", weights=w).logpdf(pts), rtol=RTOL)
    with pytest.raises(ValueError, match="dataset: the new dataset has n=80 points but the weights have length 50"):
        kw.dataset = c
    # torch data
    kt = GaussianKDE(torch.from_numpy(a), min_neff=None)
    kt.dataset = torch.from_numpy(b)
    kt.set_bandwidth()
    out = kt.logpdf(torch.from_numpy(pts))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), fresh.logpdf(pts), rtol=1e-14)


# ----------------------------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64", "longdouble", "int32", "int64"])
@pytest.mark.parametrize("pdtype", ["float32", "float64", "longdouble", "int64"])
def test_output_dtype_is_scipys(dtype, pdtype):
    dtype, pdtype = np.dtype(dtype), np.dtype(pdtype)
    data = np.array([0, 1, 2, 4, 7, 8, 9], dtype=dtype)
    pts = np.array([0, 3, 5, 8], dtype=pdtype)
    w = np.arange(1, 8)
    ours = GaussianKDE(data, weights=w)
    ref = stats.gaussian_kde(data, weights=w)
    for meth in ("evaluate", "pdf", "logpdf", "__call__"):
        got, exp = getattr(ours, meth)(pts), getattr(ref, meth)(pts)
        assert got.dtype == exp.dtype == np.result_type(data, pts, np.float64)
        np.testing.assert_allclose(got.astype(np.float64), exp.astype(np.float64), rtol=RTOL)
    assert ours.dataset.dtype == dtype  # kept as given, as scipy
    assert ours.resample(3, seed=0).dtype == ref.resample(3, seed=0).dtype == np.result_type(data, np.float64)
    np.testing.assert_allclose(ours.marginal(0).logpdf(pts), ref.marginal(0).logpdf(pts), rtol=RTOL)
    assert ours.marginal(0).logpdf(pts).dtype == np.result_type(data, pts, np.float64)


def test_explicit_compute_dtype_kept():
    data = np.random.RandomState(0).standard_normal(40)
    k = GaussianKDE(data, dtype=torch.float32, min_neff=None)
    out = k.logpdf(np.linspace(-1, 1, 5))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, stats.gaussian_kde(data).logpdf(np.linspace(-1, 1, 5)), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# messages scipy's callers match, and the FewPointsWarning policy
# ----------------------------------------------------------------------------------------------
def test_messages_and_marginal_validation():
    k = GaussianKDE(np.random.RandomState(0).standard_normal((4, 30)))
    with pytest.raises(ValueError, match="points have dimension 3, dataset has dimension 4"):
        k.logpdf(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="Number of dimensions is greater than number of samples"):
        GaussianKDE(np.ones((5, 3)))
    with pytest.raises(np.linalg.LinAlgError, match="The data appears to lie in a lower-dimensional subspace"):
        GaussianKDE(np.vstack([np.arange(6.0), 2 * np.arange(6.0)]))
    with pytest.raises(ValueError, match="Elements of `dimensions` must be integers"):
        k.marginal([1, 2.5])
    with pytest.raises(ValueError, match="All elements of `dimensions` must be unique"):
        k.marginal([1, -3])
    with pytest.raises(ValueError, match=r"Dimensions \[-5  6\] are invalid for a distribution in 4 dimensions"):
        k.marginal([1, -5, 6])


def test_few_points_warning_opt_in_once_per_bandwidth():
    rng = np.random.RandomState(0)
    hd = GaussianKDE(rng.standard_normal((20, 60)), min_neff=2.0)
    q = rng.standard_normal((20, 5))
    with pytest.warns(FewPointsWarning) as rec:
        hd.logpdf(q)
        hd.evaluate(q)
        for j in range(5):
            hd(q[:, j])
    assert len([r for r in rec if r.category is FewPointsWarning]) == 1
    assert rec[0].filename == __file__  # points at the caller
    hd.set_bandwidth(0.9 * hd.factor)  # a new bandwidth re-arms it
    with pytest.warns(FewPointsWarning):
        hd.logpdf(q)
    # off by default (scipy emits no such warning), n_eff_ still set; marginals inherit the setting
    quiet = GaussianKDE(rng.standard_normal((20, 60)))
    assert quiet.min_neff is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.logpdf(q)
        GaussianKDE(rng.standard_normal(500))(np.linspace(-7, 7, 101))  # a 1-D grid far into the tails
    assert np.median(quiet.n_eff_) < 2
    assert hd.marginal(list(range(19))).min_neff == 2.0
