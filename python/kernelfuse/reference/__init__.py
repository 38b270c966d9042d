"""Plain-torch, float64-capable reference implementations: the spec every op is tested against.

Each function has the exact signature of the op it specifies, e.g.
``kernelfuse.reference.kde.kernel_sum`` for ``kernelfuse.kernel_sum``.
"""

from . import butterfly, features, kde, kron, kron_grid, longconv, longconv_ssm, nngp

__all__ = ["butterfly", "features", "kde", "kron", "kron_grid", "longconv", "longconv_ssm", "nngp"]
