"""pytest plugin: run a peer library's own, installed test module with our class swapped in.

Loaded by tests/test_peer_suites.py in a child pytest (``-p kf_peer_swap``), never by our own
test session. ``KF_PEER_SUITE`` names a ``suite_<name>.py`` module beside this file, which
defines:

    MODULE  the peer's test module, run in place (``pytest --pyargs MODULE``)
    SWAPS   [(peer_module, attribute, our_module, our_attribute), ...]: set before the test
            module is imported, so ``from peer import Class`` in it binds ours
    SELECT  a ``-k`` expression, or None for the whole module
    XFAIL   {fnmatch pattern of the test id after '::': reason}: expected failures, marked
            ``xfail(strict=True)``, so one that starts to pass fails the run until the list is
            updated

``KF_PEER_REPORT`` is the path of the JSON report: per-test outcome, the swaps as applied.
No code of the peer is copied: the peer's module is imported from its installed package.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os

import pytest

_outcomes: dict = {}
_swapped: dict = {}


def _suite():
    return importlib.import_module("suite_" + os.environ["KF_PEER_SUITE"])


def pytest_configure(config):
    suite = _suite()
    for peer_mod, attr, our_mod, our_attr in suite.SWAPS:
        ours = getattr(importlib.import_module(our_mod), our_attr)
        peer = importlib.import_module(peer_mod)
        if not hasattr(peer, attr):
            raise RuntimeError(f"kf_peer_swap: {peer_mod} has no attribute {attr!r} to swap")
        setattr(peer, attr, ours)
        _swapped[f"{peer_mod}.{attr}"] = f"{ours.__module__}.{ours.__qualname__}"


def pytest_collection_modifyitems(config, items):
    xfail = _suite().XFAIL
    for item in items:
        name = item.nodeid.split("::", 1)[-1]
        for pattern, reason in xfail.items():
            if fnmatch.fnmatchcase(name, pattern):
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
                break


def pytest_runtest_logreport(report):
    name = report.nodeid.split("::", 1)[-1]
    if report.when == "call" or report.outcome != "passed":
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        else:
            outcome = report.outcome
        if report.when != "call" and outcome == "failed":
            outcome = "error"
        if name not in _outcomes or outcome in ("failed", "error"):
            _outcomes[name] = outcome
    if report.when == "call" and report.failed and not hasattr(report, "wasxfail"):
        _outcomes[name + " [message]"] = report.longreprtext[-1500:]


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("KF_PEER_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"swapped": _swapped, "outcomes": _outcomes, "exitstatus": int(exitstatus)}, f, indent=1)
