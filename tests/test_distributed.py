"""kernelfuse.distributed on real gloo process groups: 2 and 4 processes on loopback.

Spawning costs seconds per process on the CI machine, so each world is spawned once (a
module-scoped fixture) and runs every check of tests/dist_checks.py; the test functions below read
its per-rank results. Every world is bounded: gloo timeouts on the group and on the ring
exchanges, and a deadline on the join after which the processes are killed and the test fails.
The 4-process world ends with a rank failing mid-ring, which must make every rank raise; the
2-process world with a rank stalling (alive, connections open), which must make its peer raise
within the ring timeout.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import sys
import time

import dist_checks
import pytest
import torch

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is required",
)

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
    procs = [
        ctx.Process(target=dist_checks.worker, args=(r, P, port, queue, names, fail_last), daemon=True)
        for r in range(P)
    ]
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
    return run_world(2, fail_last="hang")


# torch.compile costs ~10 s per process here, so it is checked in the 2-process world only
NAMES4 = [fn.__name__ for fn in dist_checks.CHECKS if fn is not dist_checks.check_compile]


@pytest.fixture(scope="module")
def world4():
    return run_world(4, fail_last="raise", names=NAMES4)


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


def test_ring_stall_times_out(world2):
    """Rank 1 stalls without dying: rank 0 raises after the ring timeout (2 s), not after the
    stall (6 s) or the group's timeout (30 s); the world then ends (rank 1 is not left hanging)."""
    assert sorted(world2) == [0, 1], f"ranks reported: {sorted(world2)} (a rank hung)"
    kind, msg = world2[0]["ring_failure"]
    assert kind == "raised", msg
    assert "ring step 0 of 2" in msg, msg
    secs = float(msg.split()[2])
    assert secs < 5.5, f"rank 0 raised only after {secs} s (timeout 2 s, stall 6 s)"


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
    out = run_world(int(sys.argv[1]) if len(sys.argv) > 1 else 2, fail_last=sys.argv[2] if len(sys.argv) > 2 else False)
    print("wall", time.perf_counter() - t0)
    for r in sorted(out):
        for k, v in out[r].items():
            print(r, k, v)


# ---------------------------------------------------------------- the random-feature models, one process
def _rf_data(n=60, seed=0):
    from kernelfuse.features import RandomFeatures

    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.sin(2 * X[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return X, y, RandomFeatures(2, 30, kernel="gaussian", seed=1, dtype=torch.float64)


def test_rf_ridge_matches_closed_form():
    from kernelfuse.features import RandomFeatureRidge

    X, y, feats = _rf_data()
    phi = feats(X)
    for fit_intercept in (False, True):
        m = RandomFeatureRidge(feats, alpha=0.5, fit_intercept=fit_intercept).fit(X, y)
        P = phi - phi.mean(0) if fit_intercept else phi
        t = y - y.mean() if fit_intercept else y
        coef = torch.linalg.solve(P.T @ P + 0.5 * torch.eye(30, dtype=torch.float64), P.T @ t)
        torch.testing.assert_close(m.coef_, coef, rtol=1e-9, atol=1e-12)
        pred = phi @ coef + ((y.mean() - phi.mean(0) @ coef) if fit_intercept else 0.0)
        torch.testing.assert_close(m.predict(X), pred, rtol=1e-9, atol=1e-12)
    out = RandomFeatureRidge(feats, alpha=0.5).fit(X.numpy(), y.numpy()).predict(X.numpy())
    assert out.shape == (60,)
    with pytest.raises(ValueError, match="argument 'alpha'"):
        RandomFeatureRidge(feats, alpha=0.0)
    with pytest.raises(TypeError, match="argument 'features'"):
        RandomFeatureRidge("rff")
    with pytest.raises(ValueError, match="argument 'y'"):
        RandomFeatureRidge(feats).fit(X, y[:5])


def test_rf_gp_matches_exact_gp_on_the_feature_kernel():
    from kernelfuse.features import RandomFeatureGP

    X, y, feats = _rf_data()
    noise, amp = 0.05, 1.3
    m = RandomFeatureGP(feats, noise=noise, amplitude=amp).fit(X, y)
    phi = feats(X)
    K = amp**2 * phi @ phi.T + noise * torch.eye(60, dtype=torch.float64)
    lml = torch.distributions.MultivariateNormal(torch.zeros(60, dtype=torch.float64), K).log_prob(y)
    assert abs(m.log_marginal_likelihood_ - float(lml)) <= 1e-9 * abs(float(lml))
    Q = torch.randn(7, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pq = feats(Q)
    kq = amp**2 * pq @ phi.T
    mean = kq @ torch.linalg.solve(K, y)
    var = amp**2 * (pq * pq).sum(1) - (kq * torch.linalg.solve(K, kq.T).T).sum(1)
    mu, sd = m.predict(Q, return_std=True)
    torch.testing.assert_close(mu, mean, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(sd, var.clamp_min(0).sqrt(), rtol=1e-7, atol=1e-9)
    _, sdn = m.predict(Q, return_std=True, include_noise=True)
    torch.testing.assert_close(sdn, (var + noise).sqrt(), rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="argument 'noise'"):
        RandomFeatureGP(feats, noise=-1.0)
