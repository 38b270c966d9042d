"""Deliberately broken kernels are caught: each mutation is applied to a copy of
csrc/features/features_cuda.cu (fwht_smem_kernel, the shared-memory butterfly smem_fwht it calls, and its launcher), the copy is run under the
simulator by tests/sim/mutation_driver.cpp, and the run must fail — a wrong result, a failed
launch, or an ASan / UBSan report. The unmutated copy must pass."""

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ROOT, compile_sim_program

SRC = ROOT / "csrc" / "features" / "features_cuda.cu"

# name: (text in the original, its replacement)
MUTATIONS = {
    "off_by_one_index": (
        "    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s[i] = x[i];\n",
        "    for (int64_t i = threadIdx.x; i <= n; i += blockDim.x) s[i] = x[i];\n",
    ),
    "missing_syncthreads": (
        "      s[i + h] = a - b;\n    }\n    __syncthreads();\n",
        "      s[i + h] = a - b;\n    }\n",
    ),
    "wrong_shared_memory_size": (
        "fwht_smem_kernel<T>, grid, threads, bytes, stream, p);",
        "fwht_smem_kernel<T>, grid, threads, bytes - sizeof(T), stream, p);",
    ),
}


def _build_and_run(tmp, name, text, runtime):
    cu = tmp / f"{name}_features_cuda.cu"
    cu.write_text(text)
    exe = tmp / f"{name}_driver"
    res = compile_sim_program(
        [ROOT / "tests" / "sim" / "mutation_driver.cpp"],
        exe,
        runtime=runtime,
        extra=[f'-DKF_MUTANT="{cu}"', f"-I{ROOT / 'csrc' / 'features'}"],
    )
    assert res.returncode == 0, f"{name}: build failed:\n{res.stderr[-4000:]}"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    return subprocess.run([str(exe)], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mutants")
    original = SRC.read_text()
    jobs = {"original": original}
    for name, (old, new) in MUTATIONS.items():
        assert original.count(old) == 1, f"mutation {name}: its target text is not found once in {SRC.name}"
        jobs[name] = original.replace(old, new)
    runtime = tmp / "sim_runtime.o"
    res = compile_sim_program([ROOT / "csrc" / "sim" / "sim_runtime.cpp"], runtime, compile_only=True)
    assert res.returncode == 0, res.stderr[-4000:]
    with ThreadPoolExecutor(max_workers=2) as ex:
        futs = {name: ex.submit(_build_and_run, tmp, name, text, runtime) for name, text in jobs.items()}
        return {name: f.result() for name, f in futs.items()}


def test_unmutated_kernel_passes(runs):
    r = runs["original"]
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_is_caught(runs, name):
    r = runs[name]
    caught = r.returncode != 0
    how = (
        "sanitizer report"
        if re.search(r"AddressSanitizer|runtime error", r.stderr)
        else "wrong result"
        if "wrong" in r.stdout
        else "launch failed"
        if r.returncode == 2
        else f"exit {r.returncode}"
    )
    print(f"{name}: caught by {how}")
    assert caught, f"mutation {name} was not caught:\n{r.stdout[-2000:]}"
