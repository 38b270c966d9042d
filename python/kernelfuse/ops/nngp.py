"""Fused NNGP / NTK products K(x, y) @ W of deep fully connected networks, without the m x n matrix.

Ops (schemas in csrc/kernelfuse.cpp, kernels in csrc/nngp/): ``torch.ops.kernelfuse.nngp_matmul``
and its backward twin ``nngp_matmul_bwd``. This module adds the public Python API, the fake (meta)
kernels for torch.compile, and autograd. The kernels are defined in kernelfuse.reference.nngp
(the spec) and docs/nngp.md.
"""

from __future__ import annotations

import math

import torch

from ..reference.nngp import ACTIVATIONS
from ._common import check_devices, check_tensor

_ops = torch.ops.kernelfuse


def check_config(fn: str, depth, activation, sigma_w2, sigma_b2):
    """Validated (depth, activation, sigma_w2, sigma_b2) or a ValueError naming the argument."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"kernelfuse.{fn}: argument 'depth': expected an int >= 0 (hidden layers), got {depth!r}")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(
            f"kernelfuse.{fn}: argument 'activation': unknown activation {activation!r}; "
            f"expected one of: {', '.join(ACTIVATIONS)}"
        )
    try:
        sw2, sb2 = float(sigma_w2), float(sigma_b2)
    except (TypeError, ValueError):
        raise ValueError(
            f"kernelfuse.{fn}: arguments 'sigma_w2' / 'sigma_b2' must be numbers, got {sigma_w2!r} / {sigma_b2!r}"
        ) from None
    if not (math.isfinite(sw2) and sw2 > 0):
        raise ValueError(f"kernelfuse.{fn}: argument 'sigma_w2': expected a positive finite variance, got {sw2}")
    if not (math.isfinite(sb2) and sb2 >= 0):
        raise ValueError(f"kernelfuse.{fn}: argument 'sigma_b2': expected a finite variance >= 0, got {sb2}")
    return depth, activation, sw2, sb2


def nngp_matmul(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    *,
    depth: int = 1,
    activation: str = "relu",
    sigma_w2: float = 2.0,
    sigma_b2: float = 0.0,
    ntk: bool = False,
) -> torch.Tensor:
    """``K(x, y) @ weights`` with K the NNGP (or, ``ntk=True``, the NTK) of a fully connected
    network of ``depth`` hidden layers, fused and tiled: O((m + n)(d + c)) memory.

    Args:
        x: (m, d); y: (n, d); weights: (n,) or (n, c). float32 or float64, one device.
        depth: hidden layers (0: the linear kernel sigma_w2 x.y / d + sigma_b2).
        activation: "relu" (arc-cosine recursion), "erf" or "step".
        sigma_w2, sigma_b2: weight and bias variances (weights N(0, sigma_w2 / fan_in)).
        ntk: the neural tangent kernel instead of the NNGP.

    Returns (m,) or (m, c). Differentiable in x, y and weights; the backward is at most two passes
    of the same fused kernel (x; y and weights together), never the m x n matrix. At x parallel to y the ReLU NTK and the step NNGP
    have an infinite slope; the gradient takes 0 for that term (docs/nngp.md).
    """
    fn = "nngp_matmul"
    for name, t in (("x", x), ("y", y), ("weights", weights)):
        check_tensor(t, name, fn)
    check_devices(fn, ("x", x), ("y", y), ("weights", weights))
    depth, activation, sw2, sb2 = check_config(fn, depth, activation, sigma_w2, sigma_b2)
    return _ops.nngp_matmul(x, y, weights, depth, activation, sw2, sb2, bool(ntk))


# ---------------------------------------------------------------- fake kernels (torch.compile)
@torch.library.register_fake("kernelfuse::nngp_matmul")
def _(x, y, weights, depth, activation, sigma_w2, sigma_b2, ntk):
    torch._check(x.dim() == 2 and y.dim() == 2, lambda: "kernelfuse: nngp_matmul: x and y must be 2-d")
    torch._check(weights.dim() in (1, 2), lambda: "kernelfuse: argument 'weights': expected (n,) or (n, c)")
    return x.new_empty((x.shape[0],) + tuple(weights.shape[1:]))


@torch.library.register_fake("kernelfuse::nngp_matmul_bwd")
def _(grad, x, y, weights, depth, activation, sigma_w2, sigma_b2, ntk, need_x, need_y, need_weights):
    return (
        x.new_empty(x.shape) if need_x else x.new_empty((0,)),
        y.new_empty(y.shape) if need_y else x.new_empty((0,)),
        weights.new_empty(weights.shape) if need_weights else x.new_empty((0,)),
    )


# ---------------------------------------------------------------- autograd
def _setup(ctx, inputs, output):
    x, y, w, depth, activation, sw2, sb2, ntk = inputs
    ctx.cfg = (depth, activation, sw2, sb2, ntk)
    ctx.save_for_backward(x, y, w)


def _backward(ctx, grad):
    x, y, w = ctx.saved_tensors
    nx, ny, nw = ctx.needs_input_grad[:3]
    gx, gy, gw = _ops.nngp_matmul_bwd(grad.contiguous(), x, y, w, *ctx.cfg, nx, ny, nw)
    return (gx if nx else None, gy if ny else None, gw if nw else None) + (None,) * 5


torch.library.register_autograd("kernelfuse::nngp_matmul", _backward, setup_context=_setup)

__all__ = ["ACTIVATIONS", "nngp_matmul"]


def nngp_kernel_matrix(
    x1: torch.Tensor,
    x2: torch.Tensor,
    *,
    depth: int = 1,
    activation: str = "relu",
    sigma_w2: float = 2.0,
    sigma_b2: float = 0.0,
    ntk: bool = False,
) -> torch.Tensor:
    """The kernel matrix K(x1, x2) (m, n) by the same fused kernels (differentiable in x1, x2)."""
    fn = "nngp_kernel"
    for name, t in (("x1", x1), ("x2", x2)):
        check_tensor(t, name, fn)
    check_devices(fn, ("x1", x1), ("x2", x2))
    depth, activation, sw2, sb2 = check_config(fn, depth, activation, sigma_w2, sigma_b2)
    return _ops.nngp_kernel(x1, x2, depth, activation, sw2, sb2, bool(ntk))


@torch.library.register_fake("kernelfuse::nngp_kernel")
def _(x1, x2, depth, activation, sigma_w2, sigma_b2, ntk):
    return x1.new_empty((x1.shape[0], x2.shape[0]))


@torch.library.register_fake("kernelfuse::nngp_kernel_bwd")
def _(grad, x1, x2, depth, activation, sigma_w2, sigma_b2, ntk, need_x1, need_x2):
    return (
        x1.new_empty(x1.shape) if need_x1 else x1.new_empty((0,)),
        x2.new_empty(x2.shape) if need_x2 else x1.new_empty((0,)),
    )


def _setup_k(ctx, inputs, output):
    x1, x2, depth, activation, sw2, sb2, ntk = inputs
    ctx.cfg = (depth, activation, sw2, sb2, ntk)
    ctx.save_for_backward(x1, x2)


def _backward_k(ctx, grad):
    x1, x2 = ctx.saved_tensors
    n1, n2 = ctx.needs_input_grad[:2]
    g1, g2 = _ops.nngp_kernel_bwd(grad.contiguous(), x1, x2, *ctx.cfg, n1, n2)
    return (g1 if n1 else None, g2 if n2 else None) + (None,) * 5


torch.library.register_autograd("kernelfuse::nngp_kernel", _backward_k, setup_context=_setup_k)

__all__ += ["nngp_kernel_matrix"]
