"""Our branch-free asin / acos / log / log1p of the CPU kernels (csrc/common/hd_math.h), through the
debug entry kernelfuse._C._hd_math (compiled with the kernels' flags): ulp error over dense sweeps
against float64 (for float) / extended precision (for double), and the special values.
asin / acos on [-1, 1] (float: every 397th float plus every float near 0, +-1/2 and +-1; double:
2^20 uniform points plus the same neighbourhoods): bounds float <= 2 ulp, double <= 4 ulp
(measured: 1.69 and 1.67, scripts/fit_acos_asin.py --check, which sweeps every float).
log / log1p (float: every float of [sqrt(1/2), sqrt(2)) - every reduced argument - plus every 509th
float of the domain; double: 2^20 random bit patterns and the neighbourhoods of log_sweep): bound
1 ulp (measured: 0.758 float, 0.749 / 0.746 double, scripts/fit_log.py --check, which sweeps every
float)."""

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
