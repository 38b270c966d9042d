"""Butterfly and Monarch structured matrices: ``butterfly_multiply``, ``monarch_multiply`` and the
Monarch-factorised FFT ``monarch_fft`` (with ``monarch_rfft`` / ``monarch_irfft``).

Ops (schemas in csrc/kernelfuse.cpp, kernels in csrc/butterfly/): ``butterfly_multiply`` (+ _bwd),
``monarch_multiply`` (+ _bwd) and ``monarch_fft``, which is its own adjoint. This module adds the
public Python API, the fake (meta) kernels for torch.compile, and autograd.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import torch

from ._autocast import fp32_under_autocast
from ._common import check_devices, check_like, check_required, check_tensor, sized

_ops = torch.ops.kernelfuse
NORMS = ("backward", "ortho", "forward")
_ADJOINT_NORM = {"backward": "forward", "forward": "backward", "ortho": "ortho"}
_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _check_dtype(t, name, fn):
    if t.dtype not in _DTYPES:
        raise TypeError(
            f"kernelfuse.{fn}: argument '{name}': expected dtype float32, float64, complex64 or "
            f"complex128, got {t.dtype}"
        )


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
    check_devices("butterfly_multiply", ("x", x), ("twiddle", twiddle), name_meta=True)
    _check_dtype(x, "x", "butterfly_multiply")
    check_like(twiddle, x, "twiddle", "x", "butterfly_multiply")
    if x.dim() < 1:
        raise ValueError("kernelfuse.butterfly_multiply: argument 'x': expected shape (..., n), got a 0-d tensor")
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(
            f"kernelfuse.butterfly_multiply: argument 'x': the last dimension n must be a power of two, "
            f"got shape {tuple(x.shape)}"
        )
    log_n = n.bit_length() - 1
    if twiddle.dim() != 5 or twiddle.shape[0] < 1 or tuple(twiddle.shape[1:]) != (log_n, n // 2, 2, 2):
        raise ValueError(
            f"kernelfuse.butterfly_multiply: argument 'twiddle': expected shape (nblocks, log2 n, n / 2, "
            f"2, 2) = (nblocks, {log_n}, {n // 2}, 2, 2) for n = {n}, got {tuple(twiddle.shape)}"
        )
    return _ops.butterfly_multiply(x, twiddle, bool(increasing_stride))


# Fake kernels: the C++ checks repeated (the dispatcher routes a call with any meta tensor here, past
# them: a meta tensor among CPU ones must be an error naming it, not uninitialised memory), outputs
# fresh contiguous tensors as the kernels return. Sizes may be symbolic (torch.compile dynamic).
def _fake_common(fn, *named):
    check_required(*named)
    check_devices(fn, *named, name_meta=True)
    x = named[0][1] if named[0][0] == "x" else named[1][1]
    for name, t in named:
        torch._check_value(
            t.dtype == x.dtype,
            lambda: f"kernelfuse: argument '{name}': expected dtype {x.dtype} (the dtype of 'x'), got {t.dtype}",
        )
    torch._check_value(x.dim() >= 1, lambda: "kernelfuse: argument 'x': expected shape (..., n), got a 0-d tensor")
    torch._check_value(
        x.dtype in _DTYPES,
        lambda: f"kernelfuse: argument 'x': expected dtype float32, float64, complex64 or complex128, got {x.dtype}",
    )
    return x


def _fake_grad(grad, shape):
    torch._check_value(
        tuple(grad.shape) == tuple(shape),
        lambda: f"kernelfuse: argument 'grad': expected shape {list(shape)}, got {list(grad.shape)}",
    )


def _fake_butterfly(fn, x, twiddle, grad=None):
    named = (("x", x), ("twiddle", twiddle)) + ((("grad", grad),) if grad is not None or fn.endswith("_bwd") else ())
    x = _fake_common(fn, *named)
    n = x.shape[-1]
    log_n = n.bit_length() - 1 if isinstance(n, int) else None
    if log_n is not None:
        torch._check_value(
            n >= 1 and n & (n - 1) == 0,
            lambda: f"kernelfuse: argument 'x': the last dimension n must be a power of two, got shape {list(x.shape)}",
        )
    torch._check_value(
        twiddle.dim() == 5
        and (log_n is None or twiddle.shape[1] == log_n)
        and twiddle.shape[2] == n // 2
        and twiddle.shape[3] == 2
        and twiddle.shape[4] == 2,
        lambda: (
            f"kernelfuse: argument 'twiddle': expected shape (nblocks, log2 n, n / 2, 2, 2) for "
            f"n = {n}, got {list(twiddle.shape)}"
        ),
    )
    if grad is not None:
        _fake_grad(grad, x.shape)


@torch.library.register_fake("kernelfuse::butterfly_multiply")
def _(x, twiddle, increasing_stride):
    _fake_butterfly("butterfly_multiply", x, twiddle)
    return x.new_empty(x.shape)


@torch.library.register_fake("kernelfuse::butterfly_multiply_bwd")
def _(grad, x, twiddle, increasing_stride, need_x, need_twiddle):
    _fake_butterfly("butterfly_multiply_bwd", x, twiddle, grad)
    return (
        x.new_empty(x.shape) if need_x else x.new_empty((0,)),
        twiddle.new_empty(twiddle.shape) if need_twiddle else x.new_empty((0,)),
    )


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
    check_devices("monarch_multiply", ("x", x), ("w1", w1), ("w2", w2), name_meta=True)
    _check_dtype(x, "x", "monarch_multiply")
    check_like(w1, x, "w1", "x", "monarch_multiply")
    check_like(w2, x, "w2", "x", "monarch_multiply")
    if x.dim() < 1:
        raise ValueError("kernelfuse.monarch_multiply: argument 'x': expected shape (..., n), got a 0-d tensor")
    if w1.dim() != 3 or w1.shape[0] * w1.shape[2] != x.shape[-1] or w1.shape[0] < 1:
        raise ValueError(
            f"kernelfuse.monarch_multiply: argument 'w1': expected shape (k, q, p) with k * p = n = "
            f"{x.shape[-1]} (x is {tuple(x.shape)}), got {tuple(w1.shape)}"
        )
    if w2.dim() != 3 or w2.shape[0] * w2.shape[2] != w1.shape[0] * w1.shape[1] or w2.shape[0] < 1:
        raise ValueError(
            f"kernelfuse.monarch_multiply: argument 'w2': expected shape (l, s, r) with l * r = k * q = "
            f"{w1.shape[0] * w1.shape[1]} (w1 is {tuple(w1.shape)}), got {tuple(w2.shape)}"
        )
    if layout not in MONARCH_LAYOUTS:
        raise ValueError(
            f"kernelfuse.monarch_multiply: argument 'layout': expected one of {MONARCH_LAYOUTS}, got {layout!r}"
        )
    out = _ops.monarch_multiply(x, w1, w2)
    if layout == "sl":
        l, s = w2.shape[0], w2.shape[1]
        out = out.unflatten(-1, (l, s)).transpose(-1, -2).reshape(*x.shape[:-1], s * l)
    return out


def _fake_monarch(fn, x, w1, w2, *extra):
    x = _fake_common(fn, ("x", x), ("w1", w1), ("w2", w2), *extra)
    torch._check_value(
        w1.dim() == 3 and w1.shape[0] >= 1 and w1.shape[0] * w1.shape[2] == x.shape[-1],
        lambda: (
            f"kernelfuse: argument 'w1': expected shape (k, q, p) with k * p = n = {x.shape[-1]}, got {list(w1.shape)}"
        ),
    )
    torch._check_value(
        w2.dim() == 3 and w2.shape[0] >= 1 and w2.shape[0] * w2.shape[2] == w1.shape[0] * w1.shape[1],
        lambda: (
            f"kernelfuse: argument 'w2': expected shape (l, s, r) with l * r = k * q = "
            f"{w1.shape[0] * w1.shape[1]}, got {list(w2.shape)}"
        ),
    )
    return (*x.shape[:-1], w2.shape[0] * w2.shape[1])


@torch.library.register_fake("kernelfuse::monarch_multiply")
def _(x, w1, w2):
    shape = _fake_monarch("monarch_multiply", x, w1, w2)
    return x.new_empty(shape)


@torch.library.register_fake("kernelfuse::monarch_multiply_bwd")
def _(grad, x, w1, w2, need_x, need_w1, need_w2):
    _fake_grad(grad, _fake_monarch("monarch_multiply_bwd", x, w1, w2, ("grad", grad)))
    e = x.new_empty((0,))
    return (
        x.new_empty(x.shape) if need_x else e,
        w1.new_empty(w1.shape) if need_w1 else e,
        w2.new_empty(w2.shape) if need_w2 else e,
    )


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
    _check_fft_length(x, "monarch_fft")
    if x.dtype not in _DTYPES:
        raise TypeError(
            f"kernelfuse.monarch_fft: argument 'x': expected dtype float32, float64, complex64 or "
            f"complex128, got {x.dtype}"
        )
    if x.dim() < 1:
        raise ValueError("kernelfuse.monarch_fft: argument 'x': expected shape (..., n), got a 0-d tensor")
    if not x.is_complex():
        with sized("monarch_fft", "x", "the complex copy of a real input"):
            x = x.to(_complex_dtype(x.dtype))
    return _ops.monarch_fft(x, bool(inverse), norm)


MAX_DENSE_FACTOR = 2048  # the largest prime factor of a length monarch_fft takes (monarch_torch.cpp)


def _largest_prime_factor(n):
    """n's largest prime factor when it is at most MAX_DENSE_FACTOR, else a number above it (the
    cofactor left after dividing out every prime <= MAX_DENSE_FACTOR): a bounded loop for any n."""
    p, r = 1, n
    for d in range(2, MAX_DENSE_FACTOR + 1):
        if d * d > r:
            break
        while r % d == 0:
            p, r = d, r // d
    return max(p, r)


def _check_fft_length(x, fn):
    """The length rule of the C++ op, checked before any copy (a concrete length only: a symbolic one
    is checked by the kernel at run time; under torch.compile the factorisation would guard on it)."""
    if torch.compiler.is_compiling():
        return
    if x.dim() >= 1 and isinstance(x.shape[-1], int) and x.shape[-1] >= 1:
        n = x.shape[-1]
        if _largest_prime_factor(n) > MAX_DENSE_FACTOR:
            raise ValueError(
                f"kernelfuse.{fn}: argument 'x': n = {n} has a prime factor > {MAX_DENSE_FACTOR}; "
                f"monarch_fft supports lengths whose prime factors are at most {MAX_DENSE_FACTOR}"
            )


@torch.library.register_fake("kernelfuse::monarch_fft")
def _(x, inverse, norm):
    check_required(("x", x))
    torch._check_value(x.dim() >= 1, lambda: "kernelfuse: argument 'x': expected shape (..., n), got a 0-d tensor")
    torch._check_value(
        x.dtype in (torch.complex64, torch.complex128),
        lambda: f"kernelfuse: argument 'x': expected dtype complex64 or complex128, got {x.dtype}",
    )
    torch._check_value(norm in NORMS, lambda: f"kernelfuse: argument 'norm': expected one of {NORMS}, got {norm!r}")
    torch._check_value(
        x.shape[-1] >= 1,
        lambda: f"kernelfuse: argument 'x': expected a last dimension n >= 1, got shape {list(x.shape)}",
    )
    _check_fft_length(x, "monarch_fft")
    return x.new_empty(x.shape)


def _fft_setup(ctx, inputs, output):
    ctx.inverse, ctx.norm = inputs[1], inputs[2]


def _fft_backward(ctx, grad):
    return _ops.monarch_fft(grad.contiguous(), not ctx.inverse, _ADJOINT_NORM[ctx.norm]), None, None


torch.library.register_autograd("kernelfuse::monarch_fft", _fft_backward, setup_context=_fft_setup)


_SCALE = {"backward": lambda n: 1.0, "ortho": lambda n: n**-0.5, "forward": lambda n: 1.0 / n}


# ---- the caches: the C++ DFT/twiddle tables (monarch_fft_cache op) and the rfft split coefficients
DEFAULT_FFT_CACHE_LIMIT = 256 * 2**20  # bytes; the C++ default (kDefaultCacheLimit, monarch_torch.cpp)
_split_lock = threading.Lock()
_split_cache: "OrderedDict[tuple, tuple]" = OrderedDict()  # LRU, most recent last
_split_state = {"bytes": 0, "limit": DEFAULT_FFT_CACHE_LIMIT}


def monarch_fft_cache_info() -> dict:
    """State of monarch_fft's caches: the DFT matrices and twiddles of the C++ op and the split
    coefficients of monarch_rfft / monarch_irfft, each an LRU bounded by ``limit`` bytes.

    Returns a dict: ``bytes`` (both caches), ``entries``, ``limit``, and the C++ cache's ``hits``,
    ``misses``, ``evictions``."""
    b, e, lim, hits, misses, ev = _ops.monarch_fft_cache(-1, False)
    with _split_lock:
        return {
            "bytes": b + _split_state["bytes"],
            "entries": e + len(_split_cache),
            "limit": lim,
            "hits": hits,
            "misses": misses,
            "evictions": ev,
        }


def set_monarch_fft_cache_limit(limit_bytes: int) -> int:
    """Cap each of monarch_fft's caches at ``limit_bytes`` (default 256 MiB; 0 disables caching, every
    call recomputes its tables) and evict down to it now. A table larger than the cap is used for
    its call only. Returns the previous cap."""
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes < 0:
        raise ValueError(
            f"kernelfuse.set_monarch_fft_cache_limit: argument 'limit_bytes': expected an int >= 0, got {limit_bytes!r}"
        )
    prev = _ops.monarch_fft_cache(-1, False)[2]
    _ops.monarch_fft_cache(limit_bytes, False)
    with _split_lock:
        _split_state["limit"] = limit_bytes
        _split_evict_locked()
    return prev


def clear_monarch_fft_cache() -> None:
    """Empty monarch_fft's caches (the cap stays)."""
    _ops.monarch_fft_cache(-1, True)
    with _split_lock:
        _split_cache.clear()
        _split_state["bytes"] = 0


