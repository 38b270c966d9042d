"""Kronecker GP algebra: kernelfuse.kron_* vs plain torch and GPyTorch / linear_operator, one run.

    python bench/bench_kron.py [--quick] [--out bench/results/kron.md]

Cases (float64, CPU; the issue's shapes):
  - kron_matmul, three 64x64 factors (N = 262,144);
  - solve + log-det (kron_gp_mll forward), same grid;
  - MLL value + gradient (factors, noise), same grid;
  - exact posterior variance on a 512 x 512 grid (kron_posterior at the training grid; mean too).
Baselines: plain torch with per-axis torch.matmul mode products and torch.linalg.eigh, autograd
through eigh (kernelfuse.reference.kron.*_modes / *_eig: the dense references would need an N x N
matrix, 550 GB at N = 262,144); linear_operator's KroneckerProductLinearOperator (+ add_diagonal:
KroneckerProductAddedDiagLinearOperator) where installed.
A second table reports what GPyTorch computes (measured, not assumed): its log-det on jittered,
near-singular factors against the exact one, the operator / algorithm an ExactGP uses with a
GridKernel and with ScaleKernel(GridKernel) (Cholesky / eigen vs CG + Lanczos), and its exact
posterior variance at 512^2 in a subprocess capped at 16 GiB of address space.
Targets (2-core CPU): mat-vec <= 15 ms, solve + log-det <= 35 ms, MLL + gradient <= 60 ms,
512^2 exact variance <= 150 ms.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import textwrap
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import kernelfuse as kf  # noqa: E402
from common import Row, machine_line, markdown_table, peak_extra_memory, save_report, timeit  # noqa: E402
from kernelfuse.reference import kron as ref  # noqa: E402

try:
    import gpytorch  # noqa: F401
    from linear_operator.operators import DenseLinearOperator, KroneckerProductLinearOperator

    HAVE_LO = True
except Exception:  # noqa: BLE001
    HAVE_LO = False

DT = torch.float64


def rbf(n, ls, lo=0.0, hi=1.0):
    x = torch.linspace(lo, hi, n, dtype=DT)[:, None]
    return torch.exp(-0.5 * (x - x.T) ** 2 / ls**2)


def measure(fn, repeat):
    return timeit(fn, repeat=repeat, warmup=1), peak_extra_memory(fn)


def add(rows, case, impl, fn, repeat, work, note=""):
    try:
        t, m = measure(fn, repeat)
    except (RuntimeError, MemoryError) as e:  # e.g. out of memory
        rows.append(Row(case, impl, float("nan"), work, None, f"failed: {str(e).splitlines()[0][:80]}"))
        return
    rows.append(Row(case, impl, t, work, m, note))
    print(f"  {case:28s} {impl:34s} {t * 1e3:9.2f} ms", flush=True)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def bench_grid3(rows, n, repeat):
    fs = [rbf(n, 0.15), rbf(n, 0.2), rbf(n, 0.25)]  # three distinct factors (no shared eigh)
    N = n**3
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, generator=g, dtype=DT)
    s2 = torch.tensor(1e-2, dtype=DT)
    case = f"kron_matmul 3x{n}^3"
    flops = 3 * 2 * n * N
    y0, y1 = kf.kron_matmul(fs, x), ref.kron_matmul_modes(fs, x)
    add(rows, case, "kernelfuse", lambda: kf.kron_matmul(fs, x), repeat, flops, f"max rel. diff {rel(y0, y1):.1e}")
    add(rows, case, "torch (mode products)", lambda: ref.kron_matmul_modes(fs, x), repeat, flops)
    if HAVE_LO:
        K = KroneckerProductLinearOperator(*[DenseLinearOperator(f) for f in fs])
        xl = x.unsqueeze(-1)
        add(
            rows,
            case,
            "linear_operator",
            lambda: K @ xl,
            repeat,
            flops,
            f"max rel. diff {rel((K @ xl).squeeze(-1), y1):.1e}",
        )

    case = f"solve+logdet 3x{n}^3"
    n0, a0 = kf.kron_gp_mll(fs, x, s2)
    n1, a1 = ref.kron_gp_mll_eig(fs, x, s2)
    add(
        rows,
        case,
        "kernelfuse",
        lambda: kf.kron_gp_mll(fs, x, s2),
        repeat,
        N,
        f"nll diff {abs(n0 - n1).item():.1e}, alpha rel. diff {rel(a0, a1):.1e}",
    )
    add(rows, case, "torch (eigh + mode products)", lambda: ref.kron_gp_mll_eig(fs, x, s2), repeat, N)
    if HAVE_LO:

        def lo_fwd():
            A = KroneckerProductLinearOperator(*[DenseLinearOperator(f) for f in fs]).add_diagonal(s2)
            return A.inv_quad_logdet(inv_quad_rhs=x.unsqueeze(-1), logdet=True)

        q, ld = lo_fwd()
        lo_nll = 0.5 * q + 0.5 * ld + 0.5 * N * math.log(2 * math.pi)
        add(rows, case, "linear_operator", lo_fwd, repeat, N, f"nll diff {abs(lo_nll - n1).item():.1e}")

    case = f"MLL+grad 3x{n}^3"
    fr = [f.clone().requires_grad_() for f in fs]
    sr = s2.clone().requires_grad_()

    def step(fn):
        def run():
            nll, _ = fn(fr, x, sr)
            nll.backward()
            for t in (*fr, sr):
                t.grad = None

        return run

    add(rows, case, "kernelfuse", step(kf.kron_gp_mll), repeat, N)
    add(rows, case, "torch (eigh + mode products)", step(ref.kron_gp_mll_eig), repeat, N, "autograd through eigh")
    if HAVE_LO:

        def lo_step():
            A = KroneckerProductLinearOperator(*[DenseLinearOperator(f) for f in fr]).add_diagonal(sr)
            q, ld = A.inv_quad_logdet(inv_quad_rhs=x.unsqueeze(-1), logdet=True)
            (0.5 * q + 0.5 * ld).backward()
            for t in (*fr, sr):
                t.grad = None

        add(rows, case, "linear_operator", lo_step, repeat, N)


def bench_var(rows, n, repeat):
    N = n * n
    g = torch.Generator().manual_seed(1)
    y = torch.randn(N, generator=g, dtype=DT)
    s2 = torch.tensor(1e-2, dtype=DT)
    for shared in (False, True):
        fs = [rbf(n, 0.1)] * 2 if shared else [rbf(n, 0.1), rbf(n, 0.12, 0, 1.5)]
        case = f"exact var {n}^2" + (" (same factor)" if shared else "")
        m0, v0 = kf.kron_posterior(fs, y, s2)
        v1 = ref.kron_posterior_var_eig(fs, s2)
        add(
            rows,
            case,
            "kernelfuse",
            lambda: kf.kron_posterior(fs, y, s2),
            repeat,
            N,
            f"var max abs diff {((v0 - v1).abs().max()).item():.1e}; mean included",
        )
        add(
            rows,
            case,
            "torch (eigh + mode products)",
            lambda: ref.kron_posterior_var_eig(fs, s2),
            repeat,
            N,
            "variance only",
        )


GPY_SCRIPT = textwrap.dedent("""
    import resource, sys, time, torch, gpytorch
    resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))
    n = int(sys.argv[1])
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    grid = torch.stack([x, x], -1)
    X = gpytorch.utils.grid.create_data_from_grid(grid)
    y = torch.sin(6 * X[:, 0]) * torch.cos(4 * X[:, 1])
    class GP(gpytorch.models.ExactGP):
        def __init__(s, X, y, lik):
            super().__init__(X, y, lik)
            s.mean_module = gpytorch.means.ZeroMean()
            s.covar_module = gpytorch.kernels.GridKernel(gpytorch.kernels.RBFKernel(), grid=grid)
        def forward(s, x):
            return gpytorch.distributions.MultivariateNormal(s.mean_module(x), s.covar_module(x))
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    m = GP(X, y, lik).double()
    m.eval(); lik.eval()
    t = time.perf_counter()
    try:
        with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
            v = m(X).variance
        print(f"ok {time.perf_counter() - t:.3f} s")
    except BaseException as e:
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        print(f"failed after {time.perf_counter() - t:.1f} s: {type(e).__name__}: {msg}")
""")


def gpytorch_checks(n_var, quick):
    """What GPyTorch / linear_operator compute, measured."""
    lines = [
        "| check | GPyTorch / linear_operator | exact (kernelfuse, checked against dense float64) | note |",
        "|---|---|---|---|",
    ]
    if not HAVE_LO:
        return "GPyTorch / linear_operator not installed: checks skipped.\n"
    import gpytorch
    import linear_operator

    # 1. log-det of jittered, near-singular Kronecker factors
    for n, ls, jit in ((16, 0.5, 1e-6), (16, 0.5, 1e-8), (32, 0.5, 1e-6)):
        fs = [rbf(n, ls)] * 2
        A = KroneckerProductLinearOperator(*[DenseLinearOperator(f) for f in fs]).add_diagonal(
            torch.tensor(jit, dtype=DT)
        )
        lo_ld = A.logdet().item()
        z = torch.zeros(n * n, dtype=DT)
        ours = 2 * (kf.kron_gp_mll(fs, z, jit)[0].item() - 0.5 * n * n * math.log(2 * math.pi))
        dense = torch.linalg.slogdet(torch.kron(fs[0], fs[1]) + jit * torch.eye(n * n, dtype=DT))[1].item()
        lines.append(
            f"| log det, RBF {n}x{n} grid (ls {ls}), jitter {jit:g} | {lo_ld:.6f} | {ours:.6f} "
            f"(dense slogdet {dense:.6f}) | difference {lo_ld - ours:+.3g} nats |"
        )
    # 2. ExactGP on a grid: which operator, which algorithm, how close to exact
    n = 32 if quick else 48
    x = torch.linspace(0, 1, n, dtype=DT)
    grid = torch.stack([x, x], -1)
    X = gpytorch.utils.grid.create_data_from_grid(grid)
    y = torch.sin(6 * X[:, 0]) * torch.cos(4 * X[:, 1]) + 0.05 * torch.randn(n * n, dtype=DT)
    for scaled in (False, True):

        class GP(gpytorch.models.ExactGP):
            def __init__(s, X, y, lik):
                super().__init__(X, y, lik)
                s.mean_module = gpytorch.means.ZeroMean()
                k = gpytorch.kernels.GridKernel(gpytorch.kernels.RBFKernel(), grid=grid)
                s.covar_module = gpytorch.kernels.ScaleKernel(k) if scaled else k

            def forward(s, x):
                return gpytorch.distributions.MultivariateNormal(s.mean_module(x), s.covar_module(x))

        lik = gpytorch.likelihoods.GaussianLikelihood().double()
        m = GP(X, y, lik).double()
        m.train()
        lik.train()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, m)
        with torch.no_grad():
            out = lik(m(X))
            op = type(out.lazy_covariance_matrix).__name__
            t0 = time.perf_counter()
            gp_nll = (-mll(m(X), y) * n * n).item()
            t_gp = time.perf_counter() - t0
        ls = m.covar_module.base_kernel.base_kernel.lengthscale if scaled else m.covar_module.base_kernel.lengthscale
        K1 = torch.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / ls.item() ** 2)
        scale = m.covar_module.outputscale.item() if scaled else 1.0
        K = [K1 * scale, K1]
        t0 = time.perf_counter()
        ours = kf.kron_gp_mll(K, y, lik.noise.item())[0].item()
        t_ours = time.perf_counter() - t0
        name = "ScaleKernel(GridKernel(RBF))" if scaled else "GridKernel(RBF)"
        lines.append(
            f"| ExactGP nll, {name}, {n}x{n} grid | {gp_nll:.6f} ({t_gp * 1e3:.0f} ms; operator {op}; "
            f"max_cholesky_size {gpytorch.settings.max_cholesky_size.value()}) | {ours:.6f} "
            f"({t_ours * 1e3:.0f} ms) | difference {gp_nll - ours:+.3g} nats |"
        )
    # 3. exact variance at n_var^2 in a capped subprocess
    try:
        res = subprocess.run(
            [sys.executable, "-c", GPY_SCRIPT, str(n_var)], capture_output=True, text=True, timeout=240
        )
        msg = (res.stdout.strip().splitlines() or [res.stderr.strip().splitlines()[-1] if res.stderr else "?"])[-1]
    except subprocess.TimeoutExpired:
        msg = "no result within 240 s"
    lines.append(
        f"| exact posterior variance, GridKernel(RBF) ExactGP, {n_var}^2 grid, 16 GiB cap | {msg} | see the "
        f"table above | fast_pred_var(False) |"
    )
    return (
        f"GPyTorch {gpytorch.__version__}, linear_operator {linear_operator.__version__}.\n\n" + "\n".join(lines) + "\n"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "kron.md"))
    ap.add_argument("--plot", default=os.path.join(os.path.dirname(__file__), "plots", "kron.png"))
    args = ap.parse_args(argv)
    if args.device != "cpu":
        print("bench_kron: CPU only for now (the CUDA path is compiled, not run): nothing measured")
        return []
    n3, nv, repeat = (32, 128, 3) if args.quick else (64, 512, 7)
    rows = []
    bench_grid3(rows, n3, repeat)
    bench_var(rows, nv, max(3, repeat // 2))
    table = markdown_table(rows, rate_name="Mpoints/s", rate_scale=1e6, baseline="torch (mode products)")
    # speed ratios against the plain-torch row of each case
    ratio = ["| case | kernelfuse | plain torch | linear_operator | target |", "|---|---:|---:|---:|---:|"]
    targets = {"kron_matmul": 15, "solve+logdet": 35, "MLL+grad": 60, "exact var": 150}
    for c in dict.fromkeys(r.case for r in rows):
        get = lambda impl: next((r for r in rows if r.case == c and r.impl.startswith(impl)), None)  # noqa: E731
        ms = lambda r: "–" if r is None or r.seconds != r.seconds else f"{r.seconds * 1e3:.1f} ms"  # noqa: E731
        tgt = next((f"<= {v} ms" for k, v in targets.items() if c.startswith(k)), "")
        ratio.append(f"| {c} | {ms(get('kernelfuse'))} | {ms(get('torch'))} | {ms(get('linear_operator'))} | {tgt} |")
    checks = gpytorch_checks(nv, args.quick)
    text = (
        f"### Kronecker GP algebra (`bench/bench_kron.py{' --quick' if args.quick else ''}`)\n\n"
        f"{machine_line('cpu')}\n\nfloat64. Mpoints/s: grid points N per second.\n\n{table}\n\n"
        + "\n".join(ratio)
        + "\n\n#### What GPyTorch computes (measured)\n\n"
        + checks
    )
    save_report(
        text,
        args.out,
        rows,
        args.plot,
        [
            (
                lambda r: r.seconds * 1e3 if r.seconds == r.seconds else 0,
                "median time (ms, log)",
                "kron: time (lower is better)",
            )
        ],
    )
    return rows


if __name__ == "__main__":
    main()
