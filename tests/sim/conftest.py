"""CUDA simulator tests: every CUDA kernel of csrc/ run on the CPU under the CUDA-semantics
simulator (csrc/sim/, docs/cuda.md) and compared with the float64 references.

Run by ``make test`` (or ``make test-sim``) as its own pytest session, with AddressSanitizer
preloaded: ``KERNELFUSE_SIM_LIB`` names the simulator library (``build-sim/libkernelfuse_sim.so``,
built by ``make sim``). Its ops are ``torch.ops.kernelfuse_sim.*`` with the schemas of
``torch.ops.kernelfuse.*``; called with CPU tensors they run the CUDA branch of the torch glue, and
every kernel launch runs the .cu kernel under the simulator. A kernel the simulator cannot run
fails its test; nothing here is skipped.
"""

import ctypes
import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(1, str(ROOT / "tests"))  # tests/kf_inputs.py: the input generators shared with the CPU tests
LIB = Path(os.environ.get("KERNELFUSE_SIM_LIB", ROOT / "build-sim" / "libkernelfuse_sim.so"))
if not LIB.exists():
    raise RuntimeError(f"the CUDA simulator library {LIB} does not exist: build it with `make sim`")
torch.ops.load_library(str(LIB))
_lib = ctypes.CDLL(str(LIB))
_lib.kf_sim_kernel_what.restype = ctypes.c_char_p
_lib.kf_sim_kernel_launches.restype = ctypes.c_longlong
_lib.kf_sim_configure.argtypes = [ctypes.c_int, ctypes.c_ulonglong, ctypes.c_int, ctypes.c_int]
_lib.kf_sim_configure_race_check.argtypes = [ctypes.c_int]

CUDA_INCLUDE = Path(os.environ.get("KERNELFUSE_CUDA_INCLUDE", "/usr/local/cuda/include"))
# The flags of the simulator build (CMakeLists.txt, KERNELFUSE_SIM): for standalone programs that
# run kernels under the simulator (the simulator's self-test, the mutation test).
SIM_CXXFLAGS = [
    "-std=c++20",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
    "-g",
    "-O1",
    "-Wno-attributes",
    "-DKERNELFUSE_CUDA_SIM",
    f"-I{ROOT / 'csrc' / 'sim' / 'include'}",
    f"-I{ROOT / 'csrc'}",
    "-isystem",
    str(CUDA_INCLUDE),
]


