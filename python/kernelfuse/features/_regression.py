"""Ridge and GP regression on random features, single-process or with the data sharded over ranks.

Both fit from the sufficient statistics ``n``, ``sum phi``, ``sum y``, ``Phi^T Phi`` (D x D) and
``Phi^T y`` (plus ``y^T y`` for the GP evidence). With ``group=`` (a torch.distributed process
group, or ``"world"``) each rank passes its own rows and the statistics are summed by one
all-reduce; the D x D solve is then repeated on every rank, so every rank holds the same model.
Results equal the single-process fit on the concatenated rows up to the summation order.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._random_features import RandomFeatures

__all__ = ["RandomFeatureRidge", "RandomFeatureGP"]


def _resolve_group(group):
    if group is None:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("kernelfuse.features: argument 'group': torch.distributed is not initialised")
    return dist.group.WORLD if isinstance(group, str) and group == "world" else group


def _all_reduce(tensors, group):
    if group is None:
        return tensors
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, group=group)
    out, k = [], 0
    for t in tensors:
        out.append(flat[k : k + t.numel()].reshape(t.shape))
        k += t.numel()
    return out


class _RFBase:
    def __init__(self, features: RandomFeatures, group=None):
        if not isinstance(features, RandomFeatures):
            raise TypeError(
                f"kernelfuse.features.{type(self).__name__}: argument 'features': expected a "
                f"RandomFeatures module, got {type(features).__name__}"
            )
        self.features = features
        self.group = group

    def _phi_y(self, X, y=None):
        name = type(self).__name__
        numpy_in = not isinstance(X, torch.Tensor)
        dt = torch.float64
        X = torch.as_tensor(np.asarray(X) if numpy_in else X)
        if X.dim() != 2:
            raise ValueError(f"kernelfuse.features.{name}: argument 'X': expected (n, d), got shape {tuple(X.shape)}")
        f = self.features
        if f.W is None and f.signs is None:
            raise RuntimeError(
                f"kernelfuse.features.{name}: argument 'features': not fitted (pass in_features or "
                "call features.fit first; every rank must hold the same draws, e.g. the same seed)"
            )
        phi = (
            f(X.to(f.get_params()["dtype"])).to(dt)
            if X.shape[0] > 0
            else torch.zeros(0, f.get_params()["n_features"], dtype=dt, device=X.device)
        )
        if y is None:
            return phi, None, numpy_in
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).to(dt)
        if y.shape[0] != X.shape[0] or y.dim() not in (1, 2):
            raise ValueError(
                f"kernelfuse.features.{name}: argument 'y': expected ({X.shape[0]},) or "
                f"({X.shape[0]}, k), got {tuple(y.shape)}"
            )
        return phi, y, numpy_in

    def _stats(self, phi, y):
        """Summed over ranks: n, sum phi, sum y, Phi^T Phi, Phi^T y, y^T y (per output)."""
        y2 = y if y.dim() == 2 else y[:, None]
        n = torch.tensor([float(phi.shape[0])], dtype=phi.dtype, device=phi.device)
        parts = [n, phi.sum(0), y2.sum(0), phi.T @ phi, phi.T @ y2, (y2 * y2).sum(0)]
        return _all_reduce(parts, _resolve_group(self.group))

    @staticmethod
    def _out(t, numpy_in):
        return t.detach().numpy() if numpy_in else t


class RandomFeatureRidge(_RFBase):
    """Ridge regression ``min_w |Phi w + b - y|^2 + alpha |w|^2`` on random features phi(x).

    Args:
        features: a :class:`RandomFeatures` with its draws (the same on every rank: same seed).
        alpha: the ridge penalty (> 0).
        fit_intercept: centre phi and y (the intercept is not penalised).
        group: None (single process), a process group or "world": the rows are sharded and
            the D x D Gram matrix and Phi^T y are all-reduced.

    Attributes after ``fit``: ``coef_`` (D,) or (D, k), ``intercept_``, ``n_samples_`` (global).
    """

    def __init__(self, features: RandomFeatures, alpha: float = 1.0, *, fit_intercept: bool = True, group=None):
        super().__init__(features, group)
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(
                f"kernelfuse.features.RandomFeatureRidge: argument 'alpha': expected a positive "
                f"finite number, got {alpha!r}"
            )
        self.alpha, self.fit_intercept = float(alpha), bool(fit_intercept)

    def fit(self, X, y):
        phi, y, _ = self._phi_y(X, y)
        n, sphi, sy, G, b, _ = self._stats(phi, y)
        n = float(n)
        if n == 0:
            raise ValueError("kernelfuse.features.RandomFeatureRidge.fit: argument 'X': no rows on any rank")
        if self.fit_intercept:
            mphi, my = sphi / n, sy / n
            G = G - n * torch.outer(mphi, mphi)
            b = b - n * torch.outer(mphi, my)
        D = G.shape[0]
        L = torch.linalg.cholesky(0.5 * (G + G.T) + self.alpha * torch.eye(D, dtype=G.dtype))
        coef = torch.cholesky_solve(b, L)
        self.coef_ = coef[:, 0] if y.dim() == 1 else coef
        icpt = (my - mphi @ coef) if self.fit_intercept else torch.zeros_like(sy)
        self.intercept_ = icpt[0] if y.dim() == 1 else icpt
        self.n_samples_ = int(n)
        return self

    def predict(self, X):
        phi, _, numpy_in = self._phi_y(X)
        return self._out(phi @ self.coef_ + self.intercept_, numpy_in)


class RandomFeatureGP(_RFBase):
    """GP regression with the random-feature kernel ``k(x, x') ~ amplitude^2 phi(x).phi(x')`` (the
    weight-space view: w ~ N(0, amplitude^2 I), y = phi(x).w + N(0, noise)).

    ``A = Phi^T Phi + (noise / amplitude^2) I``; posterior mean of w ``A^{-1} Phi^T y``; predictive
    variance of f ``noise * phi*^T A^{-1} phi*`` (``+ noise`` with ``include_noise``); the log
    marginal likelihood by Woodbury from ``y^T y``, ``Phi^T y`` and ``log det A``. Zero prior mean.
    ``group`` as :class:`RandomFeatureRidge`.
    """

    def __init__(self, features: RandomFeatures, *, noise: float = 0.1, amplitude: float = 1.0, group=None):
        super().__init__(features, group)
        for name, v in (("noise", noise), ("amplitude", amplitude)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(
                    f"kernelfuse.features.RandomFeatureGP: argument '{name}': expected a positive "
                    f"finite number, got {v!r}"
                )
        self.noise, self.amplitude = float(noise), float(amplitude)

    def fit(self, X, y):
        phi, y, _ = self._phi_y(X, y)
        n, _, _, G, b, yy = self._stats(phi, y)
        n = float(n)
        if n == 0:
            raise ValueError("kernelfuse.features.RandomFeatureGP.fit: argument 'X': no rows on any rank")
        D = G.shape[0]
        lam = self.noise / self.amplitude**2
        L = torch.linalg.cholesky(0.5 * (G + G.T) + lam * torch.eye(D, dtype=G.dtype))
        mean = torch.cholesky_solve(b, L)
        self._L = L
        self.coef_ = mean[:, 0] if y.dim() == 1 else mean
        logdetA = 2.0 * torch.log(torch.diagonal(L)).sum()
        quad = (yy - (b * mean).sum(0)) / self.noise
        logdetK = n * math.log(self.noise) + logdetA - D * math.log(lam)
        lml = -0.5 * (quad + logdetK + n * math.log(2 * math.pi))
        self.log_marginal_likelihood_ = float(lml.sum())
        self.n_samples_ = int(n)
        return self

    def predict(self, X, return_std: bool = False, include_noise: bool = False):
        phi, _, numpy_in = self._phi_y(X)
        mean = phi @ self.coef_
        if not return_std:
            return self._out(mean, numpy_in)
        v = torch.linalg.solve_triangular(self._L, phi.T, upper=False)
        var = self.noise * (v * v).sum(0) + (self.noise if include_noise else 0.0)
        return self._out(mean, numpy_in), self._out(var.sqrt(), numpy_in)
