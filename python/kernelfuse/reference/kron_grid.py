"""Plain-torch reference for ``kernelfuse.grid_kernel``: the spec.

Every kind is an even function of tau = x - x': k(tau) = h(|tau|) with h analytic on t >= 0
(written below as plain torch expressions in t). The derivative matrix is

    K[i, j] = d^a/dx^a d^b/dx'^b k = (-1)^b k^(n)(tau) = (-1)^b sign(tau)^n h^(n)(|tau|),  n = a + b,

with h^(n) from automatic differentiation (torch.func.grad applied n times, vmapped over the
entries) and sign(0) = 0 for odd n. Differentiating h rather than k(tau) = h(|tau|) keeps the
even-order derivatives of the Matern kinds right at tau = 0 (autograd through abs would drop the
kink's contribution there). Differentiable with respect to params and x1 / x2 by plain autograd.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch.func import grad, vmap


def _matern_poly(kind: str, z):
    if kind == "matern12":
        return torch.ones_like(z)
    if kind == "matern32":
        return 1 + z
    return 1 + z + z * z / 3


def _h(kind: str, row: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One component's profile h(t) for t >= 0 (scalar t)."""
    w = torch.exp(row[0])
    if kind in ("rbf", "sm"):
        ell = torch.exp(row[1] if kind == "rbf" else row[2])
        base = torch.exp(-0.5 * (t / ell) ** 2)
    else:
        mk = "matern52" if kind == "stm" else kind
        nu2 = {"matern12": 1.0, "matern32": 3.0, "matern52": 5.0}[mk]
        ell = torch.exp(row[1] if kind != "stm" else row[2])
        z = math.sqrt(nu2) * t / ell
        base = _matern_poly(mk, z) * torch.exp(-z)
    if kind in ("sm", "stm"):
        base = base * torch.cos(row[1] * t)
    return w * base


def grid_kernel(
    x1: torch.Tensor,
    x2: torch.Tensor,
    kind: str,
    params: torch.Tensor,
    *,
    orders: Sequence[int] = (0, 0),
    toeplitz: Optional[bool] = None,
) -> torch.Tensor:
    """Reference of ``kernelfuse.grid_kernel`` (``toeplitz`` is accepted and ignored)."""
    a, b = (int(o) for o in orders)
    n = a + b
    tau = x1[:, None] - x2[None, :]
    t = tau.abs().reshape(-1)

    def h_all(tt):
        return sum(_h(kind, params[q], tt) for q in range(params.shape[0])) if params.shape[0] else tt * 0

    f = h_all
    for _ in range(n):
        f = grad(f)
    vals = vmap(f)(t).reshape(tau.shape)
    sign = (-1.0) ** b * (torch.sign(tau) ** n if n % 2 else torch.ones_like(tau))
    return sign * vals


__all__ = ["grid_kernel"]
