"""GridGPRegressor: exact GP regression on a Cartesian grid with a product kernel over the axes."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..ops.kron import kron_gp_mll, kron_matmul, kron_posterior
from ..ops.kron_grid import grid_kernel
from ._common import as_tensor, check_axes, check_kind, default_params, to_output

_CLS = "GridGPRegressor"


class GridGPRegressor:
    """Exact Gaussian-process regression for data on a Cartesian grid.

    The kernel is a product over the grid axes, k(x, x') = prod_d k_d(x_d, x'_d), each k_d one of
    the ``kernelfuse.grid_kernel`` kinds, so the covariance of the N = prod n_d training values is
    K = K_1 (x) ... (x) K_D and every quantity is exact: negative log marginal likelihood, its
    gradient and the posterior come from ``kron_gp_mll`` / ``kron_posterior`` (per-axis
    eigendecompositions, O(sum n_d^3 + N sum n_d)), never an N x N matrix.

    Args:
        kernel: a kind ("rbf", "matern12", "matern32", "matern52", "sm", "stm") for every axis, or a
            list with one kind per axis.
        noise: initial Gaussian noise variance s^2 (> 0).
        lengthscale: initial lengthscale (all axes; default 1/10 of each axis span).
        outputscale: initial signal variance (the product kernel's amplitude).
        num_mixtures: components per axis for "sm" / "stm".
        learn_noise: fit the noise variance too (else it stays at ``noise``).
        optimizer: "lbfgs" (strong-Wolfe line search) or "adam".
        max_iter: optimiser iterations; lr: step size (Adam) or initial step (L-BFGS).
        min_noise: lower bound on the noise variance during fitting.
        normalize_y: subtract the mean and divide by the std of y before fitting (undone on output).
        dtype: computation dtype (float64 default; float32 possible).

    Inputs ``grid`` are a list of D 1-D arrays (the axes), ``y`` of shape (n_1, ..., n_D) (or flat,
    row-major with the last axis fastest). numpy in gives numpy out; torch in gives torch out.
    """

    def __init__(
        self,
        kernel="rbf",
        noise: float = 1e-2,
        *,
        lengthscale: Optional[float] = None,
        outputscale: float = 1.0,
        num_mixtures: int = 4,
        learn_noise: bool = True,
        optimizer: str = "lbfgs",
        max_iter: int = 100,
        lr: Optional[float] = None,
        min_noise: float = 1e-8,
        normalize_y: bool = False,
        dtype: torch.dtype = torch.float64,
    ):
        if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise > 0):
            raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'noise' must be a positive variance, got {noise!r}")
        if not (isinstance(outputscale, (int, float)) and outputscale > 0):
            raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'outputscale' must be positive, got {outputscale!r}")
        if lengthscale is not None and not (isinstance(lengthscale, (int, float)) and lengthscale > 0):
            raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'lengthscale' must be positive, got {lengthscale!r}")
        if optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'optimizer' must be 'lbfgs' or 'adam', got {optimizer!r}")
        if not (isinstance(num_mixtures, int) and num_mixtures >= 1):
            raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'num_mixtures' must be an int >= 1, got {num_mixtures!r}")
        if not (isinstance(max_iter, int) and max_iter >= 0):
            raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'max_iter' must be an int >= 0, got {max_iter!r}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(
                f"kernelfuse.gp.{_CLS}: argument 'dtype' must be torch.float32 or torch.float64, got {dtype}"
            )
        self.kernel = kernel
        self.noise = float(noise)
        self.lengthscale = lengthscale
        self.outputscale = float(outputscale)
        self.num_mixtures = num_mixtures
        self.learn_noise = learn_noise
        self.optimizer = optimizer
        self.max_iter = max_iter
        self.lr = lr
        self.min_noise = float(min_noise)
        self.normalize_y = normalize_y
        self.dtype = dtype
        self._fitted = False

    # ------------------------------------------------------------------ parameters
    def _factor_params(self):
        """Per-axis (Q, P) parameter tensors; the amplitude lives in axis 0 (rbf / matern kinds)."""
        out = []
        for d, (k, p) in enumerate(zip(self.kinds_, self.raw_)):
            if k in ("sm", "stm"):
                out.append(p)
            elif d == 0:
                out.append(torch.cat([self.log_outputscale_.expand(p.shape[0], 1), p], 1))
            else:
                out.append(torch.cat([torch.zeros_like(p), p], 1))
        return out

    def _noise(self):
        return self.min_noise + torch.exp(self.log_noise_)

    def _factors(self):
        return [grid_kernel(x, x, k, p) for x, k, p in zip(self.axes_, self.kinds_, self._factor_params())]

    def _loss(self):
        nll, alpha = kron_gp_mll(self._factors(), self.y_, self._noise())
        return nll, alpha

    # ------------------------------------------------------------------ public API
    def fit(self, grid, y):
        """Fit the hyper-parameters by exact marginal likelihood. Returns self."""
        self._numpy = not isinstance(y, torch.Tensor)
        dev = y.device if isinstance(y, torch.Tensor) else None
        if dev is not None and dev.type == "meta":
            as_tensor(y, "y", self.dtype, dev, _CLS)  # raises: a meta tensor has no values
        self.axes_ = check_axes(grid, "grid", self.dtype, dev, _CLS)
        D = len(self.axes_)
        self.shape_ = tuple(int(a.numel()) for a in self.axes_)
        yt = as_tensor(y, "y", self.dtype, dev, _CLS)
        N = int(np.prod(self.shape_))
        if yt.shape != self.shape_ and not (yt.dim() == 1 and yt.numel() == N):
            raise ValueError(
                f"kernelfuse.gp.{_CLS}: argument 'y': expected shape {self.shape_} (the grid) or ({N},), "
                f"got {tuple(yt.shape)}"
            )
        yt = yt.reshape(-1)
        self.y_mean_ = yt.mean() if self.normalize_y else yt.new_zeros(())
        self.y_std_ = yt.std() if (self.normalize_y and N > 1 and float(yt.std()) > 0) else yt.new_ones(())
        self.y_ = (yt - self.y_mean_) / self.y_std_
        self.kinds_ = check_kind(self.kernel, D, _CLS)
        raw = []
        for x, k in zip(self.axes_, self.kinds_):
            p0 = default_params(k, x, self.num_mixtures, lengthscale=self.lengthscale)
            raw.append(p0 if k in ("sm", "stm") else p0[:, 1:].clone())
        self.raw_ = [p.clone().requires_grad_(True) for p in raw]
        self.log_outputscale_ = torch.tensor(
            [[math.log(self.outputscale)]], dtype=self.dtype, device=yt.device
        ).requires_grad_(True)
        self.log_noise_ = torch.tensor(
            math.log(max(self.noise - self.min_noise, 1e-12)), dtype=self.dtype, device=yt.device
        ).requires_grad_(self.learn_noise)
        params = list(self.raw_) + [self.log_outputscale_] + ([self.log_noise_] if self.learn_noise else [])
        self.history_ = []
        if self.max_iter > 0:
            if self.optimizer == "adam":
                opt = torch.optim.Adam(params, lr=self.lr or 0.05)
                for _ in range(self.max_iter):
                    opt.zero_grad()
                    loss = self._loss()[0]
                    loss.backward()
                    opt.step()
                    self.history_.append(float(loss.detach()))
            else:
                opt = torch.optim.LBFGS(
                    params,
                    lr=self.lr or 1.0,
                    max_iter=self.max_iter,
                    line_search_fn="strong_wolfe",
                    tolerance_grad=1e-9,
                    tolerance_change=1e-12,
                )

                def closure():
                    opt.zero_grad()
                    loss = self._loss()[0]
                    loss.backward()
                    self.history_.append(float(loss.detach()))
                    return loss

                opt.step(closure)
        with torch.no_grad():
            self.factors_ = self._factors()
            nll, self.alpha_ = kron_gp_mll(self.factors_, self.y_, self._noise())
            self.nll_ = float(nll)
        self._fitted = True
        return self

    def _check_fitted(self):
        if not self._fitted:
            raise RuntimeError(f"kernelfuse.gp.{_CLS}: call fit(grid, y) first")

    @property
    def hyperparameters_(self) -> dict:
        """Fitted hyper-parameters per axis (natural units) and the noise variance."""
        self._check_fitted()
        out = {"noise": float(self._noise().detach())}
        for d, (k, p) in enumerate(zip(self.kinds_, self._factor_params())):
            p = p.detach()
            if k in ("sm", "stm"):
                out[f"axis{d}"] = {
                    "weights": torch.exp(p[:, 0]).tolist(),
                    "freqs": p[:, 1].tolist(),
                    "lengthscales": torch.exp(p[:, 2]).tolist(),
                }
            else:
                out[f"axis{d}"] = {"variance": float(torch.exp(p[0, 0])), "lengthscale": float(torch.exp(p[0, 1]))}
        if all(k not in ("sm", "stm") for k in self.kinds_):
            out["outputscale"] = float(torch.exp(self.log_outputscale_.detach())) * float(self.y_std_) ** 2
        return out

    def log_marginal_likelihood(self) -> float:
        """Exact log marginal likelihood of the (normalised) training values at the fitted parameters."""
        self._check_fitted()
        return -self.nll_

    def predict(self, x=None, return_var: bool = False):
        """Posterior mean (and marginal variance of the latent function) at ``x``.

        ``x`` None: the training grid, shape (n_1, ..., n_D). A list of D 1-D arrays: another grid,
        shape (m_1, ..., m_D). An (M, D) array: scattered points, shape (M,) (O(M N) time, no M x N
        matrix). Add ``noise`` (``hyperparameters_['noise']``) for the predictive variance of y.
        """
        self._check_fitted()
        dev = self.y_.device
        fp = [p.detach() for p in self._factor_params()]
        s2 = self._noise().detach()
        D = len(self.axes_)
        with torch.no_grad():
            if x is None:
                numpy_out = self._numpy
                mean, var = kron_posterior(self.factors_, self.y_, s2)
                shape = self.shape_
            elif isinstance(x, (list, tuple)):
                numpy_out = not isinstance(x[0], torch.Tensor) if len(x) else self._numpy
                axes = check_axes(x, "x", self.dtype, dev, _CLS)
                if len(axes) != D:
                    raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'x': expected {D} axes, got {len(axes)}")
                cross = [grid_kernel(a, b, k, p) for a, b, k, p in zip(axes, self.axes_, self.kinds_, fp)]
                prior = [torch.diagonal(grid_kernel(a, a, k, p)).contiguous() for a, k, p in zip(axes, self.kinds_, fp)]
                mean, var = kron_posterior(
                    self.factors_, self.y_, s2, cross_factors=cross, targets="grid", prior_var=prior
                )
                shape = tuple(int(a.numel()) for a in axes)
            else:
                numpy_out = not isinstance(x, torch.Tensor)
                xt = as_tensor(x, "x", self.dtype, dev, _CLS)
                if xt.dim() == 1 and D == 1:
                    xt = xt[:, None]
                if xt.dim() != 2 or xt.shape[1] != D:
                    raise ValueError(
                        f"kernelfuse.gp.{_CLS}: argument 'x': expected scattered points of shape (M, {D}), "
                        f"a list of {D} axes, or None, got shape {tuple(xt.shape)}"
                    )
                mean, var = self._scattered(xt, fp, s2)
                shape = (xt.shape[0],)
        mean = (mean * self.y_std_ + self.y_mean_).reshape(shape)
        var = (var.clamp_min(0) * self.y_std_**2).reshape(shape)
        return (to_output(mean, numpy_out), to_output(var, numpy_out)) if return_var else to_output(mean, numpy_out)

    def _scattered(self, xt, fp, s2):
        cross = [grid_kernel(xt[:, d].contiguous(), self.axes_[d], self.kinds_[d], fp[d]) for d in range(len(fp))]
        prior = torch.ones(xt.shape[0], dtype=self.dtype, device=xt.device)
        for d in range(len(fp)):
            x0 = xt[:1, d].contiguous()
            prior = prior * grid_kernel(x0, x0, self.kinds_[d], fp[d])[0, 0]  # stationary: k(x, x) = k(0)
        return kron_posterior(self.factors_, self.y_, s2, cross_factors=cross, targets="scattered", prior_var=prior)

    def sample_posterior(self, n: int, *, generator: Optional[torch.Generator] = None):
        """``n`` exact joint samples of the latent function at the training grid, shape (n, n_1, ..., n_D).

        The posterior covariance there is Q diag(lambda s^2 / (lambda + s^2)) Q^T with the Kronecker
        eigenbasis Q, so a sample is mean + Q (sqrt(.) * z), z ~ N(0, I): O(n N sum n_d)."""
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'n' must be an int >= 0, got {n!r}")
        with torch.no_grad():
            ev, Qs = zip(*[torch.linalg.eigh(f) for f in self.factors_])
            lam = ev[0]
            for e in ev[1:]:
                lam = torch.outer(lam, e).reshape(-1)
            s2 = self._noise().detach()
            lam = lam.clamp_min(0)
            sd = torch.sqrt(lam * s2 / (lam + s2))
            z = torch.randn(n, lam.numel(), generator=generator, dtype=self.dtype, device=lam.device)
            mean = kron_matmul(list(self.factors_), self.alpha_)
            smp = mean + kron_matmul(list(Qs), sd * z)
            smp = (smp * self.y_std_ + self.y_mean_).reshape(n, *self.shape_)
        return to_output(smp, self._numpy)


__all__ = ["GridGPRegressor"]
