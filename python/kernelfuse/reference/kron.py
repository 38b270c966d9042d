"""Plain-torch references for the Kronecker family: the spec ``kernelfuse.kron_*`` is tested against
(run them in float64). Dense on purpose: the Kronecker matrix is formed with ``torch.kron``, solves
and log-determinants use ``torch.linalg.solve`` / ``torch.linalg.slogdet``, and autograd
differentiates through them. Small grids only (N = prod n_d up to a few thousand).

Conventions shared with the ops:
- Grid points are flattened row-major (axis 0 slowest), the order of ``torch.kron``.
- Square factors are symmetrised, ``0.5 (K_d + K_d^T)``, before use (the ops do the same, so their
  gradients are the gradients of this symmetrised definition).
- ``noise`` is the noise *variance* s^2 (a scalar tensor).
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Optional, Sequence

import torch


def _sym(K: torch.Tensor) -> torch.Tensor:
    return 0.5 * (K + K.transpose(-1, -2))


def kron_dense(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The Kronecker matrix K_1 (x) ... (x) K_D (prod n_d, prod m_d)."""
    return reduce(torch.kron, [f.contiguous() for f in factors])


def kron_matmul(factors: Sequence[torch.Tensor], x: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
    """(K_1 (x) ... (x) K_D) x over the last dim of x (..., prod m_d) -> (..., prod n_d);
    transpose=True uses K_d^T (x: (..., prod n_d) -> (..., prod m_d))."""
    K = kron_dense(factors)
    if transpose:
        K = K.transpose(0, 1)
    return x @ K.transpose(0, 1)


def kron_gp_mll(factors: Sequence[torch.Tensor], y: torch.Tensor, noise: torch.Tensor):
    """(nll, alpha): nll = 0.5 y^T A^{-1} y + 0.5 log det A + N/2 log(2 pi), alpha = A^{-1} y, with
    A = K + noise I, K = (x) sym(K_d). y (N,) -> nll (); y (..., N) -> nll (...,), alpha like y."""
    K = kron_dense([_sym(f) for f in factors])
    N = K.shape[0]
    A = K + noise * torch.eye(N, dtype=K.dtype, device=K.device)
    alpha = torch.linalg.solve(A, y.unsqueeze(-1)).squeeze(-1)
    _, logdet = torch.linalg.slogdet(A)
    nll = 0.5 * (y * alpha).sum(-1) + 0.5 * logdet + 0.5 * N * math.log(2 * math.pi)
    return nll, alpha


def kron_solve(factors: Sequence[torch.Tensor], y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(K + noise I)^{-1} y, K = (x) sym(K_d); y (..., N)."""
    return kron_gp_mll(factors, y, noise)[1]


def scattered_cross(cross_factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Dense cross-covariance (M, N) of scattered targets: row i is (x)_d cross_factors[d][i]."""
    out = cross_factors[0]
    for c in cross_factors[1:]:
        out = (out[:, :, None] * c[:, None, :]).reshape(out.shape[0], -1)
    return out


def kron_posterior(
    factors: Sequence[torch.Tensor],
    y: torch.Tensor,
    noise: torch.Tensor,
    *,
    cross_factors: Optional[Sequence[torch.Tensor]] = None,
    targets: str = "grid",
    prior_var=None,
):
    """(mean, var) of the latent GP f at the targets, given y = f + eps on the training grid.

    cross_factors None: targets are the training grid, Ks = K, prior = prod diag(K_d) unless
    prior_var is given. targets "grid": Ks = (x) cross_factors[d] (m_d, n_d); "scattered": row i of
    Ks is (x)_d cross_factors[d][i] (each (M, n_d)). prior_var: broadcastable to (M,), or a list of
    per-axis (m_d,) vectors whose Kronecker product is the prior variance (grid targets).
    mean = Ks A^{-1} y, var = prior - diag(Ks A^{-1} Ks^T).
    """
    Ksym = [_sym(f) for f in factors]
    K = kron_dense(Ksym)
    N = K.shape[0]
    A = K + noise * torch.eye(N, dtype=K.dtype, device=K.device)
    if cross_factors is None:
        Ks = K
        prior = torch.diagonal(K) if prior_var is None else prior_var
    elif targets == "grid":
        Ks = kron_dense(cross_factors)
        prior = prior_var
    else:
        Ks = scattered_cross(cross_factors)
        prior = prior_var
    if isinstance(prior, (list, tuple)):
        prior = kron_dense([p.reshape(-1, 1) for p in prior]).reshape(-1)
    alpha = torch.linalg.solve(A, y.unsqueeze(-1)).squeeze(-1)
    mean = alpha @ Ks.transpose(0, 1)
    V = torch.linalg.solve(A, Ks.transpose(0, 1))  # (N, M)
    var = prior - (Ks.transpose(0, 1) * V).sum(0)
    return mean, var


# ---------------------------------------------------------------- plain-torch mode products
# What one writes in plain torch for grids too large for the dense references: per-axis mode
# products with torch.matmul, per-axis torch.linalg.eigh, autograd through everything (eigh
# included). Used by the benchmarks as the "plain torch" baseline; tested against the dense ones.
def _modes(mats, t, dims):
    B = t.shape[0]
    dims = list(dims)
    for d, A in enumerate(mats):
        if A is None:
            continue
        pre = B
        for e in dims[:d]:
            pre *= e
        post = 1
        for e in dims[d + 1 :]:
            post *= e
        t = torch.matmul(A, t.reshape(pre, dims[d], post))
        dims[d] = A.shape[0]
    return t.reshape(B, -1)


def kron_matmul_modes(factors, x, *, transpose=False):
    """kron_matmul by per-axis torch.matmul (no dense Kronecker matrix)."""
    mats = [f.transpose(0, 1) if transpose else f for f in factors]
    lead = x.shape[:-1]
    out = _modes(mats, x.reshape(-1, x.shape[-1]), [m.shape[1] for m in mats])
    return out.reshape(*lead, -1)


def _kron_vec(vs):
    out = vs[0]
    for v in vs[1:]:
        out = (out[:, None] * v[None, :]).reshape(-1)
    return out


def kron_gp_mll_eig(factors, y, noise):
    """kron_gp_mll by per-axis eigh and mode products in plain torch (autograd through eigh)."""
    eig = [torch.linalg.eigh(_sym(f)) for f in factors]
    lams, Qs = [e[0] for e in eig], [e[1] for e in eig]
    dims = [q.shape[0] for q in Qs]
    y2 = y.reshape(-1, y.shape[-1])
    denom = _kron_vec(lams) + noise
    yt = _modes([q.transpose(0, 1) for q in Qs], y2, dims)
    at = yt / denom
    alpha = _modes(Qs, at, dims)
    N = denom.shape[0]
    nll = 0.5 * (yt * at).sum(-1) + 0.5 * torch.log(denom).sum() + 0.5 * N * math.log(2 * math.pi)
    return nll.reshape(y.shape[:-1]), alpha.reshape(y.shape)


def kron_posterior_var_eig(factors, noise):
    """Exact posterior variance on the training grid, (x)(Q_d o Q_d) @ (lam s^2 / (lam + s^2)), in
    plain torch."""
    eig = [torch.linalg.eigh(_sym(f)) for f in factors]
    lams, Qs = [e[0] for e in eig], [e[1] for e in eig]
    lam = _kron_vec(lams)
    w = lam * noise / (lam + noise)
    return _modes([q * q for q in Qs], w.reshape(1, -1), [q.shape[0] for q in Qs]).reshape(-1)


__all__ = [
    "kron_dense",
    "kron_gp_mll",
    "kron_matmul",
    "kron_posterior",
    "kron_solve",
    "scattered_cross",
    "kron_matmul_modes",
    "kron_gp_mll_eig",
    "kron_posterior_var_eig",
]
