"""Differentially private kernel density: a noised random-feature sketch (see docs/features.md).

Construction (Wagner et al., ICML 2023 style; the problem is studied in "Efficiently Computing
Similarities to Private Datasets", ICLR 2024):

1. clip each point to the ball of the given radius (x * min(1, radius / |x|));
2. map it with m Gaussian random Fourier frequencies to phi(x) = [cos(Wx), sin(Wx)] / sqrt(m)
   (|phi(x)|_2 = 1 exactly, phi(x).phi(y) ~ exp(-|x - y|^2 / (2 l^2)));
3. quantise each phi(x_i) to integers on a grid of step gamma (round to nearest) and sum: an
   integer vector S with bounded sensitivity under replacing one point:
   Delta_1 <= 2 (sqrt(2m) / gamma + m), Delta_2 <= 2 (1 / gamma + sqrt(2m) / 2);
4. add integer noise sampled exactly (Python integers / fractions, Canonne, Kamath & Steinke
   2020): discrete Laplace with scale Delta_1 / epsilon for pure epsilon-DP (delta = 0), or a
   discrete Gaussian with rho-zCDP calibrated to (epsilon, delta) otherwise;
5. release mu = gamma (S + noise) / n. Any number of queries y are answered from mu alone:
   k_hat(y) = phi(y).mu ~ (1/n) sum_i exp(-|y - x_i|^2 / (2 l^2)) (post-processing: no further
   privacy cost).

The noise lives on an integer grid and is sampled without floating point, so the release does
not leak through the low-order bits of floating-point Laplace samples (Mironov 2012).
"""

from __future__ import annotations

import math
import random
import secrets
from fractions import Fraction
from typing import Optional

import numpy as np
import torch

from ..ops.features import random_features

__all__ = ["PrivateKernelDensity", "sample_discrete_laplace", "sample_discrete_gaussian"]


# ---------------------------------------------------------------- exact samplers (CKS 2020)
def _bernoulli(p: Fraction, rng) -> bool:
    return rng.randrange(p.denominator) < p.numerator


def _bernoulli_exp(gamma: Fraction, rng) -> bool:
    """Exactly Bernoulli(exp(-gamma)), gamma >= 0 rational."""
    while gamma > 1:
        if not _bernoulli_exp(Fraction(1), rng):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k, rng):
        k += 1
    return k % 2 == 1


def sample_discrete_laplace(scale: Fraction, rng) -> int:
    """Integer Y with P(Y = y) proportional to exp(-|y| / scale), exactly (scale rational > 0)."""
    scale = Fraction(scale)
    s, t = scale.denominator, scale.numerator  # exp(-|y| s / t)
    while True:
        u = rng.randrange(t)
        if not _bernoulli_exp(Fraction(u, t), rng):
            continue
        v = 0
        while _bernoulli_exp(Fraction(1), rng):
            v += 1
        y = (u + t * v) // s
        neg = rng.randrange(2) == 1
        if neg and y == 0:
            continue
        return -y if neg else y


