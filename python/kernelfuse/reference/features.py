"""Plain-torch references for the random-feature ops (float64-capable): the spec of
``kernelfuse.fwht``, ``kernelfuse.random_features`` and ``kernelfuse.structured_features``."""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..ops.features import default_scale


def fwht(x: torch.Tensor, *, normalized: bool = True) -> torch.Tensor:
    """Iterative radix-2 Walsh-Hadamard transform of the last dim (Sylvester order), plain torch."""
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(f"fwht: the last dimension must be a power of two, got {n}")
    lead = x.shape[:-1]
    y = x.reshape(-1, n).clone()
    h = 1
    while h < n:
        y = y.view(-1, n // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = torch.stack((a + b, a - b), dim=2).reshape(-1, n)
        h *= 2
    y = y.reshape(*lead, n)
    return y / math.sqrt(n) if normalized else y


def _apply(z, x, kind, scale, stabilize):
    if kind == "cos":
        return scale * torch.cos(z)
    if kind == "cos_sin":
        return scale * torch.cat((torch.cos(z), torch.sin(z)), dim=-1)
    if kind == "relu":
        return scale * torch.relu(z)
    if kind == "step":
        # NaN propagates (as in the kernels): NaN in, NaN out, not a silent 0
        return scale * torch.where(torch.isnan(z), torch.full_like(z, float("nan")), (z > 0).to(z.dtype))
    if kind == "positive":
        e = z - 0.5 * (x * x).sum(-1, keepdim=True)
        if stabilize == "row" and z.shape[-1] > 0:
            e = e - z.max(dim=-1, keepdim=True).values
        elif stabilize == "global" and z.numel() > 0:
            e = e - z.max()
        return scale * torch.exp(e)
    raise ValueError(f"unknown kind {kind!r}")


def random_features(x, W, b=None, *, kind="cos", scale=None, stabilize="row"):
    z = x @ W
    if b is not None:
        z = z + b
    s = default_scale(kind, W.shape[1]) if scale is None else float(scale)
    return _apply(z, x, kind, s, stabilize)


def structured_matrix(
    signs: torch.Tensor,
    d: int,
    *,
    block: str = "sorf",
    perm: Optional[torch.Tensor] = None,
    n_features: Optional[int] = None,
) -> torch.Tensor:
    """The dense (d, n_features) matrix W with structured_features(x) == f(x @ W + b)."""
    nb, _, P = signs.shape
    eye = torch.eye(P, dtype=signs.dtype, device=signs.device)
    H = fwht(eye, normalized=True)  # symmetric
    mats = []
    for k in range(nb):
        s0, s1, s2 = signs[k]
        if block == "sorf":
            M = math.sqrt(P) * H @ torch.diag(s0) @ H @ torch.diag(s1) @ H @ torch.diag(s2)
        else:
            Pm = eye[perm[k]]  # (Pm v)[i] = v[perm[i]]
            M = torch.diag(s2) @ (math.sqrt(P) * H) @ torch.diag(s1) @ Pm @ H @ torch.diag(s0)
        mats.append(M)  # z_blk = M @ xpad
    Wfull = torch.cat(mats, dim=0)[:, :d].T  # (d, nb*P)
    nf = nb * P if n_features is None else n_features
    return Wfull[:, :nf]


def structured_features(
    x, signs, *, kind="cos", block="sorf", scale=None, perm=None, b=None, n_features=None, stabilize="row"
):
    W = structured_matrix(signs, x.shape[-1], block=block, perm=perm, n_features=n_features)
    z = x @ W
    if b is not None:
        z = z + b
    s = default_scale(kind, W.shape[1]) if scale is None else float(scale)
    return _apply(z, x, kind, s, stabilize)


__all__ = ["fwht", "random_features", "structured_features", "structured_matrix"]
