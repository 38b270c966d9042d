"""Structured linear layers: :class:`ButterflyLinear` and :class:`MonarchLinear` (drop-in
replacements for ``nn.Linear`` on the last dimension)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..butterfly import bitreversal_permutation, butterfly_fft_twiddle, monarch_to_dense
from ..ops.butterfly import MONARCH_LAYOUTS, butterfly_multiply, monarch_multiply

__all__ = ["ButterflyLinear", "MonarchLinear", "BUTTERFLY_INITS"]

BUTTERFLY_INITS = ("randn", "ortho", "identity", "fft")


class ButterflyLinear(nn.Module):
    """``y = B x + bias`` with B a product of ``nblocks`` butterfly matrices of size n, the
    smallest power of two >= max(in_features, out_features): x is zero padded to n, the output
    cropped to ``out_features``. Parameters: ``twiddle`` (nblocks, log2 n, n/2, 2, 2) and
    ``bias`` (out_features,); O(nblocks n log n) per vector.

    Args:
        init: "randn" (entries N(0, 1/2): every stage keeps the expected norm), "ortho" (every 2x2
            block a random rotation (complex: a random unitary): B orthogonal/unitary),
            "identity", or "fft" (complex only: the unitary DFT of size n, "ortho" norm, with the
            bit-reversal input permutation kept as the buffer ``perm``; extra blocks identity).
        complex: complex twiddles (and complex output); real inputs are promoted.
        increasing_stride: stride order of the first block (the next blocks alternate).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        nblocks: int = 1,
        init: str = "randn",
        complex: bool = False,
        increasing_stride: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if init not in BUTTERFLY_INITS:
            raise ValueError(
                f"kernelfuse.nn.ButterflyLinear: argument 'init': expected one of {BUTTERFLY_INITS}, got {init!r}"
            )
        if init == "fft" and not complex:
            raise ValueError(
                "kernelfuse.nn.ButterflyLinear: init='fft' needs complex=True (the DFT has complex twiddles)"
            )
        if in_features < 1 or out_features < 1 or nblocks < 1:
            raise ValueError(
                f"kernelfuse.nn.ButterflyLinear: expected in_features, out_features, nblocks >= 1, got "
                f"{in_features}, {out_features}, {nblocks}"
            )
        self.in_features, self.out_features, self.nblocks = in_features, out_features, nblocks
        self.increasing_stride, self.complex, self.init = increasing_stride, complex, init
        n = 1
        while n < max(in_features, out_features):
            n *= 2
        self.n, self.log_n = n, n.bit_length() - 1
        real = dtype or torch.get_default_dtype()
        pdtype = (torch.complex128 if real == torch.float64 else torch.complex64) if complex else real
        self.twiddle = nn.Parameter(torch.empty(nblocks, self.log_n, n // 2, 2, 2, dtype=pdtype, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=pdtype, device=device)) if bias else None
        self.register_buffer("perm", bitreversal_permutation(n).to(device) if init == "fft" else None)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        tw = self.twiddle
        shape = tw.shape[:3]
        if self.init == "randn":
            # variance 1/2 per entry (complex: 1/4 per part): each stage keeps the expected norm
            tw.copy_(torch.randn(tw.shape, dtype=tw.dtype) * math.sqrt(0.5))
        elif self.init == "ortho":
            th = torch.rand(shape, dtype=torch.float64) * 2 * math.pi
            c, s = torch.cos(th), torch.sin(th)
            rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
            if self.complex:  # a random unitary: phases on the rotation's rows and columns
                ph = torch.exp(2j * math.pi * torch.rand(*shape, 3, dtype=torch.float64))
                rot = rot.to(torch.complex128)
                rot = rot * ph[..., 0, None, None]
                rot[..., 1, :] *= ph[..., 1, None]
                rot[..., :, 1] *= ph[..., 2, None]
            tw.copy_(rot.to(tw.dtype))
        else:
            eye = torch.eye(2, dtype=torch.float64).expand(*shape, 2, 2)
            tw.copy_(eye.to(tw.dtype))
            if self.init == "fft":
                tw[0].copy_(butterfly_fft_twiddle(self.n, norm="ortho", dtype=tw.dtype)[0])
        if self.bias is not None and self.init != "fft":
            bound = 1 / math.sqrt(self.in_features)
            self.bias.copy_(
                torch.empty(self.bias.shape, dtype=torch.float64).uniform_(-bound, bound).to(self.bias.dtype)
            )
        elif self.bias is not None:
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"kernelfuse.nn.ButterflyLinear: expected inputs (..., {self.in_features}), got {tuple(x.shape)}"
            )
        x = x.to(self.twiddle.dtype)
        if self.n != self.in_features:
            x = nn.functional.pad(x, (0, self.n - self.in_features))
        if self.perm is not None:
            x = x[..., self.perm]
        y = butterfly_multiply(x, self.twiddle, increasing_stride=self.increasing_stride)[..., : self.out_features]
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, n={self.n}, "
            f"nblocks={self.nblocks}, init={self.init!r}, complex={self.complex}, bias={self.bias is not None}"
        )


