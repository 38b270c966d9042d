"""Plain-torch references for the butterfly family (the spec of kernelfuse.ops.butterfly)."""

from __future__ import annotations

import torch


def butterfly_multiply(x: torch.Tensor, twiddle: torch.Tensor, *, increasing_stride: bool = True) -> torch.Tensor:
    """Stage by stage: for stride h, x viewed (..., n / 2h, 2, h) and the stage's twiddle viewed
    (n / 2h, h, 2, 2): y[..., g, i, k] = sum_j tw[g, k, i, j] x[..., g, j, k]."""
    n = x.shape[-1]
    nblocks, log_n = twiddle.shape[0], twiddle.shape[1]
    batch = x.shape[:-1]
    y = x
    inc = increasing_stride
    for b in range(nblocks):
        for t in range(log_n):
            h = 1 << (t if inc else log_n - 1 - t)
            tw = twiddle[b, t].reshape(n // (2 * h), h, 2, 2)
            yv = y.reshape(*batch, n // (2 * h), 2, h)
            y = torch.einsum("gkij,...gjk->...gik", tw, yv).reshape(*batch, n)
        inc = not inc
    return y


def monarch_multiply(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, *, layout: str = "ls") -> torch.Tensor:
    """x (..., k p), w1 (k, q, p), w2 (l, s, r), l r = k q -> (..., l s); layout "sl": output
    index t l + c instead of c s + t for block c's entry t."""
    k, q, p = w1.shape
    l, s, r = w2.shape
    batch = x.shape[:-1]
    y1 = torch.einsum("aqp,...ap->...aq", w1, x.reshape(*batch, k, p))
    z = y1.reshape(*batch, r, l).transpose(-1, -2)
    spec = "csr,...cr->...sc" if layout == "sl" else "csr,...cr->...cs"
    return torch.einsum(spec, w2, z).reshape(*batch, l * s)


def monarch_fft(x: torch.Tensor, *, inverse: bool = False, norm: str = "backward") -> torch.Tensor:
    return torch.fft.ifft(x, norm=norm) if inverse else torch.fft.fft(x, norm=norm)


def monarch_rfft(x: torch.Tensor, *, norm: str = "backward") -> torch.Tensor:
    return torch.fft.rfft(x, norm=norm)


def monarch_irfft(X: torch.Tensor, n=None, *, norm: str = "backward") -> torch.Tensor:
    return torch.fft.irfft(X, n=n, norm=norm)


__all__ = ["butterfly_multiply", "monarch_fft", "monarch_irfft", "monarch_multiply", "monarch_rfft"]
