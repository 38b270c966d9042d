"""Kernel density estimation with exact, fused kernel sums: :class:`KernelDensity`.

The estimator is scikit-learn compatible (``fit`` / ``score_samples`` / ``score`` / ``sample``,
``get_params`` / ``set_params``) and evaluates every density exactly (no tree, no tolerance):
one fused pass of :func:`kernelfuse.ops.kde.kernel_logsumexp_sq` per call gives both the
log-density and the effective number of data points that contribute to it.

Normalisation. A kernel profile ``k(r)`` (``k(0) = 1``) becomes a probability density in ``d``
dimensions after dividing by its integral over ``R^d``::

    Z_d = |S^{d-1}| * int_0^inf r^(d-1) k(r) dr,      |S^{d-1}| = 2 pi^(d/2) / Gamma(d/2)

and the estimate of a fitted model with data ``y_i``, weights ``w_i`` and bandwidth ``h`` is::

    log p(x) = logsumexp_i(log w_i + log k(|x - y_i| / h)) - log(sum_i w_i) - log Z_d - d log h.

:func:`log_kernel_normaliser` gives ``log Z_d`` in closed form for every kernel (a rapidly
converging positive-ratio series for the cosine kernel, stable in any dimension).
"""

# Over 600 lines on purpose: one scikit-learn estimator, most of it the docstrings and the
# parameter validation sklearn's own test suite checks (tests/peers); the metrics and the
# sampling are already in _metrics.py and _sampling.py.

from __future__ import annotations

import inspect
import math
import numbers
import warnings

import numpy as np
import torch

__all__ = [
    "KernelDensity",
    "FewPointsWarning",
    "NotFittedError",
    "log_kernel_normaliser",
    "KERNELS",
    "KERNEL_ALIASES",
    "SAMPLEABLE_KERNELS",
    "UnnormalisedDensityWarning",
]

#: Kernels of :func:`kernelfuse.kernel_logsumexp` (unnormalised profiles, ``k(0) = 1``).
from ..ops.kde import KERNELS  # noqa: E402  (the ops layer owns the list; the reference keeps its own)

#: scikit-learn's names for our kernels.
KERNEL_ALIASES = {"exponential": "laplacian"}
#: Kernels :meth:`KernelDensity.sample` can draw from exactly.
SAMPLEABLE_KERNELS = (
    "gaussian",
    "laplacian",
    "cauchy",
    "matern32",
    "matern52",
    "tophat",
    "epanechnikov",
    "linear",
    "cosine",
    "rational_quadratic",
)


try:  # scikit-learn's exception when available, so that its tooling recognises it
    from sklearn.exceptions import NotFittedError
except ImportError:  # pragma: no cover - exercised only without scikit-learn

    class NotFittedError(ValueError, AttributeError):
        """The estimator is used before ``fit``."""


class FewPointsWarning(UserWarning):
    """The density at most queries is carried by O(1) data points (extreme-value regime).

    With ``a_i = log w_i + log k(|x - y_i| / h)``, the effective number of data points that
    contribute to the estimate at ``x`` is Kish's ``n_eff(x) = (sum_i e^{a_i})^2 / sum_i e^{2 a_i}``
    (between 1 and n). In high dimension the squared distances from a query to the data
    concentrate around a large mean with a spread that still far exceeds ``h^2`` for any
    practical bandwidth (e.g. Scott's), so the sum is dominated by the nearest data point:
    ``n_eff ~ 1`` and the "density" is essentially ``k(distance to the nearest neighbour)``,
    a statistic of the extreme values of the distance distribution rather than an average.
    Such estimates have enormous variance and likelihood-based model selection on them is
    unreliable.
    """


from ._metrics import UnnormalisedDensityWarning, log_ball_volume, resolve_metric, warn_unnormalised  # noqa: E402
from ._sampling import choose_centres, sample_offsets  # noqa: E402


def _ops():
    """The compiled kde ops (imported lazily so that importing this module never needs them)."""
    from ..ops import kde

    return kde


