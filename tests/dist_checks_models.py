"""Checks run inside the spawned gloo worlds of tests/test_distributed.py (listed in tests/dist_checks.py):
the random-feature regressors with group="world", and the nn modules under DDP and FSDP, against the
single-process results on the whole batch."""

from __future__ import annotations

import torch
from dist_checks_common import _gen, _layout, _offsets, _relerr


def check_rf_regression(rank, P, kd, kf):
    from kernelfuse.features import RandomFeatureGP, RandomFeatureRidge, RandomFeatures

    ncount, _ = _layout(P)
    N = sum(ncount) * 3
    counts = [3 * c for c in ncount]
    g = _gen(51)
    X = torch.randn(N, 2, generator=g, dtype=torch.float64)
    y = torch.sin(2 * X[:, 0]) + 0.1 * torch.randn(N, generator=g, dtype=torch.float64)
    Y2 = torch.stack([y, X[:, 1]], 1)
    Q = torch.randn(6, 2, generator=g, dtype=torch.float64)
    oy, ny = _offsets(counts, rank)
    feats = RandomFeatures(2, 40, kernel="gaussian", seed=3, dtype=torch.float64)
    fails = []
    for target in (y, Y2):
        r1 = RandomFeatureRidge(feats, alpha=0.3).fit(X, target)
        r2 = RandomFeatureRidge(feats, alpha=0.3, group="world").fit(X[oy : oy + ny], target[oy : oy + ny])
        if not (
            _relerr(r2.coef_, r1.coef_) <= 1e-10
            and _relerr(r2.predict(Q), r1.predict(Q)) <= 1e-10
            and r2.n_samples_ == N
        ):
            fails.append(f"ridge {tuple(target.shape)}")
        g1 = RandomFeatureGP(feats, noise=0.05, amplitude=1.2).fit(X, target)
        g2 = RandomFeatureGP(feats, noise=0.05, amplitude=1.2, group="world").fit(X[oy : oy + ny], target[oy : oy + ny])
        m1, s1 = g1.predict(Q, return_std=True)
        m2, s2 = g2.predict(Q, return_std=True)
        if not (
            _relerr(m2, m1) <= 1e-10
            and _relerr(s2, s1) <= 1e-10
            and abs(g2.log_marginal_likelihood_ - g1.log_marginal_likelihood_)
            <= 1e-10 * abs(g1.log_marginal_likelihood_)
        ):
            fails.append(f"gp {tuple(target.shape)}")
    return "; ".join(fails) or None


# ---------------------------------------------------------------- nn modules under DDP / FSDP
def _modules():
    from kernelfuse.nn import S4D, ButterflyLinear, GatedLongConv, LongConv, MonarchLinear, SNNKLinear

    torch.manual_seed(0)
    return [
        ("MonarchLinear", lambda: MonarchLinear(16, 16, nblocks=4).double(), (16,)),
        ("ButterflyLinear", lambda: ButterflyLinear(16, 12).double(), (16,)),
        ("LongConv", lambda: LongConv(8, 12, channels=1).double(), (12, 8)),
        ("GatedLongConv", lambda: GatedLongConv(8, 12).double(), (12, 8)),
        ("S4D", lambda: S4D(8, 4).double(), (12, 8)),
        ("SNNKLinear", lambda: SNNKLinear(6, 5, n_features=8, seed=1).double(), (6,)),
    ]


def _single_grads(make, shape, batch, seed=0):
    torch.manual_seed(seed)
    mod = make()
    state = {k: v.clone() for k, v in mod.state_dict().items()}
    xb = torch.randn(batch, *shape, generator=_gen(61), dtype=torch.float64)
    loss = (mod(xb) ** 2).mean()
    loss.backward()
    return state, xb, {n: p.grad.clone() for n, p in mod.named_parameters()}


def check_ddp(rank, P, kd, kf):
    from torch.nn.parallel import DistributedDataParallel as DDP

    fails = []
    batch = 10
    counts = [batch // P + (1 if r < batch % P else 0) for r in range(P)]
    o, nb = _offsets(counts, rank)
    for name, make, shape in _modules():
        state, xb, ref = _single_grads(make, shape, batch)
        mod = make()
        mod.load_state_dict(state)
        ddp = DDP(mod)
        out = ddp(xb[o : o + nb])
        # the global mean over the batch: DDP averages the per-rank gradients over P
        loss = (out**2).sum() * P / (batch * out[0].numel())
        loss.backward()
        for n, p in mod.named_parameters():
            if not _relerr(p.grad, ref[n]) <= 1e-12:
                fails.append(f"{name}.{n}: {_relerr(p.grad, ref[n])}")
    return "; ".join(fails) or None


def check_fsdp(rank, P, kd, kf):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    fails = []
    batch = 10
    counts = [batch // P + (1 if r < batch % P else 0) for r in range(P)]
    o, nb = _offsets(counts, rank)
    mesh = init_device_mesh("cpu", (P,))
    for name, make, shape in _modules():
        state, xb, ref = _single_grads(make, shape, batch)
        mod = make()
        mod.load_state_dict(state)
        fully_shard(mod, mesh=mesh)
        out = mod(xb[o : o + nb])
        loss = (out**2).sum() * P / (batch * out[0].numel())  # FSDP averages the gradients too
        loss.backward()
        for n, p in mod.named_parameters():
            full = p.grad.full_tensor()
            if not _relerr(full, ref[n]) <= 1e-12:
                fails.append(f"{name}.{n}: {_relerr(full, ref[n])}")
    return "; ".join(fails) or None
