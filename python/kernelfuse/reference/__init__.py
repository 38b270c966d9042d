"""Plain-torch, float64-capable reference implementations: the spec every op is tested against.

Each function has the exact signature of the op it specifies, e.g.
``kernelfuse.reference.kde.kernel_sum`` for ``kernelfuse.kernel_sum``.
"""
from . import kde, longconv, ssm
from . import kron  # noqa: E402
from . import gp  # noqa: E402  (kron: grid kernels)

__all__ = ["kde", "longconv", "ssm"]
__all__ += ["kron"]
__all__ += ["gp"]
