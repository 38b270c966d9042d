"""KernelDensity as a scikit-learn estimator: check_estimator, sklearn's parameters and validation,
metrics, sampling conventions, pipelines, pandas; and the cases where scikit-learn is wrong and we
stay exact (brute-force float64 references, not scikit-learn's numbers).

scikit-learn's own test module runs against this class in tests/test_peer_suites.py.
"""

import math
import pickle
import warnings

import numpy as np
import pytest
import torch

sklearn = pytest.importorskip("sklearn")
from kernelfuse.kde import KernelDensity, UnnormalisedDensityWarning, log_kernel_normaliser  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.neighbors import KernelDensity as SkKernelDensity  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

SK_PARAMS = [
    "bandwidth",
    "algorithm",
    "kernel",
    "metric",
    "atol",
    "rtol",
    "breadth_first",
    "leaf_size",
    "metric_params",
]


@parametrize_with_checks(
    [
        KernelDensity(),
        KernelDensity(kernel="epanechnikov", bandwidth="scott"),
        KernelDensity(kernel="exponential", metric="manhattan", bandwidth=2.0),
    ]
)
def test_sklearn_check_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnnormalisedDensityWarning)
        check(estimator)


def test_every_sklearn_parameter_is_accepted_with_its_default():
    ours, theirs = KernelDensity().get_params(), SkKernelDensity().get_params()
    for name in SK_PARAMS:
        assert ours[name] == theirs[name], name


def test_tree_options_do_not_change_the_result():
    rng = np.random.RandomState(0)
    X, Y = rng.randn(200, 3), rng.randn(50, 3)
    ref = KernelDensity(bandwidth=0.4).fit(X).score_samples(Y)
    for kw in [
        dict(atol=1e-2),
        dict(rtol=1e-3),
        dict(breadth_first=False),
        dict(leaf_size=1),
        dict(algorithm="kd_tree"),
        dict(algorithm="ball_tree"),
        dict(metric="minkowski"),
        dict(metric="l2"),
        dict(metric="minkowski", metric_params={"p": 2}),
    ]:
        np.testing.assert_array_equal(KernelDensity(bandwidth=0.4, **kw).fit(X).score_samples(Y), ref)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(algorithm="octree"), "algorithm"),
        (dict(metric="nope"), "metric"),
        (dict(metric="mahalanobis"), "metric: 'mahalanobis' is a scikit-learn BallTree metric"),
        (dict(metric="haversine", algorithm="kd_tree"), "invalid metric"),
        (dict(metric="minkowski", metric_params={"p": 0.5}), "metric_params: 'p'"),
        (dict(metric="manhattan", metric_params={"w": 1}), "metric_params: unsupported keys"),
        (dict(atol=-1.0), "atol"),
        (dict(leaf_size=0), "leaf_size"),
        (dict(breadth_first="yes"), "breadth_first"),
    ],
)
def test_bad_parameters_name_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        KernelDensity(**kw).fit(np.zeros((3, 2)))


def test_haversine_needs_two_features():
    with pytest.raises(ValueError, match="haversine.*2 features"):
        KernelDensity(metric="haversine").fit(np.zeros((3, 3)))


def test_input_validation_as_sklearn():
    X = np.random.RandomState(0).randn(20, 2)
    with pytest.raises(ValueError, match="[Cc]omplex"):
        KernelDensity().fit(X + 1j)
    sp = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="[Ss]parse data was passed"):
        KernelDensity().fit(sp.csr_matrix(X))
    obj = X.astype(object)
    np.testing.assert_allclose(KernelDensity().fit(obj).score_samples(obj), KernelDensity().fit(X).score_samples(X))
    kde = KernelDensity().fit(X.tolist())
    assert kde.n_features_in_ == 2 and not hasattr(kde, "feature_names_in_")


