"""Tests of the kernelfuse.kde estimators: GaussianKDE against scipy.stats.gaussian_kde (bandwidth
rules, weights, correlated and 13-d data, marginals, resampling moments, torch input, errors).

Exactness tests run in float64. scikit-learn and scipy are test dependencies only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from kernelfuse.kde import FewPointsWarning, GaussianKDE

sklearn = pytest.importorskip("sklearn")
scipy = pytest.importorskip("scipy")
from kde_models_common import _cached, real_datasets  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn import datasets  # noqa: E402

RTOL_SCIPY = 1e-8


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
