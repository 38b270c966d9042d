"""Public op wrappers, one module per family: argument normalisation, fake kernels, autograd."""
from . import kde

__all__ = ["kde"]
