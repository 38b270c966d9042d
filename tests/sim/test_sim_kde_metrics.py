"""kde family under the CUDA simulator (csrc/kde/kernel_sum_cuda.cu, the map of its instantiations:
test_sim_kde.py): the distance metrics (euclidean, manhattan, chebyshev, minkowski, haversine)
forward and backward on the register buckets and the generic path, the in-pass bandwidth gradient,
chebyshev ties, and the exact support test of the compact kernels on integer data at dist = h."""

import itertools
import math

import pytest
import torch
from conftest import assert_close_to_ref, cpu_ops, sim_ops
from kernelfuse.reference import kde as ref
from sim_kde_common import (
    BF16,
    COMPACT,
    F16,
    F32,
    F64,
    _acc,
    _bandwidth,
    _dt,
    _pts,
    _weights,
    chunk,
    reg_max,
    run_bwd,
    run_fwd,
)

# ---------------------------------------------------------------- distance metrics
# metric is a runtime switch of the same 48 instantiations (uniform across the grid): the
# register path (whole rows: every metric, haversine at d == 2) and the generic path (distances
# accumulated per DC chunk; chebyshev's first maximiser tracked against the block's gradient
# chunk). With a scalar bandwidth the compact kernels decide dist < h on unscaled distances.
METRICS = ref.METRICS
P = 3.0


def _mpts(metric, shape, dtype, seed):
    if metric != "haversine":
        return _pts(shape, dtype, seed)
    g = torch.Generator().manual_seed(seed)
    lat = (torch.rand(*shape[:-1], 1, generator=g, dtype=F64) - 0.5) * 2.0
    lon = (torch.rand(*shape[:-1], 1, generator=g, dtype=F64) - 0.5) * 4.0
    return torch.cat([lat, lon], -1).to(dtype)


