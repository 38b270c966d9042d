"""Layers built on random features: :class:`SNNKLinear` (Scalable Neural Network Kernels) and
:class:`FavorAttention` (Performer's FAVOR+ linear attention). See docs/features.md."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.features import random_features

SNNK_ACTIVATIONS = ("relu", "gelu", "softmax", "exp", "tanh", "sigmoid", "step")


def _gaussian_orthogonal(d: int, m: int, g: torch.Generator, dtype) -> torch.Tensor:
    """(d, m) frequency matrix: blocks of d orthogonal columns with chi_d norms (Performer's ORF)."""
    nb = -(-m // d)
    Q, R = torch.linalg.qr(torch.randn(nb, d, d, generator=g, dtype=torch.float64))  # batched
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))[:, None, :]
    Q = Q * torch.randn(nb, d, d, generator=g, dtype=torch.float64).norm(dim=1)[:, None, :]
    return Q.permute(1, 0, 2).reshape(d, nb * d)[:, :m].to(dtype)


class SNNKLinear(nn.Module):
    """A feed-forward layer ``f(x W^T + b)`` rewritten as a dot product ``phi(x)^T psi``.

    Following the SNNK decomposition (Sehanobish et al., ICLR 2024), the input side is a fixed,
    data-independent random feature map phi (m = n_features columns) and the weight side psi
    (m x out) carries the layer's parameters:

    * ``activation="softmax"`` / ``"exp"``: ``exp(w.x + b)`` is exactly
      E[phi(x).psi(w)] with positive random features on both sides (FAVOR+):
      phi(x) = exp(omega.x - |x|^2/2) / sqrt(m), psi(w) = exp(omega.w - |w|^2/2 + b) / sqrt(m).
      The layer keeps the dense layer's parameters W (out x in), b (out,): psi(W) is recomputed
      from them (``tied`` mode; same parameter count, O(m (in + out)) per row instead of a
      nonlinearity on in x out products, and phi(x) can be cached / shared between layers).
    * other activations (relu, gelu, tanh, sigmoid, step): phi(x) = f(x Omega) * sqrt(2/m), the
      random-feature map of f's NNGP (arc-cosine for relu / step) kernel, and psi is learned
      directly (m x out + out parameters: the "SNNK adapter" regime). With m < in this has fewer
      parameters than the dense layer it replaces.

    Args:
        in_features, out_features: as nn.Linear.
        activation: one of :data:`SNNK_ACTIVATIONS`.
        n_features: m.
        seed: draw of Omega (fixed, a buffer).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: str = "relu",
        n_features: int = 64,
        seed: Optional[int] = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if activation not in SNNK_ACTIVATIONS:
            raise ValueError(
                f"kernelfuse.nn.SNNKLinear: argument 'activation': unknown {activation!r}; "
                f"expected one of: {', '.join(SNNK_ACTIVATIONS)}"
            )
        if not (isinstance(n_features, int) and n_features >= 1):
            raise ValueError(
                f"kernelfuse.nn.SNNKLinear: argument 'n_features': expected a positive int, got {n_features!r}"
            )
        self.in_features, self.out_features, self.activation, self.n_features = (
            in_features,
            out_features,
            activation,
            n_features,
        )
        g = torch.Generator()
        g.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
        self.register_buffer("omega", _gaussian_orthogonal(in_features, n_features, g, dtype))
        self.tied = activation in ("softmax", "exp")
        if self.tied:
            self.weight = nn.Parameter(
                torch.randn(out_features, in_features, generator=g, dtype=dtype) / math.sqrt(2 * in_features)
            )
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype))
        else:
            self.omega.div_(math.sqrt(in_features))  # pre-activations of unit scale for inputs of norm ~ sqrt(in)
            self.psi = nn.Parameter(
                torch.randn(n_features, out_features, generator=g, dtype=dtype) / math.sqrt(n_features)
            )
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x), (..., m)."""
        a = self.activation
        if self.tied:
            return random_features(x, self.omega, kind="positive", stabilize="none")
        if a in ("relu", "step"):
            return random_features(x, self.omega, kind=a)
        z = x @ self.omega
        f = {"gelu": F.gelu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[a]
        return f(z) * math.sqrt(2.0 / self.n_features)

    def weight_features(self) -> torch.Tensor:
        """psi, (m, out)."""
        if not self.tied:
            return self.psi
        # psi(w_j) with the bias folded in: exp(omega.w_j - |w_j|^2/2 + b_j) / sqrt(m)
        z = self.weight @ self.omega - 0.5 * (self.weight * self.weight).sum(1, keepdim=True) + self.bias[:, None]
        return (torch.exp(z) / math.sqrt(self.n_features)).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x) @ self.weight_features()
        return out if self.tied else out + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation!r}, "
            f"n_features={self.n_features}, tied={self.tied}"
        )


