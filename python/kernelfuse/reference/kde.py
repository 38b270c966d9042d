"""Reference kernel sums: readable, chunked plain torch (the m x n block is formed per chunk).

These are the spec of :func:`kernelfuse.kernel_sum` and :func:`kernelfuse.kernel_logsumexp`.

The kernel sees r = dist(x, y) / h with dist one of METRICS (coordinate metrics of the scaled
differences (x_k - y_k) / h_k; haversine: great-circle distance of (lat, lon) rows in radians,
scalar h). Compact kernels are 0 outside dist(x, y) < h; with a scalar bandwidth that test is
made on unscaled distances (squared euclidean distance < h^2), exact for integer data.
"""

from __future__ import annotations

import math

import torch

KERNELS = (
    "gaussian",
    "laplacian",
    "cauchy",
    "matern32",
    "matern52",
    "inverse_multiquadric",
    "tophat",
    "epanechnikov",
    "linear",
    "cosine",
    "rational_quadratic",
)
COMPACT_KERNELS = ("tophat", "epanechnikov", "linear", "cosine")
METRICS = ("euclidean", "manhattan", "chebyshev", "minkowski", "haversine")


def check_metric(metric, p, d, bandwidth, fn="kernel_sum"):
    """The metric argument checks (same messages as the C++ glue)."""
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(
            f"kernelfuse.{fn}: argument 'metric': unknown metric {metric!r}; expected one of: {', '.join(METRICS)}"
        )
    if metric == "minkowski" and not (math.isfinite(float(p)) and float(p) >= 1.0):
        raise ValueError(f"kernelfuse.{fn}: argument 'p': expected a finite p >= 1 for metric 'minkowski', got {p}")
    if metric == "haversine":
        if d != 2:
            raise ValueError(
                f"kernelfuse.{fn}: argument 'metric': 'haversine' expects d == 2 columns "
                f"(latitude, longitude in radians), got d = {d}"
            )
        if isinstance(bandwidth, torch.Tensor) and bandwidth.numel() != 1:
            raise ValueError(
                f"kernelfuse.{fn}: argument 'bandwidth': metric 'haversine' takes a scalar "
                f"bandwidth, got {bandwidth.numel()} values (shape {tuple(bandwidth.shape)})"
            )


def log_profile(kernel: str, s: torch.Tensor, inside=None) -> torch.Tensor:
    """log k as a function of s = r^2 (r = dist / h); -inf outside a compact support (inside: the
    support as a mask, default s < 1)."""
    r = s.clamp_min(0).sqrt()
    if kernel == "gaussian":
        return -0.5 * s
    if kernel == "laplacian":
        return -r
    if kernel == "cauchy":
        return -torch.log1p(s)
    if kernel == "matern32":
        a = math.sqrt(3.0) * r
        return torch.log1p(a) - a
    if kernel == "matern52":
        a = math.sqrt(5.0) * r
        return torch.log1p(a + a * a / 3.0) - a
    if kernel == "inverse_multiquadric":
        return -0.5 * torch.log1p(s)
    if kernel == "rational_quadratic":  # (1 + r^2 / (2 alpha))^(-alpha), alpha = 2
        return -2.0 * torch.log1p(s / 4.0)
    inside = r < 1 if inside is None else inside
    ninf = torch.where(s.isnan(), s, -math.inf)  # outside the support (an infinite distance too); NaN stays NaN
    if kernel == "tophat":
        return torch.where(inside, torch.zeros_like(s), ninf)
    if kernel == "epanechnikov":
        return torch.where(inside, torch.log(torch.where(inside, 1 - s, 1)), ninf)
    if kernel == "linear":
        return torch.where(inside, torch.log(torch.where(inside, 1 - r, 1)), ninf)
    if kernel == "cosine":
        return torch.where(inside, torch.log(torch.cos(0.5 * math.pi * torch.where(inside, r, 0))), ninf)
    raise ValueError(f"kernel: unknown kernel {kernel!r}; expected one of {', '.join(KERNELS)}")