def test_pandas_input_sets_feature_names():
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(1)
    df = pd.DataFrame(rng.randn(30, 3), columns=["a", "b", "c"])
    kde = KernelDensity(bandwidth=0.5).fit(df)
    np.testing.assert_array_equal(kde.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_allclose(
        kde.score_samples(df), KernelDensity(bandwidth=0.5).fit(df.values).score_samples(df.values)
    )
    with pytest.raises(ValueError, match="feature names"):
        kde.score_samples(df.rename(columns={"a": "z"}))
    w = pd.Series(rng.rand(30))
    np.testing.assert_allclose(
        KernelDensity().fit(df, sample_weight=w).score_samples(df),
        SkKernelDensity().fit(df, sample_weight=w).score_samples(df),
        rtol=1e-12,
    )


def test_clone_pickle_gridsearch_pipeline():
    rng = np.random.RandomState(2)
    X = np.concatenate([rng.randn(60, 2), rng.randn(60, 2) + 4])
    kde = KernelDensity(bandwidth=0.3, kernel="epanechnikov", metric="euclidean", leaf_size=7)
    c = clone(kde)
    assert c.get_params() == kde.get_params()
    kde.fit(X)
    again = pickle.loads(pickle.dumps(kde))
    np.testing.assert_array_equal(again.score_samples(X), kde.score_samples(X))
    pipe = make_pipeline(StandardScaler(), KernelDensity())
    grid = GridSearchCV(pipe, {"kerneldensity__bandwidth": [0.05, 0.2, 0.5, 2.0]}, cv=3).fit(X)
    sk = GridSearchCV(
        make_pipeline(StandardScaler(), SkKernelDensity(rtol=0, atol=0)),
        {"kerneldensity__bandwidth": [0.05, 0.2, 0.5, 2.0]},
        cv=3,
    ).fit(X)
    assert grid.best_params_ == sk.best_params_
    np.testing.assert_allclose(grid.cv_results_["mean_test_score"], sk.cv_results_["mean_test_score"], rtol=1e-10)


# ------------------------------------------------------------------------------ sampling
def test_gaussian_samples_are_sklearns_draws():
    rng = np.random.RandomState(3)
    X, w = rng.randn(40, 3), rng.rand(40)
    for sw in (None, w):
        ours = KernelDensity(bandwidth=0.3).fit(X, sample_weight=sw).sample(25, random_state=7)
        theirs = SkKernelDensity(bandwidth=0.3).fit(X, sample_weight=sw).sample(25, random_state=7)
        np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kernel", ["gaussian", "tophat", "epanechnikov", "cosine"])
def test_sample_weights_conventions(kernel):
    rng = np.random.RandomState(4)
    X = rng.rand(50, 2)
    reps = 1 + (10 * X.sum(1)).astype(int)
    kde = KernelDensity(bandwidth=0.2, kernel=kernel)
    a = kde.fit(X, sample_weight=np.full(50, 3.0)).sample(30, random_state=11)
    b = kde.fit(X).sample(30, random_state=11)
    np.testing.assert_array_equal(a, b)
    c = kde.fit(X, sample_weight=reps).sample(30, random_state=11)
    d = kde.fit(np.repeat(X, reps, axis=0)).sample(30, random_state=11)
    np.testing.assert_array_equal(c, d)


def test_zero_weight_rows_are_never_sampled():
    X = np.arange(6.0)[:, None] * 100
    w = np.array([0.0, 1.0, 0.0, 0.0, 2.0, 0.0])
    s = KernelDensity(bandwidth=1.0, kernel="tophat").fit(X, sample_weight=w).sample(4000, random_state=0)
    centres = np.round(s[:, 0] / 100)
    assert set(np.unique(centres)) == {1.0, 4.0}
    assert abs(np.mean(centres == 4.0) - 2 / 3) < 0.03


def test_tophat_samples_fill_the_ball():
    X = np.zeros((1, 3))
    s = KernelDensity(bandwidth=2.0, kernel="tophat").fit(X).sample(20000, random_state=0)
    r = np.sqrt((s**2).sum(1)) / 2.0
    assert r.max() < 1.0
    # the radius of a uniform point in the 3-ball has CDF r^3
    for q in (0.25, 0.5, 0.75):
        assert abs(np.mean(r**3 < q) - q) < 0.015


# ------------------------------------------------------------------------------ metrics
def _brute(X, Y, kernel, h, dist):
    D = dist(Y[:, None, :] - X[None, :, :]) / h
    k = {
        "gaussian": -0.5 * D**2,
        "exponential": -D,
        "tophat": np.where(D < 1, 0.0, -np.inf),
        "epanechnikov": np.log(np.clip(1 - D**2, 0, None)),
    }[kernel]
    return (
        logsumexp(k, axis=1) - np.log(X.shape[0]) - log_kernel_normaliser(kernel, X.shape[1]) - X.shape[1] * np.log(h)
    )


METRICS = {
    "manhattan": (dict(metric="manhattan"), lambda u: np.abs(u).sum(-1), lambda d: 2.0**d / math.factorial(d)),
    "chebyshev": (dict(metric="chebyshev"), lambda u: np.abs(u).max(-1), lambda d: 2.0**d),
    "minkowski3": (
        dict(metric="minkowski", metric_params={"p": 3}),
        lambda u: (np.abs(u) ** 3).sum(-1) ** (1 / 3),
        lambda d: (2 * math.gamma(1 + 1 / 3)) ** d / math.gamma(1 + d / 3),
    ),
}


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize("kernel", ["gaussian", "exponential", "epanechnikov"])
def test_metrics_match_sklearn_and_brute_force(name, kernel):
    kw, dist, vol = METRICS[name]
    rng = np.random.RandomState(5)
    X, Y = rng.randn(97, 3), rng.randn(31, 3)
    with pytest.warns(UnnormalisedDensityWarning, match=f"metric='{kw['metric']}'"):
        kde = KernelDensity(bandwidth=1.3, kernel=kernel, **kw).fit(X)
    ours = kde.score_samples(Y)
    ref = _brute(X, Y, kernel, 1.3, dist)
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    theirs = SkKernelDensity(bandwidth=1.3, kernel=kernel, rtol=0, atol=0, **kw).fit(X).score_samples(Y)
    f = np.isfinite(ours)  # where no point is within h, sklearn may return a rounding residue (about -38)
    np.testing.assert_allclose(ours[f], theirs[f], rtol=1e-8)
    assert np.all(~np.isfinite(theirs[~f]) | (theirs[~f] < -30))
    d = 3
    unit_ball = math.pi**1.5 / math.gamma(2.5)
    assert kde.density_integral_ == pytest.approx(vol(d) / unit_ball, rel=1e-12)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_density_integral_of_other_metrics(name):
    """exp(score_samples) integrates to density_integral_ (d = 2, Gauss-Legendre on a box)."""
    kw, _, _ = METRICS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnnormalisedDensityWarning)
        kde = KernelDensity(bandwidth=0.5, kernel="epanechnikov", **kw).fit(np.array([[0.1, -0.2], [0.4, 0.3]]))
    # the support lies within [-1, 1.5]^2; integrate piecewise on a fine grid of Gauss-Legendre cells
    t, wt = np.polynomial.legendre.leggauss(8)
    edges = np.linspace(-1.0, 1.5, 101)
    a, b = edges[:-1], edges[1:]
    nodes = ((b - a)[:, None] * (t + 1) / 2 + a[:, None]).ravel()
    weights = ((b - a)[:, None] * wt / 2).ravel()
    gx, gy = np.meshgrid(nodes, nodes, indexing="ij")
    p = np.exp(kde.score_samples(np.stack([gx.ravel(), gy.ravel()], 1)))
    total = (p * np.outer(weights, weights).ravel()).sum()
    assert total == pytest.approx(kde.density_integral_, rel=2e-3)