def sample_discrete_gaussian(sigma2: Fraction, rng) -> int:
    """Integer Y with P(Y = y) proportional to exp(-y^2 / (2 sigma2)), exactly."""
    sigma2 = Fraction(sigma2)
    t = math.isqrt(sigma2.numerator // sigma2.denominator) + 1
    while True:
        y = sample_discrete_laplace(Fraction(t), rng)
        g = (abs(y) - sigma2 / t) ** 2 / (2 * sigma2)
        if _bernoulli_exp(g, rng):
            return y


def _rational(x: float, digits: int = 12) -> Fraction:
    """A rational upper bound of x (noise scales are rounded up: never less noise than needed)."""
    return Fraction(math.ceil(x * 10**digits), 10**digits)


class PrivateKernelDensity:
    """epsilon-DP (or (epsilon, delta)-DP) Gaussian kernel sums of a private data set.

    Args:
        epsilon: privacy budget (> 0) of the one release (``fit``); queries are free.
        delta: 0 for pure epsilon-DP (discrete Laplace noise), else (epsilon, delta)-DP
            (discrete Gaussian, calibrated through zero-concentrated DP).
        radius: points are clipped to this L2 norm (centre the data first); the error bound
            and the kernel estimate hold for the clipped points.
        n_features: m frequencies (2m sketch coordinates). More features lower the
            random-feature error ~1/sqrt(m) but raise the noise error ~sqrt(m) / (epsilon n).
        lengthscale: l of the Gaussian kernel exp(-|x - y|^2 / (2 l^2)).
        seed: seeds the frequencies and the noise (reproducible; None draws the noise from the
            OS's cryptographic generator, as a real release should).
        grid: quantisation step gamma as a fraction of 1/sqrt(2m) (default 2^-20).

    Neighbouring data sets: same size n (public), one point replaced.
    Methods: ``fit(X)``, ``kernel_mean(Y)`` ((1/n) sum_i k(y, x_i)), ``score_samples(Y)``
    (log of the normalised density estimate, floored at 1e-300), ``sketch_``, ``noise_std_``.
    """

    def __init__(
        self,
        epsilon: float,
        *,
        delta: float = 0.0,
        radius: float,
        n_features: int = 256,
        lengthscale: float = 1.0,
        seed: Optional[int] = None,
        grid: float = 2.0**-20,
    ):
        for name, v in (("epsilon", epsilon), ("radius", radius), ("lengthscale", lengthscale), ("grid", grid)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(
                    f"kernelfuse.kde.PrivateKernelDensity: argument '{name}': expected a positive "
                    f"finite number, got {v!r}"
                )
        if not (0.0 <= delta < 1.0):
            raise ValueError(
                f"kernelfuse.kde.PrivateKernelDensity: argument 'delta': expected 0 <= delta < 1, got {delta!r}"
            )
        if not (isinstance(n_features, int) and n_features >= 1):
            raise ValueError(
                f"kernelfuse.kde.PrivateKernelDensity: argument 'n_features': expected a positive int, "
                f"got {n_features!r}"
            )
        self.epsilon, self.delta, self.radius = float(epsilon), float(delta), float(radius)
        self.n_features, self.lengthscale, self.seed, self.grid = n_features, float(lengthscale), seed, float(grid)

    # sensitivities of the integer sketch (replace-one neighbours)
    def _gamma(self) -> float:
        return self.grid / math.sqrt(2 * self.n_features)

    def sensitivity(self):
        """(Delta_1, Delta_2) of the integer sum of quantised features."""
        m, g = self.n_features, self._gamma()
        return 2 * (math.sqrt(2 * m) / g + m), 2 * (1 / g + math.sqrt(2 * m) / 2)

    def noise_variance(self) -> float:
        """Variance of the noise per integer sketch coordinate."""
        d1, d2 = self.sensitivity()
        if self.delta == 0:
            b = d1 / self.epsilon
            return 2 * b * b  # (the discrete Laplace's variance is slightly below this)
        L = math.log(1 / self.delta)
        rho = (math.sqrt(L + self.epsilon) - math.sqrt(L)) ** 2  # rho + 2 sqrt(rho L) = epsilon
        return d2 * d2 / (2 * rho)

    def fit(self, X, y=None) -> "PrivateKernelDensity":
        X = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X).to(torch.float64)
        if X.dim() != 2 or X.shape[0] == 0:
            raise ValueError(
                f"kernelfuse.kde.PrivateKernelDensity.fit: argument 'X': expected a non-empty (n, d) "
                f"array, got shape {tuple(X.shape)}"
            )
        n, d = X.shape
        m = self.n_features
        g = torch.Generator().manual_seed(self.seed if self.seed is not None else secrets.randbits(62))
        self.W_ = torch.randn(d, m, generator=g, dtype=torch.float64) / self.lengthscale
        norms = X.norm(dim=1, keepdim=True)
        Xc = X * torch.clamp(self.radius / norms.clamp_min(1e-300), max=1.0)
        phi = random_features(Xc, self.W_, kind="cos_sin", scale=1.0 / math.sqrt(m))  # |phi|_2 = 1
        gamma = self._gamma()
        S = torch.round(phi / gamma).to(torch.int64).sum(0)  # exact integer sum
        rng = random.Random(self.seed + 1) if self.seed is not None else secrets.SystemRandom()
        d1, d2 = self.sensitivity()
        if self.delta == 0:
            scale = _rational(d1 / self.epsilon)
            noise = [sample_discrete_laplace(scale, rng) for _ in range(2 * m)]
        else:
            noise = [sample_discrete_gaussian(_rational(self.noise_variance()), rng) for _ in range(2 * m)]
        self.sketch_ = (S + torch.tensor(noise, dtype=torch.int64)).to(torch.float64) * (gamma / n)
        self.n_, self.d_ = n, d
        self.noise_std_ = math.sqrt(self.noise_variance()) * gamma / n  # per coordinate of the sketch
        return self

    def kernel_mean(self, Y) -> torch.Tensor:
        """(1/n) sum_i exp(-|y - x_i|^2 / (2 l^2)) estimated from the private sketch."""
        if not hasattr(self, "sketch_"):
            raise RuntimeError("kernelfuse.kde.PrivateKernelDensity: call fit(X) first")
        Y = torch.as_tensor(np.asarray(Y) if not isinstance(Y, torch.Tensor) else Y).to(torch.float64)
        if Y.dim() != 2 or Y.shape[1] != self.d_:
            raise ValueError(
                f"kernelfuse.kde.PrivateKernelDensity: argument 'Y': expected shape (q, {self.d_}), "
                f"got {tuple(Y.shape)}"
            )
        phi = random_features(Y, self.W_, kind="cos_sin", scale=1.0 / math.sqrt(self.n_features))
        return phi @ self.sketch_

    def score_samples(self, Y) -> np.ndarray:
        """log of the normalised Gaussian density estimate (floored at 1e-300 before the log)."""
        km = self.kernel_mean(Y)
        log_norm = 0.5 * self.d_ * math.log(2 * math.pi * self.lengthscale**2)
        return (torch.log(km.clamp_min(1e-300)) - log_norm).numpy()

    def error_bound(self, beta: float = 0.05) -> float:
        """Bound on |noise contribution| of one query, holding with probability >= 1 - beta
        (sub-Gaussian / sub-exponential tail of phi(y).noise with |phi(y)|_2 = 1; plus the
        quantisation error gamma sqrt(2m) / 2 = grid / 2). The random-feature error (~1/sqrt(m)) is
        separate; see docs/features.md."""
        sd = self.noise_std_
        q = math.log(2 / beta)
        if self.delta > 0:  # discrete Gaussian: sub-Gaussian with parameter sigma (CKS 2020)
            tail = sd * math.sqrt(2 * q)
        else:  # Laplace scale b = sd / sqrt(2), coefficients |phi_k(y)| <= 1/sqrt(m): Bernstein
            b = sd / math.sqrt(2)
            tail = b * max(math.sqrt(8 * q), 4 * q / math.sqrt(self.n_features))
        return tail + self.grid / 2
