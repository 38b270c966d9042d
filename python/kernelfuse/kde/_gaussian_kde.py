"""Gaussian KDE with a full-covariance bandwidth: :class:`GaussianKDE` (``scipy.stats.gaussian_kde`` API).

Every kernel shares the covariance ``Sigma = factor^2 * Cov(data)`` (weighted, unbiased as scipy).
With the Cholesky factor ``Sigma = L L^T``, whitening by ``L^{-1}`` turns the anisotropic sum into
the isotropic Gaussian kernel sum with bandwidth 1::

    log p(x) = logsumexp_i(log w_i - |L^{-1} x - L^{-1} x_i|^2 / 2) - (d/2) log(2 pi) - sum log diag L

so a single fused :func:`kernelfuse.ops.kde.kernel_logsumexp_sq` pass gives the log-density and
the effective number of contributing points (see :class:`FewPointsWarning`).

The integrals are closed forms on the same machinery: the product of two Gaussians integrates to
a Gaussian in the difference of their means with the summed covariance, so
:meth:`GaussianKDE.integrate_gaussian` and :meth:`GaussianKDE.integrate_kde` are Gaussian kernel
log-sum-exps after whitening by the Cholesky factor of ``Sigma_1 + Sigma_2``; box probabilities are
sums of normal CDF differences (1-D, exact) or of multivariate normal box probabilities
(``scipy.stats.multivariate_normal.cdf``, d >= 2).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ._kernel_density import (
    _check_random_state,
    _logsumexp_and_neff,
    _resolve_dtype,
    _to_tensor,
    _warn_few_points,
)

__all__ = ["GaussianKDE"]

_LOG_2PI = math.log(2.0 * math.pi)


def _ops():
    from ..ops import kde

    return kde


def _f64_numpy(x, name: str) -> np.ndarray:
    """Any array-like (numpy, list, scalar, tensor on any device) as a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a real array, got {type(x).__name__}") from exc


def _spd_cholesky(s: torch.Tensor, what: str) -> torch.Tensor:
    """Lower Cholesky factor of a symmetric (d, d) float64 matrix, LinAlgError if not positive definite."""
    chol, info = torch.linalg.cholesky_ex(0.5 * (s + s.T))
    if int(info) != 0:
        raise np.linalg.LinAlgError(f"{what} is not positive definite")
    return chol


