"""Random-feature models: kernel approximations as explicit feature maps.

* :class:`RandomFeatures` -- an ``nn.Module`` and an sklearn-style transformer mapping x to
  phi(x) with phi(x).phi(y) ~ k(x, y) for Gaussian, Laplacian, Cauchy, arc-cosine (order 0 / 1)
  and softmax kernels, drawn as plain random features (rff), orthogonal (orf) or structured
  (sorf, fastfood) ones; a drop-in for ``sklearn.kernel_approximation.RBFSampler``.
* :func:`exact_kernel` -- the kernels themselves, to measure the approximation.

See docs/features.md.
"""
from ._random_features import KERNELS, METHODS, RandomFeatures, exact_kernel

__all__ = ["KERNELS", "METHODS", "RandomFeatures", "exact_kernel"]
