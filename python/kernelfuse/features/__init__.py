"""Random-feature models: kernel approximations as explicit feature maps.

* :class:`RandomFeatures` -- an ``nn.Module`` (with sklearn-style ``fit`` / ``transform``) mapping
  x to phi(x) with phi(x).phi(y) ~ k(x, y) for Gaussian, Laplacian, Cauchy, arc-cosine (order 0 / 1)
  and softmax kernels, drawn as plain random features (rff), orthogonal (orf) or structured
  (sorf, fastfood) ones.
* :class:`RBFSampler` -- a scikit-learn estimator, a drop-in for
  ``sklearn.kernel_approximation.RBFSampler`` (same parameters, validation, draws and output) on
  the fused op; needs scikit-learn.
* :class:`RandomFeaturesTransformer` -- every kernel / method of :class:`RandomFeatures` as a
  scikit-learn estimator; needs scikit-learn.
* :func:`exact_kernel` -- the kernels themselves, to measure the approximation.
* :class:`RandomFeatureRidge`, :class:`RandomFeatureGP` -- ridge / GP regression on the features,
  single-process or with rows sharded over a torch.distributed group (``group=``).
* :func:`nngp_kernel` / :func:`ntk_kernel` -- the NNGP / NTK of deep fully connected networks (fused
  kernels, docs/nngp.md), with :func:`nngp_posterior` (PCG on the fused products),
  :func:`ntk_gradient_flow`, :class:`NNGPRegressor` and :class:`NNGPRandomFeatures`.

scikit-learn is optional: the two estimators are imported from ``._sklearn`` on first access.
See docs/features.md.
"""

import importlib.util as _importlib_util

from ._nngp import (
    NNGPRandomFeatures,
    NNGPRegressor,
    kernel_diag,
    nngp_kernel,
    nngp_posterior,
    ntk_gradient_flow,
    ntk_kernel,
)
from ._random_features import KERNELS, METHODS, RandomFeatures, exact_kernel
from ._regression import RandomFeatureGP, RandomFeatureRidge

_SKLEARN_CLASSES = ("RBFSampler", "RandomFeaturesTransformer")


def _have_sklearn() -> bool:
    try:
        return _importlib_util.find_spec("sklearn") is not None
    except (ImportError, ValueError):
        return False


__all__ = [
    "KERNELS",
    "METHODS",
    "NNGPRandomFeatures",
    "NNGPRegressor",
    "RandomFeatureGP",
    "RandomFeatureRidge",
    "RandomFeatures",
    "exact_kernel",
    "kernel_diag",
    "nngp_kernel",
    "nngp_posterior",
    "ntk_gradient_flow",
    "ntk_kernel",
]
if _have_sklearn():  # so `from kernelfuse.features import *` does not fail without it
    __all__ += list(_SKLEARN_CLASSES)


def __getattr__(name):
    if name in _SKLEARN_CLASSES:
        from . import _sklearn  # raises an ImportError naming scikit-learn when it is missing

        return getattr(_sklearn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SKLEARN_CLASSES))
