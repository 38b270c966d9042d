"""Public op wrappers, one module per family: argument normalisation, fake kernels, autograd."""
from . import kde, longconv

__all__ = ["kde", "longconv"]
