"""GP-HM reproduction: high-frequency / multi-scale Poisson problems solved with kernelfuse.gp.GPPDESolver.

    python examples/gp_pde.py [--quick] [--cases poisson1d_sin100 poisson1d_multiscale poisson2d_sin100]
                              [--time-limit 300] [--out docs/kron_gp_pde_results.json]

Cases (GP-HM, ICLR 2024, reports relative L2 errors between about 1e-3 and 1e-7 on these):
  poisson1d_sin100:      u_xx = f on [0, 1], u = sin(100 x)
  poisson1d_multiscale:  u = sin(x) + 0.1 sin(20 x) + 0.05 cos(100 x)
  poisson2d_sin100:      u_xx + u_yy = f on [0, 1]^2, u = sin(100 x) sin(100 y)
Prints and saves the relative L2 error on the collocation grid and on 1000 (1-D) / 200 x 200 (2-D)
held-out points, the fit wall time and the number of objective evaluations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import kernelfuse as kf
import numpy as np
import torch


def cases(quick: bool):
    s100 = lambda x: np.sin(100 * x)  # noqa: E731
    ms = lambda x: np.sin(x) + 0.1 * np.sin(20 * x) + 0.05 * np.cos(100 * x)  # noqa: E731
    ms_xx = lambda x: -np.sin(x) - 40.0 * np.sin(20 * x) - 500.0 * np.cos(100 * x)  # noqa: E731
    s2 = lambda x, y: np.sin(100 * x) * np.sin(100 * y)  # noqa: E731
    n1 = 200 if quick else 400
    n2 = 100 if quick else 400
    return {
        "poisson1d_sin100": dict(
            build=lambda: kf.gp.GPPDESolver.poisson_1d(
                lambda x: -1e4 * np.sin(100 * x), s100, n_grid=n1, num_mixtures=30, max_freq=200.0
            ),
            exact=s100,
            test=np.linspace(0, 1, 1000),
        ),
        "poisson1d_multiscale": dict(
            build=lambda: kf.gp.GPPDESolver.poisson_1d(ms_xx, ms, n_grid=n1, num_mixtures=30, max_freq=200.0),
            exact=ms,
            test=np.linspace(0, 1, 1000),
        ),
        "poisson2d_sin100": dict(
            build=lambda: kf.gp.GPPDESolver.poisson_2d(
                lambda x, y: -2e4 * np.sin(100 * x) * np.sin(100 * y), s2, n_grid=n2, num_mixtures=30, max_freq=200.0
            ),
            exact=s2,
            test=np.stack(
                [a.reshape(-1) for a in np.meshgrid(np.linspace(0, 1, 200), np.linspace(0, 1, 200), indexing="ij")], 1
            ),
        ),
    }


def run(name, spec, max_iter, time_limit, verbose):
    pde = spec["build"]()
    t0 = time.perf_counter()
    pde.fit(max_iter=max_iter, time_limit=time_limit, verbose=verbose)
    wall = time.perf_counter() - t0
    err_grid = pde.relative_l2_error(spec["exact"])
    err_test = pde.relative_l2_error(spec["exact"], spec["test"])
    res = dict(
        case=name,
        rounds=max_iter,
        grid=list(pde.shape),
        components=int(pde.params[0].shape[0]),
        err_grid=err_grid,
        err_test=err_test,
        seconds=wall,
        evals=len(pde.history_),
    )
    print(
        f"{name}: grid {pde.shape}, rel. L2 error {err_grid:.2e} (grid) / {err_test:.2e} (held-out), "
        f"{wall:.1f} s, {len(pde.history_)} evaluations",
        flush=True,
    )
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller grids and budgets")
    ap.add_argument("--cases", nargs="*", default=None)
    ap.add_argument("--rounds", type=int, default=5, help="hyper-parameter rounds of fit()")
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds per case")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "kron_gp_pde_results.json"))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    cs = cases(args.quick)
    names = args.cases or list(cs)
    results = []
    for n in names:
        if n not in cs:
            sys.exit(f"unknown case {n!r}; expected one of {list(cs)}")
        results.append(run(n, cs[n], args.rounds, args.time_limit if not args.quick else 60.0, args.verbose))
    old = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            old = [r for r in json.load(f) if (r["case"], r.get("rounds", 5)) not in {(n, args.rounds) for n in names}]
    with open(args.out, "w") as f:
        json.dump(old + results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
