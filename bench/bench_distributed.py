"""Sharded kernel sums: the ring schedule on 1, 2 and 4 gloo processes of this machine.

    python bench/bench_distributed.py [--quick] [--out bench/results/distributed.md]

x and y both sharded evenly (m = n points, d = 3, weights (n,), float32, Gaussian kernel), one
kernelfuse thread per process, so 4 processes over-subscribe a 2-core machine. For each P: the
median time of the ring forward and of forward + backward (gradients for x, y, weights), the bytes
each rank sent (counted by kernelfuse.distributed.comm_stats) against the model, and the
all-gather schedule for comparison. Model: a rank sends every shard but the next rank's once in
the forward, (P - 1) n / P (d + 1) 4 bytes, and in the backward the same plus the y-gradient
accumulators of all P shards, P n / P (d + 1) 4 bytes; the compute is m n / P pairs per rank at
the one-process pair rate, stretched by P / cores when the processes over-subscribe the cores.
(Each ring call also ends with a 4-byte completion all-reduce, counted in the measured bytes.)
docs/distributed.md turns these figures into a model for 8 nodes x 8 GPUs.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import fmt_bytes, fmt_count, machine_line  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, P, port, N, d, repeat, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import kernelfuse as kf
    import kernelfuse.distributed as kd
    import torch.distributed as dist

    torch.set_num_threads(1)
    kf.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=P, timeout=datetime.timedelta(seconds=600))
    g = torch.Generator().manual_seed(0)
    X, Y, W = torch.randn(N, d, generator=g), torch.randn(N, d, generator=g), torch.rand(N, generator=g)
    lo, hi = rank * N // P, (rank + 1) * N // P
    x, y, w = X[lo:hi].contiguous(), Y[lo:hi].contiguous(), W[lo:hi].contiguous()
    res = {}

    def timed(fn):
        fn()  # warm-up
        ts = []
        for _ in range(repeat):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            dist.barrier()
            ts.append(time.perf_counter() - t0)
        kd.comm_stats.reset()
        fn()
        return statistics.median(ts), kd.comm_stats.p2p_bytes + kd.comm_stats.collective_bytes

    def fwd(sched):
        return lambda: kd.kernel_sum(x, y, w, bandwidth=0.5, schedule=sched)

    def fwd_bwd():
        xr, yr, wr = (t.clone().requires_grad_() for t in (x, y, w))
        kd.kernel_sum(xr, yr, wr, bandwidth=0.5, schedule="ring").sum().backward()

    res["ring fwd"] = timed(fwd("ring"))
    res["ring fwd+bwd"] = timed(fwd_bwd)
    if P > 1:
        res["gather fwd"] = timed(fwd("gather"))
    # correctness against one process on the whole data (float32 tolerance)
    out = kd.kernel_sum(x, y, w, bandwidth=0.5, schedule="ring")
    ref = kf.kernel_sum(x, Y, W, bandwidth=0.5)
    res["max_rel_err"] = float(((out - ref).abs() / ref.abs().clamp_min(1e-30)).max())
    queue.put((rank, res))
    dist.barrier()
    dist.destroy_process_group()


def run(P, N, d, repeat):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, P, port, N, d, repeat, q)) for r in range(P)]
    for p in procs:
        p.start()
    out = dict(q.get(timeout=1800) for _ in range(P))
    for p in procs:
        p.join(60)
    return out


def model_bytes(kind, P, N, d):
    block = N / P * (d + 1) * 4  # one shard of y and its weights, float32
    if kind == "ring fwd":
        return (P - 1) * block
    if kind == "ring fwd+bwd":
        return 2 * (P - 1) * block + (P * block if P > 1 else 0)
    if kind == "gather fwd":  # (padded) all-gather of y and w: every other rank's shard arrives once
        return (P - 1) * block
    return 0.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller problem (smoke run)")
    ap.add_argument("--device", default="cpu", help="cpu only (gloo)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "distributed.md"))
    ap.add_argument("--procs", type=int, nargs="*", default=[1, 2, 4])
    args = ap.parse_args(argv)
    if args.device != "cpu":
        print("bench_distributed: CPU (gloo) only; skipped for", args.device)
        return []
    N, d, repeat = (4096, 3, 3) if args.quick else (32768, 3, 3)
    cores = os.cpu_count() or 1
    results = {}
    for P in args.procs:
        t0 = time.perf_counter()
        results[P] = run(P, N, d, repeat)
        print(f"done P={P} ({time.perf_counter() - t0:.0f} s)", flush=True)
    base = {k: v for k, v in results[min(results)][0].items() if k != "max_rel_err"}
    p0 = min(results)
    lines = [
        "| processes | schedule | median time | speed-up vs 1 process | model time | bytes sent / rank "
        "(max over ranks) | model bytes / rank | max rel. err vs 1 process |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for P, per_rank in results.items():
        for kind in ("ring fwd", "ring fwd+bwd", "gather fwd"):
            if kind not in per_rank[0]:
                continue
            t = max(per_rank[r][kind][0] for r in per_rank)
            b = max(per_rank[r][kind][1] for r in per_rank)
            bkind = kind if kind in base else "ring fwd"
            t1 = base[bkind][0] * p0
            model_t = t1 / P * max(1.0, P / cores)
            err = max(per_rank[r]["max_rel_err"] for r in per_rank)
            lines.append(
                f"| {P} | {kind} | {t * 1e3:.1f} ms | {t1 / t:.2f}x | {model_t * 1e3:.1f} ms | "
                f"{fmt_bytes(b)} | {fmt_bytes(model_bytes(kind, P, N, d))} | {err:.1e} |"
            )
            rows.append((P, kind, t, b))
    text = (
        f"### Sharded kernel sums (`bench/bench_distributed.py{' --quick' if args.quick else ''}`)\n\n"
        f"{machine_line('cpu')}\n\nm = n = {fmt_count(N)} points, d = {d}, weights (n,), float32, Gaussian; x and "
        f"y sharded evenly over P gloo processes on loopback, one kernelfuse thread each ({cores} cores: P = 4 "
        "over-subscribes). Times: median over the ranks' slowest, between barriers. Bytes: payload sent by each "
        "rank (point-to-point and collectives). Model time: the 1-process time / P, times P / cores when "
        "over-subscribed (communication on loopback not modelled).\n\n" + "\n".join(lines) + "\n"
    )
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    return rows


if __name__ == "__main__":
    main()
