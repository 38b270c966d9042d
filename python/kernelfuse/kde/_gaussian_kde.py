"""Gaussian KDE with a full-covariance bandwidth: :class:`GaussianKDE` (``scipy.stats.gaussian_kde`` API).

Every kernel shares the covariance ``Sigma = factor^2 * Cov(data)`` (weighted, unbiased as scipy).
With the Cholesky factor ``Sigma = L L^T``, whitening by ``L^{-1}`` turns the anisotropic sum into
the isotropic Gaussian kernel sum with bandwidth 1::

    log p(x) = logsumexp_i(log w_i - |L^{-1} x - L^{-1} x_i|^2 / 2) - (d/2) log(2 pi) - sum log diag L

so a single fused :func:`kernelfuse.ops.kde.kernel_logsumexp_sq` pass gives the log-density and
the effective number of contributing points (see :class:`FewPointsWarning`).
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


class GaussianKDE:
    """Gaussian kernel density estimate with full-covariance bandwidth, as ``scipy.stats.gaussian_kde``.

    Parameters
    ----------
    dataset : array-like or torch.Tensor of shape (d, n), or (n,) for 1-D data
        The data points, one per **column** (scipy's convention).
    bw_method : {"scott", "silverman"}, scalar or callable, optional
        Bandwidth factor rule: Scott's ``neff ** (-1 / (d + 4))`` (default), Silverman's
        ``(neff * (d + 2) / 4) ** (-1 / (d + 4))``, a constant factor, or a callable taking this
        object and returning the factor.
    weights : array-like or torch.Tensor of shape (n,), optional
        Non-negative weights, normalised to sum to 1. Default: uniform.
    dtype : optional, keyword-only
        Compute dtype (float64 by default for numpy input, as scipy; float32 allowed).
    device : optional, keyword-only
        Compute device (default: the dataset tensor's device, CPU for numpy).
    min_neff : float or None, default=2.0, keyword-only
        Warn (:class:`~kernelfuse.kde.FewPointsWarning`) when the median number of data points
        contributing at the queries of :meth:`logpdf` / :meth:`evaluate` is below this.

    Attributes
    ----------
    dataset : the data, shape (d, n) (numpy or torch as given)
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
    the compute device for torch input.
    """

    def __init__(self, dataset, bw_method=None, weights=None, *, dtype=None, device=None, min_neff=2.0):
        is_torch = isinstance(dataset, torch.Tensor)
        default = dataset.dtype if is_torch and dataset.dtype.is_floating_point else torch.float64
        self._dtype = _resolve_dtype(dtype, default)
        raw = dataset if is_torch else np.asarray(dataset)
        if raw.ndim == 0 or raw.ndim == 1:
            raw = raw.reshape(1, -1)
        data, _ = _to_tensor(raw, "dataset", dtype=self._dtype, device=device, ndim=2)
        if data.numel() <= 1:
            raise ValueError("dataset: input should have multiple elements")
        if not bool(torch.isfinite(data).all()):
            raise ValueError("dataset: contains NaN or infinity")
        self._torch_io = is_torch
        self._device = data.device
        self._data = data.detach()  # (d, n)
        self.d, self.n = data.shape
        self.min_neff = min_neff

        if weights is not None:
            w, _ = _to_tensor(weights, "weights", dtype=torch.float64, device=self._device, ndim=1)
            if w.shape[0] != self.n:
                raise ValueError(f"weights: should be of length n={self.n}, got {w.shape[0]}")
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError("weights: must be finite and non-negative")
            if not float(w.sum()) > 0:
                raise ValueError("weights: the weights sum to zero")
            w = w / w.sum()
        else:
            w = torch.full((self.n,), 1.0 / self.n, dtype=torch.float64, device=self._device)
        self._w = w.detach()  # float64 always
        self.neff = float(1.0 / (w * w).sum())

        if self.d > self.n:
            raise ValueError(
                f"dataset: has dimension d={self.d} greater than the number of samples n={self.n}, "
                "which gives a singular data covariance; note that each *column* is a point "
                "(consider transposing the input)"
            )
        self._data_covariance, self._data_cho_cov = self._weighted_covariance()
        # Points with zero weight never contribute to the sums.
        keep = self._w > 0
        self._points = self._data.T[keep].contiguous()  # (n_support, d)
        self._log_w = torch.log(self._w[keep]).to(self._dtype)
        self.covariance_factor = self.scotts_factor
        self.set_bandwidth(bw_method)

    # -------------------------------------------------------------------------------------
    def _weighted_covariance(self):
        """Weighted unbiased covariance (reliability weights, as numpy.cov(aweights=...)) and its Cholesky."""
        x = self._data.double()
        w = self._w
        mean = x @ w
        xc = x - mean[:, None]
        cov = (xc * w) @ xc.T / (1.0 - float((w * w).sum()))
        cov = 0.5 * (cov + cov.T)
        chol, info = torch.linalg.cholesky_ex(cov)
        # A rank-deficient covariance can factor "successfully" with a pivot of rounding size.
        tiny = 16 * torch.finfo(torch.float64).eps * float(torch.diagonal(cov).max())
        if int(info) != 0 or not float(torch.diagonal(chol).min()) ** 2 > tiny:
            raise np.linalg.LinAlgError(
                "dataset: the data appears to lie in a lower-dimensional subspace, which makes its "
                "covariance matrix singular; consider reducing the dimension (e.g. PCA) first"
            )
        return cov, chol

    def scotts_factor(self) -> float:
        """Scott's factor, ``neff ** (-1 / (d + 4))``."""
        return float(self.neff ** (-1.0 / (self.d + 4)))

    def silverman_factor(self) -> float:
        """Silverman's factor, ``(neff * (d + 2) / 4) ** (-1 / (d + 4))``."""
        return float((self.neff * (self.d + 2.0) / 4.0) ** (-1.0 / (self.d + 4)))

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
            raise ValueError(
                f"bw_method: should be 'scott', 'silverman', a scalar or a callable, got {bw_method!r}"
            )
        self._compute_covariance()

    def _compute_covariance(self):
        factor = float(self.covariance_factor())
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"bw_method: the bandwidth factor must be positive and finite, got {factor!r}")
        self.factor = factor
        self._cov = self._data_covariance * factor ** 2
        self._chol = self._data_cho_cov * factor  # float64, lower
        self.log_det = float(2.0 * torch.log(torch.diagonal(self._chol)).sum() + self.d * math.log(2.0 * math.pi))
        # Whitened data: z_i = L^{-1} x_i, computed in float64 then cast to the compute dtype.
        self._white_points = self._whiten(self._points)

    def _whiten(self, pts: torch.Tensor) -> torch.Tensor:
        """(m, d) points -> L^{-1} points, in float64 then the compute dtype."""
        z = torch.linalg.solve_triangular(self._chol, pts.double().T, upper=False).T
        return z.to(self._dtype).contiguous()

    # -------------------------------------------------------------------------------------
    def _out(self, t: torch.Tensor):
        return t if self._torch_io else t.detach().cpu().numpy()

    @property
    def dataset(self):
        return self._out(self._data)

    @property
    def weights(self):
        return self._out(self._w)

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
        """(m, d) query tensor from scipy-style (d, m) points (or a single (d,) point)."""
        is_torch = isinstance(points, torch.Tensor)
        orig_device = points.device if is_torch else None
        raw = points if is_torch else np.asarray(points)
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
                raise ValueError(f"points: have dimension {d}, dataset has dimension {self.d}")
        q, _ = _to_tensor(raw, "points", dtype=torch.float64, device=self._device)
        return q.T, is_torch, orig_device

    def logpdf(self, x):
        """Log of the estimated density at points ``x`` of shape (d, m) (or one (d,) point).

        Also sets :attr:`n_eff_` (per query, the effective number of contributing points, from
        the same fused pass) and warns with :class:`~kernelfuse.kde.FewPointsWarning` when its
        median is below ``min_neff``: the extreme-value regime of high-dimensional KDE, where
        each estimate is dominated by the query's nearest data point.
        """
        q, is_torch, orig_device = self._points_arg(x)
        z = self._whiten(q)
        lse, n_eff = _logsumexp_and_neff(z, self._white_points, self._log_w, "gaussian", 1.0)
        out = lse - 0.5 * self.log_det
        _warn_few_points(n_eff, self.min_neff, f"{type(self).__name__}.logpdf")
        if is_torch or self._torch_io:
            dev = orig_device if orig_device is not None else self._device
            self.n_eff_ = n_eff.to(dev)
            return out.to(dev)
        self.n_eff_ = n_eff.cpu().numpy()
        return out.detach().cpu().numpy()

    def evaluate(self, points):
        """Estimated density at ``points`` of shape (d, m) (or one (d,) point): ``exp(logpdf)``."""
        out = self.logpdf(points)
        return torch.exp(out) if isinstance(out, torch.Tensor) else np.exp(out)

    __call__ = evaluate
    pdf = evaluate

    # -------------------------------------------------------------------------------------
    def resample(self, size=None, seed=None):
        """Draw ``size`` points (default ``int(neff)``) from the estimate; returns shape (d, size).

        ``seed`` is None, an int, or a numpy RandomState / Generator (numpy's streams, drawn on the
        host; the result is moved to the compute device for torch input).
        """
        if size is None:
            size = int(self.neff)
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
            raise ValueError(f"size: expected a non-negative int, got {size!r}")
        rng = _check_random_state(seed)
        size = int(size)
        noise = rng.standard_normal((size, self.d)) @ self._chol.cpu().numpy().T
        idx = rng.choice(self.n, size=size, p=self._w.cpu().numpy())
        out = self._data[:, torch.from_numpy(idx).to(self._device)].double() + torch.from_numpy(noise.T).to(self._device)
        return self._out(out.to(self._dtype))

    def marginal(self, dimensions):
        """GaussianKDE of the marginal over the given dimension indices (same factor and weights)."""
        dims = np.atleast_1d(np.asarray(dimensions))
        if not np.issubdtype(dims.dtype, np.integer):
            raise ValueError("dimensions: must be integer indices of the dimensions to keep")
        dims = np.where(dims < 0, dims + self.d, dims)
        if len(np.unique(dims)) != len(dims) or np.any((dims < 0) | (dims >= self.d)):
            raise ValueError(f"dimensions: must be unique indices in [-{self.d}, {self.d})")
        sub = self._data[torch.from_numpy(dims.astype(np.int64)).to(self._device)]
        return GaussianKDE(
            sub if self._torch_io else sub.cpu().numpy(),
            bw_method=self.factor,
            weights=self._w,
            dtype=self._dtype,
            device=self._device,
            min_neff=self.min_neff,
        )
