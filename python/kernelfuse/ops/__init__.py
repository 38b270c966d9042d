"""Public op wrappers, one module per family: argument normalisation, fake kernels, autograd."""
from . import butterfly, features, gp, kde, kron, longconv, nngp, ssm
from . import _autocast  # noqa: E402,F401  (autocast kernels of the ops above; docs/autocast.md)

__all__ = ["butterfly", "features", "gp", "kde", "kron", "longconv", "nngp", "ssm"]
