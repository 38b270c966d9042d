"""Shared test fixtures: devices (cpu, and cuda when available) and the tolerance table."""

import os

os.environ.setdefault("KERNELFUSE_POISON", "1")  # fresh op outputs start as NaN: unwritten elements show

import kernelfuse  # noqa: F401, E402  (registers the ops)
import pytest  # noqa: E402
import torch  # noqa: E402

# The native libraries read the environment switches once (csrc/common/config.h); these re-read
# them. tests/sim/conftest.py does not add to this list: it keeps its own env_switch fixture, which
# re-reads the simulator library's switches and then these (appending the simulator library's
# reloader here did not reach the env_switch fixture the simulator tests get).
RELOADERS = [kernelfuse.reload_config]


def _reload_switches():
    for reload in RELOADERS:
        reload()


@pytest.fixture
def env_switch():
    """env_switch(name, value): set (value None: unset) an environment switch for this test, and make
    the native code re-read it; every switch touched is restored (and re-read) after the test."""
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


# tests/sim runs in its own session with the simulator library and ASan preloaded (make test).
collect_ignore = [] if os.environ.get("KERNELFUSE_SIM_LIB") else ["sim"]

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Relative tolerances against the float64 reference, by input dtype.
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=2e-6, atol=1e-6),  # atol is relative to max|ref| (input rounding)
    torch.float16: dict(rtol=1e-2, atol=1e-3),
    torch.bfloat16: dict(rtol=2e-2, atol=1e-2),
}
TOL[torch.complex128] = TOL[torch.float64]
TOL[torch.complex64] = TOL[torch.float32]


def assert_close_to_ref(out, expected, dtype, *, factor=1.0, atol_scale=None):
    """out against a float64 (or complex128) reference with the tolerance of the input dtype; atol is
    relative to max(1, max|expected|) (or atol_scale), both tolerances times factor. On the CPU."""
    tol = TOL[dtype]
    if atol_scale is None:
        atol_scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    wide = torch.complex128 if (out.is_complex() or expected.is_complex()) else torch.float64
    torch.testing.assert_close(
        out.to(wide).cpu(), expected.to(wide).cpu(), rtol=tol["rtol"] * factor, atol=tol["atol"] * atol_scale * factor
    )


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none on this machine)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
