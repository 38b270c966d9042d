"""The main job: every family's benchmark against its reference, one run; writes bench/RESULTS.md.

python bench/run_all.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# one module per op family: bench/bench_<family>.py
FAMILIES = [
    "bench_kde",
    "bench_longconv",
    "bench_longconv_ssm",
    "bench_butterfly",
    "bench_kron",
    "bench_kron_gp",
    "bench_features",
    "bench_distributed",
    "bench_nngp",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small shapes: a smoke run in about a minute")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument(
        "--families",
        nargs="*",
        default=FAMILIES,
        help="run only these (RESULTS.md still collects every family's latest results)",
    )
    args = ap.parse_args()
    sections = []
    for name in args.families:
        mod = importlib.import_module(name)
        out = os.path.join(
            HERE, "results", f"{name[len('bench_') :]}{'-' + args.device if args.device != 'cpu' else ''}.md"
        )
        argv = ["--device", args.device, "--out", out] + (["--quick"] if args.quick else [])
        t0 = time.perf_counter()
        mod.main(argv)
        print(f"[{name}: {time.perf_counter() - t0:.0f} s]", flush=True)
    # RESULTS.md = a header + every family's latest result file (CPU and, when measured, GPU).
    res_dir = os.path.join(HERE, "results")
    for fn in sorted(os.listdir(res_dir)):
        if fn.endswith(".md"):
            with open(os.path.join(res_dir, fn)) as f:
                sections.append(f.read())
    with open(args.results, "w") as f:
        f.write(
            "# Benchmark results\n\nWritten by `make bench` (`bench/run_all.py`) from the latest run of each "
            "family (`bench/results/*.md`); plots in `bench/plots/`. Targets and commentary: README.md.\n\n"
        )
        f.write("\n".join(sections))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