# --------------------------------------------------------------------------------------------
# Normalisers
# --------------------------------------------------------------------------------------------
# The closed forms live with the kernel profiles in csrc/kde/profiles.h (one table for the C++
# kernels and the estimators); these are the reasons where they diverge.
_NOT_INTEGRABLE = {
    "cauchy": lambda d: (
        f"kernel: the cauchy kernel 1/(1+r^2) is not integrable in d={d} dimensions "
        "(only d=1), so it does not define a density; use e.g. 'matern32' or 'laplacian'"
    ),
    "inverse_multiquadric": lambda d: (
        "kernel: the inverse_multiquadric kernel 1/sqrt(1+r^2) is not integrable in "
        "any dimension, so it does not define a density"
    ),
    "rational_quadratic": lambda d: (
        f"kernel: the rational_quadratic kernel (1+r^2/4)^-2 is not integrable in "
        f"d={d} dimensions (only d < 4), so it does not define a density"
    ),
}


def log_kernel_normaliser(kernel: str, d: int) -> float:
    """log of the integral of the kernel profile ``k(|u|)`` over ``R^d`` (bandwidth 1).

    Closed forms (``S = |S^{d-1}|`` the unit sphere's area, ``V = S / d`` the unit ball's volume),
    computed by the kernel table of ``csrc/kde/profiles.h``:

    ================== =========================================================
    gaussian           (2 pi)^(d/2)
    laplacian          S Gamma(d)                        (sklearn's "exponential")
    matern32           S Gamma(d) (1 + d) / 3^(d/2)
    matern52           S Gamma(d) (1 + d + d (d+1) / 3) / 5^(d/2)
    cauchy             S pi / (2 sin(pi d / 2))          (integrable for d < 2 only)
    rational_quadratic (4 pi)^(d/2) Gamma(2 - d/2)       (integrable for d < 4 only)
    tophat             V
    epanechnikov       V 2 / (d + 2)
    linear             V / (d + 1)
    cosine             S int_0^1 r^(d-1) cos(pi r / 2) dr (a fast alternating series)
    ================== =========================================================

    ``inverse_multiquadric`` (``1/sqrt(1 + r^2)`` decays like ``1/r``) is not integrable in any
    dimension, ``cauchy`` (decays like ``1/r^2``) only in ``d = 1`` and ``rational_quadratic``
    (``1/r^4``) only in ``d < 4``: elsewhere they raise ValueError.
    """
    from .. import _C

    kernel = _check_kernel(kernel)
    d = int(d)
    if d < 1:
        raise ValueError(f"d: the dimension must be at least 1, got {d}")
    value = _C.kde_log_normaliser(kernel, d)
    if math.isnan(value):
        raise ValueError(_NOT_INTEGRABLE[kernel](d))
    return value


# --------------------------------------------------------------------------------------------
# Validation and conversion helpers (shared with _gaussian_kde)
# --------------------------------------------------------------------------------------------
def _check_kernel(kernel) -> str:
    """Canonical kernel name (sklearn aliases resolved) or ValueError naming ``kernel``."""
    if isinstance(kernel, str):
        name = KERNEL_ALIASES.get(kernel, kernel)
        if name in KERNELS:
            return name
    valid = ", ".join(repr(k) for k in KERNELS + tuple(KERNEL_ALIASES))
    raise ValueError(f"kernel: unknown kernel {kernel!r}; expected one of {valid}")


def _check_bandwidth(bandwidth):
    """A positive finite float, or 'scott' / 'silverman'; ValueError naming ``bandwidth``."""
    if isinstance(bandwidth, str):
        if bandwidth in ("scott", "silverman"):
            return bandwidth
        raise ValueError(f"bandwidth: unknown rule {bandwidth!r}; expected a positive float, 'scott' or 'silverman'")
    if isinstance(bandwidth, torch.Tensor) and bandwidth.numel() == 1:
        bandwidth = bandwidth.item()
    if isinstance(bandwidth, np.ndarray) and bandwidth.size == 1:
        bandwidth = bandwidth.item()
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real):
        raise ValueError(f"bandwidth: expected a positive float, 'scott' or 'silverman', got {bandwidth!r}")
    value = float(bandwidth)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"bandwidth: must be positive and finite, got {value!r}")
    return value


