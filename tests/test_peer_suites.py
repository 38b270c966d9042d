"""The peers' own test suites, run in place from their installed packages, with our classes swapped in.

Each ``tests/peers/suite_<name>.py`` names a peer test module (scikit-learn's, SciPy's), the
class swap and the short list of expected failures with their reasons. The suite runs in a child
pytest with the ``kf_peer_swap`` plugin (tests/peers/kf_peer_swap.py), which patches the peer's
module attribute before the test module imports it. Nothing of the peers' code is copied here.

A suite passes when every test passes or is skipped by the peer's own conditions, except the
listed expected failures, which must fail (strict). The counts are printed (``pytest -s``) and in
the README's compatibility table.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import kernelfuse
import pytest

PEERS = pathlib.Path(__file__).parent / "peers"
SUITES = sorted(p.stem[len("suite_") :] for p in PEERS.glob("suite_*.py"))


def _load_suite(name):
    spec = importlib.util.spec_from_file_location("suite_" + name, PEERS / f"suite_{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_peer_suite(name, tmp_path, extra_args=()):
    """Run suite ``name`` in a child pytest; returns (report dict, completed process)."""
    suite = _load_suite(name)
    pytest.importorskip(suite.MODULE.split(".")[0])
    report = tmp_path / f"{name}.json"
    ours = str(pathlib.Path(kernelfuse.__file__).resolve().parents[1])  # the kernelfuse under test
    env = dict(
        os.environ,
        KF_PEER_SUITE=name,
        KF_PEER_REPORT=str(report),
        PYTHONPATH=os.pathsep.join([str(PEERS), ours] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not our pyproject's options
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        suite.MODULE,
        "-p",
        "kf_peer_swap",
        "-q",
        "-p",
        "no:cacheprovider",
        "-c",
        str(tmp_path / "pytest.ini"),
        "--rootdir",
        str(tmp_path),
        "-W",
        "ignore::DeprecationWarning",
        *extra_args,
    ]
    if suite.SELECT:
        cmd += ["-k", suite.SELECT]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    if not report.exists():
        raise AssertionError(f"peer suite {name} did not report:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return json.loads(report.read_text()), proc


def summarise(outcomes):
    counts = {}
    for k, v in outcomes.items():
        if not k.endswith(" [message]"):
            counts[v] = counts.get(v, 0) + 1
    return counts


@pytest.mark.parametrize("name", SUITES)
def test_peer_suite(name, tmp_path):
    suite = _load_suite(name)
    rep, proc = run_peer_suite(name, tmp_path)
    # the swap happened: every target now names our class
    assert set(rep["swapped"]) == {f"{m}.{a}" for m, a, _, _ in suite.SWAPS}
    for m, a, om, _oa in suite.SWAPS:
        assert rep["swapped"][f"{m}.{a}"].startswith(om), rep["swapped"]
    out = rep["outcomes"]
    counts = summarise(out)
    total = sum(counts.values())
    print(
        f"\n{suite.MODULE} with {', '.join(rep['swapped'].values())}: "
        f"{counts.get('passed', 0)}/{total} passed, {counts.get('xfailed', 0)} expected failures, "
        f"{counts.get('skipped', 0)} skipped; {counts}"
    )
    bad = {k: v for k, v in out.items() if v in ("failed", "error", "xpassed")}
    if bad:
        msgs = "\n\n".join(f"{k}:\n{out.get(k + ' [message]', '')}" for k in list(bad)[:6])
        pytest.fail(
            f"{len(bad)} unexpected outcomes in {suite.MODULE}: {sorted(bad.items())}\n\n{msgs}\n{proc.stdout[-2000:]}"
        )
    assert total > 0 and counts.get("passed", 0) > 0
    # every listed expected failure matched a test that ran
    import fnmatch

    for pattern in suite.XFAIL:
        assert any(fnmatch.fnmatchcase(k, pattern) and v == "xfailed" for k, v in out.items()), (
            f"expected-failure entry {pattern!r} of suite {name} matched no failing test"
        )
