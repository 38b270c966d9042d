"""S4D convolution kernel: kernelfuse.ssm_kernel vs the naive reference vs a chunked plain-torch
Vandermonde, one run.

    python bench/bench_longconv_ssm.py [--device cuda] [--quick] [--out bench/results/longconv_ssm.md]

Shape from the issue: H=256, N=64, L=16K, ZOH, float32 (and float64). Forward and forward+backward
(gradients for log_dt, A_real, A_imag, B, C). The naive reference (kernelfuse.reference.longconv_ssm)
materialises the H x N x L complex Vandermonde tensor (2 GiB in complex64 at full size, plus
temporaries and autograd's saved copies) and takes tens of seconds, so both baselines run on the
first --sub channels of the same inputs (rates compare: the work is linear in H); "torch chunked" is what a careful user writes: the same product in
chunks of L, so only H x N x chunk exists at a time. Peak extra memory is measured per call
(bench/common.py).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import kernelfuse as kf  # noqa: E402
from common import Row, fmt_bytes, fmt_count, machine_line, markdown_table, peak_extra_memory, save_report, timeit  # noqa: E402
from kernelfuse.reference import longconv_ssm as ref  # noqa: E402

CDT = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def make_params(H, N, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    log_dt = math.log(1e-3) + (math.log(1e-1) - math.log(1e-3)) * torch.rand(H, generator=g, dtype=torch.float64)
    A_real = torch.full((H, N), -0.5, dtype=torch.float64)
    A_imag = math.pi * torch.arange(N, dtype=torch.float64).expand(H, N).contiguous()
    B = torch.randn(H, N, generator=g, dtype=torch.complex128)
    C = torch.randn(H, N, generator=g, dtype=torch.complex128)
    return [t.to(device=device, dtype=CDT[dtype] if t.is_complex() else dtype) for t in (log_dt, A_real, A_imag, B, C)]


def torch_chunked(log_dt, A_real, A_imag, B, C, L, *, discretization="zoh", chunk=1024):
    """Chunked plain-torch Vandermonde: exact powers exp(l log Abar), H x N x chunk at a time."""
    log_abar, bbar = ref.discretize(log_dt, A_real, A_imag, B, discretization)
    c = (C * bbar).unsqueeze(-1)
    w = log_abar.unsqueeze(-1)
    out = []
    for s in range(0, L, chunk):
        ell = torch.arange(s, min(L, s + chunk), dtype=A_real.dtype, device=A_real.device)
        out.append(2 * (c * torch.exp(w * ell)).sum(-2).real)
    return torch.cat(out, dim=-1)


IMPLS = {
    "kernelfuse": kf.ssm_kernel,
    "torch chunked": torch_chunked,
    "naive reference": ref.ssm_kernel,
}


def bench_case(rows, H, N, L, dtype, device, sub):
    """sub: channels (h) the naive reference runs on (its H x N x L tensor would not fit in memory
    next to other jobs at full H); rates (terms per second) are comparable across rows."""
    case = f"H={H} N={N} L={fmt_count(L)} {'f32' if dtype == torch.float32 else 'f64'}"
    full = make_params(H, N, dtype, device)
    for name, fn in IMPLS.items():
        slow = name != "kernelfuse"
        hh = min(sub, H) if slow else H
        params = [t[:hh] for t in full]
        work = hh * N * L
        # slow baselines: one timed call (no warm-up; they take seconds) and one for memory
        reps, warm = (1, 0) if slow else (5, 1)

        def note(mem):
            if hh == H:
                return ""
            return f"first {hh} of {H} channels (memory at full H ~{fmt_bytes(mem * H / hh)})"

        f = lambda: fn(*params, L)  # noqa: E731
        mem = peak_extra_memory(f, device=device)
        rows.append(
            Row(
                case + " fwd",
                name,
                timeit(f, device=device, repeat=reps, warmup=warm),
                work,
                mem,
                note(mem),
                {"mem_full_H": mem * H / hh},
            )
        )
        leaves = [t.clone().requires_grad_(True) for t in params]

        def fb():
            fn(*leaves, L).sum().backward()
            for t in leaves:
                t.grad = None

        mem = peak_extra_memory(fb, device=device)
        rows.append(
            Row(
                case + " fwd+bwd",
                name,
                timeit(fb, device=device, repeat=reps, warmup=warm),
                work,
                mem,
                note(mem),
                {"mem_full_H": mem * H / hh},
            )
        )
        print(
            f"  {case} {name}: fwd {rows[-2].seconds * 1e3:.1f} ms, fwd+bwd {rows[-1].seconds * 1e3:.1f} ms", flush=True
        )
    # accuracy of this run's float inputs against the float64 reference (chunked, exact powers)
    params = full
    p64 = [t.to(torch.complex128 if t.is_complex() else torch.float64) for t in params]
    exact = torch_chunked(*p64, L)
    err = ((kf.ssm_kernel(*params, L).double() - exact).abs().max() / exact.abs().max()).item()
    for r in rows:
        if r.case.startswith(case) and r.impl == "kernelfuse" and r.case.endswith("fwd"):
            r.note = f"max err / max abs K vs float64: {err:.1e}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    ap.add_argument("--sub", type=int, default=32, help="channels for the slow baselines (float64: half)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "longconv_ssm.md"))
    ap.add_argument("--plot", default=os.path.join(os.path.dirname(__file__), "plots", "longconv_ssm.png"))
    args = ap.parse_args(argv)
    device = args.device
    torch.manual_seed(0)
    H, N, L = (256, 64, 16384) if not args.quick else (64, 64, 4096)
    rows = []
    bench_case(rows, H, N, L, torch.float32, device, sub=args.sub)
    bench_case(rows, H, N, L, torch.float64, device, sub=args.sub // 2)
    table = markdown_table(rows, rate_name="G terms/s", rate_scale=1e9, baseline="naive reference")
    chunked = {r.case: r for r in rows if r.impl == "torch chunked"}
    lines = []
    for r in rows:
        if r.impl == "kernelfuse" and r.case in chunked:
            lines.append(f"- {r.case}: {r.rate / chunked[r.case].rate:.1f}x the throughput of torch chunked")
    text = (
        f"### S4D kernel (`bench/bench_longconv_ssm.py{' --quick' if args.quick else ''}`)\n\n{machine_line(device)}\n\n"
        f"{table}\n\n" + "\n".join(lines) + "\n\n"
        "ZOH; terms = H N L (one term C_n Bbar_n Abar_n^l). fwd+bwd: gradients for log_dt, A_real, A_imag, B "
        "and C from K.sum(). The naive reference materialises the complex H x N x L Vandermonde tensor "
        "(and autograd keeps copies of it); torch chunked builds H x N x 1024 at a time; kernelfuse keeps "
        "O(H (N + L)). Both baselines ran on the first channels of the same inputs (see notes); throughput "
        "(terms per second) and speed ratios compare, memory figures are for the channels run. Target (issue): kernelfuse >= 5x the naive reference on the 2-core CPU.\n"
    )
    save_report(
        text,
        args.out,
        rows,
        args.plot,
        [
            (lambda r: r.rate / 1e9, "G terms / s (log)", "S4D kernel: throughput (higher is better)"),
            (
                lambda r: r.extra.get("mem_full_H", r.mem or 0) / 2**20,
                "peak extra memory at full H (MiB, log)",
                "S4D kernel: peak extra memory (baselines at full H)",
            ),
        ],
    )
    return rows


if __name__ == "__main__":
    main()
