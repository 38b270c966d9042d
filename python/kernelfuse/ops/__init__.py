"""Public op wrappers, one module per family: argument normalisation, fake kernels, autograd."""
from . import butterfly, kde, kron, longconv, ssm

__all__ = ["butterfly", "kde", "kron", "longconv", "ssm"]
