"""Fused kernel sums: sum_i w_i k(|x_j - y_i| / h) and its log-domain twin, without the m x n matrix.

Ops (schemas in csrc/kernelfuse.cpp, kernels in csrc/kde/):
``torch.ops.kernelfuse.kernel_sum``, ``kernel_logsumexp``, ``kernel_logsumexp_sq`` and the
backward twins ``kernel_sum_bwd`` / ``kernel_logsumexp_bwd``. This module adds the public Python
API, the fake (meta) kernels for torch.compile, and autograd.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch

from ._common import acc_dtype, check_devices, check_required, check_tensor, positive_scalar

#: The kernel profiles the op implements (csrc/kde). The ops layer owns this list; the reference
#: (kernelfuse.reference.kde, the independent spec) keeps its own copy and tests check they agree.
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
#: Distances between points the op implements.
METRICS = ("euclidean", "manhattan", "chebyshev", "minkowski", "haversine")

_ops = torch.ops.kernelfuse
Bandwidth = Union[float, torch.Tensor]


def _prepare(fn, x, y, weights, bandwidth, kernel, wname, metric="euclidean", p=2.0):
    """Normalise the public arguments to the op's: bandwidth as a tensor, shared weights expanded
    over a batch. Shape, dtype and device checks happen in C++ (one place for every caller)."""
    check_tensor(x, "x", fn)
    check_tensor(y, "y", fn)
    if weights is not None:
        check_tensor(weights, wname, fn)
    # one device for every tensor, the meta one named when mixed with real ones (issue 13)
    check_devices(fn, ("x", x), ("y", y), (wname, weights), ("bandwidth", bandwidth), name_meta=True)
    if not isinstance(kernel, str) or kernel not in KERNELS:
        raise ValueError(
            f"kernelfuse.{fn}: argument 'kernel': unknown kernel {kernel!r}; expected one of: {', '.join(KERNELS)}"
        )
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(
            f"kernelfuse.{fn}: argument 'metric': unknown metric {metric!r}; expected one of: {', '.join(METRICS)}"
        )
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise TypeError(f"kernelfuse.{fn}: argument 'p': expected a number, got {type(p).__name__}") from None
    if metric == "minkowski" and not (math.isfinite(p) and p >= 1.0):
        raise ValueError(f"kernelfuse.{fn}: argument 'p': expected a finite p >= 1 for metric 'minkowski', got {p}")
    if isinstance(bandwidth, torch.Tensor):
        h = bandwidth
    else:
        h = torch.tensor(positive_scalar(bandwidth, "bandwidth", fn), dtype=acc_dtype(x.dtype), device=x.device)
    if weights is not None:
        if x.dim() == 3 and y.dim() == 3:
            B, n = y.shape[0], y.shape[1]
            if weights.dim() == 1 or (weights.dim() == 2 and tuple(weights.shape) != (B, n)):
                weights = weights.expand(B, *weights.shape)  # weights shared by the batch
    return x, y, weights, h, metric, p


def kernel_sum(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    *,
    kernel: str = "gaussian",
    bandwidth: Bandwidth = 1.0,
    exclude_self: bool = False,
    metric: str = "euclidean",
    p: float = 2.0,
) -> torch.Tensor:
    """Kernel sums ``out[j] = sum_i weights[i] * k(dist(x[j], y[i]) / h)``, fused and tiled.

    Args:
        x: queries, (m, d) or (B, m, d).
        y: points, (n, d) or (B, n, d).
        weights: None (all ones), (n,), (n, c), or batched (B, n) / (B, n, c).
        kernel: profile of r = |x - y| / h, unnormalised: "gaussian" exp(-r^2/2), "laplacian"
            exp(-r), "cauchy" 1/(1+r^2), "matern32", "matern52", "inverse_multiquadric"
            1/sqrt(1+r^2), "rational_quadratic" (1+r^2/4)^-2, and compact ones (zero for r >= 1): "tophat" 1, "epanechnikov" 1-r^2,
            "linear" 1-r, "cosine" cos(pi r/2).
        bandwidth: h > 0, a number or a tensor of shape () or (d,) (per-dimension; differentiable).
        exclude_self: skip the pair i == j (x is y): leave-one-out sums.
        metric: the distance of r = dist(x, y) / h: "euclidean" (default), "manhattan" (L1),
            "chebyshev" (L-inf), "minkowski" (order ``p``, 1 <= p < inf), all of the
            per-dimension scaled differences (x_k - y_k) / h_k, or "haversine" (d == 2, rows
            (latitude, longitude) in radians, great-circle distance
            2 asin(sqrt(sin^2(dlat/2) + cos lat1 cos lat2 sin^2(dlon/2))) as scikit-learn's;
            scalar bandwidth only).
        p: the Minkowski order (used by metric="minkowski" only).

    Support of the compact kernels: dist(x, y) < h (scikit-learn's rule). With a scalar
    bandwidth it is decided on unscaled distances (squared euclidean distance against h^2,
    the other metrics' distance against h), so integer data at exactly dist = h is outside
    however h rounds; with a per-dimension bandwidth it is r < 1 on the scaled coordinates.

    Gradients (x, y, weights, bandwidth; every metric): at kinks sign(0) = 0 (manhattan,
    minkowski at u_k = 0, r = 0 of laplacian / linear / cosine); chebyshev's gradient goes to
    the first (lowest-index) coordinate attaining the maximum. Haversine's bandwidth gradient
    -(2/h) sum grad dk/ds s is computed in the backward pass itself.

    Returns:
        (m,) or (m, c) (batched: (B, m) / (B, m, c)) in x's dtype. Empty y gives zeros.
        float32: the blocked accumulation adds ~1e-7; the result is within 2e-6 relative of float64
        when the sum is carried by terms with k >~ 0.05, and up to ~5e-5 when every term is tiny
        (Gaussian tails, points at a compact kernel's edge: input rounding times the profile's
        conditioning; README's accuracy note). Memory
        O((m + n)(d + c)) in forward and backward; the backward never forms the m x n matrix.
    """
    x, y, w, h, metric, p = _prepare("kernel_sum", x, y, weights, bandwidth, kernel, "weights", metric, p)
    return _ops.kernel_sum(x, y, w, h, kernel, exclude_self, metric, p)


def kernel_logsumexp(
    x: torch.Tensor,
    y: torch.Tensor,
    log_weights: Optional[torch.Tensor] = None,
    *,
    kernel: str = "gaussian",
    bandwidth: Bandwidth = 1.0,
    exclude_self: bool = False,
    metric: str = "euclidean",
    p: float = 2.0,
) -> torch.Tensor:
    """``out[j] = log sum_i exp(log_weights[i] + log k(dist(x[j], y[i]) / h))``, stable in log space.

    Same arguments (metric and p included) and shapes as :func:`kernel_sum`. Use it where densities underflow (in
    64 dimensions with Scott's bandwidth log-densities are near -99, below float32's range).
    -inf where no point contributes (compact kernels) and for empty y.
    """
    x, y, lw, h, metric, p = _prepare(
        "kernel_logsumexp", x, y, log_weights, bandwidth, kernel, "log_weights", metric, p
    )
    return _ops.kernel_logsumexp(x, y, lw, h, kernel, exclude_self, metric, p)


def kernel_logsumexp_sq(
    x: torch.Tensor,
    y: torch.Tensor,
    log_weights: Optional[torch.Tensor] = None,
    *,
    kernel: str = "gaussian",
    bandwidth: Bandwidth = 1.0,
    exclude_self: bool = False,
    metric: str = "euclidean",
    p: float = 2.0,
):
    """(lse, lse2) in one pass: lse as :func:`kernel_logsumexp`, lse2 = log sum_i exp(2 (log w_i + log k)).

    ``exp(2 * lse - lse2)`` is Kish's effective number of points contributing to each query.
    Not differentiable.
    """
    x, y, lw, h, metric, p = _prepare(
        "kernel_logsumexp_sq", x, y, log_weights, bandwidth, kernel, "log_weights", metric, p
    )
    return _ops.kernel_logsumexp_sq(x, y, lw, h, kernel, exclude_self, metric, p)


# ---------------------------------------------------------------- fake kernels (torch.compile)
# The C++ operand checks repeated (a meta tensor among CPU ones reaches the fake kernel, past the C++
# checks: an error naming it, never uninitialised memory); outputs fresh contiguous tensors.
def _fake_check(fn, x, y, w, h, wname, extra=()):
    named = (("x", x), ("y", y), ("bandwidth", h)) + tuple(extra)
    check_required(*named)
    check_devices(fn, *named, (wname, w), name_meta=True)
    torch._check_value(
        x.dim() in (2, 3), lambda: f"kernelfuse: argument 'x': expected shape (m, d) or (B, m, d), got {list(x.shape)}"
    )
    torch._check_value(
        y.dim() == x.dim(),
        lambda: f"kernelfuse: argument 'y': expected {x.dim()} dims like x {list(x.shape)}, got {list(y.shape)}",
    )
    torch._check_value(
        x.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16),
        lambda: f"kernelfuse: argument 'x': expected dtype float32 or float64, got {x.dtype}",
    )
    for name, t in (("y", y), (wname, w)) + tuple(extra):
        if t is not None:
            torch._check_value(
                t.dtype == x.dtype,
                lambda: f"kernelfuse: argument '{name}': expected dtype {x.dtype} (the dtype of 'x'), got {t.dtype}",
            )
    torch._check_value(
        y.shape[-1] == x.shape[-1],
        lambda: (
            f"kernelfuse: argument 'y': expected {x.shape[-1]} "
            f"columns (the d of x {list(x.shape)}), got y {list(y.shape)}"
        ),
    )
    if x.dim() == 3:
        torch._check_value(
            y.shape[0] == x.shape[0],
            lambda: (
                f"kernelfuse: argument 'y': expected batch size "
                f"{x.shape[0]} (of x {list(x.shape)}), got y {list(y.shape)}"
            ),
        )
    if w is not None:
        pd = y.dim() - 1
        torch._check_value(
            w.dim() in (pd, pd + 1) and w.shape[pd - 1] == y.shape[-2] and (x.dim() == 2 or w.shape[0] == y.shape[0]),
            lambda: (
                f"kernelfuse: argument '{wname}': expected one row per point of y {list(y.shape)}, got {list(w.shape)}"
            ),
        )
    torch._check_value(
        h.dim() == 0 or (h.dim() == 1 and (h.shape[0] == x.shape[-1] or h.shape[0] == 1)),
        lambda: (
            f"kernelfuse: argument 'bandwidth': expected a scalar or shape (d,) = ({x.shape[-1]},), got {list(h.shape)}"
        ),
    )


def _fake_out(x, y, w):
    shape = list(x.shape[:-1])
    if w is not None and w.dim() == y.dim():
        shape.append(w.shape[-1])
    return x.new_empty(shape)


def _fake_grad(g, name, x, y, w):
    want = _fake_out(x, y, w).shape
    torch._check_value(
        tuple(g.shape) == tuple(want),
        lambda: f"kernelfuse: argument '{name}': expected shape {list(want)} (the output's), got {list(g.shape)}",
    )


@torch.library.register_fake("kernelfuse::kernel_sum")
def _(x, y, weights, bandwidth, kernel, exclude_self, metric="euclidean", p=2.0):
    _fake_check("kernel_sum", x, y, weights, bandwidth, "weights")
    return _fake_out(x, y, weights)


@torch.library.register_fake("kernelfuse::kernel_logsumexp")
def _(x, y, log_weights, bandwidth, kernel, exclude_self, metric="euclidean", p=2.0):
    _fake_check("kernel_logsumexp", x, y, log_weights, bandwidth, "log_weights")
    return _fake_out(x, y, log_weights)


@torch.library.register_fake("kernelfuse::kernel_logsumexp_sq")
def _(x, y, log_weights, bandwidth, kernel, exclude_self, metric="euclidean", p=2.0):
    _fake_check("kernel_logsumexp_sq", x, y, log_weights, bandwidth, "log_weights")
    return _fake_out(x, y, log_weights), _fake_out(x, y, log_weights)


def _fake_bwd(x, y, w, h, need_x, need_y, need_w, need_h):
    return (
        x.new_empty(x.shape) if need_x else x.new_empty((0,)),
        x.new_empty(y.shape) if need_y else x.new_empty((0,)),
        x.new_empty(w.shape) if (need_w and w is not None) else x.new_empty((0,)),
        h.new_empty(h.shape) if need_h else x.new_empty((0,)),
    )


@torch.library.register_fake("kernelfuse::kernel_sum_bwd")
def _(
    grad,
    x,
    y,
    weights,
    bandwidth,
    kernel,
    exclude_self,
    need_x,
    need_y,
    need_weights,
    metric="euclidean",
    p=2.0,
    need_bandwidth=False,
):
    _fake_check("kernel_sum_bwd", x, y, weights, bandwidth, "weights", (("grad", grad),))
    _fake_grad(grad, "grad", x, y, weights)
    return _fake_bwd(x, y, weights, bandwidth, need_x, need_y, need_weights, need_bandwidth)


@torch.library.register_fake("kernelfuse::kernel_logsumexp_bwd")
def _(
    grad,
    out,
    x,
    y,
    log_weights,
    bandwidth,
    kernel,
    exclude_self,
    need_x,
    need_y,
    need_weights,
    metric="euclidean",
    p=2.0,
    need_bandwidth=False,
):
    _fake_check("kernel_logsumexp_bwd", x, y, log_weights, bandwidth, "log_weights", (("grad", grad), ("out", out)))
    _fake_grad(grad, "grad", x, y, log_weights)
    _fake_grad(out, "out", x, y, log_weights)
    return _fake_bwd(x, y, log_weights, bandwidth, need_x, need_y, need_weights, need_bandwidth)


# ---------------------------------------------------------------- autograd
def _setup(ctx, inputs, output, log_domain):
    x, y, w, h, kernel, exclude_self = inputs[:6]
    metric, p = tuple(inputs[6:8]) + ("euclidean", 2.0)[len(inputs[6:8]) :]
    ctx.kernel, ctx.exclude_self, ctx.log_domain = kernel, exclude_self, log_domain
    ctx.metric, ctx.p, ctx.ninputs = metric, p, len(inputs)
    ctx.save_for_backward(x, y, w, h, output if log_domain else None)


def _bandwidth_grad(gx, gy, x, y, h):
    """d/dh from the position gradients: k depends on (x - y) / h, so
    dL/dh_k = -(1/h_k) [sum_j gx_jk (x_jk - c_k) + sum_i gy_ik (y_ik - c_k)] for any centre c
    (translation invariance); c = mean of y keeps the sums well conditioned."""
    c = y.mean(dim=-2, keepdim=True) if y.shape[-2] > 0 else torch.zeros_like(y[..., :1, :])
    per_dim = (gx * (x - c)).flatten(0, -2).sum(0) + (gy * (y - c)).flatten(0, -2).sum(0)
    hv = h.reshape(-1).to(per_dim.dtype)
    g = -per_dim / hv if hv.numel() == per_dim.numel() else -(per_dim.sum() / hv).reshape(-1)
    return g.reshape(h.shape).to(h.dtype)


def _backward(ctx, grad):
    x, y, w, h, out = ctx.saved_tensors
    nx, ny, nw, nh = ctx.needs_input_grad[:4]
    # Coordinate metrics: the bandwidth gradient from the position gradients (translation
    # invariance). Haversine is not a function of scaled differences: the pass sums
    # grad dk/ds s itself (need_bandwidth) and gives dL/dh = -(2/h) sum.
    in_pass = nh and ctx.metric == "haversine"
    need_x, need_y = nx or (nh and not in_pass), ny or (nh and not in_pass)
    need_w = nw and w is not None
    args = (x, y, w, h, ctx.kernel, ctx.exclude_self, need_x, need_y, need_w, ctx.metric, ctx.p, in_pass)
    if ctx.log_domain:
        gx, gy, gw, gh = _ops.kernel_logsumexp_bwd(grad.contiguous(), out, *args)
    else:
        gx, gy, gw, gh = _ops.kernel_sum_bwd(grad.contiguous(), *args)
    if nh and not in_pass:
        gh = _bandwidth_grad(gx, gy, x, y, h)
    return (gx if nx else None, gy if ny else None, gw if need_w else None, gh if nh else None) + (None,) * (
        ctx.ninputs - 4
    )


torch.library.register_autograd(
    "kernelfuse::kernel_sum", _backward, setup_context=lambda ctx, inputs, output: _setup(ctx, inputs, output, False)
)
torch.library.register_autograd(
    "kernelfuse::kernel_logsumexp",
    _backward,
    setup_context=lambda ctx, inputs, output: _setup(ctx, inputs, output, True),
)

__all__ = ["KERNELS", "METRICS", "kernel_logsumexp", "kernel_logsumexp_sq", "kernel_sum"]
