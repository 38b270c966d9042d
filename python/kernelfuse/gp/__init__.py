"""Gaussian-process models on Cartesian grids, built on the Kronecker ops and ``grid_kernel``.

- ``GridGPRegressor``: exact GP regression with a product kernel over the grid axes.
- ``GPPDESolver``: GP-HM, a GP solver for high-frequency and multi-scale PDEs.
"""

from ._pde import GPPDESolver
from ._regressor import GridGPRegressor

__all__ = ["GPPDESolver", "GridGPRegressor"]
