"""Kernel density estimation on the fused kernel-sum ops.

* :class:`KernelDensity` -- scikit-learn compatible estimator (``sklearn.neighbors.KernelDensity``
  API), exact densities for the kernel shapes of csrc/kde/profiles.h, correctly normalised in
  every dimension where they are integrable.
* :class:`GaussianKDE` -- ``scipy.stats.gaussian_kde`` API: full-covariance Gaussian kernels,
  weights, ``logpdf``, ``resample``.
* :class:`FewPointsWarning` -- raised when the density at most queries rests on O(1) data points
  (the extreme-value regime of high-dimensional KDE).
* :func:`log_kernel_normaliser` -- log of a kernel profile's integral over ``R^d``.

See ``docs/kde.md``.
"""

from ._gaussian_kde import GaussianKDE
from ._kernel_density import (
    KERNEL_ALIASES,
    KERNELS,
    SAMPLEABLE_KERNELS,
    FewPointsWarning,
    KernelDensity,
    NotFittedError,
    UnnormalisedDensityWarning,
    log_kernel_normaliser,
)

__all__ = [
    "KernelDensity",
    "GaussianKDE",
    "FewPointsWarning",
    "NotFittedError",
    "log_kernel_normaliser",
    "KERNELS",
    "KERNEL_ALIASES",
    "SAMPLEABLE_KERNELS",
    "UnnormalisedDensityWarning",
]
from ._private import PrivateKernelDensity  # noqa: E402

__all__ += ["PrivateKernelDensity"]