def _resolve_dtype(dtype, default: torch.dtype) -> torch.dtype:
    """torch floating dtype from None / torch dtype / numpy dtype / name."""
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        try:
            out = getattr(torch, np.dtype(dtype).name)
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"dtype: cannot interpret {dtype!r} as a floating dtype") from exc
    if not out.is_floating_point:
        raise ValueError(f"dtype: must be a floating dtype (float32 or float64), got {dtype!r}")
    return out


def _to_tensor(X, name: str, dtype=None, device=None, ndim: int = 2):
    """(tensor, is_torch_input): ``X`` as a ``ndim``-D floating tensor.

    ``dtype`` None keeps a floating tensor's dtype and uses float64 otherwise (numpy input is
    computed in float64, as scikit-learn and scipy do). ``device`` None keeps a tensor's device.
    """
    is_torch = isinstance(X, torch.Tensor)
    if is_torch:
        t = X
        if dtype is None:
            dtype = t.dtype if t.dtype.is_floating_point else torch.float64
    else:
        if dtype is None:
            dtype = torch.float64
        try:
            arr = np.asarray(X)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise ValueError(f"{name}: cannot convert {type(X).__name__} to an array") from exc
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32 if dtype == torch.float32 else np.float64))
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {tuple(t.shape)}")
    t = t.to(device=device if device is not None else t.device, dtype=dtype)
    return t, is_torch


def _check_random_state(seed):
    """numpy RandomState / Generator from None, an int, or an existing RandomState / Generator."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, (np.random.RandomState, np.random.Generator)):
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    raise ValueError(f"random_state: expected None, an int, or a numpy RandomState/Generator, got {seed!r}")


def _kish_neff(lse: torch.Tensor, lse2: torch.Tensor) -> torch.Tensor:
    """exp(2 lse - lse2), 0 where no data point contributes (lse = -inf)."""
    finite = torch.isfinite(lse)
    return torch.where(finite, torch.exp(2 * lse - torch.where(finite, lse2, 0)), torch.zeros_like(lse))


def _logsumexp_and_neff(q, support, log_weights, kernel, bandwidth, **metric):
    """(lse, n_eff) per query from one fused kernel_logsumexp_sq pass.

    When ``q`` requires grad, ``lse`` comes from the differentiable kernel_logsumexp and n_eff
    from a second, gradient-free pass.
    """
    ops = _ops()
    kw = dict(kernel=kernel, bandwidth=bandwidth, exclude_self=False, **metric)
    if torch.is_grad_enabled() and q.requires_grad:
        lse = ops.kernel_logsumexp(q, support, log_weights, **kw)
        with torch.no_grad():
            lse_d, lse2 = ops.kernel_logsumexp_sq(q.detach(), support, log_weights, **kw)
    else:
        lse, lse2 = ops.kernel_logsumexp_sq(q, support, log_weights, **kw)
        lse_d = lse
    return lse, _kish_neff(lse_d.detach(), lse2.detach())


def _warn_few_points(n_eff: torch.Tensor, threshold, where: str) -> bool:
    """Warn (FewPointsWarning) when the median n_eff is below threshold; True when it warned."""
    if threshold is None or threshold <= 0 or n_eff.numel() == 0:
        return False
    med = float(n_eff.detach().double().median())
    if med < threshold:
        warnings.warn(
            f"{where}: the median effective number of data points contributing to the density at "
            f"a query is {med:.3g} (< {threshold:g}); the estimate is in the extreme-value regime, "
            "dominated by each query's nearest data point (typical of high-dimensional KDE). "
            "Consider a larger bandwidth or a lower-dimensional representation.",
            FewPointsWarning,
            stacklevel=3,
        )
        return True
    return False


# --------------------------------------------------------------------------------------------
# Estimator base: scikit-learn's BaseEstimator when available, else a minimal equivalent
# --------------------------------------------------------------------------------------------
try:  # scikit-learn is optional (a test dependency only)
    from sklearn.base import BaseEstimator as _Base
except ImportError:  # pragma: no cover - exercised only without scikit-learn

    class _Base:
        """get_params / set_params from the __init__ signature, as scikit-learn's BaseEstimator."""

        @classmethod
        def _get_param_names(cls):
            sig = inspect.signature(cls.__init__)
            return sorted(p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD)

        def get_params(self, deep=True):
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for key, value in params.items():
                if key not in valid:
                    raise ValueError(f"Invalid parameter {key!r} for estimator {type(self).__name__}")
                setattr(self, key, value)
            return self

        def __repr__(self):
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"


