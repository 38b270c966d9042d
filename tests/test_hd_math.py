"""Our branch-free asin / acos / log / log1p of the CPU kernels (csrc/common/hd_math.h), through the
debug entry kernelfuse._C._hd_math (compiled with the kernels' flags): ulp error over dense sweeps
against float64 (for float) / extended precision (for double), and the special values.
asin / acos on [-1, 1] (float: every 397th float plus every float near 0, +-1/2 and +-1; double:
2^20 uniform points plus the same neighbourhoods): bounds float <= 2 ulp, double <= 4 ulp
(measured: 1.69 and 1.67, scripts/fit_acos_asin.py --check, which sweeps every float).
log / log1p (float: every float of [sqrt(1/2), sqrt(2)) - every reduced argument - plus every 509th
float of the domain; double: 2^20 random bit patterns and the neighbourhoods of log_sweep): bound
1 ulp (measured: 0.758 float, 0.749 / 0.746 double, scripts/fit_log.py --check, which sweeps every
float).
exp (double: hd::exp_poly): 2^20+ points across [-746, 711] and the thresholds' neighbourhoods (exp_sweep),
against extended precision: bound 1 ulp (0.75 on the normal results; measured 0.61 / 0.76 on the
subnormal results, scripts/fit_exp.py --check). Float exp (simd::exp_approx): every 61st float of its
range, bound 1 ulp. sin / cos (simd::sincos_v, fits: scripts/fit_sincos.py): absolute error on
|x| <= 1e5 (float) / 1e8 (double), relative near 0."""

import math

import numpy as np
import pytest
from kernelfuse import _C

FNS = {"asin": np.arcsin, "acos": np.arccos}


def ulp_error(got, ref, dtype):
    """|got - ref| in ulps of dtype at the exact value ref (a wider type); NaN where either is NaN."""
    info = np.finfo(dtype)
    e = np.floor(np.log2(np.maximum(np.abs(ref), info.tiny)))
    ulp = np.exp2(e - info.nmant).astype(ref.dtype)
    return np.abs(got.astype(ref.dtype) - ref) / ulp


def neighbourhoods(dtype, centres, half_width):
    """Every value within half_width ulps of each centre (both signs), clipped to [-1, 1]."""
    itype = np.int32 if dtype == np.float32 else np.int64
    steps = np.arange(-half_width, half_width + 1, dtype=itype)
    parts = []
    for c in centres:
        v = (np.asarray(c, dtype=dtype).view(itype) + steps).view(dtype) if c else np.abs(steps).view(dtype)
        parts += [v, -v]
    x = np.concatenate(parts)
    return x[np.isfinite(x) & (np.abs(x) <= 1)]


def sweep(dtype):
    if dtype == np.float32:
        top = int(np.float32(1).view(np.uint32))
        bits = np.arange(0, top + 1, 397, dtype=np.uint32)
        grid = np.concatenate([bits.view(np.float32), (bits | np.uint32(0x80000000)).view(np.float32)])
        return np.concatenate([grid, neighbourhoods(dtype, (0.0, 0.5, 1.0), 1 << 15)])
    rng = np.random.default_rng(0)
    logs = np.logspace(-320, 0, 1 << 14)
    return np.concatenate([rng.uniform(-1, 1, 1 << 20), logs, -logs, neighbourhoods(dtype, (0.0, 0.5, 1.0), 1 << 14)])


