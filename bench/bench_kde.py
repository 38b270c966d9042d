"""Kernel sums: kernelfuse vs plain torch (chunked cdist) vs pykeops vs scikit-learn, one run.

    python bench/bench_kde.py [--device cuda] [--quick] [--out bench/results/kde.md]
    python bench/bench_kde.py --profiles [--threads 1] [--size 4096] [--kernels matern32,...]  # ns per pair

Shapes from the issue: d=3, m=20k, n=200k and d=64, m=5k, n=50k, float32, gaussian. Slow
baselines run on the first `--sub` queries of the same inputs; every row reports its own pair
rate, so ratios compare throughput on identical data. sklearn (exact, rtol=0) runs one smaller
size. Peak extra memory is measured per call (bench/common.py).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import kernelfuse as kf  # noqa: E402
from common import Row, fmt_count, machine_line, markdown_table, peak_extra_memory, save_report, timeit  # noqa: E402


def torch_chunked(x, y, w, h, chunk=1024):
    """What users write without kernelfuse: chunked torch.cdist + exp + matmul."""
    out = []
    for s in range(0, x.shape[0], chunk):
        d = torch.cdist(x[s : s + chunk] / h, y / h)
        k = torch.exp(-0.5 * d * d)
        out.append(k @ w if w is not None else k.sum(1))
    return torch.cat(out)


def keops_sum(x, y, w, h):
    from pykeops.torch import LazyTensor

    xi = LazyTensor((x / h)[:, None, :])
    yj = LazyTensor((y / h)[None, :, :])
    k = (-0.5 * ((xi - yj) ** 2).sum(-1)).exp()
    return (k * LazyTensor(w[None, :, None])).sum(1).view(-1) if w is not None else k.sum(1).view(-1)


def have_keops() -> bool:
    try:
        import pykeops  # noqa: F401

        return True
    except Exception:
        return False


def bench_forward_backward(rows, case, x, y, w, h, sub, device, with_keops, ref_full):
    m, n = x.shape[0], y.shape[0]
    xs = x[:sub]
    # forward
    f = lambda: kf.kernel_sum(x, y, w, bandwidth=h)  # noqa: E731
    rows.append(
        Row(case + " fwd", "kernelfuse", timeit(f, device=device, repeat=5), m * n, peak_extra_memory(f, device=device))
    )
    xr = x if ref_full else xs
    f = lambda: torch_chunked(xr, y, w, h)  # noqa: E731
    rows.append(
        Row(
            case + " fwd",
            "torch chunked cdist",
            timeit(f, device=device, repeat=3),
            xr.shape[0] * n,
            peak_extra_memory(f, device=device),
            "" if ref_full else f"first {sub} queries",
        )
    )
    if with_keops:
        f = lambda: keops_sum(xs, y, w, h)  # noqa: E731
        f()  # compile outside the timing
        rows.append(
            Row(
                case + " fwd",
                "pykeops",
                timeit(f, device=device, repeat=3),
                sub * n,
                peak_extra_memory(f, device=device),
                f"first {sub} queries",
            )
        )
    # forward + backward for x (the KDE gradient / mean-shift use), and for x, y and weights
    xg = x.clone().requires_grad_(True)

    def fb():
        kf.kernel_sum(xg, y, w, bandwidth=h).sum().backward()
        xg.grad = None

    rows.append(
        Row(
            case + " fwd+bwd(x)",
            "kernelfuse",
            timeit(fb, device=device, repeat=3),
            m * n,
            peak_extra_memory(fb, device=device),
        )
    )
    yg, wg = y.clone().requires_grad_(True), w.clone().requires_grad_(True)

    def fb_all():
        kf.kernel_sum(xg, yg, wg, bandwidth=h).sum().backward()
        xg.grad = yg.grad = wg.grad = None

    rows.append(
        Row(
            case + " fwd+bwd(x,y,w)",
            "kernelfuse",
            timeit(fb_all, device=device, repeat=3),
            m * n,
            peak_extra_memory(fb_all, device=device),
        )
    )
    xsg = xr.clone().requires_grad_(True)

    def fb_ref():
        torch_chunked(xsg, y, w, h).sum().backward()
        xsg.grad = None

    rows.append(
        Row(
            case + " fwd+bwd(x)",
            "torch chunked cdist",
            timeit(fb_ref, device=device, repeat=3),
            xr.shape[0] * n,
            peak_extra_memory(fb_ref, device=device),
            "" if ref_full else f"first {sub} queries",
        )
    )


def bench_sklearn(rows, device):
    import numpy as np
    from sklearn.neighbors import KernelDensity

    g = torch.Generator().manual_seed(1)
    m, n, d, h = 2000, 20000, 3, 0.3
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Q = torch.randn(m, d, generator=g, dtype=torch.float64)
    case = f"log-density d={d} m={m} n={n} f64"
    skl = KernelDensity(bandwidth=h, kernel="gaussian", rtol=0, atol=0).fit(X.numpy())
    Qn = Q.numpy()
    f = lambda: skl.score_samples(Qn)  # noqa: E731
    rows.append(Row(case, "sklearn KernelDensity (rtol=0)", timeit(f, repeat=1, warmup=0), m * n, peak_extra_memory(f)))
    norm = math.log(n) + d * math.log(h) + 0.5 * d * math.log(2 * math.pi)
    Xd, Qd = X.to(device), Q.to(device)
    f = lambda: kf.kernel_logsumexp(Qd, Xd, bandwidth=h) - norm  # noqa: E731
    rows.append(Row(case, "kernelfuse", timeit(f, device=device), m * n, peak_extra_memory(f, device=device)))
    err = np.max(np.abs(f().cpu().numpy() - skl.score_samples(Qn)) / np.abs(skl.score_samples(Qn)))
    rows[-1].note = f"max rel. diff to sklearn {err:.1e}"


PROFILE_KERNELS = ("gaussian", "laplacian", "cauchy", "matern32", "matern52", "epanechnikov", "rational_quadratic")


def bench_profiles(size, threads, device, dims=(3, 64), kernels=PROFILE_KERNELS):
    """ns per pair of the fused sums per kernel profile, m = n = size: kernel_sum (the linear-domain
    profile k) and kernel_logsumexp (log k per pair, then a max-shifted exp), float32 and float64,
    on `threads` threads. Printed as a markdown table (not saved)."""
    kf.set_num_threads(threads)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lines = [
        f"### Kernel sums by profile (`bench/bench_kde.py --profiles`, m = n = {size}, {threads} thread(s))",
        "",
        machine_line(device),
        "",
        "| kernel | d | dtype | kernel_sum ns/pair | kernel_logsumexp ns/pair |",
        "|---|---|---|---|---|",
    ]
    for d in dims:
        for dtype in (torch.float32, torch.float64):
            x = torch.randn(size, d, device=device, dtype=dtype)
            y = torch.randn(size, d, device=device, dtype=dtype)
            w = torch.rand(size, device=device, dtype=dtype)
            h = 0.5 * math.sqrt(d)
            for kernel in kernels:
                t_sum = timeit(lambda: kf.kernel_sum(x, y, w, bandwidth=h, kernel=kernel), device=device, repeat=5)
                t_lse = timeit(
                    lambda: kf.kernel_logsumexp(x, y, w.log(), bandwidth=h, kernel=kernel), device=device, repeat=5
                )
                ns = 1e9 / (size * size)
                lines.append(
                    f"| {kernel} | {d} | {str(dtype).replace('torch.', '')} | {t_sum * ns:.2f} | {t_lse * ns:.2f} |"
                )
                print(lines[-1], flush=True)
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    ap.add_argument("--sub", type=int, default=2000, help="queries for the slow baselines")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "kde.md"))
    ap.add_argument("--plot", default=os.path.join(os.path.dirname(__file__), "plots", "kde.png"))
    ap.add_argument("--profiles", action="store_true", help="only the ns-per-pair table by kernel profile")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of --profiles")
    ap.add_argument("--size", type=int, default=4096, help="m = n of --profiles")
    ap.add_argument("--kernels", default=",".join(PROFILE_KERNELS), help="comma-separated kernels of --profiles")
    args = ap.parse_args(argv)
    device = args.device
    if args.profiles:
        return bench_profiles(args.size, args.threads, device, kernels=args.kernels.split(","))
    torch.manual_seed(0)
    with_keops = have_keops() and device == "cpu"
    shapes = [(3, 20_000, 200_000, 0.2, False), (64, 5_000, 50_000, 3.0, True)]
    if args.quick:
        shapes = [(3, 2_000, 20_000, 0.2, False), (64, 500, 5_000, 3.0, True)]
        args.sub = min(args.sub, 500)
    rows = []
    for d, m, n, h, ref_full in shapes:
        x = torch.randn(m, d, device=device)
        y = torch.randn(n, d, device=device)
        w = torch.rand(n, device=device)
        case = f"d={d} m={fmt_count(m)} n={fmt_count(n)} f32"
        bench_forward_backward(rows, case, x, y, w, h, args.sub, device, with_keops, ref_full)
        print(f"done {case}", flush=True)
    try:
        bench_sklearn(rows, device)
    except ImportError:
        print("scikit-learn not installed: skipped")
    table = markdown_table(rows, rate_name="Gpairs/s", rate_scale=1e9, baseline="torch chunked cdist")
    text = (
        f"### Kernel sums (`bench/bench_kde.py{' --quick' if args.quick else ''}`)\n\n{machine_line(device)}\n\n"
        f"{table}\n\npykeops: {'included' if with_keops else 'not installed (skipped)'}. Gaussian kernel, "
        "weights (n,). 'first N queries': that baseline ran on the first N query rows of the same data; "
        "rates (pairs per second) are comparable.\n"
    )
    save_report(
        text,
        args.out,
        rows,
        args.plot,
        [(lambda r: r.rate / 1e9, "Gpairs / s (log)", "Kernel sums: throughput (higher is better)")],
    )
    return rows


if __name__ == "__main__":
    main()
