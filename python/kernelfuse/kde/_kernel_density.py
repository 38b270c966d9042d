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
]

#: Kernels of :func:`kernelfuse.kernel_logsumexp` (unnormalised profiles, ``k(0) = 1``).
from ..reference.kde import KERNELS  # noqa: E402  (one list for ops, reference and models)

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


def _ops():
    """The compiled kde ops (imported lazily so that importing this module never needs them)."""
    from ..ops import kde

    return kde


# --------------------------------------------------------------------------------------------
# Normalisers
# --------------------------------------------------------------------------------------------
def _log_sphere_area(d: int) -> float:
    """log |S^{d-1}|, the surface area of the unit sphere in R^d (|S^0| = 2 points)."""
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def _log_ball_volume(d: int) -> float:
    """log V_d = log(pi^(d/2) / Gamma(d/2 + 1)), the volume of the unit ball in R^d."""
    return 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1.0)


def _log_cosine_radial_integral(d: int) -> float:
    """log int_0^1 r^(d-1) cos(pi r / 2) dr, accurate for every d >= 1.

    With t = 1 - r the integrand is (1 - t)^(d-1) sin(a t), a = pi / 2. Expanding the sine and
    integrating term by term with Beta integrals gives, with n = d - 1::

        I = a / ((n + 1)(n + 2)) * sum_k (-1)^k c_k,
        c_0 = 1,  c_k = c_{k-1} a^2 / ((n + 2k + 1)(n + 2k + 2)).

    The ratios are at most a^2 / 12 ~ 0.21, so the alternating sum converges fast and without
    cancellation (unlike the recursion in r, whose terms grow like (d-1)! (2/pi)^d).
    """
    n = d - 1
    a2 = (0.5 * math.pi) ** 2
    total, c, k = 1.0, 1.0, 0
    while c > 1e-20:
        k += 1
        c *= a2 / ((n + 2 * k + 1) * (n + 2 * k + 2))
        total += -c if k % 2 else c
    return math.log(0.5 * math.pi) - math.log((n + 1) * (n + 2)) + math.log(total)


def log_kernel_normaliser(kernel: str, d: int) -> float:
    """log of the integral of the kernel profile ``k(|u|)`` over ``R^d`` (bandwidth 1).

    Closed forms (``S = |S^{d-1}|`` the unit sphere's area, ``V = S / d`` the unit ball's volume):

    ================== =========================================================
    gaussian           (2 pi)^(d/2)
    laplacian          S Gamma(d)                        (sklearn's "exponential")
    matern32           S Gamma(d) (1 + d) / 3^(d/2)
    matern52           S Gamma(d) (1 + d + d (d+1) / 3) / 5^(d/2)
    cauchy             S pi / (2 sin(pi d / 2))          (integrable for d < 2 only)
    tophat             V
    epanechnikov       V 2 / (d + 2)
    linear             V / (d + 1)
    cosine             S int_0^1 r^(d-1) cos(pi r / 2) dr (see _log_cosine_radial_integral)
    ================== =========================================================

    ``inverse_multiquadric`` (``1/sqrt(1 + r^2)`` decays like ``1/r``) is not integrable in any
    dimension, and ``cauchy`` (decays like ``1/r^2``) only in ``d = 1``: both raise ValueError.
    """
    kernel = _check_kernel(kernel)
    d = int(d)
    if d < 1:
        raise ValueError(f"d: the dimension must be at least 1, got {d}")
    log_s = _log_sphere_area(d)
    if kernel == "gaussian":
        return 0.5 * d * math.log(2.0 * math.pi)
    if kernel == "laplacian":
        return log_s + math.lgamma(d)
    if kernel == "matern32":
        return log_s + math.lgamma(d) + math.log1p(d) - 0.5 * d * math.log(3.0)
    if kernel == "matern52":
        return log_s + math.lgamma(d) + math.log(1.0 + d + d * (d + 1) / 3.0) - 0.5 * d * math.log(5.0)
    if kernel == "cauchy":
        if d >= 2:
            raise ValueError(
                f"kernel: the cauchy kernel 1/(1+r^2) is not integrable in d={d} dimensions "
                "(only d=1), so it does not define a density; use e.g. 'matern32' or 'laplacian'"
            )
        return log_s + math.log(0.5 * math.pi / math.sin(0.5 * math.pi * d))
    if kernel == "inverse_multiquadric":
        raise ValueError(
            "kernel: the inverse_multiquadric kernel 1/sqrt(1+r^2) is not integrable in any "
            "dimension, so it does not define a density"
        )
    if kernel == "tophat":
        return _log_ball_volume(d)
    if kernel == "epanechnikov":
        return _log_ball_volume(d) + math.log(2.0 / (d + 2.0))
    if kernel == "linear":
        return _log_ball_volume(d) - math.log(d + 1.0)
    # cosine
    return log_s + _log_cosine_radial_integral(d)


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
        raise ValueError(
            f"bandwidth: unknown rule {bandwidth!r}; expected a positive float, 'scott' or 'silverman'"
        )
    if isinstance(bandwidth, torch.Tensor) and bandwidth.numel() == 1:
        bandwidth = bandwidth.item()
    if isinstance(bandwidth, np.ndarray) and bandwidth.size == 1:
        bandwidth = bandwidth.item()
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real):
        raise ValueError(
            f"bandwidth: expected a positive float, 'scott' or 'silverman', got {bandwidth!r}"
        )
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


