"""Butterfly and Monarch structured matrices: ``butterfly_multiply``, ``monarch_multiply`` and the
Monarch-factorised FFT ``monarch_fft`` (with ``monarch_rfft`` / ``monarch_irfft``).

Ops (schemas in csrc/kernelfuse.cpp, kernels in csrc/butterfly/): ``butterfly_multiply`` (+ _bwd),
``monarch_multiply`` (+ _bwd) and ``monarch_fft``, which is its own adjoint. This module adds the
public Python API, the fake (meta) kernels for torch.compile, and autograd.
"""
from __future__ import annotations

import math

import torch

from ._autocast import fp32_under_autocast
from ._common import check_like, check_tensor

_ops = torch.ops.kernelfuse
NORMS = ("backward", "ortho", "forward")
_ADJOINT_NORM = {"backward": "forward", "forward": "backward", "ortho": "ortho"}
_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _check_dtype(t, name, fn):
    if t.dtype not in _DTYPES:
        raise TypeError(f"kernelfuse.{fn}: argument '{name}': expected dtype float32, float64, complex64 or "
                        f"complex128, got {t.dtype}")




# ================================================================ butterfly_multiply
@fp32_under_autocast
def butterfly_multiply(x: torch.Tensor, twiddle: torch.Tensor, *, increasing_stride: bool = True) -> torch.Tensor:
    """Product of ``x`` (..., n) with the butterfly matrix given by ``twiddle``, along the last dim.

    Args:
        x: (..., n), n a power of two (n = 1: the identity). float32, float64, complex64 or
            complex128.
        twiddle: (nblocks, log2 n, n/2, 2, 2) in x's dtype. Block b has log2 n stages; stage t of a
            block with increasing strides uses the stride h = 2^t (decreasing: 2^(log2 n - 1 - t)).
            Block 0 runs with ``increasing_stride``; the direction alternates between blocks.
            For stride h, pair p = g h + k (g < n / 2h, k < h) joins i = 2 g h + k and j = i + h:
            ``y_i = a x_i + b x_j, y_j = c x_i + d x_j`` with [[a, b], [c, d]] = twiddle[b, t, p].
        increasing_stride: the stride order of block 0.

    Returns:
        (..., n) in x's dtype; O(nblocks n log n) work per vector. Differentiable in x and twiddle
        (backward op ``butterfly_multiply_bwd``: stage inputs recomputed per block of rows).
    """
    check_tensor(x, "x", "butterfly_multiply")
    check_tensor(twiddle, "twiddle", "butterfly_multiply")
    _check_dtype(x, "x", "butterfly_multiply")
    check_like(twiddle, x, "twiddle", "x", "butterfly_multiply")
    if x.dim() < 1:
        raise ValueError("kernelfuse.butterfly_multiply: argument 'x': expected shape (..., n), got a 0-d tensor")
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(f"kernelfuse.butterfly_multiply: argument 'x': the last dimension n must be a power of two, "
                         f"got shape {tuple(x.shape)}")
    log_n = n.bit_length() - 1
    if twiddle.dim() != 5 or twiddle.shape[0] < 1 or tuple(twiddle.shape[1:]) != (log_n, n // 2, 2, 2):
        raise ValueError(f"kernelfuse.butterfly_multiply: argument 'twiddle': expected shape (nblocks, log2 n, n / 2, "
                         f"2, 2) = (nblocks, {log_n}, {n // 2}, 2, 2) for n = {n}, got {tuple(twiddle.shape)}")
    return _ops.butterfly_multiply(x, twiddle, bool(increasing_stride))


@torch.library.register_fake("kernelfuse::butterfly_multiply")
def _(x, twiddle, increasing_stride):
    return x.new_empty(x.shape)


@torch.library.register_fake("kernelfuse::butterfly_multiply_bwd")
def _(grad, x, twiddle, increasing_stride, need_x, need_twiddle):
    return (x.new_empty(x.shape) if need_x else x.new_empty((0,)),
            twiddle.new_empty(twiddle.shape) if need_twiddle else x.new_empty((0,)))


def _bf_setup(ctx, inputs, output):
    x, twiddle, inc = inputs
    ctx.inc = inc
    ctx.save_for_backward(x, twiddle)


def _bf_backward(ctx, grad):
    x, twiddle = ctx.saved_tensors
    nx, nt = ctx.needs_input_grad[:2]
    dx, dt = _ops.butterfly_multiply_bwd(grad.contiguous(), x, twiddle, ctx.inc, nx, nt)
    return dx if nx else None, dt if nt else None, None


torch.library.register_autograd("kernelfuse::butterfly_multiply", _bf_backward, setup_context=_bf_setup)


# ================================================================ monarch_multiply
MONARCH_LAYOUTS = ("ls", "sl")


@fp32_under_autocast
def monarch_multiply(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, *, layout: str = "ls") -> torch.Tensor:
    """Monarch product: block-diagonal ``w1``, a fixed permutation, block-diagonal ``w2``.

    Shapes: x (..., n); w1 (k, q, p) with n = k p (k blocks of q x p); w2 (l, s, r) with l r = k q
    (l blocks of s x r); output (..., l s). With x viewed (..., k, p):
    ``y1[..., a, :] = w1[a] @ x[..., a, :]``; y1 flattened to k q values is viewed (r, l) and
    transposed to (l, r) (the Monarch permutation); ``out[..., c, :] = w2[c] @ z[..., c, :]``.
    Two strided batched GEMMs (MKL's batched GEMM on CPU, cuBLAS through ATen on CUDA) with the
    permutation and the transposes in their strides: no copy. Real or complex dtypes;
    differentiable in x, w1, w2 (the backward recomputes the intermediate: autograd keeps only
    x, w1, w2). ``kernelfuse.nn.MonarchLinear`` pads inputs/outputs whose sizes are not multiples
    of nblocks.

    layout: the order of the output's l s values. "ls" (default): block c's output t at
    ``c s + t``, as above. "sl": at ``t l + c``, the layout of fly's (HazyResearch)
    ``blockdiag_butterfly_multiply`` with the same (k, q, p) / (l, s, r) weights, i.e.
    ``out_ls.unflatten(-1, (l, s)).transpose(-1, -2).flatten(-2)`` (one extra transpose copy of
    the output; its backward one of the gradient).
    """
    for t, name in ((x, "x"), (w1, "w1"), (w2, "w2")):
        check_tensor(t, name, "monarch_multiply")
    _check_dtype(x, "x", "monarch_multiply")
    check_like(w1, x, "w1", "x", "monarch_multiply")
    check_like(w2, x, "w2", "x", "monarch_multiply")
    if x.dim() < 1:
        raise ValueError("kernelfuse.monarch_multiply: argument 'x': expected shape (..., n), got a 0-d tensor")
    if w1.dim() != 3 or w1.shape[0] * w1.shape[2] != x.shape[-1] or w1.shape[0] < 1:
        raise ValueError(f"kernelfuse.monarch_multiply: argument 'w1': expected shape (k, q, p) with k * p = n = "
                         f"{x.shape[-1]} (x is {tuple(x.shape)}), got {tuple(w1.shape)}")
    if w2.dim() != 3 or w2.shape[0] * w2.shape[2] != w1.shape[0] * w1.shape[1] or w2.shape[0] < 1:
        raise ValueError(f"kernelfuse.monarch_multiply: argument 'w2': expected shape (l, s, r) with l * r = k * q = "
                         f"{w1.shape[0] * w1.shape[1]} (w1 is {tuple(w1.shape)}), got {tuple(w2.shape)}")
    if layout not in MONARCH_LAYOUTS:
        raise ValueError(f"kernelfuse.monarch_multiply: argument 'layout': expected one of {MONARCH_LAYOUTS}, "
                         f"got {layout!r}")
    out = _ops.monarch_multiply(x, w1, w2)
    if layout == "sl":
        l, s = w2.shape[0], w2.shape[1]
        out = out.unflatten(-1, (l, s)).transpose(-1, -2).reshape(*x.shape[:-1], s * l)
    return out


@torch.library.register_fake("kernelfuse::monarch_multiply")
def _(x, w1, w2):
    return x.new_empty((*x.shape[:-1], w2.shape[0] * w2.shape[1]))


@torch.library.register_fake("kernelfuse::monarch_multiply_bwd")
def _(grad, x, w1, w2, need_x, need_w1, need_w2):
    e = x.new_empty((0,))
    return (x.new_empty(x.shape) if need_x else e, w1.new_empty(w1.shape) if need_w1 else e,
            w2.new_empty(w2.shape) if need_w2 else e)


def _mm_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _mm_backward(ctx, grad):
    x, w1, w2 = ctx.saved_tensors
    nx, n1, n2 = ctx.needs_input_grad[:3]
    dx, d1, d2 = _ops.monarch_multiply_bwd(grad, x, w1, w2, nx, n1, n2)
    return dx if nx else None, d1 if n1 else None, d2 if n2 else None


torch.library.register_autograd("kernelfuse::monarch_multiply", _mm_backward, setup_context=_mm_setup)


# ================================================================ monarch_fft
def _check_norm(norm, fn):
    if norm not in NORMS:
        raise ValueError(f"kernelfuse.{fn}: argument 'norm': expected one of {NORMS}, got {norm!r}")


def _complex_dtype(dtype):
    return torch.complex128 if dtype in (torch.float64, torch.complex128) else torch.complex64


@fp32_under_autocast
def monarch_fft(x: torch.Tensor, *, inverse: bool = False, norm: str = "backward") -> torch.Tensor:
    """DFT of the last dimension through the Monarch (multi-level Cooley-Tukey) factorisation.

    ``monarch_fft(x)`` equals ``torch.fft.fft(x, norm=norm)`` and ``monarch_fft(x, inverse=True)``
    equals ``torch.fft.ifft(x, norm=norm)``, to floating-point rounding. The length N is split into
    N1 N2 (... up to four factors of at most 64 for N <= 2^24; larger prime factors, up to 2048,
    get a dense DFT): each level is one batched GEMM with a small DFT matrix, a twiddle multiply
    and a transpose. Real inputs are promoted to complex (float32 -> complex64, float64 ->
    complex128). Differentiable (the adjoint of the DFT is the DFT with ``inverse`` flipped).
    """
    check_tensor(x, "x", "monarch_fft")
    _check_norm(norm, "monarch_fft")
    if x.dtype not in _DTYPES:
        raise TypeError(f"kernelfuse.monarch_fft: argument 'x': expected dtype float32, float64, complex64 or "
                        f"complex128, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("kernelfuse.monarch_fft: argument 'x': expected shape (..., n), got a 0-d tensor")
    if not x.is_complex():
        x = x.to(_complex_dtype(x.dtype))
    return _ops.monarch_fft(x, bool(inverse), norm)


@torch.library.register_fake("kernelfuse::monarch_fft")
def _(x, inverse, norm):
    return x.new_empty(x.shape)


def _fft_setup(ctx, inputs, output):
    ctx.inverse, ctx.norm = inputs[1], inputs[2]


def _fft_backward(ctx, grad):
    return _ops.monarch_fft(grad.contiguous(), not ctx.inverse, _ADJOINT_NORM[ctx.norm]), None, None


torch.library.register_autograd("kernelfuse::monarch_fft", _fft_backward, setup_context=_fft_setup)


_SCALE = {"backward": lambda n: 1.0, "ortho": lambda n: n ** -0.5, "forward": lambda n: 1.0 / n}


_SPLIT_CACHE = {}


def _split_coeffs(n, inverse, like):
    """(A, B) with A_k = (1 -+ i w_k) / c, B_k = (1 +- i w_k) / c, w_k = exp(-+2 pi i k / n), k = 0..n/2
    (c = 2 forward, 1 inverse); computed in float64, cached per (n, direction, dtype, device)."""
    key = (n, inverse, like.dtype, like.device)
    if key not in _SPLIT_CACHE:
        k = torch.arange(n // 2 + 1, dtype=torch.float64)
        w = torch.polar(torch.ones_like(k), (1.0 if inverse else -1.0) * 2 * math.pi * k / n)
        if inverse:
            A, B = 1 + 1j * w, 1 - 1j * w
        else:
            A, B = (1 - 1j * w) / 2, (1 + 1j * w) / 2
        _SPLIT_CACHE[key] = (A.to(dtype=like.dtype, device=like.device), B.to(dtype=like.dtype, device=like.device))
    return _SPLIT_CACHE[key]


@fp32_under_autocast
def monarch_rfft(x: torch.Tensor, *, norm: str = "backward") -> torch.Tensor:
    """Real-input DFT of the last dim, like ``torch.fft.rfft``: (..., n) real -> (..., n//2 + 1).

    Even n: one complex Monarch FFT of length n/2 on z = x[0::2] + i x[1::2], then the split
    X_k = E_k + w_n^k O_k with E, O the spectra of the even / odd samples. Odd n: the complex
    transform of the promoted input, cropped."""
    check_tensor(x, "x", "monarch_rfft")
    _check_norm(norm, "monarch_rfft")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"kernelfuse.monarch_rfft: argument 'x': expected dtype float32 or float64, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("kernelfuse.monarch_rfft: argument 'x': expected shape (..., n), got a 0-d tensor")
    n = x.shape[-1]
    if n % 2 or n < 2:
        return monarch_fft(x, norm=norm)[..., : n // 2 + 1]
    h = n // 2
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], h, 2).contiguous())
    Z = _ops.monarch_fft(z, False, "backward")
    # X_k = E_k + w^k O_k with E = (Z_k + conj Z_{h-k}) / 2, O = (Z_k - conj Z_{h-k}) / 2i
    A, Bc = _split_coeffs(n, False, Z)
    Zk = torch.cat([Z, Z[..., :1]], dim=-1)                     # Z_{k mod h}, k = 0..h
    Zr = torch.cat([Z[..., :1], Z.flip(-1)], dim=-1).conj()     # conj Z_{(h - k) mod h}
    X = Zk * A + Zr * Bc
    s = _SCALE[norm](n)
    return X * s if s != 1.0 else X


def monarch_irfft(X: torch.Tensor, n: int | None = None, *, norm: str = "backward") -> torch.Tensor:
    """Inverse of :func:`monarch_rfft`, like ``torch.fft.irfft``: (..., m) complex -> (..., n) real,
    n = 2 (m - 1) by default; the imaginary parts of the DC (and, n even, Nyquist) bins are ignored
    like torch. Even n: one complex inverse Monarch FFT of length n/2; odd n: the Hermitian
    extension, inverted."""
    check_tensor(X, "X", "monarch_irfft")
    _check_norm(norm, "monarch_irfft")
    if X.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"kernelfuse.monarch_irfft: argument 'X': expected dtype complex64 or complex128, got {X.dtype}")
    if n is None:
        n = 2 * (X.shape[-1] - 1)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"kernelfuse.monarch_irfft: argument 'n': expected a positive length, got {n!r}")
    m = n // 2 + 1
    if X.shape[-1] < m:
        X = torch.nn.functional.pad(X, (0, m - X.shape[-1]))
    X = X[..., :m]
    if n % 2 or n < 2:
        tail = X[..., 1: n - m + 1].flip(-1).conj()
        full = torch.cat([X[..., :1].real.to(X.dtype), X[..., 1:], tail], dim=-1)
        return monarch_fft(full, inverse=True, norm=norm).real
    h = n // 2
    X = torch.cat([X[..., :1].real.to(X.dtype), X[..., 1:h], X[..., h:].real.to(X.dtype)], dim=-1)
    # Z_k = E_k + i O_k, E = X_k + conj X_{h-k}, O = (X_k - conj X_{h-k}) w^-k, k < h
    A, Bc = _split_coeffs(n, True, X)
    Xr = X[..., 1: h + 1].flip(-1).conj()
    Z = X[..., :h] * A[:h] + Xr * Bc[:h]
    z = _ops.monarch_fft(Z.contiguous(), True, "forward")  # unscaled inverse
    x = torch.view_as_real(z).reshape(*X.shape[:-1], n)
    s = {"backward": 1.0 / n, "ortho": n ** -0.5, "forward": 1.0}[norm]
    return x * s


__all__ = ["MONARCH_LAYOUTS", "NORMS", "butterfly_multiply", "monarch_fft", "monarch_irfft", "monarch_multiply", "monarch_rfft"]
