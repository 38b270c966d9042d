"""Checks run inside the spawned gloo worlds of tests/test_distributed.py (listed in tests/dist_checks.py):
the distributed kernel sums (every schedule, batches, exclude_self and the _sq twin, schedule="auto"
and errors, torch.compile) and the distributed kde estimators (KernelDensity, GaussianKDE,
PrivateKernelDensity) against the single-process results on the concatenated data."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from dist_checks_common import F64_RTOL, _gen, _layout, _offsets, _relerr, _sum_ranks


# ---------------------------------------------------------------- kernel sums
def check_schedules(rank, P, kd, kf):
    """Every schedule x {sum, logsumexp} x configurations: outputs and the four gradients."""
    ncount, mcount = _layout(P)
    N, M = sum(ncount), sum(mcount)
    configs = [
        dict(
            kernel="gaussian",
            bandwidth=torch.tensor([0.7, 0.9, 1.3], dtype=torch.float64),
            metric="euclidean",
            c=2,
            dtype=torch.float64,
        ),
        dict(
            kernel="epanechnikov",
            bandwidth=torch.tensor(1.6, dtype=torch.float64),
            metric="manhattan",
            c=0,
            dtype=torch.float64,
        ),
        dict(
            kernel="matern32",
            bandwidth=torch.tensor(0.8, dtype=torch.float64),
            metric="haversine",
            c=0,
            dtype=torch.float64,
            d=2,
        ),
        dict(
            kernel="laplacian",
            bandwidth=torch.tensor(0.9, dtype=torch.float32),
            metric="euclidean",
            c=1,
            dtype=torch.float32,
        ),
    ]
    fails = []
    for ci, cfg in enumerate(configs):
        dt, d, c = cfg["dtype"], cfg.get("d", 3), cfg["c"]
        g = _gen(100 + ci)
        X = torch.randn(M, d, generator=g, dtype=torch.float64).to(dt)
        Y = torch.randn(N, d, generator=g, dtype=torch.float64).to(dt)
        W = (
            torch.rand(N, c, generator=g, dtype=torch.float64) if c else torch.rand(N, generator=g, dtype=torch.float64)
        ).to(dt)
        tol = F64_RTOL if dt == torch.float64 else 2e-5
        oy, ny = _offsets(ncount, rank)
        ox, nx = _offsets(mcount, rank)
        for mode in ("sum", "lse"):
            fd = kd.kernel_sum if mode == "sum" else kd.kernel_logsumexp
            fs = kf.kernel_sum if mode == "sum" else kf.kernel_logsumexp
            wt = W if mode == "sum" else W.log()
            kw = dict(kernel=cfg["kernel"], metric=cfg["metric"])
            Xr, Yr, Wr, Hr = [t.clone().requires_grad_() for t in (X, Y, wt, cfg["bandwidth"])]
            ref = fs(Xr, Yr, Wr, bandwidth=Hr, **kw)
            gout = torch.randn(ref.shape, generator=_gen(7), dtype=torch.float64).to(dt)
            (ref * gout).sum().backward()
            for sched in ("reduce", "local", "ring", "gather", None):
                xin = X if sched == "reduce" else X[ox : ox + nx]
                yin, win = (Y, wt) if sched == "local" else (Y[oy : oy + ny], wt[oy : oy + ny])
                xin, yin, win, hin = [t.clone().requires_grad_() for t in (xin, yin, win, cfg["bandwidth"])]
                extra = dict(x_sharded=True, y_sharded=True) if sched is None else {}
                out = fd(xin, yin, win, bandwidth=hin, schedule=sched, **kw, **extra)
                xsl = slice(None) if sched == "reduce" else slice(ox, ox + nx)
                ysl = slice(None) if sched == "local" else slice(oy, oy + ny)
                # objective: the sum of the ranks' losses; a replicated output counts once
                ((out * gout[xsl]).sum() / (P if sched == "reduce" else 1)).backward()
                gx = _sum_ranks(xin.grad) if sched == "reduce" else xin.grad
                gy, gw = (_sum_ranks(yin.grad), _sum_ranks(win.grad)) if sched == "local" else (yin.grad, win.grad)
                errs = {
                    "out": _relerr(out.detach(), ref.detach()[xsl]),
                    "gx": _relerr(gx, Xr.grad[xsl]),
                    "gy": _relerr(gy, Yr.grad[ysl]),
                    "gw": _relerr(gw, Wr.grad[ysl]),
                    "gh": _relerr(_sum_ranks(hin.grad), Hr.grad),
                }
                bad = {k: v for k, v in errs.items() if not v <= tol * (10 if k != "out" else 1)}
                if bad:
                    fails.append(f"config {ci} {mode} {sched}: {bad}")
    return "; ".join(fails) or None


def check_batched(rank, P, kd, kf):
    """Batched (B, n, d) points with (B, n, c) weights, ring, reduce and gather, with gradients."""
    ncount, mcount = _layout(P)
    N, M, B = sum(ncount), sum(mcount), 2
    g = _gen(5)
    X, Y = (
        torch.randn(B, M, 2, generator=g, dtype=torch.float64),
        torch.randn(B, N, 2, generator=g, dtype=torch.float64),
    )
    W = torch.rand(B, N, 3, generator=g, dtype=torch.float64)
    oy, ny = _offsets(ncount, rank)
    ox, nx = _offsets(mcount, rank)
    fails = []
    for sched in ("ring", "reduce", "gather"):
        Xr, Yr, Wr = [t.clone().requires_grad_() for t in (X, Y, W)]
        ref = kf.kernel_sum(Xr, Yr, Wr, bandwidth=0.8)
        ref.sum().backward()
        xin = X if sched == "reduce" else X[:, ox : ox + nx]
        xin, yin, win = [t.clone().requires_grad_() for t in (xin, Y[:, oy : oy + ny], W[:, oy : oy + ny])]
        out = kd.kernel_sum(xin, yin, win, bandwidth=0.8, schedule=sched)
        (out.sum() / (P if sched == "reduce" else 1)).backward()
        xsl = slice(None) if sched == "reduce" else slice(ox, ox + nx)
        gx = _sum_ranks(xin.grad) if sched == "reduce" else xin.grad
        e = max(
            _relerr(out.detach(), ref.detach()[:, xsl]),
            _relerr(gx, Xr.grad[:, xsl]),
            _relerr(yin.grad, Yr.grad[:, oy : oy + ny]),
            _relerr(win.grad, Wr.grad[:, oy : oy + ny]),
        )
        if not e <= 1e-11:
            fails.append(f"{sched}: {e}")
    return "; ".join(fails) or None


def check_exclude_self_and_sq(rank, P, kd, kf):
    """Leave-one-out sums on the ring (x and y the same shards) and the (lse, lse2) pair."""
    ncount, _ = _layout(P)
    N = sum(ncount)
    Y = torch.randn(N, 3, generator=_gen(9), dtype=torch.float64)
    oy, ny = _offsets(ncount, rank)
    ys = Y[oy : oy + ny].clone().requires_grad_()
    Yr = Y.clone().requires_grad_()
    h1 = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    h2 = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    ref = kf.kernel_logsumexp(Yr, Yr, exclude_self=True, bandwidth=h1)
    fin = torch.isfinite(ref)
    (ref[fin] - 3 * torch.log(h1)).sum().backward()  # the bandwidth also outside the op: a LOO likelihood
    out = kd.kernel_logsumexp(ys, ys, exclude_self=True, bandwidth=h2, x_sharded=True)  # auto: ring
    o_fin = torch.isfinite(out)
    (out[o_fin] - 3 * torch.log(h2)).sum().backward()
    fails = []
    e = max(
        _relerr(out.detach(), ref.detach()[oy : oy + ny]),
        _relerr(ys.grad, Yr.grad[oy : oy + ny]),
        _relerr(_sum_ranks(h2.grad), h1.grad),
    )
    if not e <= 1e-11:
        fails.append(f"exclude_self: {e}")
    l1, l2 = kf.ops.kde.kernel_logsumexp_sq(Y, Y, bandwidth=0.6)
    for sched in ("reduce", "ring"):
        q = Y if sched == "reduce" else Y[oy : oy + ny]
        a, b = kd.kernel_logsumexp_sq(q, Y[oy : oy + ny], bandwidth=0.6, schedule=sched)
        sl = slice(None) if sched == "reduce" else slice(oy, oy + ny)
        e = max(_relerr(a, l1[sl]), _relerr(b, l2[sl]))
        if not e <= F64_RTOL:
            fails.append(f"sq {sched}: {e}")
    try:
        kd.kernel_sum(Y[:3], Y[oy : oy + ny], exclude_self=True, schedule="reduce")
        fails.append("exclude_self with reduce did not raise")
    except ValueError as ex:
        if "exclude_self" not in str(ex):
            fails.append(f"bad message: {ex}")
    return "; ".join(fails) or None


def check_auto_and_errors(rank, P, kd, kf):
    fails = []
    cs = kd.choose_schedule
    if not (
        cs(False, True) == "reduce"
        and cs(True, False) == "local"
        and cs(False, False) is None
        and cs(True, True, gathered_bytes=10) == "gather"
        and cs(True, True, gathered_bytes=1 << 40) == "ring"
        and cs(True, True, exclude_self=True) == "ring"
    ):
        fails.append("choose_schedule")
    # the ranks disagree on d: every rank raises the same ValueError (no hang)
    d = 3 if rank == 0 else 4
    try:
        kd.kernel_sum(torch.zeros(2, d, dtype=torch.float64), torch.zeros(3, d, dtype=torch.float64))
        fails.append("mismatched d did not raise")
    except ValueError as ex:
        if "disagree" not in str(ex):
            fails.append(f"bad message: {ex}")
    try:  # replicated x of different sizes
        kd.kernel_sum(torch.zeros(2 + rank, 2, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64))
        if P > 1:
            fails.append("uneven replicated x did not raise")
    except ValueError as ex:
        if "argument 'x'" not in str(ex):
            fails.append(f"bad message: {ex}")
    try:
        kd.kernel_sum(torch.zeros(2, 2), torch.zeros(2, 2), schedule="tree")
        fails.append("bad schedule did not raise")
    except ValueError as ex:
        if "argument 'schedule'" not in str(ex):
            fails.append(f"bad message: {ex}")
    try:
        kd.kernel_sum(torch.zeros(2, 2), torch.zeros(2, 2), schedule="ring", x_sharded=False)
        fails.append("inconsistent layout did not raise")
    except ValueError as ex:
        if "argument 'x_sharded'" not in str(ex):
            fails.append(f"bad message: {ex}")
    return "; ".join(fails) or None


def check_compile(rank, P, kd, kf):
    """torch.compile over a training-style step calling the reduce and ring schedules (the
    collectives run eagerly: graph breaks); loss and bandwidth gradient equal to eager."""
    ncount, mcount = _layout(P)
    N, M = sum(ncount), sum(mcount)
    g = _gen(11)
    X, Y = torch.randn(M, 3, generator=g, dtype=torch.float64), torch.randn(N, 3, generator=g, dtype=torch.float64)
    oy, ny = _offsets(ncount, rank)
    ox, nx = _offsets(mcount, rank)

    def step(xr, xm, y, h):
        a = kd.kernel_logsumexp(xr, y, bandwidth=h, schedule="reduce")
        b = kd.kernel_sum(xm, y, bandwidth=h, schedule="ring")
        return (a**2).sum() / P + (b**2).sum()

    torch._dynamo.reset()
    cstep = torch.compile(step, backend="aot_eager")
    h1 = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    h2 = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    l1 = step(X, X[ox : ox + nx], Y[oy : oy + ny], h1)
    l1.backward()
    l2 = cstep(X, X[ox : ox + nx], Y[oy : oy + ny], h2)
    l2.backward()
    hr = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    ref = (kf.kernel_logsumexp(X, Y, bandwidth=hr) ** 2).sum() + (kf.kernel_sum(X, Y, bandwidth=hr) ** 2).sum()
    ref.backward()
    L = _sum_ranks(l2.detach())
    e = max(
        _relerr(l2.detach(), l1.detach()),
        _relerr(h2.grad, h1.grad),
        _relerr(_sum_ranks(h2.grad), hr.grad),
        _relerr(L, ref.detach()),
    )
    return None if e <= 1e-12 else f"compile: {e}"


# ---------------------------------------------------------------- estimators
def check_kernel_density(rank, P, kd, kf):
    from kernelfuse.kde import KernelDensity as KD1

    ncount, mcount = _layout(P)
    N, M = sum(ncount), sum(mcount)
    g = _gen(21)
    X = torch.randn(N, 2, generator=g, dtype=torch.float64)
    Q = torch.randn(M, 2, generator=g, dtype=torch.float64)
    sw = torch.rand(N, generator=g, dtype=torch.float64)
    sw[::4] = 0.0
    oy, ny = _offsets(ncount, rank)
    ox, nx = _offsets(mcount, rank)
    fails = []
    for kernel, bw, weighted in (
        ("gaussian", "scott", False),
        ("epanechnikov", "silverman", True),
        ("cosine", 0.9, True),
    ):
        ref = KD1(kernel=kernel, bandwidth=bw, min_neff=None).fit(
            X.numpy(), sample_weight=sw.numpy() if weighted else None
        )
        for sharded in (False, True):
            est = kd.KernelDensity(kernel=kernel, bandwidth=bw, min_neff=None, queries_sharded=sharded)
            est.fit(X[oy : oy + ny].numpy(), sample_weight=sw[oy : oy + ny].numpy() if weighted else None)
            sl = slice(ox, ox + nx) if sharded else slice(None)
            a = torch.from_numpy(est.score_samples(Q[sl].numpy()))
            b = torch.from_numpy(ref.score_samples(Q.numpy()))[sl]
            e = _relerr(a, b)
            if not (e <= F64_RTOL and est.bandwidth_ == ref.bandwidth_):
                fails.append(f"{kernel} sharded={sharded}: {e}")
            if not np.allclose(est.n_eff_, ref.n_eff_[sl], rtol=1e-12, atol=0):
                fails.append(f"{kernel} n_eff")
        s1 = est.sample(50, random_state=3)
        s0 = ref.sample(50, random_state=3)
        if not np.array_equal(s1, s0):
            fails.append(f"{kernel} sample: {np.abs(s1 - s0).max()}")
    # torch input with gradients through score_samples
    est = kd.KernelDensity(bandwidth=0.5, min_neff=None).fit(X[oy : oy + ny])
    ref = KD1(bandwidth=0.5, min_neff=None).fit(X)
    q1, q2 = Q.clone().requires_grad_(), Q.clone().requires_grad_()
    (est.score_samples(q1).sum() / P).backward()  # replicated queries: every rank's loss counted once
    ref.score_samples(q2).sum().backward()
    if not _relerr(_sum_ranks(q1.grad), q2.grad) <= 1e-11:
        fails.append("grad")
    return "; ".join(fails) or None


def check_gaussian_kde(rank, P, kd, kf):
    from kernelfuse.kde import GaussianKDE as G1

    ncount, mcount = _layout(P)
    N, M = sum(ncount), sum(mcount)
    g = _gen(31)
    X = torch.randn(3, N, generator=g, dtype=torch.float64) * torch.tensor([[1.0], [2.0], [0.5]])
    X[1] += 0.5 * X[0]
    Q = torch.randn(3, M, generator=g, dtype=torch.float64)
    w = torch.rand(N, generator=g, dtype=torch.float64)
    oy, ny = _offsets(ncount, rank)
    ox, nx = _offsets(mcount, rank)
    fails = []
    for bw, weighted in ((None, False), ("silverman", True), (0.4, True)):
        ref = G1(X.numpy(), bw_method=bw, weights=w.numpy() if weighted else None)
        for sharded in (False, True):
            est = kd.GaussianKDE(
                X[:, oy : oy + ny].numpy(),
                bw_method=bw,
                weights=w[oy : oy + ny].numpy() if weighted else None,
                queries_sharded=sharded,
            )
            if not (abs(est.neff - ref.neff) <= 1e-12 * ref.neff and abs(est.factor - ref.factor) <= 1e-12):
                fails.append(f"{bw} neff/factor")
            e = _relerr(torch.from_numpy(np.asarray(est.covariance)), torch.from_numpy(np.asarray(ref.covariance)))
            sl = slice(ox, ox + nx) if sharded else slice(None)
            e2 = _relerr(torch.from_numpy(est.logpdf(Q[:, sl].numpy())), torch.from_numpy(ref.logpdf(Q.numpy()))[sl])
            if not (e <= 1e-12 and e2 <= 1e-12):
                fails.append(f"{bw} sharded={sharded}: cov {e} logpdf {e2}")
        a, b = est.resample(40, seed=5), ref.resample(40, seed=5)
        if not np.allclose(a, b, rtol=1e-13, atol=1e-13):
            fails.append(f"{bw} resample")
    return "; ".join(fails) or None


def check_private_kde(rank, P, kd, kf):
    from kernelfuse.kde import PrivateKernelDensity as PK1

    ncount, _ = _layout(P)
    N = sum(ncount)
    X = torch.randn(N, 3, generator=_gen(41), dtype=torch.float64)
    Q = torch.randn(5, 3, generator=_gen(42), dtype=torch.float64)
    oy, ny = _offsets(ncount, rank)
    fails = []
    for delta in (0.0, 1e-6):
        ref = PK1(1.0, delta=delta, radius=2.0, n_features=32, seed=4).fit(X)
        est = kd.PrivateKernelDensity(1.0, delta=delta, radius=2.0, n_features=32, seed=4).fit(X[oy : oy + ny])
        if not torch.equal(est.sketch_, ref.sketch_):
            fails.append(f"delta={delta}: sketch differs")
        if not torch.equal(est.kernel_mean(Q), ref.kernel_mean(Q)):
            fails.append(f"delta={delta}: kernel_mean differs")
    # seed=None: frequencies and noise from rank 0, broadcast: every rank holds the same sketch
    est = kd.PrivateKernelDensity(1.0, radius=2.0, n_features=16).fit(X[oy : oy + ny])
    allsk = [torch.empty_like(est.sketch_) for _ in range(P)]
    dist.all_gather(allsk, est.sketch_)
    if not all(torch.equal(s, allsk[0]) for s in allsk):
        fails.append("seed=None: ranks differ")
    return "; ".join(fails) or None
