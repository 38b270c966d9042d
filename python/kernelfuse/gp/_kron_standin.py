"""TEMPORARY plain-torch stand-in for the kron ops (branch kron); deleted once that branch is merged."""
from __future__ import annotations

import math

import torch


def kron_matmul(factors, x, *, transpose=False):
    fs = [f.mT if transpose else f for f in factors]
    ms = [f.shape[1] for f in fs]
    batch = x.shape[:-1]
    t = x.reshape(-1, *ms)
    for d, f in enumerate(fs):
        t = torch.movedim(torch.tensordot(t, f, dims=([d + 1], [1])), -1, d + 1)
    return t.reshape(*batch, -1)


def _eig(factors):
    ev, Q = zip(*[torch.linalg.eigh(f) for f in factors])
    lam = ev[0]
    for e in ev[1:]:
        lam = torch.outer(lam, e).reshape(-1)
    return lam, list(Q)


def kron_gp_mll(factors, y, noise):
    lam, Q = _eig(factors)
    d = lam + noise
    yt = kron_matmul(Q, y, transpose=True)
    alpha = kron_matmul(Q, yt / d)
    N = y.shape[-1]
    nll = 0.5 * (yt * yt / d).sum(-1) + 0.5 * torch.log(d).sum() + 0.5 * N * math.log(2 * math.pi)
    return nll, alpha


def kron_solve(factors, y, noise):
    return kron_gp_mll(factors, y, noise)[1]


def kron_posterior(factors, y, noise, *, cross_factors=None, cross_diag=None):
    lam, Q = _eig(factors)
    d = lam + noise
    alpha = kron_matmul(Q, kron_matmul(Q, y, transpose=True) / d)
    if cross_factors is None:
        mean = kron_matmul(factors, alpha)
        var = kron_matmul([q * q for q in Q], lam * noise / d)
        return mean, var
    mean = kron_matmul(cross_factors, alpha)
    W = [c @ q for c, q in zip(cross_factors, Q)]
    prior = cross_diag if cross_diag is not None else torch.ones_like(mean)
    var = prior - kron_matmul([w * w for w in W], 1.0 / d)
    return mean, var