def _logsumexp_and_neff(q, support, log_weights, kernel, bandwidth):
    """(lse, n_eff) per query from one fused kernel_logsumexp_sq pass.

    When ``q`` requires grad, ``lse`` comes from the differentiable kernel_logsumexp and n_eff
    from a second, gradient-free pass.
    """
    ops = _ops()
    kw = dict(kernel=kernel, bandwidth=bandwidth, exclude_self=False)
    if torch.is_grad_enabled() and q.requires_grad:
        lse = ops.kernel_logsumexp(q, support, log_weights, **kw)
        with torch.no_grad():
            lse_d, lse2 = ops.kernel_logsumexp_sq(q.detach(), support, log_weights, **kw)
    else:
        lse, lse2 = ops.kernel_logsumexp_sq(q, support, log_weights, **kw)
        lse_d = lse
    return lse, _kish_neff(lse_d.detach(), lse2.detach())


def _warn_few_points(n_eff: torch.Tensor, threshold, where: str) -> None:
    if threshold is None or threshold <= 0 or n_eff.numel() == 0:
        return
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


def _unit_directions(rng, n: int, d: int) -> np.ndarray:
    """n directions uniform on the unit sphere in R^d (normalised Gaussians)."""
    while True:
        g = rng.standard_normal((n, d))
        norm = np.sqrt((g * g).sum(axis=1, keepdims=True))
        if np.all(norm > 0):
            return g / norm


def _gamma_mixture(rng, n: int, shapes, mix, scale: float) -> np.ndarray:
    """n draws of a mixture of Gamma(shapes[j], scale) with probabilities proportional to mix."""
    mix = np.asarray(mix, dtype=np.float64)
    comp = rng.choice(len(shapes), size=n, p=mix / mix.sum())
    return rng.gamma(np.asarray(shapes, dtype=np.float64)[comp], scale)


