"""Shared pieces of the grid GP models: array conversion, per-axis kernels, scattered posteriors."""

from __future__ import annotations

import math
from typing import List

import numpy as np
import torch

from ..ops.kron_grid import KINDS, NPARAMS


def as_tensor(x, name: str, dtype: torch.dtype, device=None, cls: str = "GridGPRegressor") -> torch.Tensor:
    """A float tensor from numpy / torch / lists, or a clear error naming the argument."""
    if isinstance(x, torch.Tensor):
        if x.device.type == "meta":
            raise ValueError(
                f"kernelfuse.gp.{cls}: argument '{name}': expected data on a real device (cpu or cuda), "
                f"got a tensor on meta (no values)"
            )
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(
                f"kernelfuse.gp.{cls}: argument '{name}' must be a numpy array or a torch.Tensor of "
                f"numbers, got {type(x).__name__}"
            ) from None
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"kernelfuse.gp.{cls}: argument '{name}' must hold real numbers, got dtype {t.dtype}")
    t = t.to(dtype=dtype, device=device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"kernelfuse.gp.{cls}: argument '{name}' contains NaN or infinite values")
    return t


def check_axes(axes, name: str, dtype, device=None, cls: str = "GridGPRegressor") -> List[torch.Tensor]:
    """A Cartesian grid as a list of 1-D axes (each non-empty, strictly monotone, no repeats)."""
    if isinstance(axes, (np.ndarray, torch.Tensor)) and axes.ndim == 1:
        axes = [axes]
    if not isinstance(axes, (list, tuple)) or len(axes) == 0:
        raise TypeError(
            f"kernelfuse.gp.{cls}: argument '{name}' must be a list of 1-D arrays (one per grid axis), "
            f"got {type(axes).__name__}"
        )
    out = []
    for d, a in enumerate(axes):
        t = as_tensor(a, f"{name}[{d}]", dtype, device, cls)
        if t.dim() != 1 or t.numel() == 0:
            raise ValueError(
                f"kernelfuse.gp.{cls}: argument '{name}[{d}]': expected a non-empty 1-D array of "
                f"grid points, got shape {tuple(t.shape)}"
            )
        if t.numel() > 1:
            df = t[1:] - t[:-1]
            if not (bool((df > 0).all()) or bool((df < 0).all())):
                raise ValueError(
                    f"kernelfuse.gp.{cls}: argument '{name}[{d}]': grid points must be strictly monotone (no repeats)"
                )
        out.append(t.contiguous())
    return out


def to_output(t: torch.Tensor, like_numpy: bool):
    t = t.detach()
    return t.cpu().numpy() if like_numpy else t


def default_params(
    kind: str, axis: torch.Tensor, q: int, *, lengthscale=None, log_variance: float = 0.0, max_freq=None
) -> torch.Tensor:
    """Initial (Q, P) parameters for one axis: a lengthscale of ~1/10 the axis span (or the given
    one); for sm / stm, Q components with frequencies evenly spread on [0, max_freq] (default:
    a quarter of the Nyquist frequency of the axis), weights 1/Q and spectral widths of the spacing
    between frequencies."""
    span = float(axis.max() - axis.min()) if axis.numel() > 1 else 1.0
    span = span if span > 0 else 1.0
    dt, dev = axis.dtype, axis.device
    if kind in ("sm", "stm"):
        n = axis.numel()
        if max_freq is None:
            h = span / max(n - 1, 1)
            max_freq = 0.25 * math.pi / h
        freqs = torch.linspace(0.0, float(max_freq), q, dtype=dt, device=dev)
        width = float(max_freq) / max(q - 1, 1) if q > 1 else float(max_freq) + 1.0 / span
        ell = lengthscale if lengthscale is not None else 1.0 / max(width, 1e-12)
        return torch.stack(
            [
                torch.full((q,), math.log(1.0 / q) + log_variance, dtype=dt, device=dev),
                freqs,
                torch.full((q,), math.log(ell), dtype=dt, device=dev),
            ],
            1,
        )
    ell = lengthscale if lengthscale is not None else 0.1 * span
    return torch.tensor([[log_variance, math.log(ell)]], dtype=dt, device=dev)


def check_kind(kind, D: int, cls: str) -> List[str]:
    kinds = [kind] * D if isinstance(kind, str) else list(kind)
    if len(kinds) != D:
        raise ValueError(
            f"kernelfuse.gp.{cls}: argument 'kernel': expected one kind or {D} (one per axis), got {len(kinds)}"
        )
    for k in kinds:
        if k not in KINDS:
            raise ValueError(
                f"kernelfuse.gp.{cls}: argument 'kernel': unknown kind {k!r}; expected one of {', '.join(KINDS)}"
            )
    return kinds


__all__ = ["as_tensor", "check_axes", "check_kind", "default_params", "to_output", "NPARAMS"]
