"""The benchmark scripts' own logic (bench/common.py, bench/bench_nngp.py): tables, projections of
capped baselines, and one tiny run of the NNGP product section end to end. Nothing here is timed;
the figures are checked for shape and consistency only (speed is measured in bench/, not in tests).
"""

import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import bench_nngp  # noqa: E402
import common  # noqa: E402


def test_table_marks_rows_not_run():
    rows = [
        common.Row("c", "base", 2.0, 100.0, 0.0),
        common.Row("c", "fast", 1.0, 100.0, 0.0),
        common.Row("c", "skipped", float("nan"), 100.0, 0.0, note="not run"),
        common.Row("c", "capped", float("inf"), 100.0, 0.0),
    ]
    table = common.markdown_table(rows, rate_name="x/s", rate_scale=1.0, baseline="base")
    lines = table.splitlines()
    assert "| 2.00x |" in lines[3]  # fast: twice the baseline's rate
    for line in lines[4:]:
        assert "nan" not in line and "inf" not in line
        assert "| – | – | – |" in line


def test_timed_blocks_projects_by_rows_done():
    calls = []

    def block(start, size):
        calls.append((start, size))

    blocks = [(0, 4), (4, 4), (8, 2)]
    secs, done, peak = bench_nngp.timed_blocks(block, blocks, cap_s=1e9)
    assert done == 3 and calls == blocks and secs >= 0 and peak >= 0
    # a cap of 0 stops after the first block; its time is scaled by the rows' share (10 / 4)
    calls.clear()
    clock = iter([0.0, 1.0, 1.0])  # perf_counter: start, after block 1 (cap check), end
    monkey = bench_nngp.time.perf_counter
    bench_nngp.time.perf_counter = lambda: next(clock)
    try:
        secs, done, _ = bench_nngp.timed_blocks(block, blocks, cap_s=0.5)
    finally:
        bench_nngp.time.perf_counter = monkey
    assert done == 1 and calls == [(0, 4)] and secs == pytest.approx(2.5)


def test_product_section_runs_small(tmp_path, monkeypatch):
    # no neural-tangents here (its row is optional; the run must not depend on .venv-nt)
    monkeypatch.setattr(bench_nngp, "nt_product_row", lambda *a, **k: None)
    out = tmp_path / "nngp.md"
    bench_nngp.main(["--only", "product", "--n", "300", "--ref-cap-s", "0", "--out", str(out)])
    text = out.read_text()
    for impl in (
        "fused nngp_matmul",
        "fused nngp_matmul (NTK)",
        "fused forward + backward (x, y, W)",
        "materialised (torch recursion, whole)",
        "materialised in row chunks of",
        "our kernel matrix (nngp_kernel, whole",
    ):
        assert f"| {impl}" in text, impl
    err = float(re.search(r"max relative error ([0-9.e+-]+)\.", text).group(1))
    assert err < 1e-5


def test_cuda_device_without_gpu_skips(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the cuda rows run in scripts/gpu_check.sh")
    out = tmp_path / "nngp-cuda.md"
    bench_nngp.main(["--device", "cuda", "--out", str(out)])
    assert "skipped" in capsys.readouterr().out and not out.exists()