class MonarchLinear(nn.Module):
    """``y = M x + bias`` with M a Monarch matrix (Dao et al. 2022): block-diagonal ``w1``
    (nblocks blocks of p x p, p = ceil(in/nblocks)), the Monarch permutation, block-diagonal
    ``w2`` (nblocks blocks of s x p, s = ceil(out/nblocks)); inputs are zero padded to nblocks p,
    outputs cropped to out_features. See :func:`kernelfuse.monarch_multiply` for the layout.
    Parameters (2 nblocks p (p + s) / 2 values instead of in x out): ``w1`` (nblocks, p, p),
    ``w2`` (nblocks, s, p), ``bias`` (out,).

    layout: "ls" (default) or "sl", the op's output order (see :func:`kernelfuse.monarch_multiply`);
    "sl" is fly's (HazyResearch) ``MonarchLinear`` / ``blockdiag_butterfly_multiply`` order:
    :meth:`from_fly_weights` imports fly's ``(w1, w2, bias)`` (any shapes (k, q, p), (l, s, r),
    so both of fly's shape rules) and :meth:`fly_weights` exports them.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        nblocks: int = 4,
        bias: bool = True,
        layout: str = "ls",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if in_features < 1 or out_features < 1 or nblocks < 1:
            raise ValueError(
                f"kernelfuse.nn.MonarchLinear: expected in_features, out_features, nblocks >= 1, got "
                f"{in_features}, {out_features}, {nblocks}"
            )
        if layout not in MONARCH_LAYOUTS:
            raise ValueError(
                f"kernelfuse.nn.MonarchLinear: argument 'layout': expected one of {MONARCH_LAYOUTS}, got {layout!r}"
            )
        self.in_features, self.out_features, self.nblocks = in_features, out_features, nblocks
        self.layout = layout
        p = -(-in_features // nblocks)
        s = -(-out_features // nblocks)
        self.in_padded, self.out_padded = nblocks * p, nblocks * s
        kw = dict(device=device, dtype=dtype)
        self.w1 = nn.Parameter(torch.empty(nblocks, p, p, **kw))
        self.w2 = nn.Parameter(torch.empty(nblocks, s, p, **kw))
        self.bias = nn.Parameter(torch.empty(out_features, **kw)) if bias else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        # nn.Linear's default (kaiming_uniform with a = sqrt(5)) per block, fan_in = p
        for w in (self.w1, self.w2):
            bound = 1 / math.sqrt(w.shape[-1])
            w.uniform_(-bound, bound)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            self.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"kernelfuse.nn.MonarchLinear: expected inputs (..., {self.in_features}), got {tuple(x.shape)}"
            )
        if self.in_padded != self.in_features:
            x = nn.functional.pad(x, (0, self.in_padded - self.in_features))
        y = monarch_multiply(x, self.w1, self.w2, layout=self.layout)
        if self.out_padded != self.out_features:
            y = y[..., : self.out_features]
        return y + self.bias if self.bias is not None else y

    def dense_weight(self) -> torch.Tensor:
        """The (out_features, in_features) matrix of the layer (without bias)."""
        with torch.no_grad():
            return monarch_to_dense(self.w1, self.w2, layout=self.layout)[: self.out_features, : self.in_features]

    @classmethod
    def from_fly_weights(
        cls,
        w1: torch.Tensor,
        w2: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        in_features: int | None = None,
        out_features: int | None = None,
    ) -> "MonarchLinear":
        """The layer (layout "sl") that computes what fly's ``MonarchLinear`` computes with the
        block-diagonal factors ``w1`` (k, q, p) = fly's first factor, ``w2`` (l, s, r) = its second
        (l r = k q) and ``bias``: ``y = blockdiag_butterfly_multiply(pad(x), w1, w2)[..., :out] + bias``.
        in_features defaults to k p, out_features to l s (fly pads / crops the same way). The
        tensors are copied."""
        if w1.dim() != 3 or w2.dim() != 3:
            raise ValueError(
                f"kernelfuse.nn.MonarchLinear.from_fly_weights: expected w1 (k, q, p) and w2 (l, s, r), got "
                f"{tuple(w1.shape)} and {tuple(w2.shape)}"
            )
        (k, q, p), (l, s, r) = w1.shape, w2.shape
        if l * r != k * q:
            raise ValueError(
                f"kernelfuse.nn.MonarchLinear.from_fly_weights: argument 'w2': expected shape (l, s, r) with "
                f"l * r = k * q = {k * q} (w1 is {tuple(w1.shape)}), got {tuple(w2.shape)}"
            )
        in_f = k * p if in_features is None else in_features
        out_f = l * s if out_features is None else out_features
        if not (1 <= in_f <= k * p and 1 <= out_f <= l * s):
            raise ValueError(
                f"kernelfuse.nn.MonarchLinear.from_fly_weights: expected 1 <= in_features <= k p = {k * p} and "
                f"1 <= out_features <= l s = {l * s}, got {in_f}, {out_f}"
            )
        if bias is not None and tuple(bias.shape) != (out_f,):
            raise ValueError(
                f"kernelfuse.nn.MonarchLinear.from_fly_weights: argument 'bias': expected shape ({out_f},), got "
                f"{tuple(bias.shape)}"
            )
        m = cls(in_f, out_f, nblocks=k, bias=bias is not None, layout="sl", device=w1.device, dtype=w1.dtype)
        m.w1 = nn.Parameter(w1.detach().clone())
        m.w2 = nn.Parameter(w2.detach().clone())
        m.in_padded, m.out_padded = k * p, l * s
        if bias is not None:
            with torch.no_grad():
                m.bias.copy_(bias.detach())
        return m

    def fly_weights(self):
        """``(w1, w2, bias)`` (detached copies; bias None without one) for fly's ``MonarchLinear``
        or ``blockdiag_butterfly_multiply``: the inverse of :meth:`from_fly_weights`. Layout "sl"
        only: with "ls" the output order differs and, in general, no weights of fly's form give
        the same matrix (use ``from_dense(..., layout="sl")`` to project one)."""
        if self.layout != "sl":
            raise ValueError(
                "kernelfuse.nn.MonarchLinear.fly_weights: the layer has layout='ls'; fly's output order is 'sl' "
                "(build the layer with layout='sl', or project with MonarchLinear.from_dense(linear, "
                "layout='sl'))"
            )
        b = None if self.bias is None else self.bias.detach().clone()
        return self.w1.detach().clone(), self.w2.detach().clone(), b

    @classmethod
    def from_dense(cls, linear: nn.Linear, *, nblocks: int = 4, layout: str = "ls") -> "MonarchLinear":
        """The Monarch layer nearest (Frobenius norm) to a dense ``nn.Linear``, bias copied.

        Every (output block c, input block a) tile of the padded weight is a sum of rank-1 terms
        w2[c][:, b] w1[a][j, :] over the (b, j) with b nblocks + c = a p + j, and every
        parameter column/row belongs to exactly one tile, so the projection is a truncated SVD
        per tile (rank-1 tiles when in = nblocks^2, as in Dao et al. 2022). layout "sl": the same
        projection of the weight with its (padded) rows t nblocks + c moved to c s + t (the row
        permutation between the two output orders keeps the Frobenius norm)."""
        W = linear.weight.detach()
        m = cls(
            linear.in_features,
            linear.out_features,
            nblocks=nblocks,
            bias=linear.bias is not None,
            layout=layout,
            device=W.device,
            dtype=W.dtype,
        )
        nb, s, p = nblocks, m.w2.shape[1], m.w1.shape[1]
        Wp = torch.zeros(m.out_padded, m.in_padded, dtype=torch.float64, device=W.device)
        Wp[: W.shape[0], : W.shape[1]] = W.double()
        if layout == "sl":
            Wp = Wp.view(s, nb, m.in_padded).transpose(0, 1).reshape(nb * s, m.in_padded)
        tiles = Wp.view(nb, s, nb, p).permute(0, 2, 1, 3)  # (c, a, s, p)
        U, S, Vh = torch.linalg.svd(tiles, full_matrices=False)  # (c, a, s, R), (c, a, R), (c, a, R, p)
        w1 = torch.zeros(nb, p, p, dtype=torch.float64, device=W.device)
        w2 = torch.zeros(nb, s, p, dtype=torch.float64, device=W.device)
        # intermediate index f = a p + j = b nb + c (q = p, l = nb, r = p)
        f = torch.arange(nb * p)
        b, c = f // nb, f % nb
        a, j = f // p, f % p
        # rank slot of (b, j) inside tile (c, a): its order among the tile's terms (increasing b)
        key = c * nb + a
        order = torch.argsort(key * (nb * p) + f)
        slot = torch.empty_like(f)
        sorted_key = key[order]
        start = torch.zeros_like(sorted_key)
        new = torch.ones_like(sorted_key, dtype=torch.bool)
        new[1:] = sorted_key[1:] != sorted_key[:-1]
        pos = torch.arange(len(f))
        start = torch.cummax(torch.where(new, pos, torch.zeros_like(pos)), 0).values
        slot[order] = pos - start
        R = S.shape[-1]
        ok = slot < R
        b, c, a, j, slot = b[ok], c[ok], a[ok], j[ok], slot[ok]
        sq = S[c, a, slot].sqrt()
        w2[c, :, b] = U[c, a, :, slot] * sq[:, None]
        w1[a, j, :] = Vh[c, a, slot, :] * sq[:, None]
        with torch.no_grad():
            m.w1.copy_(w1.to(W.dtype))
            m.w2.copy_(w2.to(W.dtype))
            if linear.bias is not None:
                m.bias.copy_(linear.bias.detach())
        return m

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, nblocks={self.nblocks}, "
            f"bias={self.bias is not None}" + (f", layout={self.layout!r}" if self.layout != "ls" else "")
        )
