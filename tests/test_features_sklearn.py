"""scikit-learn transformers on the fused random-feature ops: kernelfuse.features.RBFSampler and
RandomFeaturesTransformer. check_estimator (parametrize_with_checks) on a set of configurations,
check_param_validation, identity with sklearn's RBFSampler, the plain numpy formula on our own
fitted parameters, CSR = dense (both sparse paths), dtypes, clone / pickle, random_state, kernel
accuracy at 4,096 components, Pipeline + GridSearchCV, bad parameters, import without sklearn."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

sklearn = pytest.importorskip("sklearn")

import kernelfuse  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from kernelfuse.features import RandomFeaturesTransformer, RBFSampler, exact_kernel  # noqa: E402
from kernelfuse.features import _sklearn as kfsk  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.kernel_approximation import RBFSampler as SkRBFSampler  # noqa: E402
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks  # noqa: E402

T = RandomFeaturesTransformer

ESTIMATORS = [
    RBFSampler(),
    RBFSampler(gamma="scale", n_components=20),
    T(),
    T(kernel="laplacian", gamma=0.5),
    T(kernel="cauchy", pairs=True),
    T(method="orf", pairs=True),
    T(method="sorf", n_components=37),
    T(method="fastfood", gamma="scale"),
    T(kernel="arccos0", method="sorf"),
    T(kernel="arccos1", method="orf"),
    T(kernel="softmax", gamma="scale"),
    T(kernel="softmax", method="fastfood", gamma=0.1),
]

# (kernel, method, pairs) for the per-configuration tests
CONFIGS = [
    ("rbf", "rff", False),
    ("rbf", "orf", False),
    ("rbf", "sorf", False),
    ("rbf", "fastfood", False),
    ("rbf", "rff", True),
    ("rbf", "orf", True),
    ("rbf", "sorf", True),
    ("laplacian", "rff", False),
    ("laplacian", "rff", True),
    ("cauchy", "rff", False),
    ("cauchy", "rff", True),
    ("arccos0", "rff", False),
    ("arccos0", "fastfood", False),
    ("arccos1", "rff", False),
    ("arccos1", "sorf", False),
    ("softmax", "rff", False),
    ("softmax", "orf", False),
    ("softmax", "sorf", False),
    ("softmax", "fastfood", False),
]
DENSE_CONFIGS = [c for c in CONFIGS if c[1] in ("rff", "orf")]


def _ids(c):
    return "-".join(str(v) for v in c)


def _data(n=40, d=6, seed=0, scale=0.5):
    return np.random.RandomState(seed).randn(n, d) * scale


# ------------------------------------------------------------------ sklearn's own conformance checks
@parametrize_with_checks(ESTIMATORS)
def test_sklearn_check_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("est", [RBFSampler(), T(), T(method="fastfood", kernel="softmax")], ids=repr)
def test_sklearn_check_param_validation(est):
    # sklearn runs this on its own estimators only (sklearn/tests/test_common.py), not in check_estimator
    check_param_validation(type(est).__name__, est)


def test_tags():
    for est in (RBFSampler(), T()):
        tags = est.__sklearn_tags__()
        assert tags.input_tags.sparse
        assert tags.transformer_tags.preserves_dtype == ["float64", "float32"]


# ------------------------------------------------------------------ RBFSampler is sklearn's RBFSampler
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 10.0, "scale"])
def test_rbf_sampler_identical_to_sklearn(gamma, dtype):
    X = np.random.RandomState(1).rand(70, 9).astype(dtype)
    ours = RBFSampler(gamma=gamma, n_components=129, random_state=7).fit(X)
    theirs = SkRBFSampler(gamma=gamma, n_components=129, random_state=7).fit(X)
    assert ours._gamma == pytest.approx(theirs._gamma, rel=1e-12)
    for attr in ("random_weights_", "random_offset_"):
        a, b = getattr(ours, attr), getattr(theirs, attr)
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(a, b)
    Z, Zs = ours.transform(X), theirs.transform(X)
    assert Z.dtype == Zs.dtype == dtype and Z.shape == (70, 129)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(Z, Zs, rtol=0, atol=tol)
    # a RandomState instance: the same draws as sklearn's from an equal instance
    a = RBFSampler(gamma=gamma, random_state=np.random.RandomState(3)).fit(X).random_weights_
    b = SkRBFSampler(gamma=gamma, random_state=np.random.RandomState(3)).fit(X).random_weights_
    np.testing.assert_array_equal(a, b)


def test_rbf_sampler_gamma_scale_sparse_and_dense():
    X = sp.random(50, 30, density=0.2, random_state=0, format="csr")
    for Xi in (X, X.toarray()):
        ours = RBFSampler(gamma="scale", random_state=0).fit(Xi)
        theirs = SkRBFSampler(gamma="scale", random_state=0).fit(Xi)
        assert ours._gamma == pytest.approx(theirs._gamma, rel=1e-12)
    assert RBFSampler(gamma="scale").fit(np.ones((4, 3)))._gamma == 1.0  # zero variance
    assert RBFSampler(gamma="scale").fit([[0.0], [1.0]])._gamma == pytest.approx(4)


def test_rbf_sampler_numpy_formula():
    X = _data()
    est = RBFSampler(gamma=0.7, n_components=333, random_state=0).fit(X)
    ref = np.sqrt(2.0 / 333) * np.cos(X @ est.random_weights_ + est.random_offset_)
    np.testing.assert_allclose(est.transform(X), ref, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ the numpy formula on our own draws
def _numpy_map(est, X):
    """The feature map written out in numpy from est's fitted random_weights_ / random_offset_."""
    kind, _, n_freq, _, n_out = est._fitted_map
    W = est.random_weights_.astype(np.float64)
    b = getattr(est, "random_offset_", np.zeros(W.shape[1]))
    Z = X @ W + b
    if kind == "cos":
        return np.sqrt(2.0 / n_out) * np.cos(Z)
    if kind == "cos_sin":
        return (np.sqrt(2.0 / n_out) * np.concatenate((np.cos(Z), np.sin(Z)), axis=1))[:, :n_out]
    if kind == "step":
        return np.sqrt(2.0 / n_out) * (Z > 0)
    if kind == "relu":
        return np.sqrt(2.0 / n_out) * np.maximum(Z, 0)
    assert kind == "positive"
    sq = 0.5 * (X * X).sum(1) / est.lengthscale_**2
    return np.sqrt(1.0 / n_out) * np.exp(Z - sq[:, None])


