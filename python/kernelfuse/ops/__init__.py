"""Public op wrappers, one module per family: argument normalisation, fake kernels, autograd."""
from . import kde, longconv, ssm
from . import features  # noqa: E402

__all__ = ["kde", "longconv", "ssm"]
__all__ += ["features"]
