"""Runs last in tests/sim (file order): every __global__ kernel of every csrc/*/*_cuda.cu file has
executed under the simulator in this session. The table is printed in the terminal summary."""

from pathlib import Path

import pytest
from conftest import coverage_table

HERE = Path(__file__).resolve().parent


def test_every_cuda_kernel_ran_under_the_simulator(request):
    files = {Path(str(item.fspath)).name for item in request.session.items}
    family_files = {p.name for p in HERE.glob("test_sim_*.py")}
    if not family_files <= files or request.config.getoption("-k"):
        pytest.skip("coverage is judged on a full run of tests/sim only (this run selected a subset)")
    rows, n_ran, n_all = coverage_table()
    missing = [f"{f}: {k}" for f, k, launches, _ in rows if not launches]
    assert n_all > 0
    assert not missing, f"{len(missing)} of {n_all} CUDA kernels never ran under the simulator: {missing}"
