"""Issue 13 (reliability) for the kernel-sum ops: kernel_sum, kernel_logsumexp, kernel_logsumexp_sq
and the raw ops (+ kernel_sum_bwd / kernel_logsumexp_bwd). Regression tests for the repros that
concern them (meta mixed with CPU in the public and raw ops and the fakes, None and huge sizes
naming the argument, every requires-grad subset, NaN in / NaN out of kernel_logsumexp, the float32
claim with its condition), then a property sweep over bad and odd inputs (deterministic enumeration,
counts printed; tests/kf_reliability.py)."""

import kernelfuse as kf
import kf_reliability as rel
import pytest
import torch
from kernelfuse.reference import kde as ref

ops = torch.ops.kernelfuse
F64 = torch.float64


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _data(m=5, n=4, d=2, seed=0, dtype=F64):
    g = _g(seed)
    return (
        torch.randn(m, d, generator=g, dtype=dtype),
        torch.randn(n, d, generator=g, dtype=dtype),
        torch.rand(n, generator=g, dtype=dtype) + 0.5,
        torch.tensor([0.8, 1.3], dtype=dtype),
    )


def _raw_calls():
    x, y, w, h = _data()
    out = ops.kernel_logsumexp(x, y, w.log(), h, "gaussian", False)
    return [
        ("kernel_sum", ["x", "y", "weights", "bandwidth"], [x, y, w, h, "gaussian", False]),
        ("kernel_logsumexp", ["x", "y", "log_weights", "bandwidth"], [x, y, w.log(), h, "epanechnikov", False]),
        ("kernel_logsumexp_sq", ["x", "y", "log_weights", "bandwidth"], [x, y, w.log(), h, "gaussian", False]),
        (
            "kernel_sum_bwd",
            ["grad", "x", "y", "weights", "bandwidth"],
            [torch.ones(5, dtype=F64), x, y, w, h, "cauchy", False, True, True, True],
        ),
        (
            "kernel_logsumexp_bwd",
            ["grad", "out", "x", "y", "log_weights", "bandwidth"],
            [torch.ones(5, dtype=F64), out, x, y, w.log(), h, "gaussian", False, True, True, True],
        ),
    ]


# ====================================================================== repro 1: meta mixed with CPU
def test_repro1_meta_in_every_position_of_every_raw_op():
    for name, tnames, args in _raw_calls():
        op = getattr(ops, name)
        real = op(*args)
        for an, a in rel.meta_positions(name, tnames, args):
            if an is None:
                res = op(*a)
                for r, e in zip(rel.as_tuple(res), rel.as_tuple(real)):
                    assert r.device.type == "meta" and r.shape == e.shape and r.stride() == e.stride(), name
                continue
            with pytest.raises(ValueError, match=rf"argument '{an}'.*meta"):
                op(*a)


def test_repro1_meta_mixed_with_cpu_public():
    x, y, w, h = _data()
    for fn, wname in (
        (kf.kernel_sum, "weights"),
        (kf.kernel_logsumexp, "log_weights"),
        (
            kf.kernel_logsumexp_sq if hasattr(kf, "kernel_logsumexp_sq") else kf.ops.kde.kernel_logsumexp_sq,
            "log_weights",
        ),
    ):
        args = {"x": x, "y": y, wname: w, "bandwidth": h}
        for name in args:
            a = dict(args, **{name: args[name].to("meta")})
            with pytest.raises(ValueError, match=rf"argument '{name}'.*meta"):
                fn(a["x"], a["y"], a[wname], bandwidth=a["bandwidth"])
        res = fn(x.to("meta"), y.to("meta"), w.to("meta"), bandwidth=h.to("meta"))
        assert all(r.device.type == "meta" and r.shape == (5,) for r in (res if isinstance(res, tuple) else (res,)))


