"""SciPy's own gaussian_kde tests (default, non-xslow), with kernelfuse.kde.GaussianKDE swapped in.

SciPy 1.17.1: all 55 default tests pass, no expected failures; 17 are skipped by SciPy's own
markers (4 ``xslow``, 13 ``float96`` parameters where numpy has no float96). With
``SCIPY_XSLOW=1`` the 4 slow tests pass as well (59 passed, 13 skipped).
"""

MODULE = "scipy.stats.tests.test_kdeoth"
SWAPS = [("scipy.stats", "gaussian_kde", "kernelfuse.kde", "GaussianKDE")]
SELECT = None
XFAIL = {}