def _mbandwidth(metric, kind, d, dtype, kernel):
    """s = (dist / h)^2 of order 1 for every metric and d (compact kernels: points on both sides)."""
    if metric == "haversine":
        return torch.tensor(0.9 if kernel in COMPACT else 0.6, dtype=_acc(dtype))
    if metric == "euclidean":
        return _bandwidth(kind, d, dtype, kernel)
    f = 1.1 if kernel in COMPACT else 0.8
    base = {
        "manhattan": 1.13 * d,
        "chebyshev": 1.41 * (0.8 + math.sqrt(2 * math.log(max(d, 2)))),
        "minkowski": (4.51 * d) ** (1 / P),
    }[metric] * f
    if kind == "scalar":
        return torch.tensor(base, dtype=_acc(dtype))
    fd = torch.tensor([0.8, 1.0, 1.25, 0.9, 1.1], dtype=F64).repeat(d // 5 + 1)[:d]
    return (base * fd).to(_acc(dtype))


def _metric_dims(metric, dtype, bwd):
    """Register buckets 2 / 4 / reg_max (d = 9) and the generic path (two chunks and a partial one)."""
    if metric == "haversine":
        return [2]
    return [2, 3, 9, reg_max(dtype, bwd) + 1 if bwd else 2 * chunk(dtype) + 3 + reg_max(dtype, False)]


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("metric", METRICS)
def test_forward_metrics(metric, dtype):
    """Every metric, forward modes, compact (exact support with a scalar bandwidth) and smooth
    kernels, scalar and per-dimension bandwidths, every dimension bucket / the generic path."""
    m, n = 37, 70
    for i, d in enumerate(_metric_dims(metric, dtype, False)):
        x, y = _mpts(metric, (m, d), dtype, 100 + i), _mpts(metric, (n, d), dtype, 110 + i)
        w = _weights(3 if i % 2 else "vec", n, dtype, 120 + i)
        for kernel, kind in (
            ("gaussian", "dim"),
            ("epanechnikov", "scalar"),
            ("tophat", "dim"),
            ("cosine", "scalar"),
            ("laplacian", "scalar"),
            ("linear", "dim"),
        ):
            if metric == "haversine":
                kind = "scalar"
            h = _mbandwidth(metric, kind, d, dtype, kernel)
            kw = dict(metric=metric, p=P)
            run_fwd("sum", x, y, w, h, kernel, **kw)
            f = 50.0 if kernel != "gaussian" and dtype == F32 else 1.0  # compact: k ~ 1e-2 at the edge
            if kernel in ("gaussian", "epanechnikov", "linear"):
                run_fwd("lse", x, y, w.log(), h, kernel, factor=f, **kw)
            if kernel == "cosine":
                run_fwd("lse_sq", x, y, None, h, kernel, factor=50.0 if dtype == F32 else 1.0, **kw)


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize("metric", METRICS)
def test_backward_metrics(metric, dtype):
    """Every metric in both backward ops, all gradients (x, y, weights, and the in-pass bandwidth
    gradient of a scalar bandwidth), register buckets and the generic path (split gradient chunks)."""
    m, n = 33, 70
    for i, d in enumerate(_metric_dims(metric, dtype, True)):
        x, y = _mpts(metric, (m, d), dtype, 130 + i), _mpts(metric, (n, d), dtype, 140 + i)
        w = _weights(2 if i % 2 else "vec", n, dtype, 150 + i)
        for kernel, kind in (("gaussian", "scalar"), ("epanechnikov", "dim"), ("cosine", "scalar")):
            if metric == "haversine":
                kind = "scalar"
            h = _mbandwidth(metric, kind, d, dtype, kernel)
            if kernel in COMPACT:  # log domain: every query needs a point in the support
                h = h * 2.0
            kw = dict(metric=metric, p=P, need_h=kind == "scalar")
            f = 4.0 if metric in ("minkowski", "haversine") else 2.0  # pow / trig chains in float32
            run_bwd("sum", x, y, w, h, kernel, factor=f, **kw)
            run_bwd("lse", x, y, w.log(), h, kernel, factor=f, **kw)


@pytest.mark.parametrize("metric", ["chebyshev", "haversine", "minkowski"])
@pytest.mark.parametrize("need", list(itertools.product([False, True], repeat=3)), ids=str)
def test_backward_metric_need_subsets(metric, need):
    """Every need_x / need_y / need_weights subset, with the bandwidth gradient on and off."""
    d = 2 if metric == "haversine" else 40  # 40: the generic Backward path (float reg_max 32)
    x, y = _mpts(metric, (20, d), F32, 160), _mpts(metric, (30, d), F32, 161)
    w = _weights(3, 30, F32, 162)
    h = _mbandwidth(metric, "scalar", d, F32, "gaussian")
    for need_h in (False, True):
        run_bwd("sum", x, y, w, h, "gaussian", need=need, metric=metric, p=P, need_h=need_h, factor=4.0)
        run_bwd("lse", x, y, w.log(), h, "gaussian", need=need, metric=metric, p=P, need_h=need_h, factor=4.0)


@pytest.mark.parametrize("d", [3, 9, 40, 70])
def test_chebyshev_ties_first_coordinate(d):
    """Integer data: many chebyshev ties. The gradient goes to the first maximising coordinate on
    every path (register: argmax in registers; generic d = 40 / 70: the chunk flag), as on the CPU."""
    g = torch.Generator().manual_seed(163)
    x = torch.randint(0, 4, (25, d), generator=g).double()
    y = torch.randint(0, 4, (60, d), generator=g).double()
    w = _weights("vec", 60, F64, 164)
    gr = _pts((25,), F64, 165)
    for kernel in ("gaussian", "epanechnikov"):
        h = torch.tensor(3.5 if kernel == "gaussian" else 4.5, dtype=F64)
        for hh in (h, h.expand(d).contiguous()):
            got = sim_ops.kernel_sum_bwd(gr, x, y, w, hh, kernel, False, True, True, True, "chebyshev", 2.0, False)
            exp = cpu_ops.kernel_sum_bwd(gr, x, y, w, hh, kernel, False, True, True, True, "chebyshev", 2.0, False)
            for a, b in zip(got[:3], exp[:3]):
                assert_close_to_ref(a, b, F64)
            # the rule itself: no row of the x gradient has two nonzero entries for one pair
            one = sim_ops.kernel_sum_bwd(
                gr[:1], x[:1], y[:1], None, hh, kernel, False, True, False, False, "chebyshev", 2.0, False
            )[0]
            assert int((one != 0).sum()) <= 1


@pytest.mark.parametrize("dtype", [F64, F32], ids=_dt)
@pytest.mark.parametrize(
    "metric,d",
    [("euclidean", 3), ("euclidean", 64), ("euclidean", 70), ("manhattan", 5), ("chebyshev", 40), ("chebyshev", 70)],
)
def test_exact_support_integer_boundary(metric, d, dtype):
    """Integer data with many pairs at exactly dist = h: the tophat count is exact (unscaled
    distances against h^2 / h), on the register and the generic path, float32 included."""
    g = torch.Generator().manual_seed(166)
    x = torch.randint(0, 5, (40, d), generator=g)
    y = torch.randint(0, 5, (70, d), generator=g)
    diff = (x[:, None, :] - y[None, :, :]).abs()
    D = (diff * diff).sum(-1) if metric == "euclidean" else (diff.sum(-1) if metric == "manhattan" else diff.amax(-1))
    if metric == "euclidean":  # an integer h with h^2 an attained squared distance, near the median
        med = D.double().median().sqrt().item()
        h = float(min((k for k in range(1, 40) if (D == k * k).any()), key=lambda k: abs(k - med)))
    else:
        h = float(D.flatten().median().item())  # an attained integer distance
    thr = h * h if metric == "euclidean" else h
    assert int((D.double() == thr).sum()) > 0  # boundary pairs exist
    count = (D.double() < thr).sum(1).double()
    ht = torch.tensor(h, dtype=_acc(dtype))
    out = sim_ops.kernel_sum(x.to(dtype), y.to(dtype), None, ht, "tophat", False, metric, 2.0)
    assert torch.equal(out.double(), count)
    lo = sim_ops.kernel_logsumexp(x.to(dtype), y.to(dtype), None, ht, "epanechnikov", False, metric, 2.0)
    run_fwd(
        "lse", x.to(dtype), y.to(dtype), None, ht, "epanechnikov", metric=metric, factor=50.0 if dtype == F32 else 1.0
    )
    assert torch.equal(torch.isfinite(lo), count > 0)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=_dt)
def test_half_types_metrics(dtype):
    """float16 / bfloat16 storage (float accumulation) with the other metrics."""
    for metric, d in (("manhattan", 3), ("chebyshev", 40), ("haversine", 2), ("minkowski", 5)):
        x, y = _mpts(metric, (30, d), dtype, 167), _mpts(metric, (50, d), dtype, 168)
        w = _weights("vec", 50, dtype, 169)
        h = _mbandwidth(metric, "scalar", d, dtype, "gaussian")
        run_fwd("sum", x, y, w, h, "gaussian", metric=metric, p=P)
        run_fwd("lse", x, y, w.log(), h, "epanechnikov", metric=metric, p=P)
        run_bwd("sum", x, y, w, h, "gaussian", metric=metric, p=P, need_h=True)
