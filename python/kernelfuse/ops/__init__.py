"""Public op wrappers, one module per family: argument normalisation, fake kernels, autograd."""
from . import butterfly, features, kde, kron, longconv, ssm

__all__ = ["butterfly", "features", "kde", "kron", "longconv", "ssm"]
