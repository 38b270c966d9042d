"""Reference NNGP / NTK kernels of deep fully connected networks (plain torch, float64-capable).

The spec of ``kernelfuse.ops.nngp`` and ``kernelfuse.features.nngp_kernel`` / ``ntk_kernel``: the
layer recursion written on whole matrices, with the Gaussian expectations in the closed forms of
Cho & Saul (ReLU, step: arc-cosine kernels) and Williams (erf). Gradients come from autograd of
these matrices (an independent code path from the kernels' closed-form derivatives).

Network (NTK parameterisation): ``depth`` hidden layers, weights N(0, sigma_w2 / fan_in), biases
N(0, sigma_b2), linear readout with the same variances:

    Sigma_1(x, y) = sigma_w2 x.y / d + sigma_b2
    Sigma_{h+1}   = sigma_w2 E[phi(u) phi(v)] + sigma_b2          (u, v) ~ N(0, Sigma_h on {x, y})
    Theta_1 = Sigma_1,  Theta_{h+1} = Sigma_{h+1} + sigma_w2 E[phi'(u) phi'(v)] Theta_h

NNGP = Sigma_{depth+1}, NTK = Theta_{depth+1}. For the step activation phi' = 0 almost everywhere,
so its NTK equals its NNGP (what autograd through a step network gives).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

ACTIVATIONS = ("relu", "erf", "step")


def _expectations(activation, k11, k12, k22):
    """(E[phi(u) phi(v)], E[phi'(u) phi'(v)]) for (u, v) ~ N(0, [[k11, k12], [k12, k22]]) (broadcast)."""
    if activation == "erf":
        a1, a2 = 1 + 2 * k11, 1 + 2 * k22
        z = (2 * k12 / torch.sqrt(a1 * a2)).clamp(-1, 1)
        F = (2 / math.pi) * torch.asin(z)
        G = (4 / math.pi) / torch.sqrt((a1 * a2 - 4 * k12 * k12).clamp_min(1e-30))
        return F, G
    r = torch.sqrt(k11 * k22)
    c = torch.where(r > 0, k12 / torch.where(r > 0, r, torch.ones_like(r)), torch.zeros_like(k12)).clamp(-1, 1)
    theta = torch.arccos(c)
    J0 = (math.pi - theta) / (2 * math.pi)  # E[step(u) step(v)]
    if activation == "step":
        return J0, torch.zeros_like(J0)
    J1 = r * (torch.sqrt((1 - c * c).clamp_min(0)) + (math.pi - theta) * c) / (2 * math.pi)  # E[relu relu]
    return J1, J0


def _diagonal(activation, k):
    """E[phi(u)^2], u ~ N(0, k): the expectation at x = y (c = 1), written out."""
    if activation == "relu":
        return 0.5 * k
    if activation == "step":
        return torch.where(k > 0, 0.5, 0.25).to(k.dtype)  # c = 0 convention at k = 0
    return (2 / math.pi) * torch.asin(2 * k / (1 + 2 * k))


def _recursion(x1, x2, depth, activation, sigma_w2, sigma_b2):
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    d = x1.shape[1]
    n1 = (x1 * x1).sum(1)
    k12 = sigma_w2 * (x1 @ x2.T) / d + sigma_b2
    if x1 is x2:  # the Gram matrix: x.x on the diagonal exactly as the norms (c = 1 there)
        k12 = k12 - torch.diag_embed(torch.diagonal(k12)) + torch.diag_embed(sigma_w2 * n1 / d + sigma_b2)
    k11 = (sigma_w2 * n1 / d + sigma_b2)[:, None]
    k22 = (sigma_w2 * (x2 * x2).sum(1) / d + sigma_b2)[None, :]
    theta = k12
    for _ in range(depth):
        F, G = _expectations(activation, k11, k12, k22)
        F11, F22 = _diagonal(activation, k11), _diagonal(activation, k22)
        new = sigma_w2 * F + sigma_b2
        theta = new + sigma_w2 * G * theta
        k12 = new
        k11, k22 = sigma_w2 * F11 + sigma_b2, sigma_w2 * F22 + sigma_b2
    return k12, theta


def nngp_kernel(
    x1: torch.Tensor,
    x2: torch.Tensor,
    depth: int,
    activation: str = "relu",
    *,
    sigma_w2: float = 2.0,
    sigma_b2: float = 0.0,
    scale_mixture: Optional[Tuple[float, float]] = None,
) -> torch.Tensor:
    """NNGP kernel matrix (n1, n2). ``scale_mixture=(a, b)``: the readout's variance scale drawn
    from InverseGamma(a, b) (a > 1): the output is a Student-t process whose covariance is
    b / (a - 1) times the NNGP (docs/nngp.md)."""
    K, _ = _recursion(x1, x2, depth, activation, sigma_w2, sigma_b2)
    if scale_mixture is not None:
        a, b = scale_mixture
        K = K * (b / (a - 1))
    return K


def ntk_kernel(
    x1: torch.Tensor,
    x2: torch.Tensor,
    depth: int,
    activation: str = "relu",
    *,
    sigma_w2: float = 2.0,
    sigma_b2: float = 0.0,
) -> torch.Tensor:
    """NTK matrix (n1, n2) of the same network."""
    _, T = _recursion(x1, x2, depth, activation, sigma_w2, sigma_b2)
    return T


def nngp_matmul(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    depth: int,
    activation: str,
    sigma_w2: float,
    sigma_b2: float,
    ntk: bool,
) -> torch.Tensor:
    """The op's spec: K(x, y) @ weights with K the NNGP (ntk False) or the NTK."""
    K = (ntk_kernel if ntk else nngp_kernel)(x, y, depth, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    return K @ weights


__all__ = ["ACTIVATIONS", "nngp_kernel", "nngp_matmul", "ntk_kernel"]
