"""Random features: kernelfuse's fused maps vs plain torch and scikit-learn, one run.

    python bench/bench_features.py [--quick] [--out bench/results/features.md]

CPU, float32 (the issue's shapes):
* rff / sorf throughput: X 100,000 x 128 -> 4,096 cos features: kernelfuse.random_features
  (fused GEMM + cos), kernelfuse.structured_features (SORF), sklearn RBFSampler.transform, plain
  torch (addmm + in-place cos and scale). Target: fused rff >= 1.5x plain torch.
* d = 1,024: X 20,000 x 1,024 -> 4,096 features: fused SORF vs plain-torch RFF, with the kernel
  approximation error of each on 2,000 points. Target: sorf >= 2x plain-torch rff, error <= rff's.
* fwht: 8,192 rows x 4,096 vs a plain-torch radix-2 FWHT.
* approximation error (relative Frobenius, Gaussian kernel, bandwidth = median distance,
  1,024 features as 512 sin/cos pairs) of RFF / ORF / SORF / Fastfood on sklearn's digits
  (1,797 points, standardised), mean and std over 5 seeds.
* PrivateKernelDensity: error of the private kernel mean vs epsilon (breast-cancer data).
* SNNKLinear vs the dense layer it replaces on sklearn's digits (parameters, test accuracy).
--quick: small shapes, a smoke run in seconds.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import kernelfuse as kf  # noqa: E402
from common import Row, machine_line, markdown_table, peak_extra_memory, save_report  # noqa: E402
from kernelfuse.features import RandomFeatures, exact_kernel  # noqa: E402
from kernelfuse.reference.features import fwht as torch_fwht  # noqa: E402  (plain-torch radix-2 FWHT)


def torch_rff(X, W, b, scale):
    z = torch.addmm(b, X, W)
    z.cos_()
    return z.mul_(scale)


_CPU = {}


def measure(fn, repeat):
    """(median wall time, peak extra memory); the median CPU time of the process over the same
    calls (all threads: robust when other jobs share the machine) goes to _CPU[fn]."""
    fn()
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        del out
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    _CPU["last"] = float(np.median(cpus))
    return float(np.median(walls)), peak_extra_memory(fn)


def add(rows, case, impl, tm, work, note=""):
    t, m = tm
    rows.append(Row(case, impl, t, work, m, note, extra={"cpu": _CPU["last"]}))


def bench_rff(rows, N, d, D, repeat, with_sklearn=True, tag=""):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, d, generator=g) / math.sqrt(d)
    rf = RandomFeatures(d, D, lengthscale=1.0, seed=0)
    W, b = rf.W, rf.b
    scale = math.sqrt(2.0 / D)
    case = f"{tag}N={N:,} d={d} D={D} f32"
    work = 2.0 * N * d * D
    ours = lambda: kf.random_features(X, W, b, kind="cos")  # noqa: E731
    y0, y1 = ours(), torch_rff(X, W, b, scale)
    note = f"max abs diff vs torch {(y0 - y1).abs().max().item():.1e}"
    del y0, y1
    add(rows, case, "kernelfuse rff (fused)", measure(ours, repeat), work, note)
    sorf = RandomFeatures(d, D, method="sorf", lengthscale=1.0, seed=0)
    add(rows, case, "kernelfuse sorf (fused)", measure(lambda: sorf(X), repeat), work)
    add(rows, case, "torch addmm + cos", measure(lambda: torch_rff(X, W, b, scale), repeat), work)
    if with_sklearn:
        from sklearn.kernel_approximation import RBFSampler

        Xn = X.numpy()
        S = RBFSampler(gamma=0.5, n_components=D, random_state=0).fit(Xn)
        add(rows, case, "sklearn RBFSampler.transform", measure(lambda: S.transform(Xn), repeat), work)
    return case


def rel_frob(phi, K):
    return ((phi @ phi.T - K).norm() / K.norm()).item()


def bench_fwht(rows, R, n, repeat):
    x = torch.randn(R, n)
    case = f"fwht {R:,} x {n} f32"
    work = R * n * math.log2(n)
    note = f"max abs diff {(kf.fwht(x) - torch_fwht(x)).abs().max().item():.1e}"
    add(rows, case, "kernelfuse fwht", measure(lambda: kf.fwht(x), repeat), work, note)
    add(rows, case, "torch radix-2 FWHT", measure(lambda: torch_fwht(x), repeat), work)


def approx_errors(n_feat, seeds):
    from sklearn.datasets import load_digits

    X = torch.tensor(load_digits().data, dtype=torch.float64)
    X = (X - X.mean(0)) / (X.std(0) + 1e-12)
    X = X[:, X.std(0) > 0]
    ls = torch.cdist(X, X).median().item()
    K = exact_kernel("gaussian", X, X, lengthscale=ls)
    res = {}
    for m in ("rff", "orf", "sorf", "fastfood"):
        e = [
            rel_frob(
                RandomFeatures(X.shape[1], n_feat, method=m, lengthscale=ls, seed=s, pairs=True, dtype=torch.float64)(
                    X
                ),
                K,
            )
            for s in range(seeds)
        ]
        res[m] = (float(np.mean(e)), float(np.std(e)))
    from sklearn.kernel_approximation import RBFSampler

    e = []
    for s in range(seeds):
        Z = torch.tensor(
            RBFSampler(gamma=1 / (2 * ls * ls), n_components=n_feat, random_state=s).fit_transform(X.numpy())
        )
        e.append(rel_frob(Z, K))
    res["sklearn RBFSampler (cos + phase)"] = (float(np.mean(e)), float(np.std(e)))
    return X.shape, ls, res


def d1024_errors(n_pts, d, D, seeds):
    """Error of cos features (rff vs sorf) at d = 1024 on 2,000 points of a 10-cluster mixture."""
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(10, d, generator=g, dtype=torch.float64)
    X = centres[torch.randint(0, 10, (n_pts,), generator=g)] + 0.7 * torch.randn(
        n_pts, d, generator=g, dtype=torch.float64
    )
    ls = torch.cdist(X, X).median().item()
    K = exact_kernel("gaussian", X, X, lengthscale=ls)
    out = {}
    for m in ("rff", "sorf"):
        out[m] = float(
            np.mean(
                [
                    rel_frob(RandomFeatures(d, D, method=m, lengthscale=ls, seed=s, dtype=torch.float64)(X), K)
                    for s in range(seeds)
                ]
            )
        )
    return out


def dp_errors(eps_list, seeds, m=256):
    from kernelfuse.kde import PrivateKernelDensity
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer().data
    X = (X - X.mean(0)) / X.std(0)
    Xt = torch.tensor(X)
    ls = torch.cdist(Xt, Xt).median().item()
    Q = Xt[::3]
    truth = exact_kernel("gaussian", Q, Xt, lengthscale=ls).mean(1)
    rf_only = np.mean(
        [
            (
                RandomFeatures(X.shape[1], 2 * m, lengthscale=ls, seed=s, pairs=True, dtype=torch.float64)(Q)
                @ RandomFeatures(X.shape[1], 2 * m, lengthscale=ls, seed=s, pairs=True, dtype=torch.float64)(Xt).mean(0)
                - truth
            )
            .abs()
            .mean()
            .item()
            for s in range(seeds)
        ]
    )
    out = []
    for eps in eps_list:
        for delta in (0.0, 1e-6):
            e, bound = [], 0.0
            for s in range(seeds):
                p = PrivateKernelDensity(
                    eps, delta=delta, radius=float(np.sqrt(X.shape[1]) * 3), n_features=m, lengthscale=ls, seed=s
                ).fit(X)
                e.append((p.kernel_mean(Q) - truth).abs().mean().item())
                bound = p.error_bound()
            out.append((eps, delta, float(np.mean(e)), bound))
    return X.shape, float(truth.mean()), rf_only, out


def snnk_digits(seeds, epochs, hidden=128, m=32):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    D = load_digits()
    X = torch.tensor(D.data, dtype=torch.float32) / 16.0
    y = torch.tensor(D.target)
    res = {}
    for name in ("dense", "snnk"):
        accs, nparams = [], 0
        for s in range(seeds):
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=s, stratify=y)
            torch.manual_seed(s)
            first = (
                torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU())
                if name == "dense"
                else kf.nn.SNNKLinear(64, hidden, activation="relu", n_features=m, seed=s)
            )
            model = torch.nn.Sequential(first, torch.nn.Linear(hidden, 10))
            opt = torch.optim.Adam(model.parameters(), lr=1e-2)
            for _ in range(epochs):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(Xtr), ytr).backward()
                opt.step()
            with torch.no_grad():
                accs.append((model(Xte).argmax(1) == yte).float().mean().item())
            nparams = sum(p.numel() for p in first.parameters())
        res[name] = (float(np.mean(accs)), float(np.std(accs)), nparams)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "features.md"))
    ap.add_argument("--plot", default=os.path.join(os.path.dirname(__file__), "plots", "features.png"))
    args = ap.parse_args(argv)
    if args.device != "cpu":
        print("bench_features: CPU only for now (the CUDA kernels are compiled, not run)")
        return []
    q = args.quick
    rows = []
    t_start = time.perf_counter()
    N1 = 10_000 if q else 100_000
    rep = 3
    case_rff = bench_rff(rows, N1, 128, 4096, rep)
    print("done rff", flush=True)
    case_1024 = bench_rff(rows, 2_000 if q else 20_000, 1024, 4096, rep, with_sklearn=False, tag="d=1024: ")
    print("done d=1024", flush=True)
    bench_fwht(rows, 1024 if q else 8192, 4096, rep)
    bench_fwht(rows, 16 if q else 64, 1 << 16, rep)
    print("done fwht", flush=True)
    err1024 = d1024_errors(500 if q else 2000, 1024, 4096 if not q else 1024, 2 if q else 3)
    shape, ls, errs = approx_errors(1024, 2 if q else 5)
    print("done errors", flush=True)
    dshape, kmean, rf_only, dp = dp_errors([0.1, 1.0, 10.0] if q else [0.1, 0.3, 1.0, 3.0, 10.0], 2 if q else 5)
    snnk = snnk_digits(1 if q else 3, 60 if q else 200)
    print("done models", flush=True)

    def ratio(case, a, b, cpu=False):
        ra = next(r for r in rows if r.case == case and r.impl == a)
        rb = next(r for r in rows if r.case == case and r.impl == b)
        return rb.extra["cpu"] / ra.extra["cpu"] if cpu else rb.seconds / ra.seconds

    def both(case, a, b):
        return f"{ratio(case, a, b):.2f}x (CPU time: {ratio(case, a, b, True):.2f}x)"

    table = markdown_table(rows, rate_name="GFLOP/s (2NdD) or Gop/s", rate_scale=1e9, baseline="torch addmm + cos")
    lines = [
        f"### Random features (`bench/bench_features.py{' --quick' if q else ''}`)",
        "",
        machine_line("cpu"),
        "",
        table,
        "",
        "CPU time of the process during one call (median; all threads; robust to other jobs on the machine):",
        "",
        "| case | implementation | CPU seconds |",
        "|---|---|---:|",
        *[f"| {r.case} | {r.impl} | {r.extra['cpu']:.2f} |" for r in rows],
        "",
        "| target | measured (wall time ratio; CPU-time ratio) |",
        "|---|---:|",
        f"| fused rff >= 1.5x torch addmm + cos ({case_rff}) | "
        f"{both(case_rff, 'kernelfuse rff (fused)', 'torch addmm + cos')} |",
        f"| fused rff vs sklearn RBFSampler.transform | "
        f"{both(case_rff, 'kernelfuse rff (fused)', 'sklearn RBFSampler.transform')} |",
        f"| fused sorf >= 2x torch rff at d = 1024 ({case_1024}) | "
        f"{both(case_1024, 'kernelfuse sorf (fused)', 'torch addmm + cos')} |",
        f"| sorf error <= rff error at d = 1024 (cos features, D = {4096 if not q else 1024}, "
        f"{500 if q else 2000} points) | sorf {err1024['sorf']:.4f} vs rff {err1024['rff']:.4f} |",
        "",
        f"Kernel approximation error, relative Frobenius |Phi Phi^T - K|_F / |K|_F, Gaussian kernel, "
        f"sklearn digits {tuple(shape)} standardised, bandwidth = median distance ({ls:.2f}), 1,024 features "
        f"(512 frequencies as cos/sin pairs; sklearn: 1,024 cos features with random phase):",
        "",
        "| method | error (mean ± std over seeds) |",
        "|---|---:|",
    ]
    for k, (m_, s_) in errs.items():
        lines.append(f"| {k} | {m_:.4f} ± {s_:.4f} |")
    lines += [
        "",
        f"Private kernel mean (PrivateKernelDensity, m = 256 frequencies, breast-cancer {tuple(dshape)} "
        f"standardised, bandwidth = median distance, {math.ceil(dshape[0] / 3)} queries; mean exact kernel mean "
        f"{kmean:.3f}; random-feature error alone (no noise) {rf_only:.4f}):",
        "",
        "| epsilon | delta | mean abs error | noise bound (95%) |",
        "|---:|---:|---:|---:|",
    ]
    for eps, delta, e, bnd in dp:
        lines.append(f"| {eps} | {delta:g} | {e:.4f} | {bnd:.4f} |")
    lines += [
        "",
        "SNNK on sklearn digits (64 -> 128 hidden -> 10, Adam, full batch; the hidden layer replaced):",
        "",
        "| hidden layer | parameters | test accuracy (mean ± std) |",
        "|---|---:|---:|",
        f"| dense Linear(64, 128) + ReLU | {snnk['dense'][2]:,} | {snnk['dense'][0]:.4f} ± {snnk['dense'][1]:.4f} |",
        f"| SNNKLinear(64, 128, relu, n_features=32) | {snnk['snnk'][2]:,} | "
        f"{snnk['snnk'][0]:.4f} ± {snnk['snnk'][1]:.4f} |",
        "",
        "Throughput rows: rate = 2 N d D / time (GFLOP/s of the projection; fwht rows: n log2 n per row). "
        "torch addmm + cos runs in place (addmm, cos_, mul_: one output-size buffer). sklearn's transform is "
        "given float32 input. Peak extra memory: resident-set peak during one call over the level before it "
        f"(includes the output). Total bench time {time.perf_counter() - t_start:.0f} s.",
        "",
    ]
    text = "\n".join(lines)
    save_report(
        text,
        args.out,
        rows,
        args.plot,
        [(lambda r: r.seconds * 1e3, "median time (ms, log)", "random features: time (lower is better)")],
    )
    return rows


if __name__ == "__main__":
    main()
