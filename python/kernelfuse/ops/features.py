"""Random feature maps: fast Walsh-Hadamard transform, fused dense maps and structured (SORF /
Fastfood) maps.

Ops (schemas in csrc/kernelfuse.cpp, kernels in csrc/features/): ``torch.ops.kernelfuse.fwht``,
``random_features``, ``structured_features`` and the backward twins ``random_features_bwd`` /
``structured_features_bwd``. This module adds the public Python API, the fake (meta) kernels for
torch.compile, and autograd. See docs/features.md.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ._common import check_one_device, check_tensor

_ops = torch.ops.kernelfuse

KINDS = ("cos", "cos_sin", "positive", "relu", "step")
BLOCKS = ("sorf", "fastfood")
STABILIZERS = ("row", "global", "none")


def default_scale(kind: str, n_freq: int) -> float:
    """The scale that makes phi(x).phi(y) an unbiased kernel estimate with n_freq frequencies:
    sqrt(2/n) for cos (with a uniform phase b), relu and step (arc-cosine kernels of order 1 / 0);
    sqrt(1/n) for cos_sin pairs and positive features."""
    if n_freq <= 0:
        return 1.0
    return math.sqrt((1.0 if kind in ("cos_sin", "positive") else 2.0) / n_freq)


def _check_kind(fn, kind, stabilize):
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(
            f"kernelfuse.{fn}: argument 'kind': unknown kind {kind!r}; expected one of: {', '.join(KINDS)}"
        )
    if not isinstance(stabilize, str) or stabilize not in STABILIZERS:
        raise ValueError(
            f"kernelfuse.{fn}: argument 'stabilize': unknown stabiliser {stabilize!r}; "
            f"expected one of: {', '.join(STABILIZERS)}"
        )


def _scale(fn, kind, scale):
    """A validated float, or None: the op then computes default_scale(kind, D) from the shapes (no
    Python float of a shape for torch.compile to specialise on)."""
    if scale is None:
        return None
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise ValueError(
            f"kernelfuse.{fn}: argument 'scale' must be a positive number or None, got {scale!r}"
        ) from None
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"kernelfuse.{fn}: argument 'scale' must be positive and finite, got {s}")
    return s


def fwht(x: torch.Tensor, *, normalized: bool = True) -> torch.Tensor:
    """Fast Walsh-Hadamard transform of the last dimension: ``x @ H`` with H the Sylvester-ordered
    n x n Hadamard matrix (``scipy.linalg.hadamard(n)``), times 1/sqrt(n) when ``normalized``
    (then the transform is orthonormal and its own inverse).

    Args:
        x: (..., n), n a power of two (1 included); float32 or float64.
        normalized: scale by 1/sqrt(n).
    Returns:
        a new tensor like x. O(n log n) per row; rows run in parallel.
    """
    check_tensor(x, "x", "fwht")
    if x.dim() == 0:
        raise ValueError("kernelfuse.fwht: argument 'x': expected at least one dimension, got a scalar")
    n = x.shape[-1]
    if n < 1 or (n & (n - 1)) != 0:
        nxt = 1 << max(0, (n - 1).bit_length())
        raise ValueError(
            f"kernelfuse.fwht: argument 'x': the last dimension must be a power of two, got size {n} "
            f"(x of shape {tuple(x.shape)}); zero-pad it to {nxt}"
        )
    return _ops.fwht(x, bool(normalized))


def random_features(
    x: torch.Tensor,
    W: torch.Tensor,
    b: Optional[torch.Tensor] = None,
    *,
    kind: str = "cos",
    scale: Optional[float] = None,
    stabilize: str = "row",
) -> torch.Tensor:
    """``scale * f(x @ W + b)`` in one fused pass (blocked GEMM with the nonlinearity applied on the
    register tile; the (N, D) pre-activation matrix is never stored).

    Args:
        x: (..., d). W: (d, D) frequencies. b: (D,) phases / biases or None.
        kind: ``"cos"`` cos(z) (D columns); ``"cos_sin"`` [cos(z), sin(z)] (2D columns, cosines
            first); ``"positive"`` exp(z - |x|^2/2 - m) (FAVOR+); ``"relu"`` max(z, 0);
            ``"step"`` 1[z > 0].
        scale: output factor; None picks :func:`default_scale` (sqrt(2/D) for cos / relu / step,
            sqrt(1/D) for cos_sin / positive).
        stabilize: (positive only) what m is: ``"row"`` m_i = max_j z_ij (each row's largest
            pre-activation: features of a query, whose scale cancels in attention);
            ``"global"`` the maximum over every row and column (keys); ``"none"`` m = 0 (then
            phi(x).phi(y) estimates exp(x.y) exactly, but exp can overflow for large |x|).
            Gradients include the (almost-everywhere) derivative of m.
    Returns:
        (..., D) or (..., 2D) for cos_sin, x's dtype. float32: cos/sin within ~2e-7 absolute of
        the float64 map of the same float32 GEMM.
    """
    check_tensor(x, "x", "random_features")
    check_tensor(W, "W", "random_features")
    if b is not None:
        check_tensor(b, "b", "random_features")
    check_one_device("random_features", (("x", x), ("W", W), ("b", b)))
    _check_kind("random_features", kind, stabilize)
    return _ops.random_features(x, W, b, kind, _scale("random_features", kind, scale), stabilize)


def structured_features(
    x: torch.Tensor,
    signs: torch.Tensor,
    *,
    kind: str = "cos",
    block: str = "sorf",
    scale: Optional[float] = None,
    perm: Optional[torch.Tensor] = None,
    b: Optional[torch.Tensor] = None,
    n_features: Optional[int] = None,
    stabilize: str = "row",
) -> torch.Tensor:
    """Structured random features: the stacked block transforms fused with the nonlinearity.

    x is zero-padded to P (a power of two >= d), each block maps it to P pre-activations, blocks
    are stacked and the first ``n_features`` kept:

    * ``block="sorf"``: z = sqrt(P) Hn diag(s0) Hn diag(s1) Hn diag(s2) x, with Hn = H/sqrt(P) and
      signs[k] = (s0, s1, s2) (+-1 each for SORF; any values are accepted).
    * ``block="fastfood"``: z = diag(s2) sqrt(P) Hn diag(s1) Perm Hn diag(s0) x (Le et al.'s
      S H G Pi H B): s0 = B (+-1), s1 = G (Gaussian), s2 = S (chi samples / |G|), Perm
      ``perm[k]`` (out[i] = in[perm[i]]).

    Then ``scale * f(z + b)`` exactly as :func:`random_features` (the same kinds). With x scaled by
    1/lengthscale the rows of the implied W approximate N(0, I_P) rows: cos features estimate the
    Gaussian kernel. O(nblocks P log P) per row instead of O(d D).

    Args:
        x: (..., d). signs: (nblocks, 3, P). perm: (nblocks, P) int64 (fastfood only).
        b: (n_features,) or None. n_features: default nblocks * P.
    Returns:
        (..., n_features) or (..., 2 n_features) for cos_sin. Differentiable in x and b.
    """
    check_tensor(x, "x", "structured_features")
    check_tensor(signs, "signs", "structured_features")
    for t, name in ((perm, "perm"), (b, "b")):
        if t is not None:
            check_tensor(t, name, "structured_features")
    check_one_device("structured_features", (("x", x), ("signs", signs), ("perm", perm), ("b", b)))
    _check_kind("structured_features", kind, stabilize)
    if not isinstance(block, str) or block not in BLOCKS:
        raise ValueError(
            f"kernelfuse.structured_features: argument 'block': unknown block {block!r}; "
            f"expected one of: {', '.join(BLOCKS)}"
        )
    if signs.dim() != 3:
        raise ValueError(
            f"kernelfuse.structured_features: argument 'signs': expected shape (nblocks, 3, P), "
            f"got {tuple(signs.shape)}"
        )
    if n_features is None:
        n_features = signs.shape[0] * signs.shape[2]
    elif isinstance(n_features, bool) or not isinstance(n_features, (int, torch.SymInt)):
        raise TypeError(
            f"kernelfuse.structured_features: argument 'n_features' must be an int or None, "
            f"got {type(n_features).__name__}"
        )
    if block == "sorf":
        perm = None
    return _ops.structured_features(
        x, signs, perm, b, n_features, kind, block, _scale("structured_features", kind, scale), stabilize
    )


# ---------------------------------------------------------------- fake kernels (torch.compile)
# Outputs are fresh contiguous tensors, as the kernels return (new_empty of a shape, never
# empty_like of an input, whose strides may be transposed); every tensor argument is checked for
# one device (a meta argument among CPU ones is routed here by the dispatcher).
def _dev(fn, **named):
    check_one_device(fn, tuple(named.items()))


@torch.library.register_fake("kernelfuse::fwht")
def _(x, normalized):
    return x.new_empty(x.shape)


def _fake_features(x, D, kind):
    return x.new_empty((*x.shape[:-1], 2 * D if kind == "cos_sin" else D))


def _fake_rf_check(fn, x, W, b):
    torch._check(x.dim() >= 1, lambda: f"kernelfuse.{fn}: argument 'x': expected shape (..., d), got a scalar")
    torch._check(
        W.dim() == 2 and W.shape[0] == x.shape[-1],
        lambda: f"kernelfuse.{fn}: argument 'W': expected shape (d, D) with d = {x.shape[-1]}, got {tuple(W.shape)}",
    )


@torch.library.register_fake("kernelfuse::random_features")
def _(x, W, b, kind, scale, stabilize):
    _dev("random_features", x=x, W=W, b=b)
    _fake_rf_check("random_features", x, W, b)
    return _fake_features(x, W.shape[1], kind)


@torch.library.register_fake("kernelfuse::random_features_bwd")
def _(grad, out, x, W, b, kind, scale, stabilize, need_x, need_W, need_b):
    _dev("random_features_bwd", grad=grad, out=out, x=x, W=W, b=b)
    _fake_rf_check("random_features_bwd", x, W, b)
    return (
        x.new_empty(x.shape) if need_x else x.new_empty((0,)),
        x.new_empty(W.shape) if need_W else x.new_empty((0,)),
        x.new_empty(b.shape) if (need_b and b is not None) else x.new_empty((0,)),
    )


@torch.library.register_fake("kernelfuse::structured_features")
def _(x, signs, perm, b, n_features, kind, block, scale, stabilize):
    _dev("structured_features", x=x, signs=signs, perm=perm, b=b)
    torch._check(
        x.dim() >= 1, lambda: "kernelfuse.structured_features: argument 'x': expected shape (..., d), got a scalar"
    )
    torch._check(
        n_features >= 0,
        lambda: f"kernelfuse.structured_features: argument 'n_features': expected >= 0, got {n_features}",
    )
    return _fake_features(x, n_features, kind)


@torch.library.register_fake("kernelfuse::structured_features_bwd")
def _(grad, out, x, signs, perm, b, n_features, kind, block, scale, stabilize, need_x, need_b):
    _dev("structured_features_bwd", grad=grad, out=out, x=x, signs=signs, perm=perm, b=b)
    return (
        x.new_empty(x.shape) if need_x else x.new_empty((0,)),
        x.new_empty(b.shape) if (need_b and b is not None) else x.new_empty((0,)),
    )


# ---------------------------------------------------------------- autograd
def _fwht_setup(ctx, inputs, output):
    ctx.normalized = inputs[1]


def _fwht_backward(ctx, grad):
    return _ops.fwht(grad.contiguous(), ctx.normalized), None  # H is symmetric: the adjoint is H


torch.library.register_autograd("kernelfuse::fwht", _fwht_backward, setup_context=_fwht_setup)


def _rf_setup(ctx, inputs, output):
    x, W, b, kind, scale, stabilize = inputs
    ctx.kind, ctx.scale, ctx.stabilize = kind, scale, stabilize
    ctx.save_for_backward(x, W, b, output)


def _rf_backward(ctx, grad):
    x, W, b, out = ctx.saved_tensors
    nx, nW, nb = ctx.needs_input_grad[:3]
    gx, gW, gb = _ops.random_features_bwd(
        grad.contiguous(), out, x, W, b, ctx.kind, ctx.scale, ctx.stabilize, nx, nW, nb and b is not None
    )
    return (gx if nx else None, gW if nW else None, gb if (nb and b is not None) else None, None, None, None)


torch.library.register_autograd("kernelfuse::random_features", _rf_backward, setup_context=_rf_setup)


def _sf_setup(ctx, inputs, output):
    x, signs, perm, b, n_features, kind, block, scale, stabilize = inputs
    ctx.args = (n_features, kind, block, scale, stabilize)
    ctx.save_for_backward(x, signs, perm, b, output)


def _sf_backward(ctx, grad):
    x, signs, perm, b, out = ctx.saved_tensors
    nx, ns, _, nb = ctx.needs_input_grad[:4]
    if ns:
        raise NotImplementedError("kernelfuse.structured_features: no gradient for 'signs' (fixed random diagonals)")
    gx, gb = _ops.structured_features_bwd(
        grad.contiguous(), out, x, signs, perm, b, *ctx.args, nx, nb and b is not None
    )
    return (gx if nx else None, None, None, gb if (nb and b is not None) else None, None, None, None, None, None)


torch.library.register_autograd("kernelfuse::structured_features", _sf_backward, setup_context=_sf_setup)

__all__ = ["BLOCKS", "KINDS", "STABILIZERS", "default_scale", "fwht", "random_features", "structured_features"]
