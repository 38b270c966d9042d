"""Tests of the kernelfuse.kde estimators: KernelDensity against scikit-learn on real data (every
kernel, sample weights, the cosine normaliser where scikit-learn is right and where it is not, the
bandwidth rules), and its API: numpy / torch in and out, float32, gradients, get / set_params and
GridSearchCV, validation messages.

Exactness tests run in float64. scikit-learn and scipy are test dependencies only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kernelfuse.kde import KernelDensity, NotFittedError, log_kernel_normaliser

sklearn = pytest.importorskip("sklearn")
scipy = pytest.importorskip("scipy")
from kde_models_common import COMPACT, DENSITY_KERNELS, quiet_fit, real_datasets  # noqa: E402
from sklearn.neighbors import KernelDensity as SkKernelDensity  # noqa: E402

SK_KERNELS = ("gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine")
RTOL_SKLEARN = 1e-6


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
