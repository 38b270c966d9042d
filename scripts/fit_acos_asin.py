#!/usr/bin/env python3
"""Coefficients of our branch-free asin / acos (csrc/common/hd_math.h), and their accuracy.

The approximation: on |x| <= 1/2, asin(x) = x + x z P(z) with z = x^2 and P a polynomial of
degree n in z; for 1/2 < |x| <= 1, asin(|x|) = pi/2 - 2 asin(s), s = sqrt((1 - |x|) / 2) <= 1/2,
so P only ever sees z in [0, 1/4]. acos follows from the same asin (hd_math.h).

P is the minimax fit (Remez exchange, in mpmath at 40 digits) of the relative error of asin on
[0, 1/2]: it minimises max |(x + x z P(z)) / asin(x) - 1|, i.e. the weighted error
(z P(z) - h(z)) / (1 + h(z)) in the basis z, z^2, ..., z^(n+1), h(z) = asin(sqrt z) / sqrt z - 1.
The coefficients are then rounded to the target precision and the rounded polynomial's error is
reported (in units of 2^-24 / 2^-53 relative, i.e. of the result's ulp at most).

Usage:
    python scripts/fit_acos_asin.py              # fit both degrees, print the C++ tables
    python scripts/fit_acos_asin.py --check      # + measure our compiled acos / asin (needs the
                                                 #   built extension: bash /work/kfdev.sh dev):
                                                 #   every float in [-1, 1], a dense double sweep
Degrees: 4 for float (fit error 0.1 ulp after rounding the coefficients), 11 for double (0.15 ulp);
pass --deg-float / --deg-double to try others. Also prints the hi + lo splits of pi/2 and pi.
Measured (--check; GCC 12, -O3 -march=native on AVX-512, the same with -march=x86-64-v3, and within
0.01 ulp with -march=x86-64, no FMA): float asin 1.69 ulp, acos 1.16 ulp (every float in [-1, 1]);
double asin 1.67 ulp, acos 1.18 ulp (8.9e6 points).
"""

from __future__ import annotations

import argparse
import sys

import mpmath as mp
import numpy as np

mp.mp.dps = 40
B = mp.mpf(1) / 4  # z = x^2 <= 1/4


def h_asin(z):
    """asin(x) / x - 1 at z = x^2: asin(x) = x (1 + z P(z))."""
    if z == 0:
        return mp.mpf(0)
    r = mp.sqrt(z)
    return mp.asin(r) / r - 1


def err(coef, z, h):
    """Weighted error (z P(z) - h(z)) / (1 + h(z)) of the coefficients (P's, lowest first): the
    relative error of 1 + z P(z) as an approximation of 1 + h(z)."""
    p = mp.mpf(0)
    for c in reversed(coef):
        p = p * z + c
    hz = h(z)
    return (z * p - hz) / (1 + hz)


def exchange(e, m):
    """The Remez exchange: indices of the largest |error| in every run of one sign of the errors e
    (over the sorted grid), trimmed to m from whichever end holds the smaller error; None when there
    are fewer than m runs."""
    runs = []
    for i in range(len(e)):
        if runs and (e[runs[-1]] > 0) == (e[i] > 0):
            if abs(e[i]) > abs(e[runs[-1]]):
                runs[-1] = i
        else:
            runs.append(i)
    while len(runs) > m:
        if abs(e[runs[0]]) < abs(e[runs[-1]]):
            runs.pop(0)
        else:
            runs.pop()
    return runs if len(runs) == m else None


def remez_exchange(exps, target, scale, ref, pts, iters):
    """The Remez iteration shared by every fit script: coefficients c of sum_k c_k t^exps[k]
    minimising max |(sum_k c_k t^exps[k] - target(t)) / scale(t)| over the grid pts, from the
    starting reference ref (len(exps) + 1 points). Stops when the levelled error is within 1e-6 of
    the largest on the grid, or after iters rounds."""
    n, m = len(exps), len(exps) + 1
    coef = None
    for _ in range(iters):
        # sum_k c_k t^e_k + (-1)^j E scale(t) = target(t) at every reference point (equioscillation)
        A, rhs = mp.matrix(m, m), mp.matrix(m, 1)
        for j, t in enumerate(ref):
            for k, e in enumerate(exps):
                A[j, k] = t**e
            A[j, n] = (-1) ** j * scale(t)
            rhs[j] = target(t)
        sol = mp.lu_solve(A, rhs)
        coef, E = [sol[k] for k in range(n)], abs(sol[n])
        pts_it = sorted(set(pts + ref))
        e = [(mp.fsum(c * t**x for c, x in zip(coef, exps)) - target(t)) / scale(t) for t in pts_it]
        runs = exchange(e, m)
        if runs is None:
            break
        ref = [pts_it[i] for i in runs]
        if max(abs(e[i]) for i in runs) - E < E * mp.mpf("1e-6"):
            break
    return coef