def test_haversine_matches_sklearn():
    rng = np.random.RandomState(6)
    X = np.stack([rng.uniform(-1.2, 1.2, 80), rng.uniform(-3, 3, 80)], 1)
    Y = np.stack([rng.uniform(-1.2, 1.2, 20), rng.uniform(-3, 3, 20)], 1)
    with pytest.warns(UnnormalisedDensityWarning):
        ours = KernelDensity(bandwidth=0.3, metric="haversine").fit(X).score_samples(Y)
    theirs = SkKernelDensity(bandwidth=0.3, metric="haversine", rtol=0, atol=0).fit(X).score_samples(Y)
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)


# ------------------------------------------------------------------------------ where sklearn is wrong
def test_compact_kernels_give_zero_density_where_no_point_is_within_h():
    """Standardised wine, h = 1.7: scikit-learn returns finite log-densities (about -41) at queries
    with no training point within h for epanechnikov and linear; the density there is 0."""
    from sklearn.datasets import load_wine

    X = StandardScaler().fit_transform(load_wine().data)
    idx = np.random.RandomState(0).permutation(len(X))
    tr, te = X[idx[:120]], X[idx[120:]]
    empty = (np.sqrt(((te[:, None] - tr[None]) ** 2).sum(-1)) < 1.7).sum(1) == 0
    assert empty.sum() > 10
    for kernel in ("tophat", "epanechnikov", "linear", "cosine"):
        out = KernelDensity(kernel=kernel, bandwidth=1.7, min_neff=None).fit(tr).score_samples(te)
        assert np.all(out[empty] == -np.inf), kernel
        assert np.all(np.isfinite(out[~empty])), kernel