def _sample_radii(kernel: str, d: int, n: int, rng) -> np.ndarray:
    """n radii of the kernel's radial law, density proportional to r^(d-1) k(r)."""
    if kernel == "tophat":
        return rng.uniform(size=n) ** (1.0 / d)
    if kernel == "epanechnikov":  # s = r^2 has density ~ s^(d/2 - 1) (1 - s): Beta(d/2, 2)
        return np.sqrt(rng.beta(0.5 * d, 2.0, size=n))
    if kernel == "linear":  # r^(d-1) (1 - r): Beta(d, 2)
        return rng.beta(float(d), 2.0, size=n)
    if kernel == "laplacian":  # r^(d-1) e^(-r): Gamma(d, 1)
        return rng.gamma(float(d), 1.0, size=n)
    if kernel == "matern32":  # r^(d-1) (1 + c r) e^(-c r): Gamma(d) and Gamma(d+1) in ratio 1 : d
        return _gamma_mixture(rng, n, [d, d + 1], [1.0, d], 1.0 / math.sqrt(3.0))
    if kernel == "matern52":  # weights Gamma(d) : d : d (d+1) / 3 for shapes d, d+1, d+2
        return _gamma_mixture(rng, n, [d, d + 1, d + 2], [1.0, d, d * (d + 1) / 3.0], 1.0 / math.sqrt(5.0))
    if kernel == "cauchy":  # only d = 1 is a density: |standard Cauchy|
        return np.abs(rng.standard_cauchy(size=n))
    if kernel == "cosine":
        # Rejection from Beta(d, 2) ~ r^(d-1) (1 - r): with t = 1 - r the ratio
        # cos(pi r / 2) / (1 - r) = sin(pi t / 2) / t lies in [1, pi/2]; accept w.p. ratio / (pi/2).
        out = np.empty(n)
        filled = 0
        while filled < n:
            need = n - filled
            r = rng.beta(float(d), 2.0, size=int(need * 1.6) + 16)
            t = 1.0 - r
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(t > 0, np.sin(0.5 * math.pi * t) / (0.5 * math.pi * t), 1.0)
            acc = r[rng.uniform(size=r.shape[0]) < ratio][:need]
            out[filled:filled + acc.shape[0]] = acc
            filled += acc.shape[0]
        return out
    raise NotImplementedError(f"sample: no sampler for kernel {kernel!r}")


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
            return sorted(p.name for p in sig.parameters.values()
                          if p.name != "self" and p.kind != p.VAR_KEYWORD)

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