def profile(kernel: str, s: torch.Tensor, inside=None) -> torch.Tensor:
    """k as a function of s = r^2 (inside: the compact support as a mask, default s < 1)."""
    r = s.clamp_min(0).sqrt()
    if kernel == "gaussian":
        return torch.exp(-0.5 * s)
    if kernel == "laplacian":
        return torch.exp(-r)
    if kernel == "cauchy":
        return 1.0 / (1.0 + s)
    if kernel == "matern32":
        a = math.sqrt(3.0) * r
        return (1 + a) * torch.exp(-a)
    if kernel == "matern52":
        a = math.sqrt(5.0) * r
        return (1 + a + a * a / 3.0) * torch.exp(-a)
    if kernel == "inverse_multiquadric":
        return torch.rsqrt(1.0 + s)
    if kernel == "rational_quadratic":
        return (1.0 + s / 4.0) ** -2
    inside = r < 1 if inside is None else inside
    # outside the support (an infinite distance too: 0, not inf * 0); NaN stays NaN
    zero = torch.where(s.isnan(), s, 0.0)
    if kernel == "tophat":
        return torch.where(inside, torch.ones_like(s), zero)
    if kernel == "epanechnikov":
        return torch.where(inside, 1 - s, zero)
    if kernel == "linear":
        return torch.where(inside, 1 - r, zero)
    if kernel == "cosine":
        return torch.where(inside, torch.cos(0.5 * math.pi * torch.clamp(r, max=1.0)), zero)
    raise ValueError(f"kernel: unknown kernel {kernel!r}; expected one of {', '.join(KERNELS)}")


def _sq_dist(x: torch.Tensor, y: torch.Tensor, bandwidth) -> torch.Tensor:
    """s[..., j, i] = |(x_j - y_i) / h|^2 by explicit differences (exact, memory m*n*d per chunk)."""
    xs = x / bandwidth
    ys = y / bandwidth
    diff = xs.unsqueeze(-2) - ys.unsqueeze(-3)
    return (diff * diff).sum(-1)


def _norm(diff: torch.Tensor, metric: str, p: float) -> torch.Tensor:
    """The coordinate metric of differences (..., d) -> (...)."""
    a = diff.abs()
    if metric == "manhattan":
        return a.sum(-1)
    if metric == "chebyshev":
        return a.amax(-1) if a.shape[-1] > 0 else a.sum(-1)
    if metric == "minkowski":
        return a.pow(p).sum(-1).pow(1.0 / p)
    return (diff * diff).sum(-1).sqrt()