def _sklearn_validation():
    """scikit-learn's validate_data / _parameter_constraints machinery, or None without scikit-learn."""
    try:
        from sklearn.utils._param_validation import Interval, StrOptions
        from sklearn.utils.validation import validate_data
    except ImportError:  # pragma: no cover - without scikit-learn (or a version before 1.6)
        return None
    return validate_data, Interval, StrOptions


def _parameter_constraints():
    """scikit-learn-style constraints of :class:`KernelDensity`'s parameters (when sklearn is installed)."""
    v = _sklearn_validation()
    if v is None:  # pragma: no cover
        return {}
    _, Interval, StrOptions = v
    from sklearn.neighbors import BallTree

    return {
        "bandwidth": [Interval(numbers.Real, 0, None, closed="neither"), StrOptions({"scott", "silverman"})],
        "algorithm": [StrOptions({"auto", "kd_tree", "ball_tree"})],
        "kernel": [StrOptions(set(KERNELS) | set(KERNEL_ALIASES))],
        "metric": [StrOptions(set(BallTree.valid_metrics))],
        "atol": [Interval(numbers.Real, 0, None, closed="left")],
        "rtol": [Interval(numbers.Real, 0, None, closed="left")],
        "breadth_first": ["boolean"],
        "leaf_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "metric_params": [None, dict],
        "dtype": "no_validation",
        "device": "no_validation",
        "min_neff": [None, Interval(numbers.Real, 0, None, closed="left")],
    }


