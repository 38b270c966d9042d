"""scikit-learn's own KernelDensity tests, with kernelfuse.kde.KernelDensity swapped in."""
MODULE = "sklearn.neighbors.tests.test_kde"
SWAPS = [("sklearn.neighbors", "KernelDensity", "kernelfuse.kde", "KernelDensity")]
SELECT = None
XFAIL = {}
