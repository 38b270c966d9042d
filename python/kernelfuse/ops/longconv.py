"""Long convolutions: the fused FFT convolution ``kernelfuse.fftconv``.

Ops (schemas in csrc/kernelfuse.cpp, kernels in csrc/longconv/): ``torch.ops.kernelfuse.fftconv``
and its backward twin ``fftconv_bwd``. This module adds the public Python API, the fake (meta)
kernels for torch.compile, and autograd.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from ._common import check_same_device, check_tensor

MODES = ("causal", "bidirectional", "circular")
SKIPS = ("input", "gated")
REVERSES = ("safari", "h3")

_ops = torch.ops.kernelfuse
Kernel = Union[torch.Tensor, Sequence[torch.Tensor]]


def h3_reverse_to_safari(k: torch.Tensor) -> torch.Tensor:
    """A bidirectional kernel ``cat([k_fwd, k_rev], -1)`` in H3's convention (``k_rev[j]`` multiplies
    ``v[t + j]``: its tap 0 is the present) rewritten in safari's / the op's convention (``k_bwd[j]``
    multiplies ``v[t + 1 + j]``): ``k_fwd[0] += k_rev[0]``, ``k_bwd = cat([k_rev[1:], 0])``. Exact
    and differentiable (plain torch), same number of taps."""
    Lk = k.shape[-1] // 2
    k_fwd, k_rev = k[..., :Lk], k[..., Lk:]
    k_fwd = torch.cat([k_fwd[..., :1] + k_rev[..., :1], k_fwd[..., 1:]], dim=-1)
    k_bwd = torch.cat([k_rev[..., 1:], torch.zeros_like(k_rev[..., :1])], dim=-1)
    return torch.cat([k_fwd, k_bwd], dim=-1)


def fftconv(
    u: torch.Tensor,
    k: Kernel,
    D: Optional[torch.Tensor] = None,
    *,
    pregate: Optional[torch.Tensor] = None,
    postgate: Optional[torch.Tensor] = None,
    mode: str = "causal",
    fft_size: Optional[int] = None,
    skip: str = "input",
    reverse: str = "safari",
) -> torch.Tensor:
    """Fused FFT long convolution ``y = postgate * (conv(u * pregate, k) + D[:, None] * s)`` with the
    skip source ``s = u`` (``skip="input"``) or ``s = u * pregate`` (``skip="gated"``).

    Args:
        u: (B, H, L), any L >= 1. float32, float64, float16 or bfloat16 (half types: float32
            computation; on CPU the inputs are upcast, on CUDA they are read as they are).
            Every other tensor in u's dtype, except that with a half u, k and D may be float32
            (mixed precision, FlashFFTConv's convention; gradients in each input's dtype). Under
            torch.autocast: u and the gates in the autocast dtype, k and D in float32
            (docs/longconv_fftconv.md, docs/autocast.md).
        k: (H, taps) shared by the batch, (1, H, taps), or (B, H, taps) one kernel per batch row.
            For mode "bidirectional" taps = 2 * Lk (forward taps then backward taps), or pass the
            pair ``(k_fwd, k_bwd)`` of (.., Lk) kernels.
        D: (H,) skip term, or None.
        pregate, postgate: (B, H, L) gates, or None.
        mode: with v = u * pregate and t < L,
            "causal":        conv[t] = sum_{m < Lk, m <= t} k[m] v[t - m], Lk = taps <= L (zero
                             padded linear convolution);
            "circular":      conv[t] = sum_{m < Lk} k[m] v[(t - m) mod L], Lk = taps <= L (period L;
                             the kernel is zero padded to L);
            "bidirectional": conv[t] = sum_{m < Lk} k_fwd[m] v[t - m] + sum_{j < Lk} k_bwd[j] v[t + 1 + j]
                             with v = 0 outside [0, L), Lk <= L. This is safari's bidirectional
                             LongConv: one circular convolution of size 2L of u padded with the
                             kernel pad(k_fwd, (0, 2L - Lk)) + pad(flip(k_bwd), (2L - Lk, 0));
                             safari's two directions (separate kernel channels k0, k1 of L taps)
                             are the pair (k0, k1). ``reverse`` selects H3's convention instead.
        fft_size: FFT length n. None: the smallest 2^a 3^b 5^c 7^d >= L + Lk - 1 (causal),
            >= L + Lk (bidirectional), and L for circular. A larger n gives the same result;
            a too small one (or n != L for circular) is an error, and so is n > 2^31 (also for the
            automatic size of a too long L).
        skip: where D is applied. "input" (default): ``D * u``, the ungated input (this op's
            original convention; safari's LongConv and S4, which have no pregate, agree).
            "gated": ``D * (u * pregate)``, H3's ``fftconv_h3_ref`` and Hyena's convention
            (D multiplies the gated input that is convolved). The two agree without a pregate.
        reverse: (mode "bidirectional" only) which input the backward kernel's tap j multiplies.
            "safari" (default): ``v[t + 1 + j]`` as in the formula above (safari's LongConv / S4
            ``pad(k0, (0, L)) + pad(k1.flip(-1), (L, 0))``). "h3": ``v[t + j]`` (H3's
            ``k_rev``: ``rfft(k) + conj(rfft(k_rev))``, tap 0 on the present, one tap off safari);
            computed exactly by :func:`h3_reverse_to_safari` before the op.

    Returns:
        (B, H, L) in u's dtype. Differentiable in u, k, D, pregate and postgate (the backward is
        the op ``kernelfuse::fftconv_bwd``, which recomputes spectra instead of storing them).

    CPU: rows (b, h) in cache-sized blocks: the gate is fused into the zero padding, the kernel
    spectrum (one per head, computed once) multiplies in place, and the skip term and the post
    gate are fused into the crop, so temporaries are O(block * n). CUDA: cuFFT with the same fused
    pointwise stages as kernels; float16 / bfloat16 causal with a shared kernel and L + Lk - 1 <=
    32768: one fused tensor-core Monarch FFT kernel instead (forward only; see docs/longconv_fftconv.md).
    Both CUDA paths are compiled, not yet run on a GPU by the authors.
    """
    check_tensor(u, "u", "fftconv")
    if isinstance(k, (tuple, list)):
        if mode != "bidirectional" or len(k) != 2:
            raise ValueError(
                "kernelfuse.fftconv: argument 'k': a pair (k_fwd, k_bwd) is only accepted with "
                f"mode='bidirectional' (got {len(k)} tensors, mode={mode!r})"
            )
        for i, t in enumerate(k):
            check_tensor(t, f"k[{i}]", "fftconv")
        if k[0].shape != k[1].shape:
            raise ValueError(
                f"kernelfuse.fftconv: argument 'k': k_fwd and k_bwd must have the same shape, got "
                f"{tuple(k[0].shape)} and {tuple(k[1].shape)}"
            )
        k = torch.cat([k[0], k[1]], dim=-1)
    check_tensor(k, "k", "fftconv")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(
            f"kernelfuse.fftconv: argument 'mode': unknown mode {mode!r}; expected one of: {', '.join(MODES)}"
        )
    if not isinstance(skip, str) or skip not in SKIPS:
        raise ValueError(
            f"kernelfuse.fftconv: argument 'skip': unknown skip convention {skip!r}; expected one of: "
            f"{', '.join(SKIPS)}"
        )
    if not isinstance(reverse, str) or reverse not in REVERSES:
        raise ValueError(
            f"kernelfuse.fftconv: argument 'reverse': unknown convention {reverse!r}; expected one "
            f"of: {', '.join(REVERSES)}"
        )
    if fft_size is not None:
        if isinstance(fft_size, bool) or not isinstance(fft_size, int) or fft_size < 1:
            raise ValueError(
                f"kernelfuse.fftconv: argument 'fft_size': expected None or a positive int, got {fft_size!r}"
            )
    check_same_device(k, u, "k", "u", "fftconv")
    for name, t in (("D", D), ("pregate", pregate), ("postgate", postgate)):
        if t is not None:
            check_tensor(t, name, "fftconv")
            check_same_device(t, u, name, "u", "fftconv")
    if reverse == "h3" and mode == "bidirectional" and k.shape[-1] >= 2 and k.shape[-1] % 2 == 0:
        k = h3_reverse_to_safari(k)  # (odd / too short kernels: the op reports them)
    return _ops.fftconv(u, k, D, pregate, postgate, mode, fft_size, skip)


# ---------------------------------------------------------------- fake kernels (torch.compile)
MAX_FFT_SIZE = 2**31  # the ops' limit on the FFT size n (csrc/longconv/fftconv_torch.cpp)


def _fake_checks(fn, tensors, mode, fft_size):
    """The checks of the C++ kernels that the fake (meta) kernels must repeat: the dispatcher runs
    the fake kernel whenever any argument is a meta tensor, so a meta tensor mixed with CPU ones
    would otherwise return uninitialised memory. fn: the op; tensors: (name, tensor or None, required), u first."""
    for name, t, required in tensors:
        if t is None and required:
            raise ValueError(f"kernelfuse.{fn}: argument '{name}': expected a Tensor, got None")
    u = tensors[0][1] if tensors[0][0] == "u" else tensors[1][1]
    for name, t, _ in tensors:
        if t is not None and t.device != u.device:
            raise ValueError(
                f"kernelfuse.{fn}: argument '{name}': expected a tensor on {u.device} (the device of 'u'), "
                f"got one on {t.device}"
            )
    if u.dim() != 3:
        raise ValueError(f"kernelfuse.{fn}: argument 'u': expected shape (B, H, L), got {list(u.shape)}")
    if fft_size is not None:
        torch._check_value(
            fft_size <= MAX_FFT_SIZE,
            lambda: f"kernelfuse.{fn}: argument 'fft_size': expected at most 2^31 = {MAX_FFT_SIZE}, got {fft_size}",
        )
    elif mode == "circular":
        torch._check_value(
            u.shape[-1] <= MAX_FFT_SIZE,
            lambda: (
                f"kernelfuse.{fn}: argument 'u': sequence length L = "
                f"{u.shape[-1]} too long: more than the supported maximum FFT size 2^31 = {MAX_FFT_SIZE}"
            ),
        )
    return u


@torch.library.register_fake("kernelfuse::fftconv")
def _(u, k, D, pregate, postgate, mode, fft_size, skip="input"):
    _fake_checks(
        "fftconv",
        (("u", u, True), ("k", k, True), ("D", D, False), ("pregate", pregate, False), ("postgate", postgate, False)),
        mode,
        fft_size,
    )
    return u.new_empty(u.shape)  # contiguous, as the kernels' output (whatever u's strides)


@torch.library.register_fake("kernelfuse::fftconv_bwd")
def _(
    grad, u, k, D, pregate, postgate, mode, fft_size, need_u, need_k, need_D, need_pregate, need_postgate, skip="input"
):
    _fake_checks(
        "fftconv_bwd",
        (
            ("u", u, True),
            ("grad", grad, True),
            ("k", k, True),
            ("D", D, False),
            ("pregate", pregate, False),
            ("postgate", postgate, False),
        ),
        mode,
        fft_size,
    )

    def like(t, need):
        return t.new_empty(t.shape) if (need and t is not None) else u.new_empty((0,))

    return like(u, need_u), like(k, need_k), like(D, need_D), like(pregate, need_pregate), like(postgate, need_postgate)


# ---------------------------------------------------------------- autograd
def _setup(ctx, inputs, output):
    u, k, D, pregate, postgate, mode, fft_size, skip = inputs
    ctx.mode, ctx.fft_size, ctx.skip = mode, fft_size, skip
    ctx.save_for_backward(u, k, D, pregate, postgate)


def _backward(ctx, grad):
    u, k, D, pregate, postgate = ctx.saved_tensors
    nu, nk, nD, npre, npost = ctx.needs_input_grad[:5]
    du, dk, dD, dpre, dpost = _ops.fftconv_bwd(
        grad,
        u,
        k,
        D,
        pregate,
        postgate,
        ctx.mode,
        ctx.fft_size,
        nu,
        nk,
        nD and D is not None,
        npre and pregate is not None,
        npost and postgate is not None,
        ctx.skip,
    )
    return (
        du if nu else None,
        dk if nk else None,
        dD if (nD and D is not None) else None,
        dpre if (npre and pregate is not None) else None,
        dpost if (npost and postgate is not None) else None,
        None,
        None,
        None,
    )


torch.library.register_autograd("kernelfuse::fftconv", _backward, setup_context=_setup)

__all__ = ["MODES", "REVERSES", "SKIPS", "fftconv", "h3_reverse_to_safari"]
