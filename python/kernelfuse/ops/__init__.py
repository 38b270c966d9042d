"""Public op wrappers, one module per family or op group (<family>[_<group>], docs/adding_an_op.md):
argument normalisation, fake kernels, autograd."""

from . import (
    _autocast,  # noqa: E402,F401  (autocast kernels of the ops above; docs/autocast.md)
    butterfly,
    features,
    kde,
    kron,
    kron_grid,
    longconv,
    longconv_ssm,
    nngp,
)

__all__ = ["butterfly", "features", "kde", "kron", "kron_grid", "longconv", "longconv_ssm", "nngp"]
