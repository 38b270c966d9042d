"""``SequenceModel``: a stack of residual long-convolution blocks for classification or per-step
prediction (the S4/Safari "standalone" architecture)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..nn.longconv import S4D, GatedLongConv, LongConv

LAYERS = ("s4d", "longconv", "gated")


class _Block(nn.Module):
    """x + Dropout(GLU(Linear(H, 2H)(Dropout(GELU(layer(LayerNorm(x)))))))."""

    def __init__(self, layer: nn.Module, d_model: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.layer = layer
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, 2 * d_model)
        self.glu = nn.GLU(dim=-1)

    def forward(self, x):
        z = self.layer(self.norm(x))
        z = self.drop(self.act(z))
        z = self.glu(self.out(z))
        return x + self.drop(z)


class SequenceModel(nn.Module):
    """encoder Linear(d_input, d_model) -> n_layers residual blocks -> pooling -> decoder.

    Args:
        d_input, d_model, n_layers, d_output: sizes.
        layer: "s4d" (:class:`kernelfuse.nn.S4D`), "longconv" (:class:`kernelfuse.nn.LongConv`) or
            "gated" (:class:`kernelfuse.nn.GatedLongConv`).
        l_max: longest sequence (needed by "longconv" and "gated").
        dropout: dropout in each block.
        pool: "mean" or "last" -> output (batch, d_output); None -> (batch, length, d_output).
        layer_kwargs: passed to the layer constructor (e.g. d_state, init, squash_lambda, ...).
        final_norm: LayerNorm before pooling.

    Input (batch, length, d_input).
    """

    def __init__(
        self,
        d_input: int,
        d_model: int,
        n_layers: int,
        d_output: int,
        *,
        layer: str = "s4d",
        l_max: Optional[int] = None,
        dropout: float = 0.0,
        pool: Optional[str] = "mean",
        layer_kwargs: Optional[dict] = None,
        final_norm: bool = True,
    ):
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(
                f"kernelfuse.models.SequenceModel: unknown layer {layer!r}; expected one of: {', '.join(LAYERS)}"
            )
        if pool not in ("mean", "last", None):
            raise ValueError(f"kernelfuse.models.SequenceModel: unknown pool {pool!r}; expected 'mean', 'last' or None")
        if layer in ("longconv", "gated") and l_max is None:
            raise ValueError(f"kernelfuse.models.SequenceModel: layer={layer!r} needs l_max")
        kw = dict(layer_kwargs or {})
        self.pool = pool
        self.encoder = nn.Linear(d_input, d_model)

        def make():
            if layer == "s4d":
                return S4D(d_model, **kw)
            if layer == "longconv":
                return LongConv(d_model, l_max, **kw)
            return GatedLongConv(d_model, l_max, **kw)

        self.blocks = nn.ModuleList([_Block(make(), d_model, dropout) for _ in range(n_layers)])
        self.norm = nn.LayerNorm(d_model) if final_norm else nn.Identity()
        self.decoder = nn.Linear(d_model, d_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        if self.pool == "mean":
            x = x.mean(dim=1)
        elif self.pool == "last":
            x = x[:, -1]
        return self.decoder(x)
