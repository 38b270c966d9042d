"""Reference S4D convolution kernel: the naive Vandermonde product, materialising H x N x L.

This is the spec of :func:`kernelfuse.ssm_kernel` (same signature). Plain complex torch, readable,
differentiable by torch's complex autograd; run it in float64 / complex128 for ground truth.
Powers are computed as exp(l log Abar) (exact for integer l), never as a running product.
"""

from __future__ import annotations

from typing import Optional

import torch

DISCRETIZATIONS = ("zoh", "bilinear")


def discretize(
    log_dt: torch.Tensor,
    A_real: torch.Tensor,
    A_imag: torch.Tensor,
    B: Optional[torch.Tensor],
    discretization: str = "zoh",
):
    """(log Abar, Bbar), both complex (H, N), for A = A_real + i A_imag and dt = exp(log_dt) (H,).

    zoh:      Abar = exp(dt A),                      Bbar = (exp(dt A) - 1) / A * B
    bilinear: Abar = (1 + dt A / 2) / (1 - dt A / 2), Bbar = dt / (1 - dt A / 2) * B
    B None means ones.
    """
    dt = torch.exp(log_dt).unsqueeze(-1)
    A = torch.complex(A_real, A_imag)
    dtA = dt * A
    if discretization == "zoh":
        log_abar = dtA
        beta = (torch.exp(dtA) - 1) / A
    elif discretization == "bilinear":
        log_abar = torch.log((1 + dtA / 2) / (1 - dtA / 2))
        beta = dt / (1 - dtA / 2)
    else:
        raise ValueError(f"discretization: unknown {discretization!r}; expected one of {', '.join(DISCRETIZATIONS)}")
    bbar = beta if B is None else beta * B
    return log_abar, bbar


def ssm_kernel(
    log_dt: torch.Tensor,
    A_real: torch.Tensor,
    A_imag: torch.Tensor,
    B: Optional[torch.Tensor],
    C: torch.Tensor,
    L: int,
    *,
    discretization: str = "zoh",
) -> torch.Tensor:
    """K[h, l] = 2 Re sum_n C[h,n] Bbar[h,n] Abar[h,n]^l for l = 0..L-1: (H, L), real.

    Builds the full (H, N, L) complex Vandermonde tensor (memory 16 H N L bytes in complex128).
    """
    log_abar, bbar = discretize(log_dt, A_real, A_imag, B, discretization)
    ell = torch.arange(L, dtype=A_real.dtype, device=A_real.device)
    vander = torch.exp(log_abar.unsqueeze(-1) * ell)  # (H, N, L)
    return 2 * ((C * bbar).unsqueeze(-1) * vander).sum(-2).real


__all__ = ["DISCRETIZATIONS", "discretize", "ssm_kernel"]
