"""Shared by the tests of the kernelfuse.kde estimators (tests/test_kde_models.py, _sklearn.py,
_scipy.py): the kernel lists, the real data sets (scikit-learn's loaders, cached) and a fit without
the few-points warning. The test files import this after their importorskip of sklearn and scipy."""

from __future__ import annotations

from kernelfuse.kde import KernelDensity
from sklearn import datasets

DENSITY_KERNELS = ("gaussian", "laplacian", "matern32", "matern52", "tophat", "epanechnikov", "linear", "cosine")
COMPACT = ("tophat", "epanechnikov", "linear", "cosine")


def _cached(fn):
    cache = {}

    def wrapper():
        if "v" not in cache:
            cache["v"] = fn()
        return cache["v"]

    return wrapper


@_cached
def real_datasets():
    """name -> (X, bandwidths). Bandwidths avoid exact ties |x - y| == h on gridded data."""
    iris = datasets.load_iris().data
    wine = datasets.load_wine().data
    wine = (wine - wine.mean(0)) / wine.std(0)
    bc = datasets.load_breast_cancer().data
    bc = (bc - bc.mean(0)) / bc.std(0)
    digits = datasets.load_digits().data
    return {
        "iris": (iris, (0.37, 1.13, "scott", "silverman")),
        "wine": (wine, (0.83, 2.71, "scott", "silverman")),
        "breast_cancer": (bc, (1.57, 4.33, "scott", "silverman")),
        "digits": (digits, (6.37, 13.3, "scott", "silverman")),
    }


def quiet_fit(**kw):
    kw.setdefault("min_neff", None)
    return KernelDensity(**kw)