class GaussianKDE:
    """Gaussian kernel density estimate with full-covariance bandwidth, as ``scipy.stats.gaussian_kde``.

    Parameters
    ----------
    dataset : array-like or torch.Tensor of shape (d, n), or (n,) for 1-D data
        The data points, one per **column** (scipy's convention).
    bw_method : {"scott", "silverman"}, scalar or callable, optional
        Bandwidth factor rule: Scott's ``neff ** (-1 / (d + 4))`` (default), Silverman's
        ``(neff * (d + 2) / 4) ** (-1 / (d + 4))``, a constant factor, or a callable taking this
        object and returning the factor. None keeps :meth:`covariance_factor` (Scott's unless a
        subclass overrides it or it was set on the instance).
    weights : array-like or torch.Tensor of shape (n,), optional
        Non-negative weights, normalised to sum to 1. Default: uniform.
    dtype : optional, keyword-only
        Compute dtype (float64 by default for numpy input, as scipy; float32 allowed).
    device : optional, keyword-only
        Compute device (default: the dataset tensor's device, CPU for numpy).
    min_neff : float or None, default=None, keyword-only
        Warn (:class:`~kernelfuse.kde.FewPointsWarning`, at most once per bandwidth) when the
        median number of data points contributing at the queries of :meth:`logpdf` /
        :meth:`evaluate` is below this (2 is a good value). Off by default under the scipy API,
        which emits no such warning: the median over queries also drops below 2 for
        low-dimensional estimates evaluated on grids reaching far into the tails (9 of scipy's
        own 55 default tests would warn, 8 of them such 1-D / 2-D grids). ``n_eff_`` is always set.

    Attributes
    ----------
    dataset : the data, shape (d, n): the numpy array as given (any dtype) or the compute tensor.
        Assignable (scipy's subclassing idiom): assigning it resets the cached data covariance; call
        :meth:`set_bandwidth` (or ``_compute_covariance()``) before evaluating again.
    d, n : int
    weights : normalised weights, shape (n,)
    neff : float, Kish's effective sample size of the weights, ``1 / sum w_i^2``
    factor : float, the bandwidth factor
    covariance : (d, d) kernel covariance ``factor^2 * Cov(dataset)``
    inv_cov : (d, d) its inverse
    cho_cov : (d, d) lower Cholesky factor of ``covariance``
    log_det : float, ``log det(2 pi covariance)``
    n_eff_ : per-query effective number of contributing points of the last evaluation
        (unlike :attr:`neff`, which is a property of the weights only).

    Outputs (densities, covariances, samples) are numpy arrays for numpy input and tensors on
    the compute device for torch input. Densities of numpy input have scipy's dtype,
    ``np.result_type(dataset, points, np.float64)`` (float128 data give float128 results), unless
    ``dtype`` is given; the computation itself is in float64 (or the given ``dtype``).
    """

    # Defaults for instances whose __init__ did not run (scipy's subclassing idiom assigns
    # ``dataset`` and calls ``_compute_covariance()`` itself).
    _dtype = torch.float64
    _dtype_explicit = False
    _device_arg = None
    _torch_io = False
    _np_dtype = np.dtype(np.float64)
    _w = None
    _weights_given = False
    _neff = None
    _data_covariance = None
    _few_points_warned = False
    min_neff = None

    def __init__(self, dataset, bw_method=None, weights=None, *, dtype=None, device=None, min_neff=None):
        self._dtype_explicit = dtype is not None
        if dtype is not None:
            self._dtype = _resolve_dtype(dtype, torch.float64)
        self._device_arg = device
        self.min_neff = min_neff
        self.dataset = dataset
        if weights is not None:
            w, _ = _to_tensor(weights, "weights", dtype=torch.float64, device=self._device, ndim=1)
            if w.shape[0] != self.n:
                raise ValueError(f"weights: should be of length n={self.n}, got {w.shape[0]}")
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError("weights: must be finite and non-negative")
            if not float(w.sum()) > 0:
                raise ValueError("weights: the weights sum to zero")
            self._w = (w / w.sum()).detach()
            self._weights_given = True
            self._neff = None
        self._data_stats()
        self.set_bandwidth(bw_method)

    # -------------------------------------------------------------------------------------
    @property
    def dataset(self):
        return self._dataset

    @dataset.setter
    def dataset(self, value):
        is_torch = isinstance(value, torch.Tensor)
        if is_torch:
            raw = value.reshape(1, -1) if value.dim() < 2 else value
            if not self._dtype_explicit:
                self._dtype = raw.dtype if raw.dtype.is_floating_point else torch.float64
            self._np_dtype = np.dtype(np.float64)
        else:
            raw = np.atleast_2d(np.asarray(value))
            if not self._dtype_explicit:
                self._dtype = torch.float64
            self._np_dtype = raw.dtype
        data, _ = _to_tensor(raw, "dataset", dtype=self._dtype, device=self._device_arg, ndim=2)
        if data.numel() <= 1:
            raise ValueError("dataset: input should have multiple elements")
        if not bool(torch.isfinite(data).all()):
            raise ValueError("dataset: contains NaN or infinity")
        d, n = data.shape
        if self._w is not None and self._weights_given and self._w.shape[0] != n:
            raise ValueError(
                f"dataset: the new dataset has n={n} points but the weights have length "
                f"{self._w.shape[0]}; create a new GaussianKDE for weighted data of another size"
            )
        if not self._weights_given:
            self._w = None  # uniform, rebuilt for the new n
        self._torch_io = is_torch
        self._device = data.device
        self._data = data.detach()  # (d, n), compute dtype
        self._dataset = self._data if is_torch else raw
        self.d, self.n = d, n
        self._neff = None
        self._data_covariance = None  # recomputed by _compute_covariance

    def _weights_t(self) -> torch.Tensor:
        """The normalised weights as a float64 tensor (uniform unless given)."""
        if self._w is None or self._w.shape[0] != self.n:
            self._w = torch.full((self.n,), 1.0 / self.n, dtype=torch.float64, device=self._device)
        return self._w

    @property
    def weights(self):
        return self._out(self._weights_t())

    @property
    def neff(self) -> float:
        if self._neff is None:
            w = self._weights_t()
            self._neff = float(1.0 / (w * w).sum())
        return self._neff

    def _data_stats(self):
        """Cache the weighted data covariance, its Cholesky factor and the support points (once per dataset)."""
        if self._data_covariance is not None:
            return
        if self.d > self.n:
            raise ValueError(
                f"Number of dimensions is greater than number of samples in `dataset` "
                f"(d={self.d} > n={self.n}), which gives a singular data covariance; note that each "
                "*column* of `dataset` is a point (consider transposing the input)"
            )
        cov, chol = self._weighted_covariance()
        w = self._weights_t()
        keep = w > 0  # points with zero weight never contribute to the sums
        self._points = self._data.T[keep].contiguous()  # (n_support, d), compute dtype
        self._w_support = w[keep]  # float64
        self._log_w64 = torch.log(self._w_support)
        self._log_w = self._log_w64.to(self._dtype)
        self._data_covariance, self._data_cho_cov = cov, chol

    def _weighted_covariance(self):
        """Weighted unbiased covariance (reliability weights, as numpy.cov(aweights=...)) and its Cholesky."""
        x = self._data.double()
        w = self._weights_t()
        mean = x @ w
        xc = x - mean[:, None]
        cov = (xc * w) @ xc.T / (1.0 - float((w * w).sum()))
        cov = 0.5 * (cov + cov.T)
        chol, info = torch.linalg.cholesky_ex(cov)
        # A rank-deficient covariance can factor "successfully" with a pivot of rounding size.
        tiny = 16 * torch.finfo(torch.float64).eps * float(torch.diagonal(cov).max())
        if int(info) != 0 or not float(torch.diagonal(chol).min()) ** 2 > tiny:
            raise np.linalg.LinAlgError(
                "The data appears to lie in a lower-dimensional subspace of the space of `dataset`, "
                "which makes its covariance matrix singular; consider reducing the dimension "
                "(e.g. PCA) first"
            )
        return cov, chol

    def scotts_factor(self) -> float:
        """Scott's factor, ``neff ** (-1 / (d + 4))``."""
        return float(self.neff ** (-1.0 / (self.d + 4)))

    def silverman_factor(self) -> float:
        """Silverman's factor, ``(neff * (d + 2) / 4) ** (-1 / (d + 4))``."""
        return float((self.neff * (self.d + 2.0) / 4.0) ** (-1.0 / (self.d + 4)))

    def covariance_factor(self) -> float:
        """The bandwidth factor rule in use: Scott's by default.

        Subclasses may override it; :meth:`set_bandwidth` with a rule replaces it on the instance
        (as scipy does), ``set_bandwidth(None)`` keeps it.
        """
        return self.scotts_factor()

    def set_bandwidth(self, bw_method=None):
        """Set the bandwidth factor rule: None (keep), "scott", "silverman", a scalar or a callable."""
        if bw_method is None:
            pass
        elif isinstance(bw_method, str):
            if bw_method == "scott":
                self.covariance_factor = self.scotts_factor
            elif bw_method == "silverman":
                self.covariance_factor = self.silverman_factor
            else:
                raise ValueError(
                    f"bw_method: should be 'scott', 'silverman', a scalar or a callable, got {bw_method!r}"
                )
        elif isinstance(bw_method, numbers.Real) and not isinstance(bw_method, bool):
            value = float(bw_method)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"bw_method: a scalar factor must be positive and finite, got {value!r}")
            self.covariance_factor = lambda: value
        elif callable(bw_method):
            self.covariance_factor = lambda: bw_method(self)
        else:
            raise ValueError(f"bw_method: should be 'scott', 'silverman', a scalar or a callable, got {bw_method!r}")
        self._compute_covariance()

    def _compute_covariance(self):
        """Kernel covariance ``covariance_factor()^2 * Cov(dataset)`` and the whitened data."""
        self._data_stats()
        factor = float(self.covariance_factor())
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"bw_method: the bandwidth factor must be positive and finite, got {factor!r}")
        self.factor = factor
        self._few_points_warned = False
        self._cov = self._data_covariance * factor**2
        self._chol = self._data_cho_cov * factor  # float64, lower
        self.log_det = float(2.0 * torch.log(torch.diagonal(self._chol)).sum() + self.d * _LOG_2PI)
        # Whitened data: z_i = L^{-1} x_i, computed in float64 then cast to the compute dtype.
        self._white_points = self._whiten(self._points)

    def _whiten(self, pts: torch.Tensor) -> torch.Tensor:
        """(m, d) points -> L^{-1} points, in float64 then the compute dtype."""
        z = torch.linalg.solve_triangular(self._chol, pts.double().T, upper=False).T
        return z.to(self._dtype).contiguous()

    # -------------------------------------------------------------------------------------
    def _out(self, t: torch.Tensor):
        return t if self._torch_io else t.detach().cpu().numpy()

    def _scalar_out(self, t: torch.Tensor):
        """A float64 0-d result (integrals): a tensor for torch input, else a numpy float64 scalar."""
        if self._torch_io:
            return t
        return np.float64(float(t))

    @property
    def covariance(self):
        return self._out(self._cov)

    @property
    def cho_cov(self):
        return self._out(self._chol)

    @property
    def inv_cov(self):
        eye = torch.eye(self.d, dtype=torch.float64, device=self._device)
        return self._out(torch.cholesky_solve(eye, self._chol))

    # -------------------------------------------------------------------------------------
    def _points_arg(self, points):
        """(m, d) float64 query tensor from scipy-style (d, m) points (or a single (d,) point),
        whether the input was a tensor, its device and its numpy dtype."""
        is_torch = isinstance(points, torch.Tensor)
        orig_device = points.device if is_torch else None
        raw = points if is_torch else np.asarray(points)
        np_dtype = np.dtype(np.float64) if is_torch else raw.dtype
        if raw.ndim == 0:
            raw = raw.reshape(1, 1)
        elif raw.ndim == 1:
            raw = raw.reshape(1, -1)
        if raw.ndim != 2:
            raise ValueError(f"points: expected a (d, m) array, got shape {tuple(raw.shape)}")
        d, m = raw.shape
        if d != self.d:
            if d == 1 and m == self.d:  # a single point given as a row vector
                raw = raw.reshape(self.d, 1)
            else:
                raise ValueError(f"points have dimension {d}, dataset has dimension {self.d}")
        q, _ = _to_tensor(raw, "points", dtype=torch.float64, device=self._device)
        return q.T, is_torch, orig_device, np_dtype

    def _log_density(self, x):
        q, is_torch, orig_device, np_dtype = self._points_arg(x)
        z = self._whiten(q)
        lse, n_eff = _logsumexp_and_neff(z, self._white_points, self._log_w, "gaussian", 1.0)
        out = lse - 0.5 * self.log_det
        if is_torch or self._torch_io:
            dev = orig_device if orig_device is not None else self._device
            self.n_eff_ = n_eff.to(dev)
            return out.to(dev), None, n_eff
        self.n_eff_ = n_eff.cpu().numpy()
        if self._dtype_explicit:
            out_dtype = np.dtype(str(self._dtype).replace("torch.", ""))
        else:
            out_dtype = np.result_type(self._np_dtype, np_dtype, np.float64)
        return out.detach().cpu().numpy(), out_dtype, n_eff

    def _few_points_due(self, n_eff: torch.Tensor) -> bool:
        """Whether to issue the FewPointsWarning now: at most once per bandwidth (re-armed by
        _compute_covariance). The public method then warns itself, so the warning names the user's line."""
        t = self.min_neff
        if self._few_points_warned or t is None or t <= 0 or n_eff.numel() == 0:
            return False
        self._few_points_warned = float(n_eff.detach().double().median()) < t
        return self._few_points_warned

    def logpdf(self, x):
        """Log of the estimated density at points ``x`` of shape (d, m) (or one (d,) point).

        Also sets :attr:`n_eff_` (per query, the effective number of contributing points, from
        the same fused pass) and warns with :class:`~kernelfuse.kde.FewPointsWarning` when its
        median is below ``min_neff``: the extreme-value regime of high-dimensional KDE, where
        each estimate is dominated by the query's nearest data point. The warning is opt-in
        (``min_neff=2``) and issued at most once per bandwidth (:meth:`set_bandwidth` re-arms it),
        so loops of single-point evaluations (quadrature) stay quiet.
        """
        out, out_dtype, n_eff = self._log_density(x)
        if self._few_points_due(n_eff):
            _warn_few_points(n_eff, self.min_neff, f"{type(self).__name__}.logpdf")
        return out if out_dtype is None else out.astype(out_dtype, copy=False)

    def evaluate(self, points):
        """Estimated density at ``points`` of shape (d, m) (or one (d,) point): ``exp(logpdf)``."""
        out, out_dtype, n_eff = self._log_density(points)
        if self._few_points_due(n_eff):
            _warn_few_points(n_eff, self.min_neff, f"{type(self).__name__}.evaluate")
        if out_dtype is None:
            return torch.exp(out)
        return np.exp(out).astype(out_dtype, copy=False)

    __call__ = evaluate
    pdf = evaluate

    # -------------------------------------------------------------------------------------
    def integrate_gaussian(self, mean, cov):
        """Integral of the estimate times the Gaussian density ``N(mean, cov)`` over the whole space.

        Closed form: ``sum_i w_i N(x_i; mean, covariance + cov)``, one fused Gaussian kernel
        log-sum-exp after whitening by the Cholesky factor of ``covariance + cov`` (float64).
        Raises ValueError for a mean or covariance of the wrong dimension and
        ``numpy.linalg.LinAlgError`` when ``covariance + cov`` is not positive definite.
        """
        mean = np.atleast_1d(np.squeeze(_f64_numpy(mean, "mean")))
        cov = np.atleast_2d(_f64_numpy(cov, "cov"))
        if mean.shape != (self.d,):
            raise ValueError(f"mean: should have dimension {self.d} (shape ({self.d},)), got shape {mean.shape}")
        if cov.shape != (self.d, self.d):
            raise ValueError(
                f"cov: covariance should have dimension {self.d} (shape ({self.d}, {self.d})), got shape {cov.shape}"
            )
        m = torch.from_numpy(mean).to(self._device)
        s = self._cov + torch.from_numpy(cov).to(self._device)
        return self._scalar_out(
            self._gauss_overlap(
                m[None, :], None, self._points, self._log_w64, s, "the sum of the kernel covariance and cov"
            )
        )

    def integrate_kde(self, other):
        """Integral of the product of this estimate and ``other`` (a GaussianKDE or scipy gaussian_kde).

        Closed form: ``sum_ij w_i v_j N(x_i - y_j; 0, covariance + other.covariance)``: fused
        Gaussian kernel log-sum-exps after whitening by the Cholesky factor of the summed
        covariance, the smaller dataset as queries, then a log-sum-exp over them (float64).
        """
        if other.d != self.d:
            raise ValueError(
                f"other: the KDEs are not the same dimensionality (other has d={other.d}, this one d={self.d})"
            )
        if isinstance(other, GaussianKDE):
            o_pts = other._points.double().to(self._device)
            o_logw = other._log_w64.to(self._device)
            o_cov = other._cov.to(self._device)
        else:  # duck-typed: dataset (d, n), weights (n,), covariance (d, d)
            o_data = np.atleast_2d(_f64_numpy(other.dataset, "other.dataset"))
            o_w = _f64_numpy(other.weights, "other.weights").reshape(-1)
            keep = o_w > 0
            o_pts = torch.from_numpy(np.ascontiguousarray(o_data.T[keep])).to(self._device)
            o_logw = torch.log(torch.from_numpy(o_w[keep])).to(self._device)
            o_cov = torch.from_numpy(np.atleast_2d(_f64_numpy(other.covariance, "other.covariance"))).to(self._device)
        s = self._cov + o_cov
        pts, logw = self._points.double(), self._log_w64
        if o_pts.shape[0] > pts.shape[0]:  # queries: the smaller set
            pts, logw, o_pts, o_logw = o_pts, o_logw, pts, logw
        return self._scalar_out(
            self._gauss_overlap(o_pts, o_logw, pts, logw, s, "the sum of the two kernel covariances")
        )

    def _gauss_overlap(self, q, q_logw, y, y_logw, s, what):
        """log-free ``sum_j v_j sum_i w_i N(q_j - y_i; 0, s)`` (v_j = 1 when ``q_logw`` is None), float64."""
        chol = _spd_cholesky(s.double(), what)
        zq = torch.linalg.solve_triangular(chol, q.double().T, upper=False).T.contiguous()
        zy = torch.linalg.solve_triangular(chol, y.double().T, upper=False).T.contiguous()
        lse = _ops().kernel_logsumexp(zq, zy, y_logw.double().contiguous(), kernel="gaussian", bandwidth=1.0)
        if q_logw is not None:
            lse = torch.logsumexp(lse + q_logw.double(), dim=0)
        else:
            lse = lse.reshape(())
        log_norm = 0.5 * self.d * _LOG_2PI + torch.log(torch.diagonal(chol)).sum()
        return torch.exp(lse - log_norm)

    def _box_1d(self, low: float, high: float) -> torch.Tensor:
        """sum_i w_i (Phi((high - x_i)/s) - Phi((low - x_i)/s)) for d = 1, accurate in both tails."""
        sd = math.sqrt(float(self._cov[0, 0]))
        x = self._points[:, 0].double()
        sign = 1.0
        if low > high:
            low, high, sign = high, low, -1.0
        a = (low - x) / sd
        b = (high - x) / sd
        # Phi(b) - Phi(a) = Phi(b) (1 - Phi(a)/Phi(b)) in log space; above the centre use the mirror
        # image Phi(-a) - Phi(-b), so that both tails keep their relative accuracy.
        upper = a > 0
        lo = torch.where(upper, -b, a)
        hi = torch.where(upper, -a, b)
        la, lb = torch.special.log_ndtr(lo), torch.special.log_ndtr(hi)
        diff = torch.exp(lb) * -torch.expm1(la - torch.where(torch.isinf(lb) & torch.isinf(la), 0.0, lb))
        diff = torch.where(lo == hi, torch.zeros_like(diff), diff)
        return sign * (self._w_support * diff).sum()

    def integrate_box_1d(self, low, high):
        """Probability of the interval ``[low, high]`` (1-D estimates only; negative if low > high).

        Exact: a weighted sum of normal CDF differences, evaluated from ``log_ndtr`` and in the
        mirrored tail above each kernel's centre, so tiny tail probabilities keep full relative
        accuracy.
        """
        if self.d != 1:
            raise ValueError(
                f"integrate_box_1d: only handles 1-D densities, this one has d={self.d} (use integrate_box)"
            )
        low, high = float(_f64_numpy(low, "low")), float(_f64_numpy(high, "high"))
        return self._scalar_out(self._box_1d(low, high))

    def integrate_box(self, low_bounds, high_bounds, maxpts=None, *, rng=None):
        """Probability of the box ``low_bounds <= x <= high_bounds`` (each of shape (d,) or a scalar).

        ``sum_i w_i P(low - x_i <= Z <= high - x_i)`` with ``Z ~ N(0, covariance)``. In 1-D it is
        :meth:`integrate_box_1d` (exact; ``maxpts`` and ``rng`` unused). For d >= 2 each term is
        ``scipy.stats.multivariate_normal.cdf(..., maxpts=maxpts, rng=rng)`` (scipy required): an
        exact bivariate algorithm for d = 2, randomised quasi-Monte Carlo for d >= 3 (scipy's
        default tolerance, 1e-5 absolute per term; pass ``rng`` for reproducible results, the same
        seed giving scipy's own ``gaussian_kde.integrate_box`` value).
        """
        low = _f64_numpy(low_bounds, "low_bounds")
        high = _f64_numpy(high_bounds, "high_bounds")
        try:
            low = np.broadcast_to(low.reshape(-1) if low.ndim else low, (self.d,))
            high = np.broadcast_to(high.reshape(-1) if high.ndim else high, (self.d,))
        except ValueError as exc:
            raise ValueError(
                f"low_bounds, high_bounds: should have dimension {self.d}, got shapes "
                f"{np.shape(low_bounds)} and {np.shape(high_bounds)}"
            ) from exc
        if self.d == 1:
            return self._scalar_out(self._box_1d(float(low[0]), float(high[0])))
        try:
            from scipy.stats import multivariate_normal
        except ImportError as exc:  # pragma: no cover - scipy is an optional dependency
            raise ImportError(
                "GaussianKDE.integrate_box: boxes in d >= 2 need scipy (scipy.stats.multivariate_normal.cdf); "
                "install scipy"
            ) from exc
        x = self._data.double().T.cpu().numpy()  # every point, in order: the same rng stream as scipy's
        w = self._weights_t().cpu().numpy()
        values = multivariate_normal.cdf(
            high - x, lower_limit=low - x, cov=self._cov.cpu().numpy(), maxpts=maxpts, rng=rng
        )
        value = np.atleast_1d(values) @ w
        return self._scalar_out(torch.tensor(float(value), dtype=torch.float64, device=self._device))

    # -------------------------------------------------------------------------------------
    def resample(self, size=None, seed=None):
        """Draw ``size`` points (default ``int(neff)``) from the estimate; returns shape (d, size).

        ``seed`` is None, an int, or a numpy RandomState / Generator (numpy's streams, drawn on the
        host; the result is moved to the compute device for torch input). Numpy results have
        scipy's dtype, ``np.result_type(dataset, np.float64)``.
        """
        if size is None:
            size = int(self.neff)
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
            raise ValueError(f"size: expected a non-negative int, got {size!r}")
        rng = _check_random_state(seed)
        size = int(size)
        noise = rng.standard_normal((size, self.d)) @ self._chol.cpu().numpy().T
        idx = rng.choice(self.n, size=size, p=self._weights_t().cpu().numpy())
        idx_t = torch.from_numpy(idx).to(self._device)
        out = self._data[:, idx_t].double() + torch.from_numpy(noise.T).to(self._device)
        out = self._out(out.to(self._dtype))
        if not (self._torch_io or self._dtype_explicit):
            out = out.astype(np.result_type(self._np_dtype, np.float64), copy=False)  # scipy's dtype
        return out

    def marginal(self, dimensions):
        """GaussianKDE of the marginal over the given dimension indices (same factor and weights)."""
        dims = np.atleast_1d(np.asarray(dimensions))
        if not np.issubdtype(dims.dtype, np.integer):
            raise ValueError(
                f"marginal: Elements of `dimensions` must be integers, the indices of the "
                f"dimensions to keep; got {dims}"
            )
        original = dims
        dims = np.where(dims < 0, dims + self.d, dims)
        if len(np.unique(dims)) != len(dims):
            raise ValueError(f"marginal: All elements of `dimensions` must be unique, got {original}")
        invalid = (dims < 0) | (dims >= self.d)
        if np.any(invalid):
            raise ValueError(
                f"marginal: Dimensions {original[invalid]} are invalid for a distribution in "
                f"{self.d} dimensions (valid: -{self.d} to {self.d - 1})"
            )
        if self._torch_io:
            sub = self._data[torch.from_numpy(dims.astype(np.int64)).to(self._device)]
        else:
            sub = self._dataset[dims]
        return GaussianKDE(
            sub,
            bw_method=self.factor,
            weights=self._weights_t(),
            dtype=self._dtype if self._dtype_explicit else None,
            device=self._device,
            min_neff=self.min_neff,
        )
