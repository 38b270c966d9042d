"""Modules built on the kernelfuse ops. Sequence modules take (batch, length, d_model) inputs
(``transposed=True`` for (batch, d_model, length))."""

from .butterfly import BUTTERFLY_INITS, ButterflyLinear, MonarchLinear
from .features import FavorAttention, SNNKLinear
from .flashfftconv import FlashFFTConv
from .longconv import S4D, S4D_INITS, GatedLongConv, LongConv, s4d_init, smooth, squash

__all__ = [
    "FlashFFTConv",
    "GatedLongConv",
    "LongConv",
    "S4D",
    "S4D_INITS",
    "s4d_init",
    "smooth",
    "squash",
    "BUTTERFLY_INITS",
    "ButterflyLinear",
    "MonarchLinear",
    "FavorAttention",
    "SNNKLinear",
]