def compile_sim_program(sources, out, extra=(), runtime=None, compile_only=False):
    """Builds a standalone program from `sources` + the simulator runtime (its source, or a
    prebuilt object `runtime`), or with compile_only one object file. Returns the CompletedProcess."""
    import subprocess

    rt = [] if compile_only else [str(runtime or ROOT / "csrc" / "sim" / "sim_runtime.cpp")]
    cmd = ["g++", *SIM_CXXFLAGS, *extra, *(["-c"] if compile_only else []), *map(str, sources), *rt, "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _root_conftest():
    """tests/conftest.py (the tolerance table), whichever name pytest imported it under."""
    path = (ROOT / "tests" / "conftest.py").resolve()
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if f and Path(f).resolve() == path:
            return m
    spec = importlib.util.spec_from_file_location("kf_tests_conftest", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


_rc = _root_conftest()
TOL, assert_close_to_ref = _rc.TOL, _rc.assert_close_to_ref  # the dtype tolerance table of tests/conftest.py

sim_ops = torch.ops.kernelfuse_sim  # the CUDA code paths, under the simulator
cpu_ops = torch.ops.kernelfuse  # the CPU kernels

SCHEDULES = {"forward": 0, "reverse": 1, "random": 2}


def _reload_switches():
    """The environment switches are read once (csrc/common/config.h): both libraries re-read them."""
    _lib.kernelfuse_reload_config()
    for reload in _rc.RELOADERS:
        reload()


@pytest.fixture
def env_switch():
    """env_switch(name, value): set (value None: unset) an environment switch for this test and make
    the simulator library (and kernelfuse) re-read it; restored and re-read after the test."""
    saved = {}

    def set_switch(name, value):
        saved.setdefault(name, os.environ.get(name))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        _reload_switches()

    yield set_switch
    for name, old in saved.items():
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
    _reload_switches()


def configure(schedule="forward", seed=1, workers=1, arch=90, race_check=False):
    """Simulator settings for the following launches: the order runnable threads resume in
    (forward / reverse / random, seeded), OS threads over a grid's blocks, the simulated GPU
    (arch 90: H100/H200, 227 KB opt-in shared memory, 132 SMs; 80: A100, 163 KB, 108 SMs), and the
    shared-memory race check (two threads changing one byte between barriers fails the launch)."""
    _lib.kf_sim_configure(SCHEDULES[schedule], seed, workers, arch)
    _lib.kf_sim_configure_race_check(int(race_check))


@pytest.fixture(autouse=True)
def _default_sim_config():
    configure()
    yield
    configure()


def run_schedules(fn, schedules=("forward", "reverse", "random")):
    """fn() under each thread schedule, the first with the write-write race check on; asserts the
    results are bitwise equal (a read-write race, e.g. a missing __syncthreads, usually makes them
    differ or read the NaN poison) and returns the first. fn returns a tensor or a tuple of tensors."""
    outs = []
    for i, s in enumerate(schedules):
        configure(s, seed=12345, race_check=i == 0)
        r = fn()
        outs.append(r if isinstance(r, (tuple, list)) else (r,))
    configure()
    for s, o in zip(schedules[1:], outs[1:]):
        for a, b in zip(outs[0], o):
            if isinstance(a, torch.Tensor):
                torch.testing.assert_close(
                    a,
                    b,
                    rtol=0,
                    atol=0,
                    equal_nan=True,
                    msg=lambda m: f"{schedules[0]} vs {s} thread schedule (a race?): {m}",
                )
    r = outs[0]
    return r if len(r) > 1 else r[0]


# ---- coverage: every __global__ kernel of every .cu file must have run ----
_GLOBAL = re.compile(r"__global__\s+(?:void\s+)?(?:__launch_bounds__\([^)]*\)\s+)?(?:void\s+)?(\w+)\s*\(")


def kernels_present():
    """{cu file stem without _cuda: [kernel names]} from the sources."""
    out = {}
    for cu in sorted((ROOT / "csrc").rglob("*_cuda.cu")):
        out[cu.stem[: -len("_cuda")]] = sorted(set(_GLOBAL.findall(cu.read_text())))
    return out


def kernels_executed():
    """{"file: kernel": (launches, distinct instantiations)} so far in this process."""
    res = {}
    for i in range(_lib.kf_sim_kernel_count()):
        res[_lib.kf_sim_kernel_what(i).decode()] = (_lib.kf_sim_kernel_launches(i), _lib.kf_sim_kernel_variants(i))
    return res


class count_launches:
    """Launches of each named kernel ("file: kernel") during the with-block: c[name] or c.n[name].
    Proves which path an op took."""

    def __init__(self, *names):
        self.names = names

    def __enter__(self):
        self.before = {k: kernels_executed().get(k, (0, 0))[0] for k in self.names}
        return self

    def __exit__(self, *exc):
        now = kernels_executed()
        self.n = {k: now.get(k, (0, 0))[0] - self.before[k] for k in self.names}

    def __getitem__(self, k):
        return self.n[k]


def coverage_table():
    present, ran = kernels_present(), kernels_executed()
    rows, n_ran, n_all = [], 0, 0
    for f, names in present.items():
        for k in names:
            launches, variants = ran.get(f"{f}: {k}", (0, 0))
            n_all += 1
            n_ran += launches > 0
            rows.append((f"{f}_cuda.cu", k, launches, variants))
    return rows, n_ran, n_all


def pytest_terminal_summary(terminalreporter):
    rows, n_ran, n_all = coverage_table()
    if not kernels_executed():
        return
    tr = terminalreporter
    tr.section("CUDA kernels executed under the simulator")
    tr.write_line(f"{'file':<26} {'kernel':<28} {'launches':>9} {'instantiations':>15}")
    for f, k, launches, variants in rows:
        tr.write_line(f"{f:<26} {k:<28} {launches:>9} {variants:>15}" + ("" if launches else "   NOT RUN"))
    tr.write_line(f"kernels executed / kernels present: {n_ran} / {n_all}")