def haversine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Great-circle distances [..., j, i] of (lat, lon) rows in radians (scikit-learn's formula)."""
    lat1, lon1 = x[..., :, None, 0], x[..., :, None, 1]
    lat2, lon2 = y[..., None, :, 0], y[..., None, :, 1]
    a = torch.sin(0.5 * (lat1 - lat2)) ** 2 + torch.cos(lat1) * torch.cos(lat2) * torch.sin(0.5 * (lon1 - lon2)) ** 2
    return 2 * torch.asin(torch.sqrt(a.clamp(0, 1)))


def pair_s(x, y, bandwidth, kernel="gaussian", metric="euclidean", p=2.0):
    """(s, inside): s = (dist(x_j, y_i) / h)^2 and the support mask of a compact kernel (None for
    the others). With a scalar bandwidth the support is dist < h on unscaled distances (squared
    euclidean distance < h^2: exact for integer data); with a per-dimension one it is s < 1."""
    scalar = not isinstance(bandwidth, torch.Tensor) or bandwidth.numel() == 1
    h = bandwidth.reshape(()) if isinstance(bandwidth, torch.Tensor) and scalar else bandwidth
    compact = kernel in COMPACT_KERNELS
    if metric == "haversine":
        D = haversine(x, y)
        return (D / h) ** 2, (D < h) if compact else None
    if scalar and compact:
        diff = x.unsqueeze(-2) - y.unsqueeze(-3)
        if metric == "euclidean":
            D2 = (diff * diff).sum(-1)
            return D2 / (h * h), D2 < h * h
        D = _norm(diff, metric, p)
        return (D / h) ** 2, D < h
    if metric == "euclidean":
        s = _sq_dist(x, y, bandwidth)
    else:
        s = _norm(x.unsqueeze(-2) / bandwidth - y.unsqueeze(-3) / bandwidth, metric, p) ** 2
    return s, (s < 1) if compact else None


def _self_mask(s: torch.Tensor) -> torch.Tensor:
    m, n = s.shape[-2], s.shape[-1]
    return torch.eye(m, n, dtype=torch.bool, device=s.device)


def kernel_sum(
    x,
    y,
    weights=None,
    *,
    kernel="gaussian",
    bandwidth=1.0,
    exclude_self=False,
    metric="euclidean",
    p=2.0,
    chunk_size: int = 1024,
):
    """sum_i w_i k(dist(x_j, y_i) / h), chunked over queries. Shapes as :func:`kernelfuse.kernel_sum`."""
    check_metric(metric, p, x.shape[-1], bandwidth)
    w = torch.ones(y.shape[:-1], dtype=x.dtype, device=x.device) if weights is None else weights
    vec = w.dim() == y.dim() - 1
    if vec:
        w = w.unsqueeze(-1)
    if y.dim() == 3 and w.dim() == 2:  # shared (n, c) weights for a batch
        w = w.expand(y.shape[0], *w.shape)
    outs = []
    m = x.shape[-2]
    for start in range(0, max(m, 1), chunk_size):
        xs = x[..., start : start + chunk_size, :]
        s, inside = pair_s(xs, y, bandwidth, kernel, metric, p)
        k = profile(kernel, s, inside)
        if exclude_self:
            mask = torch.eye(x.shape[-2], y.shape[-2], dtype=torch.bool, device=x.device)[start : start + chunk_size]
            k = k.masked_fill(mask, 0)
        outs.append(k @ w)
    out = torch.cat(outs, dim=-2)[..., :m, :]
    return out.squeeze(-1) if vec else out


def kernel_logsumexp(
    x,
    y,
    log_weights=None,
    *,
    kernel="gaussian",
    bandwidth=1.0,
    exclude_self=False,
    metric="euclidean",
    p=2.0,
    chunk_size: int = 1024,
):
    """log sum_i exp(log w_i + log k(dist(x_j, y_i) / h)), stable; shapes as kernel_sum."""
    check_metric(metric, p, x.shape[-1], bandwidth, "kernel_logsumexp")
    lw = torch.zeros(y.shape[:-1], dtype=x.dtype, device=x.device) if log_weights is None else log_weights
    vec = lw.dim() == y.dim() - 1
    if vec:
        lw = lw.unsqueeze(-1)
    if y.dim() == 3 and lw.dim() == 2:
        lw = lw.expand(y.shape[0], *lw.shape)
    outs = []
    m = x.shape[-2]
    for start in range(0, max(m, 1), chunk_size):
        xs = x[..., start : start + chunk_size, :]
        lk = log_profile(kernel, *pair_s(xs, y, bandwidth, kernel, metric, p))
        if exclude_self:
            mask = torch.eye(x.shape[-2], y.shape[-2], dtype=torch.bool, device=x.device)[start : start + chunk_size]
            lk = lk.masked_fill(mask, -math.inf)
        # (..., mc, n, 1) + (..., 1, n, c) -> logsumexp over n
        outs.append(torch.logsumexp(lk.unsqueeze(-1) + lw.unsqueeze(-3), dim=-2))
    out = torch.cat(outs, dim=-2)[..., :m, :]
    return out.squeeze(-1) if vec else out


def kernel_logsumexp_sq(
    x, y, log_weights=None, *, kernel="gaussian", bandwidth=1.0, exclude_self=False, metric="euclidean", p=2.0
):
    """(lse, lse2): lse as kernel_logsumexp and lse2 = log sum_i exp(2 (log w_i + log k_ji)).

    exp(2 lse - lse2) is the effective number of points contributing to each query (Kish's n_eff).
    """
    lse = kernel_logsumexp(
        x, y, log_weights, kernel=kernel, bandwidth=bandwidth, exclude_self=exclude_self, metric=metric, p=p
    )
    lw = None if log_weights is None else 2 * log_weights
    # log k doubled: evaluate the profile and double it through a squared-kernel sum in log space.
    lwv = torch.zeros(y.shape[:-1], dtype=x.dtype, device=x.device) if lw is None else lw
    vec = lwv.dim() == y.dim() - 1
    if vec:
        lwv = lwv.unsqueeze(-1)
    lk = 2 * log_profile(kernel, *pair_s(x, y, bandwidth, kernel, metric, p))
    if exclude_self:
        lk = lk.masked_fill(torch.eye(x.shape[-2], y.shape[-2], dtype=torch.bool, device=x.device), -math.inf)
    lse2 = torch.logsumexp(lk.unsqueeze(-1) + lwv.unsqueeze(-3), dim=-2)
    return lse, (lse2.squeeze(-1) if vec else lse2)
