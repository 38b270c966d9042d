"""Exact butterfly / Monarch constructions of classical transforms.

Every function returns factors for :func:`kernelfuse.butterfly_multiply` or
:func:`kernelfuse.monarch_multiply`; the tests check them against ``torch.fft``, a dense
Sylvester Hadamard matrix and ``scipy.fft.dct``.

- :func:`bitreversal_permutation`: the input permutation of a decimation-in-time FFT.
- :func:`butterfly_fft_twiddle`: DFT / inverse DFT as log2 n butterfly stages (increasing
  strides) on bit-reversed input: ``fft(x) == butterfly_multiply(x[..., bitrev], tw)``.
- :func:`hadamard_twiddle`: Walsh-Hadamard (Sylvester order) as butterfly stages, no permutation.
- :func:`dct_butterfly`: DCT-II (scipy's type 2, norm None or "ortho") as (permutation, complex
  twiddle): ``dct(x) == butterfly_multiply(x[..., perm].to(complex), tw).real``.
- :func:`monarch_dft_factors`: DFT of length N = N1 N2 as Monarch factors with an input and an
  output permutation.
- :func:`butterfly_to_dense`, :func:`monarch_to_dense`: the dense matrices (testing, projection).
- :func:`monarch_fft_cache_info`, :func:`set_monarch_fft_cache_limit`, :func:`clear_monarch_fft_cache`:
  the byte-bounded LRU caches of :func:`kernelfuse.monarch_fft`'s DFT matrices and twiddles
  (default cap 256 MiB each; docs/butterfly.md).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ..ops.butterfly import (
    DEFAULT_FFT_CACHE_LIMIT,
    butterfly_multiply,
    clear_monarch_fft_cache,
    monarch_fft_cache_info,
    monarch_multiply,
    set_monarch_fft_cache_limit,
)

__all__ = [
    "bitreversal_permutation",
    "butterfly_fft_twiddle",
    "hadamard_twiddle",
    "dct_butterfly",
    "monarch_dft_factors",
    "butterfly_to_dense",
    "monarch_to_dense",
    "fft_factor_split",
    "DEFAULT_FFT_CACHE_LIMIT",
    "monarch_fft_cache_info",
    "set_monarch_fft_cache_limit",
    "clear_monarch_fft_cache",
]


def _log2(n: int, fn: str) -> int:
    if not isinstance(n, int) or n < 1 or n & (n - 1):
        raise ValueError(f"kernelfuse.butterfly.{fn}: argument 'n': expected a power of two >= 1, got {n!r}")
    return n.bit_length() - 1


def bitreversal_permutation(n: int) -> torch.Tensor:
    """perm (n,) int64 with perm[i] = the bit reversal of i over log2 n bits."""
    m = _log2(n, "bitreversal_permutation")
    idx = torch.arange(n)
    rev = torch.zeros(n, dtype=torch.int64)
    for b in range(m):
        rev |= ((idx >> b) & 1) << (m - 1 - b)
    return rev


def _pairs(n: int, h: int) -> torch.Tensor:
    """k (position inside the half group) of every pair p = g h + k of a stage with stride h."""
    return torch.arange(n // 2) % h


def butterfly_fft_twiddle(
    n: int, *, inverse: bool = False, norm: str = "backward", dtype: torch.dtype = torch.complex64, device=None
) -> torch.Tensor:
    """(1, log2 n, n/2, 2, 2) complex twiddle of the radix-2 decimation-in-time DFT.

    ``torch.fft.fft(x, norm=norm) == butterfly_multiply(x[..., bitreversal_permutation(n)], tw)``
    (``ifft`` with ``inverse=True``). Stage t (stride h = 2^t) pairs (i, i + h), k = i mod h:
    [[1, w], [1, -w]] with w = exp(-+2 pi i k / 2h); the normalisation is spread evenly over stages.
    """
    m = _log2(n, "butterfly_fft_twiddle")
    if norm not in ("backward", "ortho", "forward"):
        raise ValueError(f"kernelfuse.butterfly.butterfly_fft_twiddle: argument 'norm': unknown {norm!r}")
    scale_total = {
        "backward": 1.0 / n if inverse else 1.0,
        "forward": 1.0 if inverse else 1.0 / n,
        "ortho": 1.0 / math.sqrt(n),
    }[norm]
    s = scale_total ** (1.0 / m) if m else 1.0
    sign = 1.0 if inverse else -1.0
    tw = torch.zeros(1, m, n // 2, 2, 2, dtype=torch.complex128)
    for t in range(m):
        h = 1 << t
        w = torch.exp(sign * 2j * math.pi * _pairs(n, h).double() / (2 * h))
        tw[0, t, :, 0, 0] = s
        tw[0, t, :, 0, 1] = s * w
        tw[0, t, :, 1, 0] = s
        tw[0, t, :, 1, 1] = -s * w
    return tw.to(dtype=dtype, device=device)


def hadamard_twiddle(
    n: int, *, normalized: bool = True, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """(1, log2 n, n/2, 2, 2) twiddle of the Walsh-Hadamard transform in Sylvester order:
    ``butterfly_multiply(x, tw) == x @ H_n`` (H_n symmetric, entries +-1, times n^-1/2 when
    ``normalized``). Every stage is [[1, 1], [1, -1]] (over sqrt 2 when normalized), for either
    stride order."""
    m = _log2(n, "hadamard_twiddle")
    s = 1 / math.sqrt(2) if normalized else 1.0
    base = torch.tensor([[s, s], [s, -s]], dtype=torch.float64)
    return base.expand(1, m, n // 2, 2, 2).to(dtype=dtype, device=device).contiguous()


def dct_butterfly(
    n: int, *, norm: Optional[str] = None, dtype: torch.dtype = torch.complex64, device=None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """DCT-II as a permutation and a complex butterfly: returns (perm, twiddle) with
    ``scipy.fft.dct(x, type=2, norm=norm) == butterfly_multiply(x[..., perm].to(complex), tw).real``.

    Makhoul's algorithm: v = (x0, x2, x4, ..., x5, x3, x1), V = DFT(v), y_k = 2 Re(e^{-i pi k / 2n} V_k);
    the even/odd reordering and the FFT's bit reversal compose to ``perm``, and the output
    diagonal (with the factor 2 and the "ortho" scaling) is folded into the last stage.
    """
    m = _log2(n, "dct_butterfly")
    if norm not in (None, "backward", "ortho"):
        raise ValueError(
            f"kernelfuse.butterfly.dct_butterfly: argument 'norm': expected None, 'backward' or 'ortho', got {norm!r}"
        )
    half = (n + 1) // 2
    makhoul = torch.empty(n, dtype=torch.int64)
    makhoul[:half] = torch.arange(0, n, 2)
    makhoul[half:] = torch.arange(2 * (n - half) - 1, 0, -2)  # odd indices, descending
    perm = makhoul[bitreversal_permutation(n)]
    k = torch.arange(n, dtype=torch.float64)
    diag = 2 * torch.exp(-1j * math.pi * k / (2 * n))
    if norm == "ortho":
        f = torch.full((n,), math.sqrt(1 / (2 * n)), dtype=torch.float64)
        f[0] = math.sqrt(1 / (4 * n))
        diag = diag * f
    if m == 0:
        raise ValueError(
            "kernelfuse.butterfly.dct_butterfly: argument 'n': n = 1 has no butterfly stage to hold the "
            "output scaling; expected n >= 2"
        )
    tw = butterfly_fft_twiddle(n, dtype=torch.complex128)
    # last stage (stride n/2): pair p joins outputs p and p + n/2; scale row 0 by diag[p], row 1 by diag[p + n/2]
    p = torch.arange(n // 2)
    tw[0, m - 1, :, 0, :] *= diag[p, None]
    tw[0, m - 1, :, 1, :] *= diag[p + n // 2, None]
    return perm, tw.to(dtype=dtype, device=device)


def fft_factor_split(n: int) -> Tuple[int, int]:
    """(N1, N2) with N1 N2 = n, N1 the largest divisor <= sqrt(n)."""
    n1 = int(math.isqrt(n))
    while n % n1:
        n1 -= 1
    return n1, n // n1


def monarch_dft_factors(
    n: int, *, inverse: bool = False, n1: Optional[int] = None, dtype: torch.dtype = torch.complex64, device=None
):
    """DFT of length n = N1 N2 as Monarch factors: returns (w1, w2, perm_in, perm_out) with
    ``torch.fft.fft(x) == monarch_multiply(x[..., perm_in], w1, w2)[..., perm_out]``
    (``ifft`` with ``inverse=True``, the 1/n folded into w2).

    With n = n1 + N1 n2 and k = k2 + N2 k1: w1 (N1, N2, N2), w1[n1][k2, n2] = w_n^(n1 k2) w_N2^(n2 k2)
    (the N2-point DFTs with the twiddles folded in); w2 (N2, N1, N1), w2[k2][k1, n1] = w_N1^(n1 k1).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"kernelfuse.butterfly.monarch_dft_factors: argument 'n': expected a positive int, got {n!r}")
    if n1 is None:
        n1, n2 = fft_factor_split(n)
    else:
        if n % n1:
            raise ValueError(f"kernelfuse.butterfly.monarch_dft_factors: argument 'n1': {n1} does not divide n = {n}")
        n2 = n // n1
    sign = 1.0 if inverse else -1.0

    def w(e, N):
        return torch.exp(sign * 2j * math.pi * (e % N).double() / N)

    a = torch.arange(n1)[:, None, None]
    k2 = torch.arange(n2)[None, :, None]
    m2 = torch.arange(n2)[None, None, :]
    w1 = w(a * k2, n) * w(m2 * k2, n2)  # (N1, N2, N2)
    k1 = torch.arange(n1)[None, :, None]
    m1 = torch.arange(n1)[None, None, :]
    w2 = w(k1 * m1, n1).expand(n2, n1, n1).clone()  # (N2, N1, N1)
    if inverse:
        w2 = w2 / n
    perm_in = (torch.arange(n1)[:, None] + n1 * torch.arange(n2)[None, :]).reshape(-1)
    perm_out = (torch.arange(n2)[None, :] * n1 + torch.arange(n1)[:, None]).reshape(-1)  # index k = k2 + N2 k1
    return (
        w1.to(dtype=dtype, device=device),
        w2.to(dtype=dtype, device=device),
        perm_in.to(device),
        perm_out.to(device),
    )


def butterfly_to_dense(twiddle: torch.Tensor, *, increasing_stride: bool = True) -> torch.Tensor:
    """The (n, n) matrix B with butterfly_multiply(x, twiddle) == x @ B.T."""
    n = 2 * twiddle.shape[2] if twiddle.shape[1] else 1
    eye = torch.eye(n, dtype=twiddle.dtype, device=twiddle.device)
    return butterfly_multiply(eye, twiddle, increasing_stride=increasing_stride).T


def monarch_to_dense(w1: torch.Tensor, w2: torch.Tensor, *, layout: str = "ls") -> torch.Tensor:
    """The (l s, k p) matrix M with monarch_multiply(x, w1, w2, layout=layout) == x @ M.T."""
    n = w1.shape[0] * w1.shape[2]
    eye = torch.eye(n, dtype=w1.dtype, device=w1.device)
    return monarch_multiply(eye, w1, w2, layout=layout).T
