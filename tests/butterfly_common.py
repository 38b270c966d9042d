"""Shared by the butterfly family's CPU tests (tests/test_butterfly.py, _fft.py, _nn.py): the dtypes,
seeded inputs and twiddles, and fly's (HazyResearch) Monarch product as an independent formula."""

import math

import torch

REAL = [torch.float64, torch.float32]
CPLX = [torch.complex128, torch.complex64]


def _rand(shape, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    wide = torch.complex128 if dtype.is_complex else torch.float64
    return torch.randn(*shape, generator=g, dtype=wide).to(dtype=dtype, device=device)


def _twiddle(nblocks, n, dtype, seed=1, device="cpu"):
    log_n = max(n.bit_length() - 1, 0)
    return _rand((nblocks, log_n, n // 2, 2, 2), dtype, seed, device) * math.sqrt(0.5)


def _wide(dtype):
    return torch.complex128 if dtype.is_complex else torch.float64


def _fly_monarch(x, w1, w2):
    """fly's (HazyResearch) blockdiag_butterfly_multiply, transcribed from its formula: x (B, k p),
    w1 (k, q, p), w2 (l, s, r) -> (B, s l), block c's output t at t l + c."""
    B = x.shape[0]
    k, q, p = w1.shape
    l, s, r = w2.shape
    out1 = torch.bmm(x.reshape(B, k, p).transpose(0, 1), w1.transpose(-1, -2))  # (k, B, q)
    out1 = out1.transpose(0, 1).reshape(B, r, l).transpose(-1, -2).contiguous().transpose(0, 1)  # (l, B, r)
    out2 = torch.bmm(out1, w2.transpose(-1, -2))  # (l, B, s)
    return out2.permute(1, 2, 0).reshape(B, s * l)
