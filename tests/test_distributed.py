"""kernelfuse.distributed on real gloo process groups: 2 and 4 processes on loopback.

Spawning costs seconds per process on the CI machine, so each world is spawned once (a
module-scoped fixture) and runs every check of tests/dist_checks.py; the test functions below read
its per-rank results. Every world is bounded: gloo timeouts on the group and on the ring
exchanges, and a deadline on the join after which the processes are killed and the test fails.
The 4-process world ends with a rank failing mid-ring, which must make every rank raise.
"""
from __future__ import annotations

import multiprocessing as mp
import socket
import sys
import time

import pytest
import torch

import dist_checks

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is required")

WORLD_DEADLINE_S = 150.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ctx():
    # forkserver: the server imports torch and kernelfuse once and each rank forks from it (the
    # pytest process may have run OpenMP kernels already, so plain fork is not safe).
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "torch._functorch.aot_autograd", "kernelfuse", "dist_checks"])
    return ctx


def run_world(P: int, *, fail_last: bool = False, names=None, deadline: float = WORLD_DEADLINE_S):
    ctx = _ctx()
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=dist_checks.worker, args=(r, P, port, queue, names, fail_last), daemon=True)
             for r in range(P)]
    for p in procs:
        p.start()
    results, t_end = {}, time.monotonic() + deadline
    try:
        while len(results) < P and time.monotonic() < t_end:
            try:
                rank, res = queue.get(timeout=max(0.1, min(1.0, t_end - time.monotonic())))
                results[rank] = res
            except Exception:
                if all(not p.is_alive() for p in procs) and queue.empty():
                    break
        for p in procs:
            p.join(timeout=max(0.1, t_end - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    return results


@pytest.fixture(scope="module")
def world2():
    return run_world(2)


# torch.compile costs ~10 s per process here, so it is checked in the 2-process world only
NAMES4 = [fn.__name__ for fn in dist_checks.CHECKS if fn is not dist_checks.check_compile]


@pytest.fixture(scope="module")
def world4():
    return run_world(4, fail_last=True, names=NAMES4)


def _assert_check(world, P, name):
    assert sorted(world) == list(range(P)), f"ranks reported: {sorted(world)} of {P} (a rank died or hung)"
    for r in range(P):
        res = world[r]
        assert "_world" not in res, f"rank {r}: {res['_world']}"
        assert name in res, f"rank {r}: check {name} did not run"
        assert res[name] is None, f"rank {r}: {res[name]}"


NAMES = [fn.__name__ for fn in dist_checks.CHECKS]


@pytest.mark.parametrize("name", NAMES)
def test_world2(world2, name):
    _assert_check(world2, 2, name)


@pytest.mark.parametrize("name", NAMES4)
def test_world4(world4, name):
    _assert_check(world4, 4, name)


def test_ring_failure_makes_every_rank_raise(world4):
    assert sorted(world4) == [0, 1, 2, 3], f"ranks reported: {sorted(world4)} (a rank hung)"
    for r in range(4):
        kind, msg = world4[r]["ring_failure"]
        assert kind == "raised", f"rank {r}: {msg}"
        if r == 1:
            assert "injected failure" in msg
        else:
            assert "ring step" in msg, f"rank {r}: {msg}"


def test_single_process_world():
    """A world of one: every schedule degenerates to the single-process op."""
    res = run_world(1, names=["check_schedules", "check_exclude_self_and_sq", "check_kernel_density"])
    _assert_check(res, 1, "check_schedules")
    _assert_check(res, 1, "check_exclude_self_and_sq")
    _assert_check(res, 1, "check_kernel_density")


def test_not_initialised_error():
    import kernelfuse.distributed as kd

    if torch.distributed.is_initialized():  # pragma: no cover
        pytest.skip("a process group is already initialised")
    with pytest.raises(RuntimeError, match="not initialised"):
        kd.kernel_sum(torch.zeros(2, 2), torch.zeros(2, 2))


if __name__ == "__main__":  # debugging: python tests/test_distributed.py P
    t0 = time.perf_counter()
    out = run_world(int(sys.argv[1]) if len(sys.argv) > 1 else 2, fail_last=len(sys.argv) > 2)
    print("wall", time.perf_counter() - t0)
    for r in sorted(out):
        for k, v in out[r].items():
            print(r, k, v)
