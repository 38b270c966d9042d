"""Long convolutions: kernelfuse.fftconv vs plain torch (safari's fftconv_ref), one run.

    python bench/bench_longconv.py [--device cuda] [--quick] [--out bench/results/longconv.md]

CPU (the issue's shapes): B=8, H=256, L in {1K, 4K, 16K, 64K}, float32, a kernel per head of
length L (shared by the batch), skip term D; forward, and forward + backward for u, k and D.
The reference is what users write without kernelfuse (safari's fftconv_ref): torch.fft.rfft with
explicit padding to 2L, one full-size spectrum per tensor, autograd through torch.fft.
GPU (--device cuda): B=64, H=768, gated (pre and post), float16 / bfloat16, L in 1K..32K.
Targets (CPU): >= 1.5x the reference's speed with at most half its peak extra memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import kernelfuse as kf  # noqa: E402
from common import (
    Row,
    fmt_bytes,
    fmt_count,
    machine_line,
    markdown_table,
    peak_extra_memory,
    save_report,
    sync,  # noqa: E402
    timeit,
)


def fftconv_ref(u, k, D, pregate=None, postgate=None):
    """safari's fftconv_ref (H3 / Hyena), plain torch: zero padding to 2L, rfft, multiply, irfft."""
    L = u.shape[-1]
    n = 2 * L
    k_f = torch.fft.rfft(k, n=n) / n
    v = u if pregate is None else u * pregate
    u_f = torch.fft.rfft(v.to(dtype=k.dtype), n=n)
    y = torch.fft.irfft(u_f * k_f, n=n, norm="forward")[..., :L]
    out = y + u * D.unsqueeze(-1)
    if postgate is not None:
        out = out * postgate
    return out.to(dtype=u.dtype)


def measure(fn, device, repeat):
    """(median time, peak extra memory). repeat == 1 (the largest sizes): one cold call gives both."""
    if repeat > 1:
        return timeit(fn, device=device, repeat=repeat, warmup=1), peak_extra_memory(fn, device=device)
    box = {}

    def timed():
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        box["t"] = time.perf_counter() - t0
        return out

    mem = peak_extra_memory(timed, device=device)
    return box["t"], mem


def bench_case(rows, case, B, H, L, dtype, device, gated, repeat):
    g = torch.Generator(device=device).manual_seed(0)
    u = torch.randn(B, H, L, device=device, dtype=dtype, generator=g)
    k = torch.randn(H, L, device=device, dtype=torch.float32, generator=g) / L**0.5
    D = torch.randn(H, device=device, dtype=torch.float32, generator=g)
    pre = torch.randn(B, H, L, device=device, dtype=dtype, generator=g) if gated else None
    post = torch.randn(B, H, L, device=device, dtype=dtype, generator=g) if gated else None
    gy = torch.randn(B, H, L, device=device, dtype=dtype, generator=g)
    kd, Dd = k.to(dtype), D.to(dtype)  # kernelfuse takes every input in u's dtype
    work = B * H * L

    ours = lambda: kf.fftconv(u, kd, Dd, pregate=pre, postgate=post)  # noqa: E731
    theirs = lambda: fftconv_ref(u, k, D, pre, post)  # noqa: E731
    note = ""
    if repeat > 1:  # accuracy check (skipped at the largest size, to keep the run short)
        y0, y1 = ours(), theirs()
        note = f"max rel. diff {((y0.float() - y1.float()).abs().max() / y1.float().abs().max()).item():.1e}"
        del y0, y1
    t, m = measure(ours, device, repeat)
    rows.append(Row(case + " fwd", "kernelfuse", t, work, m, note))
    t, m = measure(theirs, device, repeat)
    rows.append(Row(case + " fwd", "torch (fftconv_ref)", t, work, m))

    ug, kg, Dg = u.clone().requires_grad_(True), kd.clone().requires_grad_(True), Dd.clone().requires_grad_(True)

    def fb_ours():
        kf.fftconv(ug, kg, Dg, pregate=pre, postgate=post).backward(gy)
        ug.grad = kg.grad = Dg.grad = None

    ur, kr, Dr = u.clone().requires_grad_(True), k.clone().requires_grad_(True), D.clone().requires_grad_(True)

    def fb_ref():
        fftconv_ref(ur, kr, Dr, pre, post).backward(gy)
        ur.grad = kr.grad = Dr.grad = None

    t, m = measure(fb_ours, device, repeat)
    rows.append(Row(case + " fwd+bwd", "kernelfuse", t, work, m))
    t, m = measure(fb_ref, device, repeat)
    rows.append(Row(case + " fwd+bwd", "torch (fftconv_ref)", t, work, m))