def _split_evict_locked():
    while _split_state["bytes"] > _split_state["limit"] and _split_cache:
        _, (A, B) = _split_cache.popitem(last=False)
        _split_state["bytes"] -= A.nbytes + B.nbytes


def _split_table(n, inverse, dtype, device):
    k = torch.arange(n // 2 + 1, dtype=torch.float64)
    w = torch.polar(torch.ones_like(k), (1.0 if inverse else -1.0) * 2 * math.pi * k / n)
    if inverse:
        A, B = 1 + 1j * w, 1 - 1j * w
    else:
        A, B = (1 - 1j * w) / 2, (1 + 1j * w) / 2
    return A.to(dtype=dtype, device=device), B.to(dtype=dtype, device=device)


def _split_coeffs(n, inverse, like):
    """(A, B) with A_k = (1 -+ i w_k) / c, B_k = (1 +- i w_k) / c, w_k = exp(-+2 pi i k / n), k = 0..n/2
    (c = 2 forward, 1 inverse); computed in float64, cached per (n, direction, dtype, device) in an
    LRU bounded by bytes. Under torch.compile (n possibly symbolic) computed in the graph, uncached:
    a cache key would specialise n."""
    if not isinstance(n, int) or torch.compiler.is_compiling():
        return _split_table(n, inverse, like.dtype, like.device)
    key = (n, inverse, like.dtype, like.device)
    with _split_lock:
        hit = _split_cache.get(key)
        if hit is not None:
            _split_cache.move_to_end(key)
            return hit
    A, B = _split_table(n, inverse, like.dtype, like.device)
    with _split_lock:
        if key not in _split_cache and A.nbytes + B.nbytes <= _split_state["limit"]:
            _split_cache[key] = (A, B)
            _split_state["bytes"] += A.nbytes + B.nbytes
            _split_evict_locked()
    return A, B


@fp32_under_autocast
def monarch_rfft(x: torch.Tensor, *, norm: str = "backward") -> torch.Tensor:
    """Real-input DFT of the last dim, like ``torch.fft.rfft``: (..., n) real -> (..., n//2 + 1).

    Even n: one complex Monarch FFT of length n/2 on z = x[0::2] + i x[1::2], then the split
    X_k = E_k + w_n^k O_k with E, O the spectra of the even / odd samples. Odd n: the complex
    transform of the promoted input, cropped."""
    check_tensor(x, "x", "monarch_rfft")
    _check_norm(norm, "monarch_rfft")
    _check_fft_length(x, "monarch_rfft")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"kernelfuse.monarch_rfft: argument 'x': expected dtype float32 or float64, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("kernelfuse.monarch_rfft: argument 'x': expected shape (..., n), got a 0-d tensor")
    n = x.shape[-1]
    if n % 2 or n < 2:
        return monarch_fft(x, norm=norm)[..., : n // 2 + 1]
    # z = x[0::2] + i x[1::2]: a fresh complex tensor whatever x's strides, storage offset or
    # expansion (view_as_complex would need an even offset and unit last stride).
    with sized("monarch_rfft", "x", "the complex half-length signal"):
        z = torch.complex(x[..., 0::2], x[..., 1::2])
    Z = _ops.monarch_fft(z, False, "backward")
    # X_k = E_k + w^k O_k with E = (Z_k + conj Z_{h-k}) / 2, O = (Z_k - conj Z_{h-k}) / 2i
    A, Bc = _split_coeffs(n, False, Z)
    Zk = torch.cat([Z, Z[..., :1]], dim=-1)  # Z_{k mod h}, k = 0..h
    Zr = torch.cat([Z[..., :1], Z.flip(-1)], dim=-1).conj()  # conj Z_{(h - k) mod h}
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
    if isinstance(n, int) and n >= 1 and _largest_prime_factor(n if n % 2 else n // 2) > MAX_DENSE_FACTOR:
        raise ValueError(
            f"kernelfuse.monarch_irfft: argument 'n': n = {n} needs a transform of a length with a prime "
            f"factor > {MAX_DENSE_FACTOR}; monarch_fft supports lengths whose prime factors are at most "
            f"{MAX_DENSE_FACTOR}"
        )
    if X.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(
            f"kernelfuse.monarch_irfft: argument 'X': expected dtype complex64 or complex128, got {X.dtype}"
        )
    if X.dim() < 1:
        raise ValueError("kernelfuse.monarch_irfft: argument 'X': expected shape (..., m), got a 0-d tensor")
    if n is None:
        n = 2 * (X.shape[-1] - 1)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"kernelfuse.monarch_irfft: argument 'n': expected a positive length, got {n!r}")
    m = n // 2 + 1
    if X.shape[-1] < m:
        X = torch.nn.functional.pad(X, (0, m - X.shape[-1]))
    X = X[..., :m]
    if n % 2 or n < 2:
        tail = X[..., 1 : n - m + 1].flip(-1).conj()
        full = torch.cat([X[..., :1].real.to(X.dtype), X[..., 1:], tail], dim=-1)
        return monarch_fft(full, inverse=True, norm=norm).real
    h = n // 2
    X = torch.cat([X[..., :1].real.to(X.dtype), X[..., 1:h], X[..., h:].real.to(X.dtype)], dim=-1)
    # Z_k = E_k + i O_k, E = X_k + conj X_{h-k}, O = (X_k - conj X_{h-k}) w^-k, k < h
    A, Bc = _split_coeffs(n, True, X)
    Xr = X[..., 1 : h + 1].flip(-1).conj()
    Z = X[..., :h] * A[:h] + Xr * Bc[:h]
    z = _ops.monarch_fft(Z.contiguous(), True, "forward")  # unscaled inverse
    x = torch.view_as_real(z).reshape(*X.shape[:-1], n)
    s = {"backward": 1.0 / n, "ortho": n**-0.5, "forward": 1.0}[norm]
    return x * s


__all__ = [
    "DEFAULT_FFT_CACHE_LIMIT",
    "MONARCH_LAYOUTS",
    "NORMS",
    "butterfly_multiply",
    "clear_monarch_fft_cache",
    "monarch_fft",
    "monarch_fft_cache_info",
    "monarch_irfft",
    "monarch_multiply",
    "monarch_rfft",
    "set_monarch_fft_cache_limit",
]
