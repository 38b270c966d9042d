#!/usr/bin/env python3
"""Coefficients of our branch-free log / log1p (csrc/common/hd_math.h), and their accuracy.

The approximation: x = 2^k m with m in [sqrt(1/2), sqrt(2)), f = m - 1, s = f / (2 + f), so
|s| <= 3 - 2 sqrt(2) and z = s^2 <= B = (3 - 2 sqrt(2))^2 = 17 - 12 sqrt(2); then
log(1 + f) = 2 atanh(s) = 2 s (1 + h(z)), h(z) = atanh(sqrt z) / sqrt z - 1, and the kernels write
2 atanh(s) = 2 s + s R with R = z Q(z), Q = 2 P, where P is the minimax fit (Remez exchange of
scripts/fit_acos_asin.py, mpmath at 40 digits) of the relative error of 1 + z P(z) as an
approximation of 1 + h(z) on (0, B] - the relative error of log(1 + f) itself. The coefficients of Q
are rounded to the target precision (2 P rounds exactly as P) and the rounded polynomial's error is
reported in units of 2^-24 / 2^-53 relative. Also prints ln 2 split as hi + lo with hi short enough
that k hi is exact for every exponent k of the type (subnormals included).

Usage:
    python scripts/fit_log.py              # fit both degrees, print the C++ tables
    python scripts/fit_log.py --check      # + measure our compiled log / log1p (needs the built
                                           #   extension: bash /work/kfdev.sh dev): every float
                                           #   (log: x >= 0; log1p: v >= -1), 2^24+ doubles
Degrees: 2 for float, 6 for double (fit errors 0.014 / 0.013 ulp after rounding the coefficients); --deg-float / --deg-double to try
others.
Measured (--check; GCC 12, -O3 -march=native on AVX-512, 2026-12-01): float log 0.758 ulp (every
float >= 0, 2139095041), float log1p 0.758 ulp (every float >= -1, 3204448258); double log 0.749 ulp
(2.7e7 points), double log1p 0.746 ulp (3.6e7 points), against longdouble. The same (+-0.005)
with -march=x86-64-v3; with -march=x86-64 (no FMA) at most 0.87 ulp (a C++ sweep of every float and
2^24 doubles against libm in double / long double, 2026-12-01). The float sweep takes
minutes (--doubles-only skips it).
"""

from __future__ import annotations

import argparse
import os
import sys

import mpmath as mp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fit_acos_asin import remez, rounded_error  # noqa: E402

mp.mp.dps = 40
B = 17 - 12 * mp.sqrt(2)  # (3 - 2 sqrt 2)^2: the largest s^2


def h_log(z):
    """atanh(s) / s - 1 at z = s^2: log(1 + f) = 2 s (1 + h(z))."""
    if z == 0:
        return mp.mpf(0)
    s = mp.sqrt(z)
    return mp.atanh(s) / s - 1


def ln2_split(kbits, pbits):
    """ln 2 = hi + lo, hi with pbits - kbits significant bits (so k hi is exact for |k| < 2^kbits)."""
    ln2 = mp.log(2)
    q = pbits - kbits  # significant bits of hi; ln 2 in [1/2, 1)
    hi = mp.floor(ln2 * 2**q + mp.mpf(1) / 2) / 2**q
    return hi, ln2 - hi


def cxx(rc, dtype):
    if dtype == np.float32:
        return ", ".join(f"{float(c):.9e}f" for c in rc)
    return ", ".join(f"{float(c):.17e}" for c in rc)


def ulp_err(got, ref, dtype):
    """|got - ref| in ulps of dtype at the exact value ref (a wider type); 0 where got == ref
    (infinities included) or both are NaN, inf where only one is NaN."""
    info = np.finfo(dtype)
    refw = ref.astype(np.longdouble) if ref.dtype == np.longdouble else ref.astype(np.float64)
    _, e = np.frexp(np.where(np.isfinite(refw) & (refw != 0), refw, 1))
    e = np.maximum(e.astype(np.int64) - 1, info.minexp)  # the binade of ref (the subnormal spacing below)
    ulp = np.ldexp(np.ones_like(refw), (e - info.nmant).astype(np.int32))
    with np.errstate(invalid="ignore"):
        d = np.abs(got.astype(refw.dtype) - refw) / ulp
    same = (got.astype(refw.dtype) == refw) | (np.isnan(got) & np.isnan(refw))
    return np.where(same, 0, np.where(np.isnan(d), np.inf, d))


def float_chunks(lo_bits, hi_bits, step=1 << 22):
    for start in range(lo_bits, hi_bits, step):
        yield np.arange(start, min(start + step, hi_bits), dtype=np.uint32)