@pytest.mark.parametrize("h", [1.0, 3.0])
def test_gaussian_digits_small_bandwidth_exact(h):
    """Raw digits (d = 64): scikit-learn's tree returns -95.8 where the exact log-density is -645.2
    (h = 1; 20.6 off at h = 3). Ours equals the float64 brute force."""
    from sklearn.datasets import load_digits

    X = load_digits().data
    tr, te = X[:1500], X[1500:1700]
    D2 = ((te[:, None] - tr[None]) ** 2).sum(-1)
    ref = logsumexp(-0.5 * D2 / h**2, axis=1) - np.log(len(tr)) - log_kernel_normaliser("gaussian", 64) - 64 * np.log(h)
    out = KernelDensity(bandwidth=h, min_neff=None).fit(tr).score_samples(te)
    np.testing.assert_allclose(out, ref, rtol=1e-12)


@pytest.mark.parametrize("kernel", ["tophat", "epanechnikov", "linear", "cosine"])
@pytest.mark.parametrize("h", [44.9, 45.0, 45.1])
def test_digits_support_boundary_is_sklearns_strict_rule(kernel, h):
    """Integer pixels: many pairs sit at distance exactly 45; the support is |x - y| < h, decided exactly."""
    from sklearn.datasets import load_digits

    X = load_digits().data
    tr, te = X[:1200], X[1200:1500]
    D2 = ((te[:, None] - tr[None]) ** 2).sum(-1)  # exact integers
    if h == 45.0:
        assert (D2 == 2025).sum() > 100
    r = np.sqrt(D2) / h
    inside = D2 < h * h
    prof = {"tophat": np.ones_like(r), "epanechnikov": 1 - r**2, "linear": 1 - r, "cosine": np.cos(0.5 * np.pi * r)}[
        kernel
    ]
    with np.errstate(divide="ignore"):
        ref = (
            logsumexp(np.where(inside, np.log(np.where(inside, prof, 1.0)), -np.inf), axis=1)
            - np.log(len(tr))
            - log_kernel_normaliser(kernel, 64)
            - 64 * np.log(h)
        )
    out = KernelDensity(bandwidth=h, kernel=kernel, min_neff=None).fit(tr).score_samples(te)
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(ref))
    f = np.isfinite(ref)
    np.testing.assert_allclose(out[f], ref[f], rtol=1e-10)
    out32 = KernelDensity(bandwidth=h, kernel=kernel, min_neff=None, dtype=torch.float32).fit(tr).score_samples(te)
    np.testing.assert_array_equal(np.isfinite(out32), np.isfinite(ref))
