"""NNGP / NTK kernels of deep fully connected networks: the matrices, exact inference with CG on the
fused products, the NTK's gradient-flow prediction, a regressor and random features (docs/nngp.md)."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

from ..ops.features import random_features
from ..ops.nngp import check_config, nngp_kernel_matrix, nngp_matmul

KINDS = ("nngp", "ntk")


def _check_mixture(fn, scale_mixture):
    if scale_mixture is None:
        return None
    try:
        a, b = (float(v) for v in scale_mixture)
    except (TypeError, ValueError):
        raise ValueError(
            f"kernelfuse.features.{fn}: argument 'scale_mixture': expected a pair (a, b) of the "
            f"inverse-gamma prior, got {scale_mixture!r}"
        ) from None
    if not (math.isfinite(a) and a > 1 and math.isfinite(b) and b > 0):
        raise ValueError(
            f"kernelfuse.features.{fn}: argument 'scale_mixture': expected a > 1 (a finite "
            f"covariance) and b > 0, got a = {a}, b = {b}"
        )
    return a, b


def nngp_kernel(
    x1: torch.Tensor,
    x2: Optional[torch.Tensor] = None,
    depth: int = 1,
    activation: str = "relu",
    *,
    sigma_w2: float = 2.0,
    sigma_b2: float = 0.0,
    scale_mixture: Optional[Tuple[float, float]] = None,
) -> torch.Tensor:
    """NNGP kernel matrix K(x1, x2) (m, n) of a fully connected network of ``depth`` hidden layers
    (activation "relu", "erf" or "step"; weights N(0, sigma_w2 / fan_in), biases N(0, sigma_b2)).
    x2 None: x1. ``scale_mixture=(a, b)``: the readout's variance scale drawn from
    InverseGamma(a, b) (a > 1): the prior is then a Student-t process with 2a degrees of freedom and
    this returns its covariance b / (a - 1) K (docs/nngp.md). Computed by the fused kernels
    (kernelfuse.ops.nngp), differentiable in x1 and x2."""
    mix = _check_mixture("nngp_kernel", scale_mixture)
    K = nngp_kernel_matrix(
        x1,
        x1 if x2 is None else x2,
        depth=depth,
        activation=activation,
        sigma_w2=sigma_w2,
        sigma_b2=sigma_b2,
        ntk=False,
    )
    return K if mix is None else K * (mix[1] / (mix[0] - 1))


def ntk_kernel(
    x1: torch.Tensor,
    x2: Optional[torch.Tensor] = None,
    depth: int = 1,
    activation: str = "relu",
    *,
    sigma_w2: float = 2.0,
    sigma_b2: float = 0.0,
) -> torch.Tensor:
    """NTK matrix Theta(x1, x2) (m, n) of the same network (NTK parameterisation)."""
    return nngp_kernel_matrix(
        x1, x1 if x2 is None else x2, depth=depth, activation=activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, ntk=True
    )


def kernel_diag(
    x: torch.Tensor, depth: int, activation: str, *, sigma_w2: float = 2.0, sigma_b2: float = 0.0, ntk: bool = False
) -> torch.Tensor:
    """diag K(x, x) (n,) in O(n (d + depth)): the recursion on the diagonal."""
    depth, activation, sw2, sb2 = check_config("kernel_diag", depth, activation, sigma_w2, sigma_b2)
    k = sw2 * (x * x).sum(1) / x.shape[1] + sb2
    th = k
    for _ in range(depth):
        if activation == "relu":
            f, g = 0.5 * k, torch.full_like(k, 0.5)
        elif activation == "step":
            f, g = torch.where(k > 0, 0.5, 0.25).to(k.dtype), torch.zeros_like(k)
        else:
            f = (2 / math.pi) * torch.asin(2 * k / (1 + 2 * k))
            g = (4 / math.pi) / torch.sqrt(1 + 4 * k)
        new = sw2 * f + sb2
        th = new + sw2 * g * th
        k = new
    return th if ntk else k


# ---------------------------------------------------------------- exact inference: PCG on fused products
class _Operator:
    """v -> (K(X, X) + noise I) v by the fused product, with a rank-r pivoted-Cholesky
    preconditioner P = L L^T + noise I (columns of K by the fused kernels; Woodbury solves)."""

    def __init__(self, X, cfg, noise, rank):
        self.X, self.cfg, self.noise = X, cfg, float(noise)
        n = X.shape[0]
        self.diag = kernel_diag(
            X, cfg["depth"], cfg["activation"], sigma_w2=cfg["sigma_w2"], sigma_b2=cfg["sigma_b2"], ntk=cfg["ntk"]
        )
        r = min(int(rank), n)
        L = X.new_zeros((n, r))
        d = self.diag.clone()
        k = 0
        for k in range(r):
            i = int(torch.argmax(d))
            if d[i] <= 1e-10 * max(float(self.diag.max()), 1e-300):
                break
            col = nngp_kernel_matrix(X, X[i : i + 1], **cfg)[:, 0] - L[:, :k] @ L[i, :k]
            L[:, k] = col / torch.sqrt(d[i])
            d = (d - L[:, k] ** 2).clamp_min(0)
        else:
            k = r
        self.L = L[:, :k]
        self.inner = (
            torch.linalg.cholesky(self.noise * torch.eye(k, dtype=X.dtype, device=X.device) + self.L.T @ self.L)
            if k
            else None
        )

    def matvec(self, V):
        return nngp_matmul(self.X, self.X, V, **self.cfg) + self.noise * V

    def precond(self, V):
        if self.inner is None:
            return V / self.noise
        t = torch.cholesky_solve(self.L.T @ V, self.inner)
        return (V - self.L @ t) / self.noise


def _pcg(op, B, tol, max_iter):
    """Solves (K + noise I) X = B (n, c) column-wise by preconditioned CG; returns (X, iterations)."""
    X = torch.zeros_like(B)
    R = B.clone()
    Z = op.precond(R)
    P = Z.clone()
    rz = (R * Z).sum(0)
    bn = B.norm(dim=0).clamp_min(1e-300)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        AP = op.matvec(P)
        alpha = rz / (P * AP).sum(0).clamp_min(1e-300)
        X += alpha * P
        R -= alpha * AP
        if bool((R.norm(dim=0) / bn <= tol).all()):
            break
        Z = op.precond(R)
        rz_new = (R * Z).sum(0)
        P = Z + (rz_new / rz.clamp_min(1e-300)) * P
        rz = rz_new
    return X, it


def _cfg(depth, activation, sigma_w2, sigma_b2, ntk):
    depth, activation, sw2, sb2 = check_config("nngp_posterior", depth, activation, sigma_w2, sigma_b2)
    return dict(depth=depth, activation=activation, sigma_w2=sw2, sigma_b2=sb2, ntk=bool(ntk))


def nngp_posterior(
    X: torch.Tensor,
    Y: torch.Tensor,
    Xs: torch.Tensor,
    *,
    depth: int = 1,
    activation: str = "relu",
    sigma_w2: float = 2.0,
    sigma_b2: float = 0.0,
    kernel: str = "nngp",
    noise: float = 1e-2,
    return_var: bool = False,
    tol: float = 1e-6,
    max_iter: int = 1000,
    precond_rank: int = 64,
    var_chunk: int = 256,
):
    """Exact infinite-width regression: mean K(Xs, X) (K(X, X) + noise I)^-1 Y (the NNGP posterior
    mean, or with kernel="ntk" the NTK kernel-regression limit of gradient flow with a ridge), and
    with ``return_var`` (NNGP) the latent posterior variance k(x, x) - k_x^T (K + noise I)^-1 k_x.
    Solves by preconditioned CG on the fused products: no n x n matrix (the variance solves chunks
    of ``var_chunk`` test points, O(n var_chunk) memory). Returns mean (m, c) [, var (m,)], info dict."""
    if kernel not in KINDS:
        raise ValueError(
            f"kernelfuse.features.nngp_posterior: argument 'kernel': unknown kernel {kernel!r}; "
            f"expected one of: {', '.join(KINDS)}"
        )
    cfg = _cfg(depth, activation, sigma_w2, sigma_b2, kernel == "ntk")
    if not (float(noise) > 0):
        raise ValueError(f"kernelfuse.features.nngp_posterior: argument 'noise': expected > 0, got {noise}")
    vec = Y.dim() == 1
    Y2 = Y[:, None] if vec else Y
    op = _Operator(X, cfg, noise, precond_rank)
    alpha, iters = _pcg(op, Y2, tol, max_iter)
    mean = nngp_matmul(Xs, X, alpha, **cfg)
    info = dict(iterations=iters, precond_rank=op.L.shape[1], alpha=alpha)
    mean = mean[:, 0] if vec else mean
    if not return_var:
        return mean, info
    if kernel != "nngp":
        raise ValueError(
            "kernelfuse.features.nngp_posterior: argument 'return_var': the variance is the NNGP's (kernel='nngp')"
        )
    var = kernel_diag(Xs, **{k: v for k, v in cfg.items()})
    out = []
    for s in range(0, Xs.shape[0], var_chunk):
        Kxs = nngp_kernel_matrix(X, Xs[s : s + var_chunk], **cfg)  # (n, chunk)
        sol, _ = _pcg(op, Kxs, tol, max_iter)
        out.append((Kxs * sol).sum(0))
    red = torch.cat(out) if out else var[:0]
    return mean, (var - red).clamp_min(0), info


def ntk_gradient_flow(
    X: torch.Tensor,
    Y: torch.Tensor,
    Xs: torch.Tensor,
    t: float,
    *,
    depth: int = 1,
    activation: str = "relu",
    sigma_w2: float = 2.0,
    sigma_b2: float = 0.0,
    learning_rate: float = 1.0,
) -> torch.Tensor:
    """Mean prediction at Xs of an infinitely wide network trained by gradient flow for time t on
    L = 1/2 sum_i |f(x_i) - y_i|^2 (from f_0 with zero mean): Theta(Xs, X) Theta^-1 (I - exp(-lr Theta t)) Y,
    in closed form from the eigendecomposition of the n x n NTK (small n). t = inf: kernel regression."""
    cfg = _cfg(depth, activation, sigma_w2, sigma_b2, True)
    T = nngp_kernel_matrix(X, X, **cfg)
    T = 0.5 * (T + T.T)
    lam, V = torch.linalg.eigh(T)
    lam = lam.clamp_min(0)
    tt = float(t) * float(learning_rate)
    if math.isinf(tt):
        f = torch.where(lam > 1e-12 * lam.max(), 1 / lam.clamp_min(1e-300), torch.zeros_like(lam))
    else:
        f = torch.where(lam > 0, -torch.expm1(-lam * tt) / lam.clamp_min(1e-300), torch.full_like(lam, tt))
    Y2 = Y[:, None] if Y.dim() == 1 else Y
    coef = V @ (f[:, None] * (V.T @ Y2))
    out = nngp_matmul(Xs, X, coef, **cfg)
    return out[:, 0] if Y.dim() == 1 else out


class NNGPRegressor:
    """scikit-learn style regressor with the NNGP / NTK of a deep fully connected network.

    Args: kernel "nngp" | "ntk"; depth, activation, sigma_w2, sigma_b2 (the network); alpha (noise
    variance / ridge); t (NTK only: gradient-flow time, None = infinity, closed form for small n);
    scale_mixture (a, b) (NNGP only: the inverse-gamma scale mixture: Student-t predictive, whose
    mean is the GP's and whose variance is rescaled by the data, docs/nngp.md); tol, max_iter,
    precond_rank (the PCG solver); dtype.

    fit(X, y), predict(X, return_std=False), score(X, y) (R^2), get_params / set_params.
    """

    def __init__(
        self,
        kernel: str = "nngp",
        depth: int = 1,
        activation: str = "relu",
        sigma_w2: float = 2.0,
        sigma_b2: float = 0.0,
        alpha: float = 1e-2,
        t: Optional[float] = None,
        scale_mixture: Optional[Tuple[float, float]] = None,
        tol: float = 1e-6,
        max_iter: int = 1000,
        precond_rank: int = 64,
        dtype=torch.float64,
    ):
        self.kernel, self.depth, self.activation = kernel, depth, activation
        self.sigma_w2, self.sigma_b2, self.alpha, self.t = sigma_w2, sigma_b2, alpha, t
        self.scale_mixture, self.tol, self.max_iter, self.precond_rank, self.dtype = (
            scale_mixture,
            tol,
            max_iter,
            precond_rank,
            dtype,
        )

    _PARAMS = (
        "kernel",
        "depth",
        "activation",
        "sigma_w2",
        "sigma_b2",
        "alpha",
        "t",
        "scale_mixture",
        "tol",
        "max_iter",
        "precond_rank",
        "dtype",
    )

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self._PARAMS:
                raise ValueError(
                    f"kernelfuse.features.NNGPRegressor.set_params: unknown parameter {k!r}; "
                    f"expected one of: {', '.join(self._PARAMS)}"
                )
            setattr(self, k, v)
        return self

    def _as(self, X, name):
        numpy_in = not isinstance(X, torch.Tensor)
        t = torch.as_tensor(np.asarray(X) if numpy_in else X, dtype=self.dtype)
        if t.dim() != 2:
            raise ValueError(
                f"kernelfuse.features.NNGPRegressor: argument '{name}': expected a 2-d array "
                f"(n_samples, n_features), got shape {tuple(t.shape)}"
            )
        return t, numpy_in

    def fit(self, X, y):
        if self.kernel not in KINDS:
            raise ValueError(
                f"kernelfuse.features.NNGPRegressor: parameter 'kernel': unknown kernel {self.kernel!r}; "
                f"expected one of: {', '.join(KINDS)}"
            )
        self._mix = _check_mixture("NNGPRegressor", self.scale_mixture)
        if self._mix is not None and self.kernel != "nngp":
            raise ValueError("kernelfuse.features.NNGPRegressor: parameter 'scale_mixture' needs kernel='nngp'")
        if self.t is not None and self.kernel != "ntk":
            raise ValueError("kernelfuse.features.NNGPRegressor: parameter 't' (gradient-flow time) needs kernel='ntk'")
        X_, _ = self._as(X, "X")
        y_ = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y, dtype=self.dtype)
        if y_.shape[0] != X_.shape[0]:
            raise ValueError(
                f"kernelfuse.features.NNGPRegressor.fit: argument 'y': expected {X_.shape[0]} rows "
                f"(as X), got shape {tuple(y_.shape)}"
            )
        self._cfg = _cfg(self.depth, self.activation, self.sigma_w2, self.sigma_b2, self.kernel == "ntk")
        self.X_train_, self._y1 = X_, y_.dim() == 1
        self.y_train_ = y_[:, None] if self._y1 else y_
        self.n_features_in_ = X_.shape[1]
        if self.t is None:
            self._op = _Operator(X_, self._cfg, self.alpha, self.precond_rank)
            self.alpha_, self.n_iter_ = _pcg(self._op, self.y_train_, self.tol, self.max_iter)
        return self

    def predict(self, X, return_std: bool = False):
        Xs, numpy_in = self._as(X, "X")
        if not hasattr(self, "X_train_"):
            raise RuntimeError("kernelfuse.features.NNGPRegressor: call fit before predict")
        if self.t is not None:
            mean = ntk_gradient_flow(
                self.X_train_, self.y_train_, Xs, self.t, **{k: v for k, v in self._cfg.items() if k != "ntk"}
            )
        else:
            mean = nngp_matmul(Xs, self.X_train_, self.alpha_, **self._cfg)
        mean = mean[:, 0] if self._y1 else mean
        std = None
        if return_std:
            if self.kernel != "nngp":
                raise ValueError("kernelfuse.features.NNGPRegressor.predict: return_std needs kernel='nngp'")
            var = kernel_diag(Xs, **self._cfg)
            red = []
            for s in range(0, Xs.shape[0], 256):
                Kxs = nngp_kernel_matrix(self.X_train_, Xs[s : s + 256], **self._cfg)
                sol, _ = _pcg(self._op, Kxs, self.tol, self.max_iter)
                red.append((Kxs * sol).sum(0))
            var = (var - torch.cat(red)).clamp_min(0) + self.alpha
            if self._mix is not None:  # Student-t predictive (docs/nngp.md)
                a, b = self._mix
                n = self.X_train_.shape[0]
                beta = (self.y_train_ * self.alpha_).sum(0).mean()
                nu = 2 * a + n
                var = var * (2 * b + beta) / (nu - 2)
            std = var.sqrt()
        conv = (lambda t: t.numpy()) if numpy_in else (lambda t: t)
        return (conv(mean), conv(std)) if return_std else conv(mean)

    def score(self, X, y):
        pred = np.asarray(self.predict(np.asarray(X)))
        y = np.asarray(y)
        return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


# ---------------------------------------------------------------- random features
class NNGPRandomFeatures:
    """Random features phi(x) with phi(x).phi(y) ~ NNGP (or NTK) of the network: the hidden layers
    of one random network of width ``width`` (the fused :func:`kernelfuse.random_features` op for
    relu / step; erf in torch), phi = [sqrt(sw2 / D) act(z_L), sqrt(sb2)], an unbiased estimate of
    Sigma_{L+1} for one layer and consistent for deeper ones. NTK: Psi_{h+1} = [Phi_{h+1},
    sketch(Psi_h (x) Phidot_{h+1})], Phidot = sqrt(sw2 / D) act'(z) (features of sw2 E[phi' phi']),
    the tensor product sketched by ``sketch`` random index pairs (unbiased for the product kernel).
    """

    def __init__(
        self,
        in_features: int,
        width: int = 1024,
        depth: int = 1,
        activation: str = "relu",
        *,
        sigma_w2: float = 2.0,
        sigma_b2: float = 0.0,
        ntk: bool = False,
        sketch: Optional[int] = None,
        seed: int = 0,
        dtype=torch.float64,
    ):
        self.depth, self.activation, self.sw2, self.sb2 = check_config(
            "NNGPRandomFeatures", depth, activation, sigma_w2, sigma_b2
        )
        self.width, self.ntk, self.sketch = int(width), bool(ntk), int(sketch or width)
        g = torch.Generator().manual_seed(seed)
        self.Ws, self.bs, self.pairs = [], [], []
        fan = in_features
        psi_dim = in_features + (1 if self.sb2 > 0 else 0)
        for _ in range(self.depth):
            self.Ws.append(torch.randn(fan, self.width, generator=g, dtype=dtype) * math.sqrt(self.sw2 / fan))
            self.bs.append(torch.randn(self.width, generator=g, dtype=dtype) * math.sqrt(self.sb2))
            if self.ntk:
                i = torch.randint(psi_dim, (self.sketch,), generator=g)
                j = torch.randint(self.width, (self.sketch,), generator=g)
                self.pairs.append((i, j, math.sqrt(psi_dim * self.width / self.sketch)))
                psi_dim = self.width + (1 if self.sb2 > 0 else 0) + self.sketch
            fan = self.width

    def _with_bias(self, f):
        if self.sb2 > 0:
            return torch.cat([f, torch.full_like(f[:, :1], math.sqrt(self.sb2))], 1)
        return f

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.Ws[0].dtype) if self.depth else x
        h = x
        psi = self._with_bias(x * math.sqrt(self.sw2 / x.shape[1]))
        phi = psi
        for li, (W, b) in enumerate(zip(self.Ws, self.bs)):
            if self.activation == "erf":
                z = h @ W + b
                a, da = torch.erf(z), (2 / math.sqrt(math.pi)) * torch.exp(-z * z)
            else:
                kind = "relu" if self.activation == "relu" else "step"
                a = random_features(h, W, b, kind=kind, scale=1.0)
                da = (h @ W + b > 0).to(h.dtype) if (self.ntk and kind == "relu") else None
            c = math.sqrt(self.sw2 / self.width)
            phi = self._with_bias(c * a)
            if self.ntk:
                i, j, s = self.pairs[li]
                dphi = c * da if da is not None else torch.zeros_like(a)
                psi = torch.cat([phi, s * psi[:, i] * dphi[:, j]], 1)
            h = a
        return psi if self.ntk else phi


__all__ = [
    "KINDS",
    "NNGPRandomFeatures",
    "NNGPRegressor",
    "kernel_diag",
    "nngp_kernel",
    "nngp_posterior",
    "ntk_gradient_flow",
    "ntk_kernel",
]
