"""Public op wrappers, one module per family: argument normalisation, fake kernels, autograd."""
from . import kde, longconv, ssm
from . import kron  # noqa: E402
from . import gp  # noqa: E402  (kron: grid kernels)

__all__ = ["kde", "longconv", "ssm"]
__all__ += ["kron"]
__all__ += ["gp"]
