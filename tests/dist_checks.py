"""Checks run inside the spawned gloo worlds of tests/test_distributed.py (one spawn, many checks):
the worker, the list of checks (kernel sums and kde estimators: tests/dist_checks_kde.py; the
random-feature regressors and the nn modules under DDP / FSDP: tests/dist_checks_models.py;
helpers: tests/dist_checks_common.py) and the failing rings.

Every rank builds the same global data from fixed seeds, passes its shard to the distributed call
and compares with the single-process result on the concatenated data. Each check returns None
(pass) or a message; exceptions count as failures.
"""

from __future__ import annotations

import datetime
import os
import time
import traceback

import torch
import torch.distributed as dist
from dist_checks_common import _gen
from dist_checks_kde import (
    check_auto_and_errors,
    check_batched,
    check_compile,
    check_exclude_self_and_sq,
    check_gaussian_kde,
    check_kernel_density,
    check_private_kde,
    check_schedules,
)
from dist_checks_models import check_ddp, check_fsdp, check_rf_regression

CHECKS = [
    check_schedules,
    check_batched,
    check_exclude_self_and_sq,
    check_auto_and_errors,
    check_compile,
    check_kernel_density,
    check_gaussian_kde,
    check_private_kde,
    check_rf_regression,
    check_ddp,
    check_fsdp,
]


# ---------------------------------------------------------------- the failing ring (last: it breaks the world)
def ring_failure(rank, P, kd, kf):
    """Rank 1 raises in its second block of the ring; every rank must raise (not hang)."""
    from kernelfuse.distributed import _kernel_sums

    if rank == 1:
        orig, calls = _kernel_sums._apply, [0]

        def failing(*a, **k):
            calls[0] += 1
            if calls[0] == 2:
                raise RuntimeError("injected failure on rank 1")
            return orig(*a, **k)

        _kernel_sums._apply = failing
    x = torch.randn(5, 2, generator=_gen(rank), dtype=torch.float64)
    kd.kernel_sum(x, x, schedule="ring", timeout=8.0)
    return "no exception"


def ring_hang(rank, P, kd, kf):
    """Rank 1 stalls (alive, connections open) before posting its first ring exchange; the others
    must raise within the ring timeout instead of waiting for it."""
    from kernelfuse.distributed import _comm

    if rank == 1:
        orig = _comm.Ring.start

        def stalling(self, *a, **k):
            if not getattr(self, "_stalled", False):
                self._stalled = True
                time.sleep(6.0)
            return orig(self, *a, **k)

        _comm.Ring.start = stalling
    x = torch.randn(5, 2, generator=_gen(rank), dtype=torch.float64)
    t0 = time.perf_counter()
    try:
        kd.kernel_sum(x, x, schedule="ring", timeout=2.0)
    except RuntimeError as e:
        raise RuntimeError(f"after {time.perf_counter() - t0:.1f} s: {e}") from None
    return "no exception"


def worker(rank, P, port, queue, names, fail_last):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    results = {}
    t_start = time.perf_counter()
    try:
        dist.init_process_group("gloo", rank=rank, world_size=P, timeout=datetime.timedelta(seconds=30))
        import kernelfuse as kf
        import kernelfuse.distributed as kd

        results["_init_s"] = round(time.perf_counter() - t_start, 2)

        times = results["_times"] = {}
        for fn in CHECKS:
            if names is not None and fn.__name__ not in names:
                continue
            t0 = time.perf_counter()
            try:
                results[fn.__name__] = fn(rank, P, kd, kf)
            except Exception:
                results[fn.__name__] = traceback.format_exc(limit=6)
            times[fn.__name__] = round(time.perf_counter() - t0, 2)
        if fail_last:
            t0 = time.perf_counter()
            fail = ring_failure if fail_last == "raise" else ring_hang
            try:
                results["ring_failure"] = ("returned", fail(rank, P, kd, kf))
            except Exception as e:
                results["ring_failure"] = ("raised", f"{type(e).__name__}: {e}")
            times["ring_failure"] = round(time.perf_counter() - t0, 2)
            queue.put((rank, results))
            queue.close()
            queue.join_thread()
            os._exit(0)  # the group is broken: leave without its (blocking) teardown
        dist.barrier()
        dist.destroy_process_group()
    except Exception:
        results["_world"] = traceback.format_exc()
    queue.put((rank, results))
    queue.close()
    queue.join_thread()