def check(only=None, doubles_only=False):
    import kernelfuse  # noqa: F401
    from kernelfuse import _C

    worst = {}
    ref_fns = {"log": np.log, "log1p": np.log1p}
    # float: every float of the domain (log: +0 .. +inf; log1p: -1 .. -0 and +0 .. +inf)
    pos = (0, int(np.float32(np.inf).view(np.uint32)) + 1)
    neg = (0x80000000, int(np.float32(-1).view(np.uint32)) + 1)
    for fn, ranges in (("log", [pos]), ("log1p", [pos, neg])):
        if doubles_only or (only is not None and fn not in only):
            continue
        mx, at, count = 0.0, None, 0
        for lo, hi in ranges:
            for bits in float_chunks(lo, hi):
                x = bits.view(np.float32)
                y = np.asarray(_C._hd_math(fn, x))
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = ref_fns[fn](x.astype(np.float64))
                u = ulp_err(y, r, np.float32)
                i = int(np.argmax(u))
                count += len(x)
                if u[i] > mx:
                    mx, at = float(u[i]), float(x[i])
        worst[("float", fn)] = (mx, at)
        print(f"float  {fn}: max {mx:.3f} ulp at x = {at!r} (every float of the domain, {count})", flush=True)
    # double: random bit patterns over every binade, dense around 1 (log) / 0 (log1p), uniform on
    # the reduction's range, the subnormals, against longdouble
    rng = np.random.default_rng(0)
    top = int(np.float64(np.inf).view(np.int64))
    bitsr = rng.integers(0, top, 1 << 24, dtype=np.int64).view(np.float64)
    steps = np.arange(-(1 << 18), 1 << 18, dtype=np.int64)
    near = lambda c: (np.float64(c).view(np.int64) + steps).view(np.float64)  # noqa: E731
    sub = np.arange(1, 1 << 18, dtype=np.int64).view(np.float64)
    pts = {
        "log": [bitsr, rng.uniform(0.5, 2.0, 1 << 23), near(1.0), near(np.sqrt(0.5)), near(np.sqrt(2.0)), sub],
        "log1p": [
            bitsr,
            -bitsr[np.abs(bitsr) < 1],
            rng.uniform(-0.5, 1.0, 1 << 23),
            np.abs(near(0.0)[::7]),
            -np.abs(near(0.0)[::7]),
            near(np.sqrt(0.5) - 1),
            near(np.sqrt(2.0) - 1),
            near(-1.0)[: 1 << 18],
            sub,
            -sub,
        ],
    }
    if np.finfo(np.longdouble).nmant < 63:
        print("double: longdouble is double here: no double check", flush=True)
        return worst
    fns = [f for f in ("log", "log1p") if only is None or f in only]
    for fn in fns:
        xs = np.concatenate(pts[fn])
        mx, at = -1.0, None
        for start in range(0, len(xs), 1 << 22):  # chunks: the longdouble temporaries stay small
            x = xs[start : start + (1 << 22)]
            y = np.asarray(_C._hd_math(fn, x))
            with np.errstate(divide="ignore", invalid="ignore"):
                r = ref_fns[fn](x.astype(np.longdouble))
            u = ulp_err(y, r, np.float64)
            i = int(np.argmax(u))
            if u[i] > mx:
                mx, at = float(u[i]), float(x[i])
        worst[("double", fn)] = (mx, at)
        print(f"double {fn}: max {mx:.3f} ulp at x = {at!r} ({len(xs)} points)", flush=True)
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deg-float", type=int, default=2)
    ap.add_argument("--deg-double", type=int, default=6)
    ap.add_argument("--check", action="store_true", help="measure the compiled functions (kernelfuse._C._hd_math)")
    ap.add_argument("--only", choices=("log", "log1p"), help="--check one function only")
    ap.add_argument(
        "--doubles-only", action="store_true", help="--check the double sweep only (the float one takes minutes)"
    )
    args = ap.parse_args(argv)
    for name, dtype, n, eps in (
        ("float", np.float32, args.deg_float, 2.0**-24),
        ("double", np.float64, args.deg_double, 2.0**-53),
    ):
        coef, e = remez(n, h=h_log, B=B)
        rp, rpe = rounded_error(coef, dtype, h=h_log, B=B)  # Q = 2 P rounds exactly as P
        print(
            f"// {name}: degree {n}, minimax relative error {float(e):.3e} ({float(e) / eps:.4f} ulp), "
            f"rounded to {name}: {float(rpe):.3e} ({float(rpe) / eps:.4f} ulp)"
        )
        print(f"//   Q(z) = 2 P(z), lowest degree first: {{{cxx([2 * c for c in rp], dtype)}}}")
    for name, kbits, pbits in (("float", 8, 24), ("double", 11, 53)):  # |k| <= 149 / 1074
        hi, lo = ln2_split(kbits, pbits)
        dtype = np.float32 if name == "float" else np.float64
        assert float(dtype(float(hi))) == float(hi)
        fmt = ".9e" if name == "float" else ".20e"
        print(f"// {name} ln2_hi = {float(hi):{fmt}} ({pbits - kbits} bits), ln2_lo = {float(lo):{fmt}}")
    if args.check:
        check(None if args.only is None else (args.only,), args.doubles_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
