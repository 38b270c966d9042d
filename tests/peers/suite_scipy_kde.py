"""SciPy's own gaussian_kde tests (default, non-xslow), with kernelfuse.kde.GaussianKDE swapped in."""
MODULE = "scipy.stats.tests.test_kdeoth"
SWAPS = [("scipy.stats", "gaussian_kde", "kernelfuse.kde", "GaussianKDE")]
SELECT = None
XFAIL = {}
