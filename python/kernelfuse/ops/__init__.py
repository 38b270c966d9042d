"""Public op wrappers, one module per family: argument normalisation, fake kernels, autograd."""
from . import kde, ssm

__all__ = ["kde", "ssm"]
