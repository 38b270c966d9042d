"""Distance metrics of :class:`KernelDensity`: scikit-learn's names resolved to the fused ops' metrics.

The kernel-sum ops (:mod:`kernelfuse.ops.kde`) evaluate ``k(dist(x, y) / h)`` for the metrics
"euclidean", "manhattan", "chebyshev", "minkowski" (order ``p``) and "haversine" in the same fused
pass. scikit-learn accepts more metric names (its BallTree's list); the ones listed in
:data:`SKLEARN_ALIASES` map to ours, the rest are rejected with a ``ValueError`` naming ``metric``.

Normalisation. scikit-learn normalises every metric's density with the Euclidean kernel
normaliser ``Z_d``; a density built on the unit ball of another norm then integrates to the ratio
of the two balls' volumes (``∫ k(|u|_p / h) du = (V_p / V_2) h^d Z_d``), not to 1. We return
scikit-learn's values (a drop-in gives the same numbers), issue :class:`UnnormalisedDensityWarning`
and give the exact integral as ``KernelDensity.density_integral_``:

    V_p = (2 Gamma(1 + 1/p))^d / Gamma(1 + d/p)      (V_1 = 2^d / d!, V_inf = 2^d, V_2 = the ball)
"""

from __future__ import annotations

import math
import numbers
import warnings

__all__ = ["UnnormalisedDensityWarning", "resolve_metric", "log_ball_volume", "KD_TREE_METRICS"]

#: scikit-learn's metric names (KDTree / BallTree) that the fused ops evaluate, and their op metric.
SKLEARN_ALIASES = {
    "euclidean": "euclidean",
    "l2": "euclidean",
    "minkowski": "minkowski",
    "p": "minkowski",
    "manhattan": "manhattan",
    "cityblock": "manhattan",
    "l1": "manhattan",
    "chebyshev": "chebyshev",
    "infinity": "chebyshev",
    "haversine": "haversine",
}
#: Metrics of scikit-learn's KDTree: algorithm="kd_tree" rejects the others, as scikit-learn does.
KD_TREE_METRICS = ("euclidean", "l2", "minkowski", "p", "manhattan", "cityblock", "l1", "chebyshev", "infinity")
#: Metrics of scikit-learn's BallTree that no op evaluates (accepted by sklearn, rejected by us).
UNSUPPORTED_SKLEARN_METRICS = (
    "seuclidean",
    "mahalanobis",
    "hamming",
    "canberra",
    "braycurtis",
    "jaccard",
    "dice",
    "rogerstanimoto",
    "russellrao",
    "sokalmichener",
    "sokalsneath",
    "pyfunc",
)


class UnnormalisedDensityWarning(UserWarning):
    """The density of a non-Euclidean metric is normalised as scikit-learn's (with the Euclidean
    kernel normaliser), so it does not integrate to 1; ``density_integral_`` gives its integral."""


def resolve_metric(metric, metric_params, algorithm):
    """(op metric, p) for scikit-learn's ``metric`` / ``metric_params`` / ``algorithm``.

    Raises ValueError naming the argument: unknown or unsupported metric, a metric that the
    chosen tree does not support (as scikit-learn: ``"invalid metric for ..."``), bad
    ``metric_params``.
    """
    if not isinstance(metric, str):
        raise ValueError(f"metric: expected a string, got {type(metric).__name__} {metric!r}")
    if algorithm == "kd_tree" and metric not in KD_TREE_METRICS:
        raise ValueError(
            f"invalid metric for algorithm='kd_tree': {metric!r} (a KD tree supports "
            f"{', '.join(KD_TREE_METRICS)}; use algorithm='auto' or 'ball_tree')"
        )
    if metric not in SKLEARN_ALIASES:
        if metric in UNSUPPORTED_SKLEARN_METRICS:
            raise ValueError(
                f"metric: {metric!r} is a scikit-learn BallTree metric that kernelfuse's fused "
                f"kernel sums do not evaluate; supported: {', '.join(SKLEARN_ALIASES)}"
            )
        raise ValueError(f"metric: unknown metric {metric!r}; expected one of {', '.join(SKLEARN_ALIASES)}")
    params = dict(metric_params or {})
    name = SKLEARN_ALIASES[metric]
    p = 2.0
    if name == "minkowski":
        p = params.pop("p", 2)
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (p >= 1):
            raise ValueError(f"metric_params: 'p' of the minkowski metric must be a real number >= 1, got {p!r}")
        p = float(p)
        if p == 2.0:
            name = "euclidean"
        elif p == 1.0:
            name = "manhattan"
        elif math.isinf(p):
            name, p = "chebyshev", 2.0
    if params:
        raise ValueError(
            f"metric_params: unsupported keys {sorted(params)} for metric {metric!r}"
            + (" (minkowski takes only 'p')" if name in ("minkowski", "euclidean") else "")
        )
    return name, p


def log_ball_volume(metric: str, p: float, d: int) -> float:
    """log of the volume of the unit ball of the metric in R^d (haversine: not defined, NaN)."""
    if metric == "euclidean":
        p = 2.0
    elif metric == "manhattan":
        p = 1.0
    elif metric == "chebyshev":
        return d * math.log(2.0)
    elif metric != "minkowski":
        return math.nan
    return d * math.log(2.0 * math.gamma(1.0 + 1.0 / p)) - math.lgamma(1.0 + d / p)


def warn_unnormalised(metric: str, log_integral: float, where: str) -> None:
    what = (
        "is not a density on the plane either (haversine distances live on the sphere)"
        if metric == "haversine"
        else f"integrates to {math.exp(log_integral):.6g}, not 1"
    )
    warnings.warn(
        f"{where}: with metric={metric!r} the density is normalised as scikit-learn's (with the "
        f"Euclidean kernel normaliser), so it {what}; see density_integral_",
        UnnormalisedDensityWarning,
        stacklevel=3,
    )