class FavorAttention(nn.Module):
    """Performer attention (FAVOR+): softmax attention approximated with positive orthogonal
    random features, O(L m d) time, never an L x L matrix.

    ``forward(q, k, v)`` with q, k: (..., L, d), v: (..., L, e) -> (..., L, e) approximates
    softmax(q k^T / sqrt(d)) v (causal: each position attends to itself and earlier ones).

    Features: phi(u) = exp(omega.u' - |u'|^2/2 - m) / sqrt(M) with u' = u / d^(1/4), omega the
    rows of an orthogonal Gaussian draw (M = n_features). Stabilisers m as Performer's FAVOR+:
    a query's m is its own maximum of omega.u' over the features; a key's m is the maximum over
    the features and the sequence of its (batch, head) slice, i.e. over the last two dims of k.
    Both cancel exactly in the ratio, so no row of the output depends on another batch row or
    head. Causal mode runs over chunks of ``chunk_size`` positions: exact masked products inside a
    chunk, a running (M x e) prefix state across chunks, so memory is O(L M + chunk^2) instead of
    O(L M e).

    Args:
        dim: d (query / key size). n_features: M. causal: mask.
        redraw_interval: in training mode, draw new features every this many forward calls
            (None: never). seed: seed of the draws.
        eps: relative: the denominator phi(q_i).S_i (S_i = sum of phi(k_j) over the attended j)
            gets ``eps * |phi(q_i)|_1 * max_f S_if`` added, an upper bound of the denominator
            that scales with it, so the output does not depend on the stabilisers and moves by
            about eps (not by the 46-100% the former absolute 1e-6 caused at head dim 32-64).
            See :func:`favor_attention`.
    """

    def __init__(
        self,
        dim: int,
        n_features: int = 256,
        *,
        causal: bool = False,
        redraw_interval: Optional[int] = 1000,
        seed: Optional[int] = None,
        chunk_size: int = 128,
        eps: float = 1e-6,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.dim, self.n_features, self.causal = dim, n_features, causal
        self.redraw_interval, self.chunk_size, self.eps = redraw_interval, chunk_size, eps
        self._gen = torch.Generator()
        self._gen.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
        self.register_buffer("omega", _gaussian_orthogonal(dim, n_features, self._gen, dtype))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def redraw(self) -> None:
        self.omega = _gaussian_orthogonal(self.dim, self.n_features, self._gen, self.omega.dtype).to(self.omega.device)

    def feature_maps(self, q: torch.Tensor, k: torch.Tensor):
        """(phi(q), phi(k)): queries stabilised per row (the fused op's "row"), keys per (batch,
        head), i.e. by the maximum over their last two dims (:func:`key_features`)."""
        s = self.dim**-0.25
        W = self.omega.to(q.dtype)
        return random_features(q * s, W, kind="positive", stabilize="row"), key_features(k * s, W)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if q.shape[-1] != self.dim or k.shape[-1] != self.dim:
            raise ValueError(
                f"kernelfuse.nn.FavorAttention: arguments 'q', 'k': expected last dimension {self.dim}, "
                f"got {tuple(q.shape)} and {tuple(k.shape)}"
            )
        if k.shape[:-1] != v.shape[:-1] or q.shape[:-2] != k.shape[:-2] or (self.causal and q.shape[-2] != k.shape[-2]):
            raise ValueError(
                f"kernelfuse.nn.FavorAttention: argument 'v': shapes q {tuple(q.shape)}, k {tuple(k.shape)},"
                f" v {tuple(v.shape)} do not match"
            )
        if self.training and self.redraw_interval:
            if int(self.calls) > 0 and int(self.calls) % self.redraw_interval == 0:
                self.redraw()
            self.calls += 1
        qf, kf = self.feature_maps(q, k)
        return favor_attention(qf, kf, v, causal=self.causal, chunk_size=self.chunk_size, eps=self.eps)


def key_features(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """FAVOR+ key features exp(x W - |x|^2/2 - M) / sqrt(m), x (..., L, d), W (d, m), with one
    stabiliser M per leading index: the maximum of x W over the last two dims (features and
    sequence: per (batch, head)), detached (it cancels in attention's ratio). Plain torch."""
    z = x @ W
    M = z.detach().amax(dim=(-1, -2), keepdim=True)
    return torch.exp(z - 0.5 * (x * x).sum(-1, keepdim=True) - M) * W.shape[-1] ** -0.5


def _denominator(qf: torch.Tensor, S: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    """den + eps * |qf|_1 * max_f S (a bound of den = qf.S for qf, S >= 0; scales with it, so the
    ratio keeps its invariance to the stabilisers), floored at the dtype's smallest normal so that
    0 / 0 (every feature underflowed) gives 0. qf (..., C, M); S (..., 1 | C, M) key sums."""
    if eps:
        den = den + eps * (qf.sum(-1, keepdim=True) * S.amax(-1, keepdim=True)).detach()
    return den.clamp_min(torch.finfo(den.dtype).tiny)


def favor_attention(
    qf: torch.Tensor,
    kf: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    chunk_size: int = 128,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Linear attention on given features: out_i = sum_j qf_i.kf_j v_j / sum_j qf_i.kf_j (j <= i
    when causal), chunked prefix sums for the causal case.

    ``eps`` is relative: the denominator qf_i.S_i (S_i = sum_j kf_j over the attended j) becomes
    qf_i.S_i + eps |qf_i|_1 max_f S_if (detached), so scaling qf_i or kf by any positive constant
    (the FAVOR+ stabilisers) leaves the output unchanged; eps = 0 is the plain ratio (floored at
    the smallest normal number so that an all-zero row gives 0, not NaN)."""
    if not causal:
        kv = kf.transpose(-1, -2) @ v  # (..., M, e)
        S = kf.sum(-2)  # (..., M)
        den = qf @ S.unsqueeze(-1)  # (..., L, 1)
        return (qf @ kv) / _denominator(qf, S.unsqueeze(-2), den, eps)
    L = qf.shape[-2]
    state = torch.zeros(*qf.shape[:-2], qf.shape[-1], v.shape[-1], dtype=v.dtype, device=v.device)
    ksum = torch.zeros(*qf.shape[:-2], qf.shape[-1], 1, dtype=v.dtype, device=v.device)
    outs = []
    for s in range(0, L, chunk_size):
        e = min(L, s + chunk_size)
        qc, kc, vc = qf[..., s:e, :], kf[..., s:e, :], v[..., s:e, :]
        A = torch.tril(qc @ kc.transpose(-1, -2))  # (..., C, C) within-chunk, causal
        num = A @ vc + qc @ state
        den = A.sum(-1, keepdim=True) + qc @ ksum
        S = (ksum.transpose(-1, -2) + kc.cumsum(-2)) if eps else ksum.transpose(-1, -2)  # (..., C | 1, M)
        outs.append(num / _denominator(qc, S, den, eps))
        state = state + kc.transpose(-1, -2) @ vc
        ksum = ksum + kc.sum(-2).unsqueeze(-1)
    return torch.cat(outs, dim=-2)


def favor_attention_reference(qf, kf, v, *, causal=False):
    """Plain quadratic form of :func:`favor_attention` (the L x L feature-kernel matrix), the spec."""
    A = qf @ kf.transpose(-1, -2)
    if causal:
        A = torch.tril(A)
    return (A @ v) / A.sum(-1, keepdim=True)


__all__ = [
    "FavorAttention",
    "SNNKLinear",
    "SNNK_ACTIVATIONS",
    "favor_attention",
    "favor_attention_reference",
    "key_features",
]
