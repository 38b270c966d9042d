"""Helpers of the checks run in the spawned gloo worlds of tests/test_distributed.py (tests/dist_checks*.py)."""

from __future__ import annotations

import torch
import torch.distributed as dist

F64_RTOL = 1e-12


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _offsets(counts, rank):
    return sum(counts[:rank]), counts[rank]


def _relerr(a, b):
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    if a.numel() == 0 and b.numel() == 0:
        return 0.0
    if a.shape != b.shape:
        return float("inf")
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    if not torch.equal(fa, fb) or not torch.equal(a[~fa], b[~fb]):
        return float("inf")
    if fa.sum() == 0:
        return 0.0
    scale = b[fb].abs().max().clamp_min(1e-300)
    return float((a[fa] - b[fb]).abs().max() / scale)


def _sum_ranks(t):
    """The gradient of a replicated tensor: the sum of its copies' gradients over the ranks."""
    if t is None:
        return None
    t = t.clone()
    dist.all_reduce(t)
    return t


def _layout(P):
    """(point counts, query counts) per rank: uneven, one empty point shard, one rank without queries."""
    if P == 1:
        return [13], [7]
    if P == 2:
        return [11, 0], [0, 6]
    return [7, 0, 12, 5], [3, 9, 0, 4]
