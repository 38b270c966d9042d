"""The Kronecker algebra ops the GP models use (one import point)."""
from ._kron_standin import kron_gp_mll, kron_matmul, kron_posterior, kron_solve  # noqa: F401