def test_fake_kernels_check_shapes_like_the_kernels():
    x, y, w, h = [t.to("meta") for t in _data()]
    for bad, name in (
        ((x, y[:, :1], None, h), "y"),
        ((x, y, w[:2], h), "weights"),
        ((x, y, None, h[:1].expand(3)), "bandwidth"),
        ((x[0], y, None, h), "x"),
        ((x, y.float(), None, h), "y"),
    ):
        with pytest.raises(ValueError, match=rf"argument '{name}'"):
            ops.kernel_sum(*bad, "gaussian", False)
    with pytest.raises(ValueError, match="argument 'grad'"):
        ops.kernel_sum_bwd(torch.ones(4, device="meta", dtype=F64), x, y, w, h, "gaussian", False, True, True, True)
    with pytest.raises(ValueError, match="argument 'out'"):
        ops.kernel_logsumexp_bwd(
            torch.ones(5, device="meta", dtype=F64),
            torch.ones(3, device="meta", dtype=F64),
            x,
            y,
            w,
            h,
            "gaussian",
            False,
            True,
            True,
            True,
        )


def test_fake_strides_match_real_and_opcheck():
    x, y, w, h = _data(m=6, n=5)
    xt, yt = x.t().contiguous().t(), y.t().contiguous().t()
    wc = torch.rand(3, 5, dtype=F64).t()  # (n, c) transposed
    for args in ((xt, yt, wc, h, "gaussian", False), (xt, yt, None, h[0], "laplacian", False)):
        rel.fake_strides_match(ops.kernel_sum, args)
        torch.library.opcheck(ops.kernel_sum.default, args, test_utils=("test_schema", "test_faketensor"))
    lse = ops.kernel_logsumexp(xt, yt, wc, h, "gaussian", False)
    bargs = (torch.ones(3, 6, dtype=F64).t(), lse, xt, yt, wc, h, "gaussian", False, True, True, True)
    rel.fake_strides_match(ops.kernel_logsumexp_bwd, bargs)
    torch.library.opcheck(ops.kernel_logsumexp_bwd.default, bargs, test_utils=("test_schema", "test_faketensor"))
    rel.fake_strides_match(ops.kernel_logsumexp_sq, (xt, yt, None, h, "gaussian", False))


# ====================================================================== repro 8: None, huge sizes
def test_repro8_none_for_non_optional_raw_arguments():
    for name, tnames, args in _raw_calls():
        tpos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        for i, an in zip(tpos, tnames):
            a = list(args)
            a[i] = None
            if an in ("weights", "log_weights"):  # optional
                getattr(ops, name)(*a)
                continue
            with pytest.raises(ValueError, match=rf"argument '{an}'.*None"):
                getattr(ops, name)(*a)
            a = [t.to("meta") if isinstance(t, torch.Tensor) else t for t in a]
            with pytest.raises(ValueError, match=rf"argument '{an}'.*None"):
                getattr(ops, name)(*a)


def test_repro8_huge_sizes_name_the_argument():
    huge = 2**40
    y = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"argument 'x'.*too large"):
        kf.kernel_sum(torch.randn(1, 2).expand(huge, 2), y)
    with pytest.raises(ValueError, match=r"argument 'y'.*too large"):
        kf.kernel_logsumexp(torch.randn(3, 2), torch.randn(1, 2).expand(huge, 2))
    with pytest.raises(ValueError, match=r"argument 'weights'.*too large"):
        kf.kernel_sum(torch.randn(3, 2), y, torch.ones(1, 1).expand(4, huge))
    with pytest.raises(ValueError, match=r"argument 'x'.*too large"):
        kf.kernel_sum(torch.randn(1, 1, 2).expand(huge, 1, 2), torch.randn(1, 4, 2).expand(huge, 4, 2))