class KernelDensity(_Base):
    """Kernel density estimator, a drop-in for ``sklearn.neighbors.KernelDensity``.

    Densities are computed exactly by fused brute-force kernel sums (no tree, no tolerance),
    on the device of the fitted data, in float64 for numpy input.

    Parameters
    ----------
    bandwidth : float or {"scott", "silverman"}, default=1.0
        Kernel bandwidth ``h``. The rules follow scikit-learn exactly: with ``n`` rows and ``d``
        columns in the fitted ``X``, "scott" is ``n ** (-1 / (d + 4))`` and "silverman" is
        ``(n * (d + 2) / 4) ** (-1 / (d + 4))``; like scikit-learn they use the row count (not
        the weights) and do not rescale by the data's spread, so they assume standardised data.
    kernel : str, default="gaussian"
        One of "gaussian", "tophat", "epanechnikov", "laplacian" (alias "exponential"), "linear",
        "cosine", "matern32", "matern52" or "cauchy" (d = 1 only). "inverse_multiquadric" is
        rejected: it is not integrable, so it defines no density.
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
    n_features_in_ : int
    log_normaliser_ : float
        ``log(sum of weights) + log Z_d + d log h``, subtracted from the kernel log-sum.
    n_eff_ : ndarray or torch.Tensor of shape (n_queries,)
        After :meth:`score_samples`: per query, the effective number of data points contributing
        to the density, ``(sum_i a_i)^2 / sum_i a_i^2`` with ``a_i = w_i k(|x - y_i| / h)``
        (Kish's formula; 0 where no point contributes). Obtained in the same fused pass as the
        density. In high dimension it collapses to ~1 (see :class:`FewPointsWarning`).
    """

    def __init__(self, *, bandwidth=1.0, kernel="gaussian", dtype=None, device=None, min_neff=2.0):
        self.bandwidth = bandwidth
        self.kernel = kernel
        self.dtype = dtype
        self.device = device
        self.min_neff = min_neff

    # ---------------------------------------------------------------------------------------
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
        kernel = _check_kernel(self.kernel)
        bandwidth = _check_bandwidth(self.bandwidth)
        default = X.dtype if isinstance(X, torch.Tensor) and X.dtype.is_floating_point else torch.float64
        dtype = _resolve_dtype(self.dtype, default)
        data, is_torch = _to_tensor(X, "X", dtype=dtype, device=self.device)
        n, d = data.shape
        if n == 0 or d == 0:
            raise ValueError(f"X: expected at least one sample and one feature, got shape {(n, d)}")
        if not bool(torch.isfinite(data).all()):
            raise ValueError("X: contains NaN or infinity")
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

        self._torch_io = is_torch
        self.kernel_ = kernel
        self.bandwidth_ = float(h)
        self.data_ = data
        self.sample_weight_ = None if w is None else w.to(dtype)
        self.n_features_in_ = d
        self.log_normaliser_ = log_norm
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
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call 'fit' first."
            )

    def _queries(self, X):
        """(queries on the fit device in the fit dtype, is_torch, original device)."""
        is_torch = isinstance(X, torch.Tensor)
        orig_device = X.device if is_torch else None
        q, _ = _to_tensor(X, "X", dtype=self.data_.dtype, device=self.data_.device)
        if q.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X: has {q.shape[1]} features, but {type(self).__name__} was fitted with "
                f"{self.n_features_in_} features"
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
        lse, n_eff = _logsumexp_and_neff(q, self._support, self._log_weights, self.kernel_, self.bandwidth_)
        log_density = lse - self.log_normaliser_
        _warn_few_points(n_eff, self.min_neff, f"{type(self).__name__}.score_samples")
        if is_torch:
            self.n_eff_ = n_eff.to(orig_device)
            return log_density.to(orig_device)
        self.n_eff_ = n_eff.cpu().numpy()
        return log_density.detach().cpu().numpy()

    def score(self, X, y=None):
        """Total log-likelihood of ``X`` under the model (float; a 0-d tensor for torch input)."""
        out = self.score_samples(X)
        if isinstance(out, torch.Tensor):
            return out.sum()
        return float(np.sum(out))

    # ---------------------------------------------------------------------------------------
    def sample(self, n_samples=1, random_state=None):
        """Draw ``n_samples`` points from the fitted density.

        A centre is chosen with probability proportional to its sample weight, then displaced
        by ``h * r * u``: ``u`` uniform on the unit sphere and ``r`` from the kernel's radial law
        (density proportional to ``r^(d-1) k(r)``): Gaussian directly; tophat ``U^(1/d)``;
        epanechnikov ``sqrt(Beta(d/2, 2))``; linear ``Beta(d, 2)``; laplacian ``Gamma(d, 1)``;
        matern32/52 mixtures of Gammas; cosine by exact rejection from ``Beta(d, 2)``
        (acceptance >= 2/pi); cauchy (d = 1) standard Cauchy.

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
        if self.sample_weight_ is None:
            idx = rng.randint(n, size=n_samples) if hasattr(rng, "randint") else rng.integers(n, size=n_samples)
        else:
            p = self.sample_weight_.double().cpu().numpy()
            idx = rng.choice(n, size=n_samples, p=p / p.sum())
        if self.kernel_ == "gaussian":
            offsets = rng.standard_normal((n_samples, d))
        else:
            offsets = _unit_directions(rng, n_samples, d) * _sample_radii(self.kernel_, d, n_samples, rng)[:, None]
        offsets = torch.from_numpy(offsets * self.bandwidth_).to(device=self.data_.device, dtype=self.data_.dtype)
        out = self.data_[torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(self.data_.device)] + offsets
        return out if self._fit_is_torch() else out.cpu().numpy()

    def _fit_is_torch(self) -> bool:
        return getattr(self, "_torch_io", False)