def summary(rows):
    """Per case: speed ratio and memory ratio of kernelfuse against the reference."""
    out = [
        "| case | speed vs reference (target >= 1.5x) | peak extra memory: kernelfuse / reference (target <= 0.5) |",
        "|---|---:|---:|",
    ]
    cases = list(dict.fromkeys(r.case for r in rows))
    for c in cases:
        a = next(r for r in rows if r.case == c and r.impl == "kernelfuse")
        b = next(r for r in rows if r.case == c and r.impl != "kernelfuse")
        mem = f"{a.mem / b.mem:.2f} ({fmt_bytes(a.mem)} / {fmt_bytes(b.mem)})" if a.mem is not None and b.mem else "–"
        out.append(f"| {c} | {b.seconds / a.seconds:.2f}x | {mem} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "longconv.md"))
    ap.add_argument("--plot", default=os.path.join(os.path.dirname(__file__), "plots", "longconv.png"))
    args = ap.parse_args(argv)
    device = args.device
    rows = []
    if device == "cpu":
        B, H = 8, 256
        Ls = [1024, 4096, 16384, 65536]
        if args.quick:
            B, H, Ls = 2, 64, [1024, 4096]
        for L in Ls:
            case = f"B={B} H={H} L={fmt_count(L) if L % 1024 else str(L // 1024) + 'K'} f32"
            bench_case(rows, case, B, H, L, torch.float32, device, gated=False, repeat=1 if L >= 16384 else 3)
            print(f"done {case}", flush=True)
    else:
        B, H = (64, 768) if not args.quick else (8, 128)
        for dtype, name in ((torch.float16, "f16"), (torch.bfloat16, "bf16")):
            for L in (1024, 4096, 16384, 32768):
                case = f"B={B} H={H} L={L // 1024}K {name} gated"
                try:
                    bench_case(rows, case, B, H, L, dtype, device, gated=True, repeat=5)
                except torch.OutOfMemoryError:
                    print(f"{case}: out of memory, skipped")
                    torch.cuda.empty_cache()
                print(f"done {case}", flush=True)
    table = markdown_table(rows, rate_name="Melem/s", rate_scale=1e6, baseline="torch (fftconv_ref)")
    text = (
        f"### Long convolution: fftconv (`bench/bench_longconv.py{' --quick' if args.quick else ''}"
        f"{' --device ' + device if device != 'cpu' else ''}`)\n\n{machine_line(device)}\n\n{table}\n\n"
        f"{summary(rows)}\n\nKernel of length L per head (shared by the batch), D skip term"
        f"{', pre and post gates' if device != 'cpu' else ', no gates'}; fwd+bwd: gradients for u, k and D "
        "from a given output gradient. Melem/s: B*H*L per second. Reference: safari's fftconv_ref in plain "
        "torch (rfft/irfft with explicit padding to 2L, autograd through torch.fft). Peak extra memory: "
        "resident-set (CPU) or allocator (CUDA) peak during one call, over the level before it; it "
        "includes the output (and the gradients) for both.\n"
    )
    save_report(
        text,
        args.out,
        rows,
        args.plot,
        [
            (lambda r: r.seconds * 1e3, "median time (ms, log)", "fftconv: time (lower is better)"),
            (lambda r: (r.mem or 0) / 2**20, "peak extra memory (MiB, log)", "fftconv: peak extra memory"),
        ],
    )
    return rows


if __name__ == "__main__":
    main()