# ====================================================================== repro 4: every requires-grad subset
def test_repro4_every_requires_grad_subset(capsys):
    c = rel.Counts()
    x, y, w, h = _data(seed=3)
    for kernel in ("gaussian", "epanechnikov", "matern32"):
        # (compact kernel: every query within reach of a point, so that no log-sum is -inf, where the
        # reference's autograd gives NaN and ours the exact 0: test_logsumexp_grad_where_no_point_contributes)
        ins = {"x": x, "y": y, "w": w, "h": h * (4 if kernel == "epanechnikov" else 1)}
        rel.grad_subsets(
            c,
            f"kernel_sum[{kernel}]",
            lambda t: kf.kernel_sum(t["x"], t["y"], t["w"], kernel=kernel, bandwidth=t["h"]),
            lambda t: ref.kernel_sum(t["x"], t["y"], t["w"], kernel=kernel, bandwidth=t["h"]),
            ins,
        )
        lw = dict(ins, w=w.log())
        rel.grad_subsets(
            c,
            f"kernel_logsumexp[{kernel}]",
            lambda t: kf.kernel_logsumexp(t["x"], t["y"], t["w"], kernel=kernel, bandwidth=t["h"]),
            lambda t: ref.kernel_logsumexp(t["x"], t["y"], t["w"], kernel=kernel, bandwidth=t["h"]),
            lw,
        )
    ins = {"x": x[:, :2].clone(), "y": y, "h": h[0].clone()}  # haversine: the bandwidth gradient in the pass
    rel.grad_subsets(
        c,
        "kernel_sum[haversine]",
        lambda t: kf.kernel_sum(t["x"], t["y"], metric="haversine", bandwidth=t["h"]),
        lambda t: ref.kernel_sum(t["x"], t["y"], metric="haversine", bandwidth=t["h"]),
        ins,
    )
    c.report(capsys, "kde grads")


def test_logsumexp_grad_where_no_point_contributes():
    """A query out of every point's reach has log-sum -inf, independent of the inputs: gradient 0
    (the reference's autograd gives NaN there: exp(-inf - (-inf)))."""
    x = torch.tensor([[0.0, 0.0], [9.0, 9.0]], dtype=F64, requires_grad=True)
    y = torch.tensor([[0.3, 0.1], [-0.2, 0.4]], dtype=F64, requires_grad=True)
    lw = torch.tensor([0.1, -0.3], dtype=F64, requires_grad=True)
    out = kf.kernel_logsumexp(x, y, lw, kernel="epanechnikov", bandwidth=1.0)
    assert out[1] == -float("inf") and torch.isfinite(out[0])
    gx1, gy1, gw1 = torch.autograd.grad(kf.kernel_logsumexp(x, y, lw, kernel="epanechnikov")[1:].sum(), [x, y, lw])
    assert torch.equal(gx1, torch.zeros_like(gx1)) and torch.equal(gy1, torch.zeros_like(gy1))
    assert torch.equal(gw1, torch.zeros_like(gw1))


def test_nan_in_nan_out_compact_kernels_and_log_domain_gradients():
    """A compact kernel's support test rejected a NaN distance (a 0 term, finite result); the
    log-domain backward skipped NaN terms (finite gradients of a NaN output)."""
    x, y, w, h = _data(seed=5)
    xn = x.clone()
    xn[2, 1] = float("nan")
    for kernel in ("tophat", "epanechnikov", "linear", "cosine"):
        out = kf.kernel_sum(xn, y, w, kernel=kernel, bandwidth=2.0)
        assert torch.isnan(out[2]) and torch.isfinite(out[[0, 1, 3, 4]]).all(), kernel
        torch.testing.assert_close(out, ref.kernel_sum(xn, y, w, kernel=kernel, bandwidth=2.0), equal_nan=True)
        yn = y.clone()
        yn[1, 0] = float("nan")
        assert torch.isnan(kf.kernel_sum(x, yn, w, kernel=kernel, bandwidth=2.0)).all(), kernel
    # an infinite query is at infinite distance: 0 (compact and not), as the reference
    xi = x.clone()
    xi[2, 1] = float("inf")
    for kernel in ("epanechnikov", "gaussian"):
        out = kf.kernel_sum(xi, y, w, kernel=kernel, bandwidth=2.0)
        assert out[2] == 0
        torch.testing.assert_close(out, ref.kernel_sum(xi, y, w, kernel=kernel, bandwidth=2.0))
    # log-domain backward: the gradients through a NaN output are NaN (x's row, all of y, weights)
    leaves = [t.clone().requires_grad_(True) for t in (xn, y, w.log())]
    out = kf.kernel_logsumexp(*leaves, bandwidth=h)
    gx, gy, gw = torch.autograd.grad(out, leaves, torch.ones_like(out))
    assert torch.isnan(gx[2]).all() and torch.isfinite(gx[[0, 1, 3, 4]]).all()
    assert torch.isnan(gy).all() and torch.isnan(gw).all()