class KernelDensity(_Base):
    """Kernel density estimator, a drop-in for ``sklearn.neighbors.KernelDensity``.

    Densities are computed exactly by fused brute-force kernel sums (no tree, no tolerance),
    on the device of the fitted data, in float64 for numpy input. scikit-learn's own test module
    (``sklearn/neighbors/tests/test_kde.py``) and ``check_estimator`` pass against this class
    (tests/test_peer_suites.py, tests/test_kde_sklearn.py).

    Parameters
    ----------
    bandwidth : float or {"scott", "silverman"}, default=1.0
        Kernel bandwidth ``h``. The rules follow scikit-learn exactly: with ``n`` rows and ``d``
        columns in the fitted ``X``, "scott" is ``n ** (-1 / (d + 4))`` and "silverman" is
        ``(n * (d + 2) / 4) ** (-1 / (d + 4))``; like scikit-learn they use the row count (not
        the weights) and do not rescale by the data's spread, so they assume standardised data.
    algorithm : {"auto", "kd_tree", "ball_tree"}, default="auto"
        Accepted for scikit-learn compatibility; the sums are exact brute force whatever the
        value. As scikit-learn, "kd_tree" rejects the metrics a KD tree cannot use (haversine).
    kernel : str, default="gaussian"
        One of "gaussian", "tophat", "epanechnikov", "laplacian" (alias "exponential"), "linear",
        "cosine", "matern32", "matern52", "cauchy" (d = 1 only) or "rational_quadratic" (d < 4).
        "inverse_multiquadric" is
        rejected: it is not integrable, so it defines no density.
    metric : str, default="euclidean"
        "euclidean" ("l2"), "manhattan" ("cityblock", "l1"), "chebyshev" ("infinity"),
        "minkowski" ("p"; order from ``metric_params={"p": p}``, default 2) or "haversine"
        (2 features: latitude, longitude in radians), fused into the kernel sums. As
        scikit-learn, non-Euclidean densities use the Euclidean normaliser, so they do not
        integrate to 1 (:class:`UnnormalisedDensityWarning`; the integral is
        ``density_integral_``). scikit-learn's other BallTree metrics raise ValueError.
    atol, rtol : float, default=0
        Accepted (validated as scikit-learn's) and ignored: every sum is exact.
    breadth_first : bool, default=True
        Accepted and ignored (no tree).
    leaf_size : int, default=40
        Accepted and ignored (no tree).
    metric_params : dict, default=None
        ``{"p": p}`` for "minkowski"; no other keys.
    dtype : torch dtype, numpy dtype or str, optional
        Compute dtype. Default: float64 for numpy input (as scikit-learn), the tensor's own
        floating dtype for torch input. float32 is allowed (faster, ~1e-6 relative).
    device : str or torch.device, optional
        Where to keep the data and compute. Default: the fitted tensor's device (CPU for numpy).
    min_neff : float or None, default=2.0
        Warn (:class:`FewPointsWarning`) when the median over queries of the effective number of
        contributing data points falls below this. ``None`` or 0 disables the warning.

    Attributes
    ----------
    data_ : torch.Tensor of shape (n_samples, n_features)
        The fitted data, on ``device`` in the compute dtype.
    sample_weight_ : torch.Tensor of shape (n_samples,) or None
    bandwidth_ : float
        The bandwidth used (the rule's value for "scott" / "silverman").
    kernel_ : str
        Canonical kernel name ("exponential" -> "laplacian").
    metric_ : str
        The op metric ("euclidean", "manhattan", "chebyshev", "minkowski", "haversine").
    p_ : float
        Order of the minkowski metric (2 otherwise).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names (as scikit-learn).
    log_normaliser_ : float
        ``log(sum of weights) + log Z_d + d log h``, subtracted from the kernel log-sum.
    density_integral_ : float
        The integral of the returned density over ``R^d``: 1 for the Euclidean metric; the ratio
        of the metric's unit-ball volume to the Euclidean one otherwise (NaN for haversine).
    n_eff_ : ndarray or torch.Tensor of shape (n_queries,)
        After :meth:`score_samples`: per query, the effective number of data points contributing
        to the density, ``(sum_i a_i)^2 / sum_i a_i^2`` with ``a_i = w_i k(|x - y_i| / h)``
        (Kish's formula; 0 where no point contributes). Obtained in the same fused pass as the
        density. In high dimension it collapses to ~1 (see :class:`FewPointsWarning`).
    """

    _parameter_constraints = _parameter_constraints()

    def __init__(
        self,
        *,
        bandwidth=1.0,
        algorithm="auto",
        kernel="gaussian",
        metric="euclidean",
        atol=0,
        rtol=0,
        breadth_first=True,
        leaf_size=40,
        metric_params=None,
        dtype=None,
        device=None,
        min_neff=2.0,
    ):
        self.bandwidth = bandwidth
        self.algorithm = algorithm
        self.kernel = kernel
        self.metric = metric
        self.atol = atol
        self.rtol = rtol
        self.breadth_first = breadth_first
        self.leaf_size = leaf_size
        self.metric_params = metric_params
        self.dtype = dtype
        self.device = device
        self.min_neff = min_neff

    # ---------------------------------------------------------------------------------------
    def _validate_hyperparameters(self):
        """Parameter validation as scikit-learn's (its InvalidParameterError when installed)."""
        if self._parameter_constraints and hasattr(self, "_validate_params"):
            self._validate_params()
        kernel = _check_kernel(self.kernel)
        bandwidth = _check_bandwidth(self.bandwidth)
        metric, p = resolve_metric(self.metric, self.metric_params, self.algorithm)
        return kernel, bandwidth, metric, p

    def _as_tensor(self, X, name, dtype, reset):
        """(tensor on the fit device, is_torch). numpy / array-like input goes through scikit-learn's
        ``validate_data`` when installed (its messages for complex, sparse, empty, object arrays;
        ``n_features_in_`` / ``feature_names_in_``); torch tensors are validated here."""
        if isinstance(X, torch.Tensor):
            if X.is_complex():
                raise ValueError(f"{name}: complex data is not supported, got dtype {X.dtype}")
            t, _ = _to_tensor(X, name, dtype=dtype, device=self.device if reset else self.data_.device)
            if reset:
                self.n_features_in_ = int(t.shape[1]) if t.dim() == 2 else 0
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
            return t, True
        v = _sklearn_validation()
        if v is not None:
            arr = v[0](self, X, dtype=np.float64, order="C", reset=reset)
            t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        else:  # pragma: no cover - without scikit-learn
            t, _ = _to_tensor(X, name)
            if reset:
                self.n_features_in_ = int(t.shape[1])
        device = self.device if reset else self.data_.device
        return t.to(device=device if device is not None else t.device, dtype=dtype), False

    def fit(self, X, y=None, sample_weight=None):
        """Fit the estimator on ``X`` of shape (n_samples, n_features).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like or torch.Tensor of shape (n_samples,), optional
            Non-negative weights of the data points (not all zero).

        Returns
        -------
        self
        """
        kernel, bandwidth, metric, p = self._validate_hyperparameters()
        default = X.dtype if isinstance(X, torch.Tensor) and X.dtype.is_floating_point else torch.float64
        dtype = _resolve_dtype(self.dtype, default)
        data, is_torch = self._as_tensor(X, "X", dtype, reset=True)
        if data.dim() != 2:
            raise ValueError(f"X: expected a 2-D array, got shape {tuple(data.shape)}")
        n, d = data.shape
        if n == 0 or d == 0:
            raise ValueError(f"X: expected at least one sample and one feature, got shape {(n, d)}")
        if not bool(torch.isfinite(data).all()):
            raise ValueError("X: contains NaN or infinity")
        if metric == "haversine" and d != 2:
            raise ValueError(f"metric: 'haversine' needs 2 features (latitude, longitude in radians), X has {d}")
        data = data.detach()

        if sample_weight is not None:
            w, _ = _to_tensor(sample_weight, "sample_weight", dtype=torch.float64, device=data.device, ndim=1)
            if w.shape[0] != n:
                raise ValueError(f"sample_weight: expected shape ({n},) to match X, got {tuple(w.shape)}")
            if not bool(torch.isfinite(w).all()):
                raise ValueError("sample_weight: contains NaN or infinity")
            if bool((w < 0).any()):
                raise ValueError("sample_weight: must be non-negative")
            total = float(w.sum())
            if not total > 0:
                raise ValueError("sample_weight: the weights sum to zero")
            w = w.detach()
        else:
            w, total = None, float(n)

        if bandwidth == "scott":
            h = n ** (-1.0 / (d + 4))
        elif bandwidth == "silverman":
            h = (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
        else:
            h = bandwidth

        # Raises ValueError for the kernels that are not integrable in d dimensions.
        log_norm = math.log(total) + log_kernel_normaliser(kernel, d) + d * math.log(h)
        log_integral = log_ball_volume(metric, p, d) - log_ball_volume("euclidean", 2.0, d)
        if metric != "euclidean":
            warn_unnormalised(metric, log_integral, f"{type(self).__name__}.fit")

        self._torch_io = is_torch
        self.kernel_ = kernel
        self.metric_, self.p_ = metric, p
        self.bandwidth_ = float(h)
        self.data_ = data
        self.sample_weight_ = None if w is None else w.to(dtype)
        self._sample_weight64 = None if w is None else w.cpu().numpy()
        self.log_normaliser_ = log_norm
        self._warned_few_points = False
        self.density_integral_ = math.exp(log_integral)
        # Points with zero weight never contribute: drop them from the sums once here.
        if w is None:
            self._support, self._log_weights = data, None
        else:
            keep = w > 0
            self._support = data[keep].contiguous()
            self._log_weights = torch.log(w[keep]).to(dtype)
        return self

    # ---------------------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "data_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call 'fit' first.")

    def _queries(self, X):
        """(queries on the fit device in the fit dtype, is_torch, original device)."""
        is_torch = isinstance(X, torch.Tensor)
        orig_device = X.device if is_torch else None
        q, _ = self._as_tensor(X, "X", self.data_.dtype, reset=False)
        if q.dim() != 2:
            raise ValueError(f"X: expected a 2-D array, got shape {tuple(q.shape)}")
        if q.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X: has {q.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        return q, is_torch, orig_device

    def score_samples(self, X):
        """Log-density of each row of ``X`` under the model (normalised in ``d`` dimensions).

        Also sets :attr:`n_eff_`, the effective number of data points contributing at each query
        (computed in the same pass), and warns with :class:`FewPointsWarning` when its median is
        below ``min_neff``: in high dimension the sum over data points is dominated by the
        query's nearest neighbour (the extreme-value regime), so the estimate is a
        nearest-neighbour statistic with very high variance rather than a smooth average.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_queries, n_features)

        Returns
        -------
        log_density : ndarray (numpy input) or torch.Tensor (torch input, on its device)
            of shape (n_queries,). ``-inf`` where a compact kernel reaches no data point.
            Differentiable with respect to a torch ``X``.
        """
        self._check_fitted()
        q, is_torch, orig_device = self._queries(X)
        metric = getattr(self, "metric_", "euclidean")
        extra = {} if metric == "euclidean" else dict(metric=metric, p=self.p_)
        lse, n_eff = _logsumexp_and_neff(q, self._support, self._log_weights, self.kernel_, self.bandwidth_, **extra)
        log_density = lse - self.log_normaliser_
        if not getattr(self, "_warned_few_points", False):  # at most once per fit (quiet in CV loops)
            self._warned_few_points = _warn_few_points(n_eff, self.min_neff, f"{type(self).__name__}.score_samples")
        if is_torch:
            self.n_eff_ = n_eff.to(orig_device)
            return log_density.to(orig_device)
        self.n_eff_ = n_eff.cpu().numpy()
        return log_density.detach().cpu().numpy().astype(np.float64, copy=False)

    def score(self, X, y=None):
        """Total log-likelihood of ``X`` under the model (float; a 0-d tensor for torch input)."""
        out = self.score_samples(X)
        if isinstance(out, torch.Tensor):
            return out.sum()
        return float(np.sum(out))

    # ---------------------------------------------------------------------------------------
    def sample(self, n_samples=1, random_state=None):
        """Draw ``n_samples`` points from the fitted density, for every kernel.

        Centres are drawn as scikit-learn draws them (one uniform per sample, searched in the
        cumulative weights), so the same ``random_state`` gives scikit-learn's centres; constant
        weights give the same draws as no weights and integer weights the same as repeated
        rows. Each centre is displaced by ``h`` times a draw of the kernel's law: Gaussian
        directly (the same numbers as scikit-learn's); tophat a normal vector rescaled to a
        uniform radius; the others a uniform direction times a radius ``r`` of density
        proportional to ``r^(d-1) k(r)``: epanechnikov ``sqrt(Beta(d/2, 2))``; linear
        ``Beta(d, 2)``; laplacian ``Gamma(d, 1)``; matern32/52 mixtures of Gammas; cosine by exact
        rejection from ``Beta(d, 2)`` (acceptance >= 2/pi); cauchy (d = 1) standard Cauchy.
        The metric is not used (the draws follow the Euclidean-normalised kernel).

        Parameters
        ----------
        n_samples : int, default=1
        random_state : None, int, numpy RandomState or Generator
            As scikit-learn's ``random_state`` (numpy's random streams, generated on the host).

        Returns
        -------
        X : ndarray (numpy fit) or torch.Tensor (torch fit, on the data's device)
            of shape (n_samples, n_features).
        """
        self._check_fitted()
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 0:
            raise ValueError(f"n_samples: expected a non-negative int, got {n_samples!r}")
        if self.kernel_ not in SAMPLEABLE_KERNELS:  # pragma: no cover - all integrable ones are
            raise NotImplementedError(f"sample: no sampler for kernel {self.kernel_!r}")
        rng = _check_random_state(random_state)
        n, d = self.data_.shape
        n_samples = int(n_samples)
        idx = choose_centres(rng, n_samples, n, getattr(self, "_sample_weight64", None))
        offsets = sample_offsets(self.kernel_, rng, n_samples, d)
        offsets = torch.from_numpy(offsets * self.bandwidth_).to(device=self.data_.device, dtype=self.data_.dtype)
        out = self.data_[torch.from_numpy(idx).to(self.data_.device)] + offsets
        return out if self._fit_is_torch() else out.cpu().numpy()

    def _fit_is_torch(self) -> bool:
        return getattr(self, "_torch_io", False)