def reference(fn, x):
    if x.dtype == np.float32:
        return FNS[fn](x.astype(np.float64))
    if np.finfo(np.longdouble).nmant >= 63:
        return FNS[fn](x.astype(np.longdouble))
    mpmath = pytest.importorskip("mpmath")  # longdouble is double here: a sample at high precision
    mpmath.mp.dps = 40
    sub = x[:: max(1, len(x) // 20000)]
    f = getattr(mpmath, fn)
    return sub, np.array([float(f(mpmath.mpf(float(v)))) for v in sub])


@pytest.mark.parametrize("dtype,bound", [(np.float32, 2.0), (np.float64, 4.0)])
@pytest.mark.parametrize("fn", ["asin", "acos"])
def test_ulp_error_over_a_dense_sweep(fn, dtype, bound):
    x = sweep(dtype)
    r = reference(fn, x)
    if isinstance(r, tuple):  # the mpmath sample (the reference is then only double-rounded)
        x, r = r
    y = np.asarray(_C._hd_math(fn, x))
    assert y.dtype == dtype and y.shape == x.shape
    u = ulp_error(y, r, dtype)
    assert np.isfinite(u).all()
    worst = int(np.argmax(u))
    assert u[worst] <= bound, f"{fn} {dtype.__name__}: {u[worst]:.3f} ulp at x = {x[worst]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, tiny, -tiny, 3 * tiny, np.finfo(dtype).tiny], dtype=dtype)
    a = np.asarray(_C._hd_math("asin", x))
    c = np.asarray(_C._hd_math("acos", x))
    half_pi, pi = dtype(math.pi / 2), dtype(math.pi)
    # asin: odd, exact at 0 (sign kept) and at subnormals, +-pi/2 rounded at +-1
    assert a[0] == 0 and not np.signbit(a[0]) and a[1] == 0 and np.signbit(a[1])
    assert a[2] == half_pi and a[3] == -half_pi
    np.testing.assert_array_equal(a[6:], x[6:])
    np.testing.assert_array_equal(a[[4, 5]], -a[[5, 4]])
    # acos: pi/2 at 0 and subnormals, exactly 0 at 1 and pi (rounded) at -1
    assert c[0] == half_pi and c[1] == half_pi and c[2] == 0 and c[3] == pi
    np.testing.assert_array_equal(c[6:], np.full(4, half_pi, dtype=dtype))
    # outside [-1, 1] and NaN: NaN
    bad = np.array([np.nan, -np.nan, 1 + 4 * np.finfo(dtype).eps, -1.5, 2.0, np.inf, -np.inf], dtype=dtype)
    for fn in ("asin", "acos"):
        assert np.isnan(np.asarray(_C._hd_math(fn, bad))).all()


def test_shapes_and_bad_arguments():
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    y = np.asarray(_C._hd_math("acos", x))
    assert y.shape == (3, 4) and y.dtype == np.float32
    np.testing.assert_allclose(y, np.arccos(x), rtol=3e-7, atol=0)
    assert np.asarray(_C._hd_math("asin", np.zeros(0))).shape == (0,)
    with pytest.raises(ValueError, match="argument 'fn'.*'atan'"):
        _C._hd_math("atan", x)
    with pytest.raises(TypeError, match="argument 'x'.*float32 or float64"):
        _C._hd_math("asin", np.zeros(3, dtype=np.int32))


# ---- log / log1p (hd_math.h: log_poly / log1p_poly)

LOG_FNS = {"log": np.log, "log1p": np.log1p}


def float_range(lo, hi, step=1):
    """Every step-th float32 from lo up to (not including) hi, both >= 0, by bit pattern."""
    a, b = (int(np.float32(v).view(np.uint32)) for v in (lo, hi))
    return np.arange(a, b, step, dtype=np.uint32).view(np.float32)


def log_sweep(fn, dtype):
    """float: every float m of [sqrt(1/2), sqrt(2)) - every reduced argument of the normal floats
    (for log1p: every u = 1 + v there) - and every 509th float of the rest of the domain (the
    subnormals included); double: 2^20 random bit patterns over every binade, 2^19 uniform points
    on the reduction's range, every double within 2^13 ulps of 1 (log) / of 0 (log1p) and of the
    reduction's ends, some subnormals."""
    if dtype == np.float32:
        r2, rh = np.float32(np.sqrt(2.0)), np.float32(np.sqrt(0.5))
        if fn == "log":
            return np.concatenate(
                [float_range(rh, r2), float_range(0, np.inf, 509), [np.float32(np.finfo(np.float32).max)]]
            )
        u = float_range(rh, r2)
        v = np.unique((u.astype(np.float64) - 1).astype(np.float32))  # the v with 1 + v = u (and their neighbours)
        pos = float_range(0, np.inf, 509)
        neg = -float_range(0, 1, 509)
        return np.concatenate([v, pos, neg, [np.float32(np.finfo(np.float32).max)]])
    rng = np.random.default_rng(1)
    top = int(np.float64(np.inf).view(np.int64))
    rb = rng.integers(0, top, 1 << 20, dtype=np.int64).view(np.float64)
    steps = np.arange(-(1 << 13), 1 << 13, dtype=np.int64)
    near = lambda c: (np.float64(c).view(np.int64) + steps).view(np.float64)  # noqa: E731
    sub = (np.arange(1, 1 << 12, dtype=np.int64) * 997).view(np.float64)
    if fn == "log":
        return np.concatenate(
            [rb, rng.uniform(0.5, 2.0, 1 << 19), near(1.0), near(np.sqrt(0.5)), near(np.sqrt(2.0)), sub]
        )
    small = np.abs(steps).view(np.float64)  # the smallest subnormals
    logs = np.logspace(-300, -1, 1 << 12)
    return np.concatenate(
        [
            rb,
            -rb[np.abs(rb) < 1],
            rng.uniform(-0.5, 1.0, 1 << 19),
            near(np.sqrt(0.5) - 1),
            near(np.sqrt(2.0) - 1),
            near(-1.0)[: 1 << 13],
            small,
            -small,
            logs,
            -logs,
            sub,
            -sub,
        ]
    )


def log_reference(fn, x):
    with np.errstate(divide="ignore", invalid="ignore"):
        if x.dtype == np.float32:
            return x, LOG_FNS[fn](x.astype(np.float64))
        if np.finfo(np.longdouble).nmant >= 63:
            return x, LOG_FNS[fn](x.astype(np.longdouble))
    mpmath = pytest.importorskip("mpmath")  # longdouble is double here: a sample at high precision
    mpmath.mp.dps = 40
    sub = x[:: max(1, len(x) // 20000)]
    f = getattr(mpmath, fn)
    return sub, np.array([float(f(mpmath.mpf(float(v)))) for v in sub])


def log_ulp_error(got, ref, dtype):
    """ulp error (ulp_error) with infinities and NaN compared exactly: 0 where got == ref or both are
    NaN, inf where they differ."""
    same = (got.astype(ref.dtype) == ref) | (np.isnan(got) & np.isnan(ref))
    with np.errstate(invalid="ignore"):
        u = ulp_error(got, np.where(np.isfinite(ref), ref, 0), dtype)
    return np.where(same, 0, np.where(np.isfinite(ref), u, np.inf))


@pytest.mark.parametrize("dtype,bound", [(np.float32, 1.0), (np.float64, 1.0)])
@pytest.mark.parametrize("fn", ["log", "log1p"])
def test_log_ulp_error_over_a_dense_sweep(fn, dtype, bound):
    x = log_sweep(fn, dtype).astype(dtype)
    x, r = log_reference(fn, x)
    y = np.asarray(_C._hd_math(fn, x))
    assert y.dtype == dtype and y.shape == x.shape
    u = log_ulp_error(y, r, dtype)
    assert not np.isnan(u).any()
    worst = int(np.argmax(u))
    assert u[worst] <= bound, f"{fn} {dtype.__name__}: {u[worst]:.3f} ulp at x = {x[worst]!r} (got {y[worst]!r})"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_special_values(dtype):
    info = np.finfo(dtype)
    tiny, inf, nan = info.smallest_subnormal, np.inf, np.nan
    x = np.array([0.0, -0.0, inf, -inf, nan, -1.0, -tiny, 1.0], dtype=dtype)
    y = np.asarray(_C._hd_math("log", x))
    np.testing.assert_array_equal(y[:4], np.array([-inf, -inf, inf, nan], dtype=dtype))
    assert np.isnan(y[4:7]).all()
    assert y[7] == 0 and not np.signbit(y[7])
    v = np.array([0.0, -0.0, -1.0, -1.5, -inf, inf, nan, tiny, -tiny, 3 * tiny, info.tiny], dtype=dtype)
    z = np.asarray(_C._hd_math("log1p", v))
    assert z[0] == 0 and not np.signbit(z[0]) and z[1] == 0 and np.signbit(z[1])
    assert z[2] == -inf and np.isnan(z[3:5]).all() and z[5] == inf and np.isnan(z[6])
    np.testing.assert_array_equal(z[7:], v[7:])  # log1p(v) = v below the smallest normal
    # powers of two: k ln 2 within an ulp (subnormal and largest exponents included), log(1 + 2^-j) and
    # log1p(2^-j) agree with the reference
    ks = np.arange(info.minexp - info.nmant, info.maxexp, dtype=np.int64)
    p2 = np.ldexp(np.ones(len(ks), dtype=dtype), ks.astype(np.int32))
    got = np.asarray(_C._hd_math("log", p2))
    wide = np.longdouble if dtype == np.float64 else np.float64
    assert (log_ulp_error(got, ks.astype(wide) * np.log(wide(2)), dtype) <= 1.0).all()
    for big in (info.max, np.nextafter(info.max, dtype(0))):
        for fn in ("log", "log1p"):
            g = np.asarray(_C._hd_math(fn, np.array([big], dtype=dtype)))[0]
            assert abs(float(g) - math.log(float(big))) <= float(np.spacing(g)), (fn, big)


# ---- exp (hd_math.h: exp_poly, double only; float's exp is simd::exp_approx)

LN_MAX = 709.782712893384  # ln(DBL_MAX) rounded: the largest x whose exp is finite is near it
LN_SUB = -745.1332191019411  # ln(2^-1075): below, exp rounds to 0


def exp_sweep():
    """2^20 uniform points over [-746, 711], 2^17 on [-1, 1], 2^17 with subnormal results, 2^16
    below the overflow threshold, every double within 2^12 ulps of 0, +-1, the overflow, the
    subnormal and the underflow thresholds, and (k + 1/2) ln 2 for every exponent k with its
    neighbours (the ends of the reduction's interval)."""
    rng = np.random.default_rng(2)
    steps = np.arange(-(1 << 12), 1 << 12, dtype=np.int64)
    near = lambda c: (np.float64(c).view(np.int64) + steps).view(np.float64)  # noqa: E731
    half = (np.arange(-1076, 1025) + 0.5) * math.log(2)
    return np.concatenate(
        [
            rng.uniform(-746.0, 711.0, 1 << 20),
            rng.uniform(-1.0, 1.0, 1 << 17),
            rng.uniform(-745.2, -708.0, 1 << 17),
            rng.uniform(700.0, 709.8, 1 << 16),
            *[near(c) for c in (1.0, -1.0, LN_MAX, -708.3964185322641, LN_SUB)],
            np.abs(near(0.0)),
            -np.abs(near(0.0)),
            half,
            np.nextafter(half, np.inf),
            np.nextafter(half, -np.inf),
        ]
    )


def exp_reference(x):
    """exp in extended precision, with the values past DBL_MAX as +inf (they round to it)."""
    if np.finfo(np.longdouble).nmant >= 63:
        with np.errstate(over="ignore", under="ignore"):
            r = np.exp(x.astype(np.longdouble))
            return x, np.where(np.isinf(r.astype(np.float64)), np.longdouble(np.inf), r)
    mpmath = pytest.importorskip("mpmath")  # longdouble is double here: a sample at high precision
    mpmath.mp.dps = 40
    sub = x[:: max(1, len(x) // 20000)]
    return sub, np.array([float(mpmath.exp(mpmath.mpf(float(v)))) for v in sub])


def test_exp_ulp_error_over_a_dense_sweep():
    # measured (scripts/fit_exp.py --check, 4.4e7 points): 0.61 ulp on the normal results, 0.76 ulp
    # of the subnormal spacing on the subnormal ones (the double rounding of the last product)
    x, r = exp_reference(exp_sweep())
    y = np.asarray(_C._hd_math("exp", x))
    assert y.dtype == np.float64 and y.shape == x.shape
    u = log_ulp_error(y, r, np.float64)
    assert not np.isnan(u).any()
    worst = int(np.argmax(u))
    assert u[worst] <= 1.0, f"exp: {u[worst]:.3f} ulp at x = {x[worst]!r} (got {y[worst]!r})"
    normal = r >= np.finfo(np.float64).tiny
    worst = int(np.argmax(np.where(normal, u, 0)))
    assert u[worst] <= 0.75, f"exp (normal results): {u[worst]:.3f} ulp at x = {x[worst]!r}"


def test_exp_special_values():
    inf, nan = np.inf, np.nan
    tiny = np.finfo(np.float64).smallest_subnormal
    x = np.array([nan, -nan, inf, -inf, 0.0, -0.0, tiny, -tiny, 1e-300, 800.0, 710.0, -746.0, -1e300, 1e300])
    y = np.asarray(_C._hd_math("exp", x))
    assert np.isnan(y[:2]).all()
    np.testing.assert_array_equal(y[2:], [inf, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, inf, inf, 0.0, 0.0, inf])
    assert not np.signbit(y[3])  # +0
    # the overflow threshold: finite at ln(DBL_MAX) rounded down, inf from the first x whose exp rounds past DBL_MAX
    top = np.asarray(_C._hd_math("exp", np.array([LN_MAX, np.nextafter(LN_MAX, inf), 709.79])))
    assert np.isfinite(top[0]) and top[0] > 1.79e308 and np.isinf(top[2])
    with np.errstate(over="ignore"):
        assert np.isinf(top[1]) == np.isinf(np.exp(np.nextafter(LN_MAX, inf)))
    # exactly k ln 2 rounded: 2^k within an ulp, down to the smallest subnormal (gradual underflow)
    ks = np.arange(-1074, 1024)
    got = np.asarray(_C._hd_math("exp", ks * math.log(2)))
    _, ref = exp_reference(ks * math.log(2))
    assert (log_ulp_error(got, ref, np.float64) <= 1.0).all()
    assert (got[:10] > 0).all() and got[0] <= 2 * tiny
    # monotone over a fine grid across the reduction's interval ends and the thresholds
    for c in (0.5 * math.log(2), -0.5 * math.log(2), -708.3964185322641, 700.0):
        g = np.asarray(_C._hd_math("exp", c + np.arange(-2000, 2000) * 1e-12 * max(1.0, abs(c))))
        assert (np.diff(g) >= 0).all(), c


FLT_LN_TINY = -87.33654  # simd::exp_approx's clamps: below, exactly 0 (no subnormal results)
FLT_LN_MAX = 88.72283


def test_exp_float_ulp_error():
    # simd::exp_approx (the float kernels' exp): every 61st float of [-87.33654, 88.72283] plus every
    # float within 2^12 of 0 and +-1, against float64's exp; measured on every float of the range: 0.992 ulp
    lo, hi = np.float32(FLT_LN_TINY), np.float32(FLT_LN_MAX)
    pos = np.arange(0, np.float32(hi).view(np.int32), 61, dtype=np.int32).view(np.float32)
    neg = -np.arange(0, np.float32(-lo).view(np.int32), 61, dtype=np.int32).view(np.float32)
    steps = np.arange(-(1 << 12), 1 << 12, dtype=np.int32)
    near = [(np.float32(c).view(np.int32) + steps).view(np.float32) for c in (1.0, -1.0)]
    x = np.concatenate([pos, neg, np.abs(steps).view(np.float32), -np.abs(steps).view(np.float32)] + near)
    x = x[(x >= lo) & (x <= hi)]
    y = np.asarray(_C._hd_math("exp", x))
    u = ulp_error(y, np.exp(x.astype(np.float64)), np.float32)
    worst = int(np.argmax(u))
    assert u[worst] <= 1.0, f"float exp: {u[worst]:.3f} ulp at x = {x[worst]!r} (got {y[worst]!r})"


def test_exp_float_special_values():
    inf, nan = np.float32(np.inf), np.float32(np.nan)
    x = np.array([0.0, -0.0, -inf, inf, nan, -90.0, -87.34, 88.73, 100.0], dtype=np.float32)
    y = np.asarray(_C._hd_math("exp", x))
    assert y.dtype == np.float32
    assert y[0] == 1 and y[1] == 1 and y[2] == 0 and np.isinf(y[3]) and np.isnan(y[4])
    assert y[5] == 0 and y[6] == 0 and np.isinf(y[7]) and np.isinf(y[8])
    assert np.asarray(_C._hd_math("exp", np.zeros(0))).shape == (0,)


# ---- sin / cos (simd::sincos_v: the features' and haversine's vectorised sin and cos)
@pytest.mark.parametrize("dtype, top, bound", [(np.float32, 1e5, 1.5e-7), (np.float64, 1e8, 4e-16)])
def test_sincos_abs_error(dtype, top, bound):
    # measured (2^21 points per range): float 4.6e-8 / 7.3e-8 on |x| <= pi/4, 1.0e-7 / 1.1e-7 up to
    # 1e5; double 8.2e-17 / 1.4e-16 on |x| <= pi/4, 2.0e-16 up to 1e8 (sin / cos)
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-s, s, 1 << 17) for s in (math.pi / 4, 10.0, top)]).astype(dtype)
    x = np.concatenate([x, (np.arange(-400, 401) * (math.pi / 4)).astype(dtype)])  # the quadrant edges
    for fn, ref in (("sin", np.sin), ("cos", np.cos)):
        y = np.asarray(_C._hd_math(fn, x))
        assert y.dtype == dtype and y.shape == x.shape
        e = np.abs(y.astype(np.longdouble) - ref(x.astype(np.longdouble)))
        worst = int(np.argmax(e))
        assert e[worst] <= bound, f"{fn}: abs error {float(e[worst]):.3e} at x = {x[worst]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sin_relative_near_zero(dtype):
    # |sin x| <= |x| small: the error must be relative (sin r = r + r z P(z)); bound 2 ulp, measured
    # 0.58 (float) / 0.54 (double) ulp
    x = np.geomspace(np.finfo(dtype).tiny, 0.5, 20001).astype(dtype)
    x = np.concatenate([x, -x])
    y = np.asarray(_C._hd_math("sin", x))
    u = ulp_error(y, np.sin(x.astype(np.longdouble)), dtype)
    worst = int(np.argmax(u))
    assert u[worst] <= 2.0, f"sin: {u[worst]:.3f} ulp at x = {x[worst]!r}"