# ====================================================================== repro 3: NaN in, NaN out
def test_kernel_logsumexp_nan_in_nan_out():
    """A NaN query coordinate gave -inf (kernel_sum gave NaN); now NaN, as do a NaN point (every
    query) and a NaN log-weight (its column), in every entry point, with and without batches."""
    x = torch.tensor([[float("nan")]])
    assert torch.isnan(kf.kernel_logsumexp(x, torch.zeros(3, 1))).all()
    assert torch.isnan(kf.kernel_sum(x, torch.zeros(3, 1))).all()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, dtype=torch.float64, generator=g)
    y = torch.randn(7, 2, dtype=torch.float64, generator=g)
    xn = x.clone()
    xn[2, 1] = float("nan")
    out = kf.kernel_logsumexp(xn, y, kernel="epanechnikov", bandwidth=0.7)
    ref = kf.kernel_logsumexp(x, y, kernel="epanechnikov", bandwidth=0.7)
    assert torch.isnan(out[2]) and torch.equal(out[[0, 1, 3, 4]], ref[[0, 1, 3, 4]])
    yn = y.clone()
    yn[4, 0] = float("nan")
    assert torch.isnan(kf.kernel_logsumexp(x, yn)).all()
    lw = torch.zeros(7, 3, dtype=torch.float64)
    lw[1, 2] = float("nan")
    o = kf.kernel_logsumexp(x, y, lw)
    assert torch.isnan(o[:, 2]).all() and torch.isfinite(o[:, :2]).all()
    lse, lse2 = torch.ops.kernelfuse.kernel_logsumexp_sq(
        xn, y, None, torch.tensor(1.0, dtype=torch.float64), "gaussian", False
    )
    assert torch.isnan(lse[2]) and torch.isnan(lse2[2]) and torch.isfinite(lse[[0, 1, 3, 4]]).all()
    ob = kf.kernel_logsumexp(torch.stack([xn, x]), torch.stack([y, y]))
    assert torch.isnan(ob[0, 2]) and torch.isfinite(ob[1]).all()


# ====================================================================== repro 9: the float32 claim
def test_repro9_float32_accuracy_claim_and_its_condition():
    """README: float32 within 2e-6 relative of float64 when the sum is carried by terms with
    k >~ 0.05; when every term is tiny (tails, a compact kernel's edge) the input rounding is
    amplified by the profile's conditioning: stated bound ~5.5e-5 (linear), 9.5e-6 (gaussian)."""
    g = _g(12)
    x = torch.randn(64, 3, generator=g, dtype=F64)
    y = torch.randn(2000, 3, generator=g, dtype=F64)

    def relerr(kernel, h, xx, yy):
        out = kf.kernel_sum(xx.float(), yy.float(), kernel=kernel, bandwidth=h).double()
        exp = ref.kernel_sum(xx.float().double(), yy.float().double(), kernel=kernel, bandwidth=h)  # same inputs
        keep = exp > 0
        return ((out - exp).abs()[keep] / exp[keep]).max().item()

    assert relerr("gaussian", 1.0, x, y) < 2e-6
    # every term tiny: gaussian tails (queries far from the points), points near the linear kernel's edge
    assert relerr("gaussian", 0.5, x + 4.0, y) < 1e-5 * 2
    u = torch.randn(300, 3, generator=g, dtype=F64)
    yy = x[:1] + 0.999 * u / u.norm(dim=1, keepdim=True)  # |x0 - y| = 0.999: k = 0.001 each
    assert relerr("linear", 1.0, x[:1], yy) < 5.5e-5 * 2