def remez(n, h=h_asin, iters=30, grid=3000, B=B):
    """Minimax P of degree n (n + 1 coefficients) for the weighted error on (0, B] (h: the target,
    B: the end of the interval; scripts/fit_log.py fits its own h on its own interval): the basis
    z, ..., z^(n+1), the error scaled by 1 + h."""
    m = n + 2  # reference points
    ref = [B * (1 - mp.cos(mp.pi * (j + 1) / (2 * m))) / (1 - mp.cos(mp.pi / 2)) for j in range(m)]
    ref[-1] = B
    # the dense grid, clustered at both ends
    pts = [B * (1 - mp.cos(mp.pi * mp.mpf(k) / (2 * grid))) for k in range(1, grid + 1)]
    pts = sorted(set(pts + [B * mp.mpf(k) / grid for k in range(1, grid + 1)]))
    coef = remez_exchange(list(range(1, n + 2)), h, lambda z: 1 + h(z), ref, pts, iters)
    emax = max(abs(err(coef, z, h)) for z in pts)
    return coef, emax


def rounded_error(coef, dtype, h=h_asin, B=B):
    """Max weighted error of the coefficients rounded to dtype (evaluated exactly)."""
    rc = [mp.mpf(float(np.asarray(float(c), dtype=dtype))) for c in coef]
    zs = [B * mp.mpf(k) / 4000 for k in range(1, 4001)]
    return rc, max(abs(err(rc, z, h)) for z in zs)


def cxx(rc, dtype):
    if dtype == np.float32:
        return ", ".join(f"{float(c):.9e}f" for c in rc)
    return ", ".join(f"{float(c):.17e}" for c in rc)


def ulp_err(got, ref, dtype):
    """|got - ref| in ulps of the exact value ref (float64 / longdouble), 0 where both are NaN."""
    info = np.finfo(dtype)
    a = np.abs(ref)
    # ulp of ref in dtype (the spacing of the dtype binade holding ref; the denormal spacing below)
    e = np.floor(np.log2(np.maximum(a, info.tiny)))
    ulp = np.exp2(e - (info.nmant)).astype(ref.dtype)
    d = np.abs(got.astype(ref.dtype) - ref) / ulp
    both_nan = np.isnan(got) & np.isnan(ref)
    return np.where(both_nan, 0, d)


def check():
    import kernelfuse  # noqa: F401
    from kernelfuse import _C

    worst = {}
    # float: every float in [-1, 1] in chunks of 2^24 bit patterns (both signs)
    top = np.float32(1.0).view(np.uint32)
    for fn in ("asin", "acos"):
        mx, at = 0.0, None
        for start in range(0, int(top) + 1, 1 << 24):
            bits = np.arange(start, min(start + (1 << 24), int(top) + 1), dtype=np.uint32)
            for sign in (0, 0x80000000):
                x = (bits | np.uint32(sign)).view(np.float32)
                y = np.asarray(_C._hd_math(fn, x))
                r = getattr(np, "arc" + fn[1:])(x.astype(np.float64))
                u = ulp_err(y, r, np.float32)
                i = int(np.argmax(u))
                if u[i] > mx:
                    mx, at = float(u[i]), float(x[i])
        worst[("float", fn)] = (mx, at)
        print(f"float  {fn}: max {mx:.3f} ulp at x = {at!r} (every float in [-1, 1])", flush=True)
    # double: a dense sweep (uniform, near 0 / +-1 / +-1/2 in ulp steps, log-spaced) vs longdouble
    rng = np.random.default_rng(0)
    parts = [rng.uniform(-1, 1, 1 << 22)]
    for c in (0.0, 0.5, 1.0):
        base = np.float64(c).view(np.int64)
        steps = np.arange(-(1 << 18), (1 << 18), dtype=np.int64)
        v = (base + steps).view(np.float64) if c else np.abs(steps.astype(np.float64)) * 5e-324
        parts += [v, -v]
    lg = np.logspace(-320, 0, 1 << 20)
    parts += [lg, -lg]
    x = np.concatenate(parts)
    x = x[np.abs(x) <= 1]
    for fn in ("asin", "acos"):
        y = np.asarray(_C._hd_math(fn, x))
        r = getattr(np, "arc" + fn[1:])(x.astype(np.longdouble))
        u = ulp_err(y, r, np.float64)
        i = int(np.argmax(u))
        worst[("double", fn)] = (float(u[i]), float(x[i]))
        print(f"double {fn}: max {u[i]:.3f} ulp at x = {x[i]!r} ({len(x)} points)", flush=True)
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deg-float", type=int, default=4)
    ap.add_argument("--deg-double", type=int, default=11)
    ap.add_argument("--check", action="store_true", help="measure the compiled functions (kernelfuse._C._hd_math)")
    args = ap.parse_args(argv)
    for name, dtype, n, eps in (
        ("float", np.float32, args.deg_float, 2.0**-24),
        ("double", np.float64, args.deg_double, 2.0**-53),
    ):
        coef, e = remez(n)
        rc, re = rounded_error(coef, dtype)
        print(
            f"// {name}: degree {n}, minimax relative error {float(e):.3e} ({float(e) / eps:.4f} ulp), "
            f"rounded to {name}: {float(re):.3e} ({float(re) / eps:.4f} ulp)"
        )
        print(f"//   P(z), lowest degree first: {{{cxx(rc, dtype)}}}")
    for name, dtype in (("float", np.float32), ("double", np.float64)):
        for cname, v in (("pio2", mp.pi / 2), ("pi", mp.pi)):
            hi = dtype(float(v))
            lo = v - mp.mpf(float(hi))
            print(f"// {name} {cname}_hi = {mp.nstr(mp.mpf(float(hi)), 30)}, {cname}_lo = {float(lo)!r}")
    if args.check:
        check()
    return 0


if __name__ == "__main__":
    sys.exit(main())
