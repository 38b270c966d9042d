"""Public op wrappers, one module per family: argument normalisation, fake kernels, autograd."""
from . import kde, longconv, ssm
from . import butterfly

__all__ = ["kde", "longconv", "ssm"]
__all__ += ["butterfly"]
