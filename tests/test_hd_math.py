"""Our branch-free asin / acos of the CPU kernels (csrc/common/hd_math.h), through the debug entry
kernelfuse._C._hd_math (compiled with the kernels' flags): ulp error over a dense sweep of [-1, 1]
(float: every 397th float plus every float near 0, +-1/2 and +-1; double: 2^20 uniform points plus
the same neighbourhoods) against float64 (for float) / extended precision (for double), and the
special values. Bounds: float <= 2 ulp, double <= 4 ulp (measured: 1.69 and 1.67,
scripts/fit_acos_asin.py --check, which sweeps every float)."""

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
