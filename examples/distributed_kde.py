"""Sharded KDE and kernel sums with kernelfuse.distributed; run under torchrun:

    torchrun --standalone --nproc-per-node 2 examples/distributed_kde.py [--points 200000] [--dim 3]

Each rank generates its own shard of the data (in practice: reads its part of the file), fits a
KernelDensity on the shards together, scores queries replicated and sharded, checks the ring and
the all-reduce schedules against each other, learns a bandwidth by gradient descent through the
ring, and samples from the global mixture. gloo on CPU; NCCL (and each rank's GPU) when CUDA is
available.
"""

from __future__ import annotations

import argparse
import os

import kernelfuse.distributed as kd
import torch
import torch.distributed as dist


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=200_000, help="points over all ranks")
    ap.add_argument("--dim", type=int, default=3)
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, P = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    g = torch.Generator().manual_seed(1000 + rank)
    n_mine = args.points // P + (1 if rank < args.points % P else 0)
    y = torch.randn(n_mine, args.dim, generator=g, dtype=torch.float64).to(dev)  # this rank's points

    kde = kd.KernelDensity(bandwidth="scott", min_neff=None).fit(y)
    q = torch.zeros(4, args.dim, dtype=torch.float64, device=dev)  # the same queries on every rank
    logp = kde.score_samples(q)
    if rank == 0:
        print(f"{P} ranks, n = {args.points}, h = {kde.bandwidth_:.4f}, log p(0) = {logp[0].item():.6f}")

    # both sharded: the ring, and the same sums through the all-reduce schedule
    x_mine = y[:1000]
    a = kd.kernel_logsumexp(x_mine, y, bandwidth=0.3, schedule="ring")
    xs = [torch.empty(0)] * P
    dist.all_gather_object(xs, x_mine.cpu())
    b = kd.kernel_logsumexp(torch.cat(xs).to(dev), y, bandwidth=0.3, schedule="reduce")
    off = sum(t.shape[0] for t in xs[:rank])
    err = (a - b[off : off + x_mine.shape[0]]).abs().max().item()
    if rank == 0:
        print(f"ring vs reduce: max abs difference {err:.2e}")

    # learn a bandwidth by leave-one-out likelihood (gradients through the ring)
    log_h = torch.tensor(0.0, dtype=torch.float64, device=dev, requires_grad=True)
    opt = torch.optim.Adam([log_h], lr=0.1)
    sub = y[:2000]  # a subsample of every shard, for speed
    for _step in range(20):
        opt.zero_grad()
        lse = kd.kernel_logsumexp(sub, sub, bandwidth=log_h.exp(), exclude_self=True, schedule="ring")
        nll = -(lse - args.dim * log_h).sum()
        nll.backward()  # log_h.grad: this rank's contribution (replicated parameter)
        dist.all_reduce(log_h.grad)  # the gradient of the global loss: the sum over the ranks
        opt.step()
    if rank == 0:
        print(f"leave-one-out bandwidth: {log_h.exp().item():.4f}")

    s = kde.sample(5, random_state=0)  # the same 5 draws on every rank
    if rank == 0:
        print("samples:", s.shape)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
