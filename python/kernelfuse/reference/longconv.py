"""Plain-torch references for the long-convolution family: the spec ``kernelfuse.fftconv`` is
tested against (run them in float64). Written the way safari's ``fftconv_ref`` is: torch.fft with
explicit zero padding, one full-size spectrum per tensor, no fusion.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

MODES = ("causal", "bidirectional", "circular")


def fftconv(
    u: torch.Tensor,
    k: Union[torch.Tensor, Sequence[torch.Tensor]],
    D: Optional[torch.Tensor] = None,
    *,
    pregate: Optional[torch.Tensor] = None,
    postgate: Optional[torch.Tensor] = None,
    mode: str = "causal",
    fft_size: Optional[int] = None,
    skip: str = "input",
) -> torch.Tensor:
    """y = postgate * (conv(u * pregate, k) + D[:, None] * s), the definition of ``kernelfuse.fftconv``,
    with s = u (``skip="input"``) or s = u * pregate (``skip="gated"``).

    u (B, H, L); k (H, taps), (1, H, taps) or (B, H, taps); D (H,); gates (B, H, L). With
    v = u * pregate and t < L:

    - "causal":   conv[t] = sum_{m=0}^{min(t, Lk-1)} k[m] v[t - m]                    (Lk = taps <= L)
    - "circular": conv[t] = sum_{m<Lk} k[m] v[(t - m) mod L]                           (Lk = taps <= L)
    - "bidirectional" (safari's LongConv convention, taps = 2 Lk, Lk <= L; k_fwd = k[..., :Lk],
      k_bwd = k[..., Lk:], or pass the pair (k_fwd, k_bwd)):
      conv[t] = sum_{m<Lk} k_fwd[m] v[t - m]  +  sum_{j<Lk} k_bwd[j] v[t + 1 + j]   (v = 0 outside [0, L))
      i.e. one circular convolution of size 2L of v zero padded with
      kk = pad(k_fwd, (0, 2L - Lk)) + pad(flip(k_bwd), (2L - Lk, 0)); safari's two kernel channels
      (k0, k1) of L taps are the case Lk = L.

    ``fft_size`` does not change the result (any valid size gives the same linear convolution);
    it is accepted for the signature and ignored here.
    """
    if isinstance(k, (tuple, list)):
        k = torch.cat(list(k), dim=-1)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    if skip not in ("input", "gated"):
        raise ValueError(f"unknown skip {skip!r}")
    L = u.shape[-1]
    if k.dim() == 3 and k.shape[0] == 1:
        k = k[0]
    v = u if pregate is None else u * pregate
    taps = k.shape[-1]
    if mode == "causal":
        N = L + taps  # >= L + Lk - 1: no wrap-around in [0, L)
        y = torch.fft.irfft(torch.fft.rfft(v, n=N) * torch.fft.rfft(k, n=N), n=N)[..., :L]
    elif mode == "circular":
        kk = F.pad(k, (0, L - taps))
        y = torch.fft.irfft(torch.fft.rfft(v, n=L) * torch.fft.rfft(kk, n=L), n=L)
    else:
        Lk = taps // 2
        k_fwd, k_bwd = k[..., :Lk], k[..., Lk:]
        N = 2 * L
        kk = F.pad(k_fwd, (0, N - Lk)) + F.pad(k_bwd.flip(-1), (N - Lk, 0))
        y = torch.fft.irfft(torch.fft.rfft(v, n=N) * torch.fft.rfft(kk, n=N), n=N)[..., :L]
    if D is not None:
        y = y + D[:, None] * (v if skip == "gated" else u)
    if postgate is not None:
        y = y * postgate
    return y.to(u.dtype)


def fftconv_direct(u, k, D=None, *, pregate=None, postgate=None, mode="causal", skip="input"):
    """The same definition by direct summation (O(L * Lk) per row; small sizes only): an FFT-free
    cross-check of :func:`fftconv` itself."""
    if isinstance(k, (tuple, list)):
        k = torch.cat(list(k), dim=-1)
    if k.dim() == 3 and k.shape[0] == 1:
        k = k[0]
    B, H, L = u.shape
    k = k.expand(B, H, k.shape[-1])
    v = u if pregate is None else u * pregate
    y = torch.zeros_like(v)
    taps = k.shape[-1]
    if mode == "bidirectional":
        Lk = taps // 2
        for m in range(Lk):  # forward taps: lag m
            y[..., m:] += k[..., m : m + 1] * v[..., : L - m]
        for j in range(Lk):  # backward taps: v[t + 1 + j]
            s = 1 + j
            if s < L:
                y[..., : L - s] += k[..., Lk + j : Lk + j + 1] * v[..., s:]
    else:
        for m in range(taps):
            if mode == "circular":
                y += k[..., m : m + 1] * torch.roll(v, m, dims=-1)
            else:
                y[..., m:] += k[..., m : m + 1] * v[..., : L - m]
    if D is not None:
        y = y + D[:, None] * (v if skip == "gated" else u)
    if postgate is not None:
        y = y * postgate
    return y


__all__ = ["MODES", "fftconv", "fftconv_direct"]