@pytest.mark.parametrize("n_components", [64, 65])
@pytest.mark.parametrize("cfg", DENSE_CONFIGS, ids=_ids)
def test_transformer_numpy_formula(cfg, n_components):
    kernel, method, pairs = cfg
    X = _data()
    est = T(kernel=kernel, method=method, pairs=pairs, n_components=n_components, gamma=0.8, random_state=0).fit(X)
    nf = (n_components + 1) // 2 if pairs else n_components
    assert est.random_weights_.shape == (6, nf) and est.random_weights_.dtype == np.float64
    assert hasattr(est, "random_offset_") == (
        kernel in ("rbf", "laplacian", "cauchy") and (not pairs or n_components % 2 == 1)
    )
    Z = est.transform(X)
    assert Z.shape == (40, n_components) and Z.dtype == np.float64
    np.testing.assert_allclose(Z, _numpy_map(est, X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["sorf", "fastfood"])
def test_structured_attributes(method):
    est = T(method=method, n_components=21, random_state=0).fit(_data(d=6))
    assert est.random_signs_.shape == (3, 3, 8)  # ceil(21 / 8) blocks of P = 8
    assert not hasattr(est, "random_weights_")
    assert hasattr(est, "random_perm_") == (method == "fastfood")
    if method == "fastfood":
        assert est.random_perm_.dtype == np.int64
    est.set_params(method="rff").fit(_data(d=6))  # a refit drops the other method's attributes
    assert not hasattr(est, "random_signs_") and not hasattr(est, "random_perm_")


# ------------------------------------------------------------------ kernel approximation
def _exact(kernel, X, ls):
    from sklearn.metrics.pairwise import laplacian_kernel, rbf_kernel

    if kernel == "rbf":
        return rbf_kernel(X, X, gamma=0.5 / ls**2)
    if kernel == "laplacian":
        return laplacian_kernel(X, X, gamma=1.0 / ls)
    t = torch.from_numpy(X)
    return exact_kernel(kernel, t, t, lengthscale=ls).numpy()


@pytest.mark.parametrize("n_components", [4096, 4095])
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_kernel_approximation(cfg, n_components):
    kernel, method, pairs = cfg
    X = _data(n=50, d=6)
    gamma = 0.5
    est = T(kernel=kernel, method=method, pairs=pairs, n_components=n_components, gamma=gamma, random_state=0)
    Z = est.fit_transform(X)
    # gamma as sklearn.metrics.pairwise defines it (rbf, laplacian), 1 / l^2 for the others
    assert est.lengthscale_ == pytest.approx({"rbf": 1.0, "laplacian": 2.0}.get(kernel, gamma**-0.5))
    K = _exact(kernel, X, est.lengthscale_)
    err = np.abs(K - Z @ Z.T).mean() / np.abs(K).mean()
    # measured 0.02-0.06 (1/sqrt(D) regime); SORF at d = 6 (P = 8) has a bias floor of ~0.12 that
    # does not fall with D (its rows all have norm sqrt(P) instead of chi_P norms)
    assert err < (0.2 if method == "sorf" else 0.09), err


def test_rbf_sampler_kernel_approximation():
    from sklearn.metrics.pairwise import rbf_kernel

    X = _data(n=50, d=6)
    Z = RBFSampler(gamma=0.5, n_components=4096, random_state=0).fit_transform(X)
    K = rbf_kernel(X, X, gamma=0.5)
    assert np.abs(K - Z @ Z.T).mean() < 0.02


# ------------------------------------------------------------------ dtypes, sparse, lists
@pytest.mark.parametrize(
    "est",
    [
        RBFSampler(random_state=0),
        T(random_state=0),
        T(method="sorf", random_state=0),
        T(kernel="softmax", method="fastfood", random_state=0),
    ],
    ids=repr,
)
def test_dtype_preservation(est):
    X64 = _data()
    X32 = X64.astype(np.float32)
    e32, e64 = clone(est).fit(X32), clone(est).fit(X64)
    Z32, Z64 = e32.transform(X32), e64.transform(X64)
    assert Z32.dtype == np.float32 and Z64.dtype == np.float64
    for attr in ("random_weights_", "random_offset_", "random_signs_"):
        if hasattr(e32, attr):
            assert getattr(e32, attr).dtype == np.float32 and getattr(e64, attr).dtype == np.float64
            np.testing.assert_allclose(getattr(e32, attr), getattr(e64, attr), rtol=1e-6)
    np.testing.assert_allclose(Z32, Z64, rtol=1e-4, atol=1e-5)
    # mixed: numpy's promotion, as sklearn's safe_sparse_dot
    assert e32.transform(X64).dtype == np.float64 and e64.transform(X32).dtype == np.float64
    # ints and lists become float64
    assert clone(est).fit(np.arange(12).reshape(4, 3)).transform(np.arange(12).reshape(4, 3)).dtype == np.float64
    Zl = clone(est).fit(X64.tolist()).transform(X64.tolist())
    np.testing.assert_array_equal(Zl, Z64)


# the structured methods have no W: their sparse input is always densified
SPARSE_CASES = [(c, "densify") for c in CONFIGS] + [(c, "sparse_dot") for c in DENSE_CONFIGS]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cfg, sparse_path", SPARSE_CASES, ids=[f"{_ids(c)}-{p}" for c, p in SPARSE_CASES])
def test_sparse_equals_dense(cfg, sparse_path, dtype, monkeypatch):
    kernel, method, pairs = cfg
    monkeypatch.setattr(kfsk, "_SPARSE_DOT_MAX_DENSITY", 0.0 if sparse_path == "densify" else 1.0)
    monkeypatch.setattr(kfsk, "_DENSIFY_BLOCK_ELEMENTS", 7 * 12)  # several row blocks, a ragged last one
    Xs = sp.random(45, 12, density=0.3, random_state=1, format="csr", dtype=dtype)
    Xd = Xs.toarray()
    est = T(kernel=kernel, method=method, pairs=pairs, n_components=33, gamma=0.5, random_state=0).fit(Xd)
    Zd = est.transform(Xd)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    for container in (sp.csr_matrix, sp.csr_array, sp.csc_matrix, sp.coo_matrix):
        Z = est.transform(container(Xs))
        assert Z.dtype == dtype and Z.shape == Zd.shape
        np.testing.assert_allclose(Z, Zd, **tol)
    # fitting on sparse input: same draws (same random_state, same gamma)
    np.testing.assert_array_equal(clone(est).fit(Xs).transform(Xd), Zd)


@pytest.mark.parametrize("sparse_path", ["densify", "sparse_dot"])
def test_rbf_sampler_sparse_equals_sklearn(sparse_path, monkeypatch):
    monkeypatch.setattr(kfsk, "_SPARSE_DOT_MAX_DENSITY", 0.0 if sparse_path == "densify" else 1.0)
    Xs = sp.random(60, 200, density=0.05, random_state=2, format="csr")
    ours = RBFSampler(gamma="scale", random_state=0).fit(Xs)
    theirs = SkRBFSampler(gamma="scale", random_state=0).fit(Xs)
    np.testing.assert_allclose(ours.transform(Xs), theirs.transform(Xs), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.transform(Xs), ours.transform(Xs.toarray()), rtol=0, atol=1e-12)


def test_sparse_path_choice():
    # the default: a sparse product for very sparse X with a dense W, densified row blocks otherwise
    assert kfsk._SPARSE_DOT_MAX_DENSITY == 0.01
    Xs = sp.random(30, 500, density=0.002, random_state=0, format="csr")
    for est in (RBFSampler(random_state=0), T(method="sorf", random_state=0)):
        est.fit(Xs)
        np.testing.assert_allclose(est.transform(Xs), est.transform(Xs.toarray()), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ clone, pickle, random_state
@pytest.mark.parametrize("est", ESTIMATORS, ids=repr)
def test_clone_pickle_round_trip(est):
    X = _data()
    est = clone(est).set_params(random_state=3).fit(X)
    Z = est.transform(X)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.transform(X), Z)
    np.testing.assert_array_equal(clone(est).fit(X).transform(X), Z)
    assert clone(est).get_params() == est.get_params()


@pytest.mark.parametrize("est", [RBFSampler(), T(), T(method="fastfood"), T(kernel="laplacian")], ids=repr)
def test_random_state(est):
    X = _data()
    z = lambda rs: clone(est).set_params(random_state=rs).fit(X).transform(X)  # noqa: E731
    np.testing.assert_array_equal(z(5), z(5))
    assert not np.allclose(z(5), z(6))
    assert not np.allclose(z(None), z(None))
    rs = np.random.RandomState(0)
    e = clone(est).set_params(random_state=rs)
    assert not np.allclose(e.fit(X).transform(X), e.fit(X).transform(X))  # the instance advances
    np.testing.assert_array_equal(z(np.random.RandomState(4)), z(np.random.RandomState(4)))


# ------------------------------------------------------------------ in sklearn workflows
def test_pipeline_gridsearch_classification():
    from sklearn.datasets import make_circles
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    X, y = make_circles(n_samples=300, noise=0.1, factor=0.4, random_state=0)
    linear = LogisticRegression().fit(X, y).score(X, y)
    pipe = Pipeline([("rbf", RBFSampler(n_components=200, random_state=0)), ("clf", LogisticRegression(C=10))])
    gs = GridSearchCV(pipe, {"rbf__gamma": [0.01, 1.0, 5.0]}, cv=3).fit(X, y)
    assert gs.best_params_["rbf__gamma"] in (1.0, 5.0)
    assert gs.best_score_ > 0.9 > linear + 0.2
    assert list(gs.best_estimator_[:-1].get_feature_names_out()[:2]) == ["rbfsampler0", "rbfsampler1"]
    gs2 = GridSearchCV(
        Pipeline([("rf", T(n_components=200, random_state=0)), ("clf", LogisticRegression(C=10))]),
        {"rf__kernel": ["rbf", "laplacian"], "rf__method": ["rff"], "rf__gamma": [1.0, "scale"]},
        cv=3,
    ).fit(X, y)
    assert gs2.best_score_ > 0.9


def test_pipeline_gridsearch_regression():
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    rng = np.random.RandomState(0)
    X = rng.uniform(-3, 3, size=(300, 1))
    y = np.sin(2 * X[:, 0]) + 0.05 * rng.randn(300)
    pipe = make_pipeline(RBFSampler(n_components=300, random_state=0), Ridge(alpha=1e-3))
    gs = GridSearchCV(pipe, {"rbfsampler__gamma": [1e-3, 0.5, 2.0]}, cv=3, scoring="r2").fit(X, y)
    assert gs.best_params_["rbfsampler__gamma"] != 1e-3
    assert gs.best_score_ > 0.95
    pipe = make_pipeline(T(method="sorf", n_components=300, random_state=0), Ridge(alpha=1e-3))
    gs = GridSearchCV(pipe, {"randomfeaturestransformer__gamma": [0.5, 2.0]}, cv=3, scoring="r2").fit(X, y)
    assert gs.best_score_ > 0.95


def test_feature_names():
    est = T(n_components=5, random_state=0).fit(_data())
    assert list(est.get_feature_names_out()) == [f"randomfeaturestransformer{i}" for i in range(5)]
    assert not hasattr(est, "feature_names_in_")
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(_data(), columns=[f"c{i}" for i in range(6)])
    for est in (RBFSampler(n_components=5), T(n_components=5)):
        est.fit(df)
        assert list(est.feature_names_in_) == list(df.columns)
        with pytest.raises(ValueError, match="feature names"):
            est.transform(df.rename(columns={"c0": "zz"}))


def test_not_fitted_and_wrong_width():
    from sklearn.exceptions import NotFittedError

    for est in (RBFSampler(), T()):
        with pytest.raises(NotFittedError):
            est.transform(_data())
        est.fit(_data(d=6))
        with pytest.raises(ValueError, match="X has 5 features, but .* is expecting 6 features"):
            est.transform(_data(d=5))


# ------------------------------------------------------------------ bad parameters name the argument
@pytest.mark.parametrize(
    "cls, params, arg",
    [
        (RBFSampler, dict(gamma=-1.0), "gamma"),
        (RBFSampler, dict(gamma="auto"), "gamma"),
        (RBFSampler, dict(n_components=0), "n_components"),
        (RBFSampler, dict(n_components=2.5), "n_components"),
        (RBFSampler, dict(random_state="x"), "random_state"),
        (T, dict(gamma=0.0), "gamma"),
        (T, dict(gamma="auto"), "gamma"),
        (T, dict(n_components=-3), "n_components"),
        (T, dict(kernel="rbff"), "kernel"),
        (T, dict(method="qmc"), "method"),
        (T, dict(pairs="yes"), "pairs"),
        (T, dict(kernel="laplacian", method="sorf"), "method"),
        (T, dict(kernel="cauchy", method="orf"), "method"),
        (T, dict(kernel="arccos1", pairs=True), "pairs"),
        (T, dict(kernel="softmax", pairs=True), "pairs"),
    ],
)
def test_bad_params(cls, params, arg):
    est = cls(**params)  # nothing is validated before fit (sklearn's convention)
    with pytest.raises(ValueError, match=f"'{arg}'"):
        est.fit(_data())


def test_gamma_zero_allowed_as_sklearn():
    # sklearn's RBFSampler accepts gamma = 0 (Interval closed at 0): constant features cos(b)
    X = _data()
    Z = RBFSampler(gamma=0.0, n_components=10, random_state=0).fit(X).transform(X)
    np.testing.assert_allclose(Z, np.broadcast_to(Z[0], Z.shape), rtol=0, atol=1e-15)


def test_nn_module_unchanged():
    # RandomFeatures stays an nn.Module; rbf_sampler still builds it
    rf = kernelfuse.features.RandomFeatures.rbf_sampler(gamma=0.5, n_components=16, random_state=0)
    assert isinstance(rf, torch.nn.Module)
    assert rf.fit_transform(_data()).shape == (40, 16)


def test_import_without_sklearn():
    code = (
        "import sys\n"
        "sys.modules['sklearn'] = None  # import sklearn raises ImportError, find_spec gives None\n"
        "import kernelfuse, torch\n"
        "from kernelfuse.features import *\n"
        "assert 'RBFSampler' not in dir() and 'RandomFeatures' in dir()\n"
        "assert kernelfuse.features.RandomFeatures(3, 4, seed=0)(torch.ones(2, 3)).shape == (2, 4)\n"
        "try:\n"
        "    kernelfuse.features.RBFSampler\n"
        "except ImportError as e:\n"
        "    assert 'scikit-learn' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
