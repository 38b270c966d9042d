#!/usr/bin/env python3
"""Coefficients of our branch-free double exp (hd::exp_poly, csrc/common/hd_math.h), and its accuracy.

The approximation: n = round(x / ln 2), r = x - n ln 2 (ln 2 as hi + lo, hi with 42 bits so n hi is
exact for |n| <= 2^11), |r| <= R = ln(2) / 2 (a hair more: the rounding of x / ln 2), and
exp(r) = 1 + r + r^2 Q(r), where Q of degree n is the minimax fit (Remez exchange, mpmath at 40
digits) of the relative error of Q(r) as an approximation of q(r) = (e^r - 1 - r) / r^2 on [-R, R]
(a weight that never vanishes; fitting exp's own relative error puts a double zero at r = 0 into
the weight, and the exchange then converges poorly). The coefficients are rounded to double and
exp's relative error with the rounded Q is reported in units of 2^-53. Then exp(x) = exp(r) 2^n,
with 2^n applied as two exponent-field multiplications (2^n1 2^n2, n1 = round(n / 2)) so that the
results near the overflow threshold and the subnormal results (gradual underflow, one rounding)
come out of the same straight line.

Usage:
    python scripts/fit_exp.py              # fit, print the C++ table
    python scripts/fit_exp.py --check      # + measure the compiled exp (kernelfuse._C._hd_math "exp",
                                           #   needs the built extension: bash /work/kfdev.sh dev)
                                           #   on 2^25+ doubles across [-746, 710] against longdouble
    python scripts/fit_exp.py --float      # simd.h's float exp_approx: the same form, Q of degree 5
                                           #   rounded to float (0.013 ulp fit error), ln 2 split 16 + 24 bits
Degree 10 for Q (exp's polynomial of degree 12) by default (exp's fit error 0.004 ulp; degree 9: 0.14 ulp); --deg to try others.
Measured (--check; GCC 12, -O3 -march=native on AVX-512, 2026-12-01): 0.608 ulp on the normal results,
0.760 ulp of the subnormal spacing on the subnormal ones (44112028 points).
"""

from __future__ import annotations

import argparse
import os
import sys

import mpmath as mp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fit_acos_asin import remez_exchange  # noqa: E402
from fit_log import ulp_err  # noqa: E402

mp.mp.dps = 40
R = mp.log(2) / 2 * (1 + mp.mpf("1e-9"))


def err(coef, r):
    """Relative error (1 + r + r^2 Q(r) - e^r) / e^r of Q's coefficients (lowest first)."""
    q = mp.mpf(0)
    for c in reversed(coef):
        q = q * r + c
    e = mp.exp(r)
    return (1 + r + r * r * q - e) / e


def q_exact(r):
    """(e^r - 1 - r) / r^2, the function Q approximates (1/2 at 0)."""
    return mp.fsum(r**k / mp.factorial(k + 2) for k in range(34))  # the series: no cancellation near 0


def qerr(coef, r):
    """Relative error of Q itself: Q's share of exp's relative error is r^2 q(r) / e^r <= 0.067
    times it (at r = R), so fitting Q relatively (a weight that never vanishes) is the well-posed
    problem; the result is reported through err()."""
    q = mp.mpf(0)
    for c in reversed(coef):
        q = q * r + c
    qe = q_exact(r)
    return (q - qe) / qe


def remez(n, iters=40, grid=4000):
    """Minimax Q of degree n for qerr on [-R, R]; returns the coefficients and exp's error."""
    m = n + 2  # reference points
    ref = [-R * mp.cos(mp.pi * j / (m - 1)) for j in range(m)]
    pts = sorted(
        set(
            [-R * mp.cos(mp.pi * mp.mpf(k) / grid) for k in range(grid + 1)]
            + [R * (2 * mp.mpf(k) / grid - 1) for k in range(grid + 1)]
        )
    )
    coef = remez_exchange(list(range(n + 1)), q_exact, q_exact, ref, pts, iters)  # Q's relative error
    return coef, max(abs(err(coef, r)) for r in pts if r != 0)


def rounded_error(coef, dtype=np.float64):
    rc = [mp.mpf(float(dtype(float(c)))) for c in coef]
    rs = [R * (2 * mp.mpf(k) / 4000 - 1) for k in range(4001)]
    return rc, max(abs(err(rc, r)) for r in rs if r != 0)


