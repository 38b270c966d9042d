"""Exact samplers of the kernels' radial laws, and the choice of centres, for :meth:`KernelDensity.sample`."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["choose_centres", "sample_offsets"]


def choose_centres(rng, n_samples: int, n: int, weights) -> np.ndarray:
    """Indices of ``n_samples`` centres, as scikit-learn draws them: one uniform ``u`` per sample,
    ``floor(u n)`` without weights, else ``u * sum(w)`` searched in the cumulative weights. So
    constant weights give the same centres as no weights, and integer weights the same as
    repeated rows, for the same ``random_state``."""
    u = rng.uniform(0, 1, size=n_samples)
    if weights is None:
        return np.minimum((u * n).astype(np.int64), n - 1)
    cum = np.cumsum(weights)
    idx = np.searchsorted(cum, u * cum[-1])
    idx = np.minimum(idx, n - 1)
    # u = 0 exactly lands on a leading zero-weight row: move to the first positive weight
    return np.where(weights[idx] > 0, idx, np.searchsorted(cum, u * cum[-1], side="right"))


def sample_offsets(kernel: str, rng, n_samples: int, d: int) -> np.ndarray:
    """(n_samples, d) displacements of bandwidth 1 from the kernel's law (density k(|u|) / Z_d).

    gaussian: standard normals (as scikit-learn's draws for the same stream); tophat: a
    standard normal vector rescaled to radius ``gammainc(d/2, |g|^2/2)^(1/d)`` (uniform in the
    ball: the chi-square CDF of ``|g|^2`` is uniform); the others: a uniform direction times a
    radius from :func:`_sample_radii`.
    """
    if kernel == "gaussian":
        return rng.normal(size=(n_samples, d))
    if kernel == "tophat":
        import torch

        g = rng.normal(size=(n_samples, d))
        s2 = (g * g).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cdf = torch.special.gammainc(torch.tensor(0.5 * d, dtype=torch.float64), torch.from_numpy(0.5 * s2)).numpy()
            scale = np.where(s2 > 0, cdf ** (1.0 / d) / np.sqrt(s2), 0.0)
        return g * scale[:, None]
    return _unit_directions(rng, n_samples, d) * _sample_radii(kernel, d, n_samples, rng)[:, None]


def _unit_directions(rng, n: int, d: int) -> np.ndarray:
    """n directions uniform on the unit sphere in R^d (normalised Gaussians)."""
    while True:
        g = rng.standard_normal((n, d))
        norm = np.sqrt((g * g).sum(axis=1, keepdims=True))
        if np.all(norm > 0):
            return g / norm


def _gamma_mixture(rng, n: int, shapes, mix, scale: float) -> np.ndarray:
    """n draws of a mixture of Gamma(shapes[j], scale) with probabilities proportional to mix."""
    mix = np.asarray(mix, dtype=np.float64)
    comp = rng.choice(len(shapes), size=n, p=mix / mix.sum())
    return rng.gamma(np.asarray(shapes, dtype=np.float64)[comp], scale)


def _sample_radii(kernel: str, d: int, n: int, rng) -> np.ndarray:
    """n radii of the kernel's radial law, density proportional to r^(d-1) k(r)."""
    if kernel == "tophat":
        return rng.uniform(size=n) ** (1.0 / d)
    if kernel == "epanechnikov":  # s = r^2 has density ~ s^(d/2 - 1) (1 - s): Beta(d/2, 2)
        return np.sqrt(rng.beta(0.5 * d, 2.0, size=n))
    if kernel == "linear":  # r^(d-1) (1 - r): Beta(d, 2)
        return rng.beta(float(d), 2.0, size=n)
    if kernel == "laplacian":  # r^(d-1) e^(-r): Gamma(d, 1)
        return rng.gamma(float(d), 1.0, size=n)
    if kernel == "matern32":  # r^(d-1) (1 + c r) e^(-c r): Gamma(d) and Gamma(d+1) in ratio 1 : d
        return _gamma_mixture(rng, n, [d, d + 1], [1.0, d], 1.0 / math.sqrt(3.0))
    if kernel == "matern52":  # weights Gamma(d) : d : d (d+1) / 3 for shapes d, d+1, d+2
        return _gamma_mixture(rng, n, [d, d + 1, d + 2], [1.0, d, d * (d + 1) / 3.0], 1.0 / math.sqrt(5.0))
    if kernel == "cauchy":  # only d = 1 is a density: |standard Cauchy|
        return np.abs(rng.standard_cauchy(size=n))
    if kernel == "rational_quadratic":  # r^2/4 = G1/G2 ~ BetaPrime(d/2, 2 - d/2) (a density for d < 4)
        return 2.0 * np.sqrt(rng.gamma(0.5 * d, 1.0, size=n) / rng.gamma(2.0 - 0.5 * d, 1.0, size=n))
    if kernel == "cosine":
        # Rejection from Beta(d, 2) ~ r^(d-1) (1 - r): with t = 1 - r the ratio
        # cos(pi r / 2) / (1 - r) = sin(pi t / 2) / t lies in [1, pi/2]; accept w.p. ratio / (pi/2).
        out = np.empty(n)
        filled = 0
        while filled < n:
            need = n - filled
            r = rng.beta(float(d), 2.0, size=int(need * 1.6) + 16)
            t = 1.0 - r
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(t > 0, np.sin(0.5 * math.pi * t) / (0.5 * math.pi * t), 1.0)
            acc = r[rng.uniform(size=r.shape[0]) < ratio][:need]
            out[filled : filled + acc.shape[0]] = acc
            filled += acc.shape[0]
        return out
    raise NotImplementedError(f"sample: no sampler for kernel {kernel!r}")
