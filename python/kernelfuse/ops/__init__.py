"""Public op wrappers, one module per family: argument normalisation, fake kernels, autograd."""
from . import butterfly, features, gp, kde, kron, longconv, ssm

__all__ = ["butterfly", "features", "gp", "kde", "kron", "longconv", "ssm"]