def check_points(rng, n_random):
    """The test points: uniform over [-746, 711], dense near 0, near the overflow and underflow
    thresholds, the subnormal results, half-integer multiples of ln 2 (the reduction's edges)."""
    lo, hi = -746.0, 711.0
    steps = np.arange(-(1 << 12), 1 << 12, dtype=np.int64)
    near = lambda c: (np.float64(c).view(np.int64) + steps).view(np.float64)  # noqa: E731
    ks = np.arange(-1075, 1025) + 0.5
    return np.concatenate(
        [
            rng.uniform(lo, hi, n_random),
            rng.uniform(-1.0, 1.0, n_random // 8),
            rng.uniform(-745.2, -708.0, n_random // 8),  # subnormal results
            rng.uniform(700.0, 709.8, n_random // 16),
            np.concatenate(
                [
                    near(v)
                    for v in (
                        709.782712893384,
                        -708.3964185322641,
                        -745.1332191019411,
                        -745.1332191019412,
                        0.0,
                        1.0,
                        -1.0,
                    )
                ]
            ),
            np.abs(near(0.0)),
            ((ks * np.log(2.0))[:, None] * (1 + np.array([-1e-15, 0, 1e-15]))[None, :]).ravel(),
        ]
    )


def check(n_random=1 << 25):
    import kernelfuse  # noqa: F401
    from kernelfuse import _C

    if np.finfo(np.longdouble).nmant < 63:
        print("longdouble is double here: no check", flush=True)
        return None
    xs = check_points(np.random.default_rng(0), n_random)
    mx, at = -1.0, None
    mxn, atn = -1.0, None  # the normal results only
    for start in range(0, len(xs), 1 << 22):
        x = xs[start : start + (1 << 22)]
        y = np.asarray(_C._hd_math("exp", x))
        with np.errstate(over="ignore", under="ignore"):
            r = np.exp(x.astype(np.longdouble))
            r = np.where(np.isinf(r.astype(np.float64)), np.longdouble(np.inf), r)  # past DBL_MAX: rounds to inf
        u = ulp_err(y, r, np.float64)
        i = int(np.argmax(u))
        if u[i] > mx:
            mx, at = float(u[i]), float(x[i])
        un = np.where(r >= np.finfo(np.float64).tiny, u, 0)
        i = int(np.argmax(un))
        if un[i] > mxn:
            mxn, atn = float(un[i]), float(x[i])
    print(f"double exp: max {mx:.3f} ulp at x = {at!r} ({len(xs)} points; subnormal results in their spacing)")
    print(f"double exp, normal results: max {mxn:.3f} ulp at x = {atn!r}", flush=True)
    return mx, at


def fit_float(deg):
    """simd.h's float exp_approx: the same form, exp(r) = 1 + r + r^2 Q(r), Q rounded to float; ln 2
    split as hi + lo with hi of 16 significant bits (n hi exact for |n| <= 2^8, all the float range
    needs)."""
    coef, e = remez(deg)
    rc, rce = rounded_error(coef, np.float32)
    eps = 2.0**-24
    ln2 = mp.log(2)
    hi = mp.floor(ln2 * 2**16) / 2**16
    lo = np.float32(float(ln2 - hi))
    print(
        f"// float: Q of degree {deg}, minimax relative error {float(e):.3e} ({float(e) / eps:.4f} ulp), "
        f"rounded to float: {float(rce):.3e} ({float(rce) / eps:.4f} ulp)"
    )
    print(f"//   ln 2 = {float(hi)!r} (16 bits) + {float(lo)!r}f")
    print("//   Q(r), highest degree first:")
    for c in reversed(rc):
        print(f"    {float(c):.10e}f")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deg", type=int, default=10)
    ap.add_argument("--check", action="store_true", help="measure the compiled exp (kernelfuse._C._hd_math)")
    ap.add_argument("--float", action="store_true", help="the float exp of simd.h (exp_approx) instead: Q of --deg 5")
    args = ap.parse_args(argv)
    if args.float:
        return fit_float(5 if args.deg == 10 else args.deg)
    coef, e = remez(args.deg)
    rc, rce = rounded_error(coef)
    eps = 2.0**-53
    print(
        f"// double: Q of degree {args.deg}, minimax relative error {float(e):.3e} ({float(e) / eps:.4f} ulp), "
        f"rounded to double: {float(rce):.3e} ({float(rce) / eps:.4f} ulp)"
    )
    print("//   Q(r), highest degree first:")
    for c in reversed(rc):
        print(f"    {float(c):.17e}")
    if args.check:
        check()
    return 0


if __name__ == "__main__":
    sys.exit(main())
