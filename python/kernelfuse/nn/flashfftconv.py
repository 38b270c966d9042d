"""A drop-in for ``flashfftconv.FlashFFTConv`` (Fu et al. 2023) on :func:`kernelfuse.fftconv`.

A FlashFFTConv user switches by changing one import::

    # from flashfftconv import FlashFFTConv
    from kernelfuse.nn import FlashFFTConv

    conv = FlashFFTConv(seqlen, dtype=torch.bfloat16)
    y = conv(u, k)                       # u (B, H, L) bf16, k (H, Lk) fp32 -> y (B, H, L) bf16
    y = conv(u, k, pregate, postgate)    # postgate * conv(u * pregate, k)

The convention (FlashFFTConv's own: its reference is ``irfft(rfft(u, n) * rfft(k, n), n)[..., :L]``
with ``n = seqlen``, the FFT size): u and k are zero padded to ``seqlen`` and convolved
circularly with period ``seqlen``; the output is cropped to u's length L. When
``L + Lk - 1 <= seqlen`` (FlashFFTConv's usual ``seqlen = 2 L``) nothing wraps around and this is
exactly the causal linear convolution ``y[t] = sum_{m <= t} k[m] v[t - m]`` (fftconv's "causal"
mode with ``fft_size = seqlen``); otherwise the wrapped terms are kept, as FlashFFTConv keeps them
(fftconv's "circular" mode on u padded to ``seqlen``).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.longconv import fftconv

__all__ = ["FlashFFTConv"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class FlashFFTConv(nn.Module):
    """FFT convolution with FlashFFTConv's call signature.

    Args:
        seqlen: the FFT size n (FlashFFTConv: a power of two in [256, 4194304]; here any n >= 1).
            Inputs may be shorter: u (B, H, L) and k (H, Lk) with L, Lk <= seqlen.
        dtype: the activation dtype FlashFFTConv is built for (float16 or bfloat16; float32 and
            float64 are accepted too). Kept as ``self.dtype`` for compatibility; the computation
            does not depend on it: the output has u's dtype, the arithmetic is float32 (float64 for
            float64 u), and k may be float32 with half u (mixed precision, FlashFFTConv's rule).
        use_32_butterfly: accepted and ignored (a FlashFFTConv kernel choice).

    ``forward(u, k, pregate=None, postgate=None)``: u, pregate, postgate (B, H, L); k (H, Lk), or
    (B, H, Lk) one kernel per batch row; returns ``postgate * conv(u * pregate, k)`` (B, H, L) in
    u's dtype. Differentiable in every input, each gradient in its input's dtype. Works under
    ``torch.autocast`` (u and the gates in the autocast dtype, k in float32) and torch.compile.

    The module has no parameters or buffers; FlashFFTConv's buffers (its DFT and twiddle
    matrices) in a checkpoint are ignored when loading one into a model that uses this module.
    """

    def __init__(self, seqlen: int, dtype: torch.dtype = torch.float16, use_32_butterfly: bool = True):
        super().__init__()
        if isinstance(seqlen, bool) or not isinstance(seqlen, int) or seqlen < 1:
            raise ValueError(
                f"kernelfuse.nn.FlashFFTConv: argument 'seqlen' (the FFT size) must be a positive int, got {seqlen!r}"
            )
        if dtype not in _DTYPES:
            raise TypeError(
                f"kernelfuse.nn.FlashFFTConv: argument 'dtype': expected one of float16, bfloat16, float32, float64, "
                f"got {dtype}"
            )
        self.seqlen = seqlen
        self.dtype = dtype
        self.use_32_butterfly = use_32_butterfly

    def extra_repr(self) -> str:
        return f"seqlen={self.seqlen}, dtype={self.dtype}"

    def forward(
        self,
        u: torch.Tensor,
        k: torch.Tensor,
        pregate: Optional[torch.Tensor] = None,
        postgate: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        n = self.seqlen
        if not isinstance(u, torch.Tensor) or u.dim() != 3:
            raise ValueError(
                f"kernelfuse.nn.FlashFFTConv: argument 'u': expected a (B, H, L) tensor, got "
                f"{tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__}"
            )
        if not isinstance(k, torch.Tensor) or k.dim() not in (2, 3):
            raise ValueError(
                f"kernelfuse.nn.FlashFFTConv: argument 'k': expected an (H, Lk) tensor, got "
                f"{tuple(k.shape) if isinstance(k, torch.Tensor) else type(k).__name__}"
            )
        L, Lk = u.shape[-1], k.shape[-1]
        if L > n:
            raise ValueError(
                f"kernelfuse.nn.FlashFFTConv: argument 'u': length L = {L} exceeds the FFT size seqlen = {n}"
            )
        if Lk > n:
            raise ValueError(f"kernelfuse.nn.FlashFFTConv: argument 'k': length {Lk} exceeds the FFT size seqlen = {n}")
        if L + Lk - 1 <= n:
            # No wrap-around: the causal linear convolution; taps past L never reach an output.
            kk = k[..., :L] if Lk > L else k
            return fftconv(u, kk, pregate=pregate, postgate=postgate, mode="causal", fft_size=n)
        # Wrap-around terms (L + Lk - 1 > n): FlashFFTConv's circular convolution of period n.
        pad = lambda t: None if t is None else F.pad(t, (0, n - t.shape[-1]))  # noqa: E731
        return fftconv(pad(u), pad(k), pregate=pad(pregate), postgate=pad(postgate), mode="circular", fft_size=n)[
            ..., :L
        ]

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # FlashFFTConv registers its DFT / twiddle matrices as buffers; this module needs none.
        for key in [k for k in state_dict if k.startswith(prefix) and "." not in k[len(prefix) :]]:
            state_dict.pop(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
