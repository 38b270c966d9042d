#!/usr/bin/env python3
"""Coefficients of our vectorised sin / cos (simd::sincos_v, csrc/common/simd.h), and the splits of pi/2.

After the reduction r = x - j pi/2 (|r| <= pi/4, a hair more from the rounding of j), with z = r^2:
    sin r = r + r z P(z)          P of degree 2 (float) / 5 (double)
    cos r = 1 - z/2 + z^2 Q(z)    Q of degree 2 (float) / 5 (double)
P and Q are minimax fits (Remez exchange in mpmath at 40 digits) of the relative error of sin r and
cos r on z in (0, (pi/4)^2]: a linear fit in the basis z^1..z^(n+1) (sin: target sin(r)/r - 1,
error scaled by sin(r)/r) and z^2..z^(n+2) (cos: target cos r - 1 + z/2, scaled by cos r). The
coefficients are rounded to the target type and the rounded polynomials' relative errors reported
in units of 2^-24 / 2^-53.

pi/2 is split as p1 + p2 + p3: p1 and p2 truncated (float: 8 and 16 significant bits, double: 33
and 33), p3 the rest rounded, so that j p1 is exact for the quadrant counts the ranges need (the
kernels subtract the three products in turn, with FMA where the compiler contracts).

Usage: python scripts/fit_sincos.py          # prints the C++ tables for float and double
"""

from __future__ import annotations

import os
import sys

import mpmath as mp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fit_acos_asin import remez_exchange  # noqa: E402

mp.mp.dps = 40
B = (mp.pi / 4) ** 2 * (1 + mp.mpf("1e-6"))


def sin_target(z):
    r = mp.sqrt(z)
    return mp.sin(r) / r - 1


def sin_scale(z):
    return 1 + sin_target(z)


def cos_target(z):
    return mp.cos(mp.sqrt(z)) - 1 + z / 2


def cos_scale(z):
    return mp.cos(mp.sqrt(z))


def value(coef, exps, z):
    return mp.fsum(c * z**e for c, e in zip(coef, exps))


def werr(coef, exps, target, scale, z):
    return (value(coef, exps, z) - target(z)) / scale(z)


def remez(exps, target, scale, iters=40, grid=3000):
    """Minimax coefficients of sum_k c_k z^exps[k] for the scaled error on (0, B]."""
    m = len(exps) + 1  # reference points
    ref = [B * (1 - mp.cos(mp.pi * (j + 1) / (2 * m))) / (1 - mp.cos(mp.pi / 2)) for j in range(m)]
    ref[-1] = B
    pts = [B * (1 - mp.cos(mp.pi * mp.mpf(k) / (2 * grid))) for k in range(1, grid + 1)]
    pts = sorted(set(pts + [B * mp.mpf(k) / grid for k in range(1, grid + 1)]))
    return remez_exchange(exps, target, scale, ref, pts, iters)


def rounded_error(coef, exps, target, scale, dtype):
    rc = [mp.mpf(float(dtype(float(c)))) for c in coef]
    zs = [B * mp.mpf(k) / 3000 for k in range(1, 3001)]
    return rc, max(abs(werr(rc, exps, target, scale, z)) for z in zs)


def split_pio2(bits, dtype):
    """pi/2 = p1 + p2 + p3: p1, p2 truncated to bits[0], bits[1] significant bits, p3 the rest rounded."""
    rest, out = mp.pi / 2, []
    for b in bits:
        e = mp.floor(mp.log(rest, 2))
        scale = mp.mpf(2) ** (b - 1 - e)
        p = mp.floor(rest * scale) / scale
        out.append(p)
        rest -= p
    out.append(mp.mpf(float(dtype(float(rest)))))
    return out


def main():
    for dtype, deg, bits, eps, fmt in (
        (np.float32, 2, (8, 16), 2.0**-24, ".10e"),
        (np.float64, 5, (33, 33), 2.0**-53, ".20e"),
    ):
        name = np.dtype(dtype).name
        print(f"// {name}: pi/2 = " + " + ".join(f"{float(p):{fmt}}" for p in split_pio2(bits, dtype)))
        for what, exps0, target, scale in (
            ("sin P", 1, sin_target, sin_scale),
            ("cos Q", 2, cos_target, cos_scale),
        ):
            exps = list(range(exps0, exps0 + deg + 1))
            coef = remez(exps, target, scale)
            rc, e = rounded_error(coef, exps, target, scale, dtype)
            print(f"// {name} {what}: degree {deg}, rounded relative error {float(e):.3e} ({float(e) / eps:.3f} ulp)")
            print("//   highest degree first: " + ", ".join(f"{float(c):{fmt}}" for c in reversed(rc)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
