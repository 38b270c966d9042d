"""Public op wrappers, one module per family: argument normalisation, fake kernels, autograd."""
from . import kde, longconv, ssm

__all__ = ["kde", "longconv", "ssm"]
