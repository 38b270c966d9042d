"""The Kronecker algebra ops the GP models use (one import point)."""
from ..ops.kron import kron_gp_mll, kron_matmul, kron_posterior, kron_solve  # noqa: F401
