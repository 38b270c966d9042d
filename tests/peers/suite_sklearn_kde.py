"""scikit-learn's own KernelDensity tests, with kernelfuse.kde.KernelDensity swapped in."""

MODULE = "sklearn.neighbors.tests.test_kde"
SWAPS = [("sklearn.neighbors", "KernelDensity", "kernelfuse.kde", "KernelDensity")]
SELECT = None
XFAIL = {
    # The test asserts that sample() raises NotImplementedError for the epanechnikov, exponential,
    # linear and cosine kernels (scikit-learn samples only gaussian and tophat). kernelfuse samples
    # every integrable kernel exactly (radial laws in docs/kde.md, chi-square tests in
    # tests/test_kde_models.py); its gaussian/tophat part of the test passes.
    "test_kernel_density_sampling": "kernelfuse can sample the kernels scikit-learn cannot",
}
