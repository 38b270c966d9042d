"""The CUDA simulator itself (csrc/sim): every modelled feature on a kernel with a known answer,
and deliberate bugs it must catch (tests/sim/sim_selftest.cpp)."""

import os
import subprocess

import pytest
from conftest import ROOT, compile_sim_program

CHECKS = [
    "barrier",
    "missing_barrier_detected",
    "shuffles",
    "half_warp_shuffle_fails",
    "deadlock_fails",
    "atomics",
    "launch_limits",
    "poison",
    "wmma",
    "race_check",
    "grid3d",
    "half_rounding",
]
# What catches each: a static shared array is a real C array, so UBSan's bounds check sees the bad
# index first; dynamic shared memory and global memory are heap blocks with ASan redzones.
ASAN_CHECKS = {
    "asan_shared_oob": "index 256 out of bounds|heap-buffer-overflow",
    "asan_dynamic_oob": "heap-buffer-overflow",
    "asan_global_oob": "heap-buffer-overflow",
}


@pytest.fixture(scope="module")
def selftest(tmp_path_factory):
    exe = tmp_path_factory.mktemp("simself") / "sim_selftest"
    res = compile_sim_program([ROOT / "tests" / "sim" / "sim_selftest.cpp"], exe)
    assert res.returncode == 0, res.stderr[-4000:]
    return exe


def _run(exe, name):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)  # the program links the ASan runtime itself
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    return subprocess.run([str(exe), name], capture_output=True, text=True, timeout=120, env=env)


def test_every_check_is_listed(selftest):
    out = subprocess.run(
        [str(selftest)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},
    ).stdout.split()
    assert sorted(out) == sorted(CHECKS + list(ASAN_CHECKS)), out


@pytest.mark.parametrize("name", CHECKS)
def test_simulator_check(selftest, name):
    res = _run(selftest, name)
    assert res.returncode == 0 and f"PASS {name}" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(ASAN_CHECKS))
def test_simulator_catches_out_of_bounds(selftest, name):
    import re

    res = _run(selftest, name)
    assert res.returncode != 0, f"{name}: the out-of-bounds access went unnoticed:\n{res.stdout[-2000:]}"
    assert re.search(ASAN_CHECKS[name], res.stderr), res.stderr[-3000:]
