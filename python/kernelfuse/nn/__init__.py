"""Sequence modules built on the kernelfuse ops. Modules take (batch, length, d_model) inputs
(``transposed=True`` for (batch, d_model, length))."""
from .longconv import S4D_INITS, GatedLongConv, LongConv, S4D, s4d_init, smooth, squash

__all__ = ["GatedLongConv", "LongConv", "S4D", "S4D_INITS", "s4d_init", "smooth", "squash"]
from .features import FavorAttention, SNNKLinear  # noqa: E402

__all__ += ["FavorAttention", "SNNKLinear"]