# ====================================================================== property sweep
def test_property_sweep_kde_ops(capsys):
    c = rel.Counts()
    x, y, w, h = _data(m=5, n=4, d=2, seed=21)
    hs = h[0].clone()
    for kernel in ("gaussian", "epanechnikov"):
        for name, fn, rfn, wv in (
            ("kernel_sum", kf.kernel_sum, ref.kernel_sum, w),
            ("kernel_logsumexp", kf.kernel_logsumexp, ref.kernel_logsumexp, w.log()),
        ):
            rel.sweep(
                c,
                f"{name}[{kernel}]",
                rel.Builder(
                    lambda t: fn(t["x"], t["y"], t["weights"], kernel=kernel, bandwidth=t["bandwidth"]),
                    {"x": x, "y": y, "weights": wv, "bandwidth": h},
                ),
                lambda t: rfn(t["x"], t["y"], t["weights"], kernel=kernel, bandwidth=t["bandwidth"]),
                names=["x", "y", "weights", "log_weights", "bandwidth", "exclude_self"],
            )
    rel.sweep(
        c,
        "kernel_sum[no weights, scalar h, batched]",
        rel.Builder(
            lambda t: kf.kernel_sum(t["x"], t["y"], kernel="cauchy", bandwidth=t["bandwidth"]),
            {"x": torch.stack([x, x + 1]), "y": torch.stack([y, -y]), "bandwidth": hs},
        ),
        lambda t: ref.kernel_sum(t["x"], t["y"], kernel="cauchy", bandwidth=t["bandwidth"]),
    )
    rel.sweep(
        c,
        "raw kernel_logsumexp_sq",
        rel.Builder(
            lambda t: ops.kernel_logsumexp_sq(t["x"], t["y"], t["log_weights"], t["bandwidth"], "laplacian", False),
            {"x": x, "y": y, "log_weights": w.log(), "bandwidth": h},
        ),
        lambda t: ref.kernel_logsumexp_sq(
            t["x"], t["y"], t["log_weights"], kernel="laplacian", bandwidth=t["bandwidth"]
        ),
    )
    rel.sweep(
        c,
        "raw kernel_sum[exclude_self]",
        rel.Builder(
            lambda t: ops.kernel_sum(t["x"], t["y"], t["weights"], t["bandwidth"], "matern52", True),
            {"x": x[:4], "y": y, "weights": w, "bandwidth": hs},
        ),
        lambda t: ref.kernel_sum(
            t["x"], t["y"], t["weights"], kernel="matern52", bandwidth=t["bandwidth"], exclude_self=True
        ),
        names=["x", "y", "weights", "bandwidth", "exclude_self"],
    )

    def grads(log_domain):
        def f(t):
            leaves = {k: t[k].detach().to(F64).clone().requires_grad_(True) for k in ("x", "y", "weights")}
            rf = ref.kernel_logsumexp if log_domain else ref.kernel_sum
            keep = slice(None)
            if log_domain:  # queries no point reaches (log-sum -inf) contribute exactly 0 (the reference's
                # autograd gives NaN there: exp(-inf - (-inf))): left out of the reference's graph
                with torch.no_grad():
                    keep = ~torch.isneginf(
                        rf(t["x"], t["y"], t["weights"], kernel="gaussian", bandwidth=t["bandwidth"])
                    )
            out = rf(leaves["x"][keep], leaves["y"], leaves["weights"], kernel="gaussian", bandwidth=t["bandwidth"])
            gs = torch.autograd.grad(out, list(leaves.values()), t["grad"].to(F64)[keep], allow_unused=True)
            return tuple(torch.zeros_like(leaves[k]) if g is None else g for k, g in zip(leaves, gs)) + (None,)

        return f

    gq = torch.randn(5, dtype=F64, generator=_g(22))
    rel.sweep(
        c,
        "raw kernel_sum_bwd",
        rel.Builder(
            lambda t: ops.kernel_sum_bwd(
                t["grad"], t["x"], t["y"], t["weights"], t["bandwidth"], "gaussian", False, True, True, True
            ),
            {"grad": gq, "x": x, "y": y, "weights": w, "bandwidth": h},
            strict=("grad",),
        ),
        grads(False),
    )
    rel.sweep(
        c,
        "raw kernel_logsumexp_bwd",
        rel.Builder(
            lambda t: ops.kernel_logsumexp_bwd(
                t["grad"],
                ops.kernel_logsumexp(t["x"], t["y"], t["weights"], t["bandwidth"], "gaussian", False),
                t["x"],
                t["y"],
                t["weights"],
                t["bandwidth"],
                "gaussian",
                False,
                True,
                True,
                True,
            ),
            {"grad": gq, "x": x, "y": y, "weights": w.log(), "bandwidth": h},
            strict=("grad",),
        ),
        lambda t: grads(True)(t),
        names=["grad", "out", "x", "y", "weights", "log_weights", "bandwidth"],
    )
    c.report(capsys, "kde")
