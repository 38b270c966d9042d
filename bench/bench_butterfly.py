"""Butterfly family: butterfly_multiply vs dense matmul, MonarchLinear vs nn.Linear, monarch_fft vs
torch.fft; one run.

    python bench/bench_butterfly.py [--device cuda] [--quick] [--only monarch] [--out bench/results/butterfly.md]

CPU (the issue's shapes, float32):
  - butterfly_multiply (nblocks = 1, real twiddles) vs dense ``x @ W.T`` (torch, MKL) for
    n in 1K..16K, batch 1024, forward (and forward + backward at 1K and 4K); the plain-torch
    stage-by-stage reference at the smaller sizes. Dense at n = 16K: W is 1 GiB and one product
    is 550 GFLOP, so it runs on 128 rows and its time is scaled by 8 (marked in the notes).
  - MonarchLinear(4096, 4096, nblocks) vs nn.Linear(4096, 4096), batch 1024, forward and
    forward + backward (gradients for the input and every parameter). Target: nblocks = 64
    >= 4x faster than nn.Linear forward + backward.
  - monarch_multiply vs fly's (HazyResearch) two-bmm scheme as a custom autograd.Function
    (transcribed below as the baseline), 4096 x 4096, 64 blocks of 64 x 64, batch 1024, forward and
    forward + backward, at 1 and at 2 torch threads; the implementations are timed interleaved
    (round-robin, median of the rounds) so that a loaded machine slows them alike; "speed vs fly"
    = fly's time / ours. Target (issue 12): >= 1.3x at 1 and at 2 threads, without saving more
    for the backward than fly's Function does (the note gives the bytes autograd keeps beyond
    the inputs).
  - monarch_fft vs torch.fft.fft (complex64, MKL / pocketfft) and monarch_rfft vs torch.fft.rfft.
GPU (--device cuda): the gated fp16 / bf16 fftconv at B = 64, H = 768 (kernelfuse.fftconv, which
  runs cuFFT with fused pointwise kernels: the Monarch tensor-core path is NOT implemented) vs the
  plain-torch torch.fft reference, next to FlashFFTConv's published H100 figures, and the three
  butterfly ops vs their torch equivalents.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import kernelfuse as kf  # noqa: E402
from common import (
    Row,
    fmt_bytes,
    machine_line,
    markdown_table,
    peak_extra_memory,
    save_report,
    sync,  # noqa: E402
    timeit,
)
from kernelfuse.reference import butterfly as ref  # noqa: E402

FLASHFFTCONV_H100_MS = {1024: 0.29, 4096: 1.43, 32768: 26.3}  # published, B=64 H=768 gated, fp16


def _k(n):
    return f"{n // 1024}K" if n >= 1024 else str(n)


def measure(rows, case, impl, fn, device, work, repeat, note="", scale=1.0, mem=True):
    t = timeit(fn, device=device, repeat=repeat, warmup=1 if repeat > 1 else 0) * scale
    m = peak_extra_memory(fn, device=device) if mem else None
    rows.append(Row(case, impl, t, work, m, note))
    print(f"  {case:40s} {impl:28s} {t * 1e3:9.2f} ms", flush=True)


def bench_butterfly(rows, device, quick):
    B = 1024
    ns = [1024, 4096] if quick else [1024, 2048, 4096, 8192, 16384]
    for n in ns:
        g = torch.Generator().manual_seed(n)
        x = torch.randn(B, n, generator=g).to(device)
        tw = (torch.randn(1, n.bit_length() - 1, n // 2, 2, 2, generator=g) * 0.7071).to(device)
        case = f"butterfly n={_k(n)} B={B} fwd"
        measure(rows, case, "kernelfuse", lambda: kf.butterfly_multiply(x, tw), device, B * n, 5)
        if n <= 2048:
            measure(
                rows,
                case,
                "torch reference (per stage)",
                lambda: ref.butterfly_multiply(x, tw),
                device,
                B * n,
                1,
                mem=False,
            )
        W = torch.randn(n, n, generator=g).to(device) / n**0.5
        if n >= 16384 and device == "cpu":
            xs = x[:128].contiguous()
            measure(
                rows,
                case,
                "dense x @ W.T",
                lambda: xs @ W.T,
                device,
                B * n,
                1,
                note="128 rows, time x8",
                scale=8.0,
                mem=False,
            )
        else:
            measure(rows, case, "dense x @ W.T", lambda: x @ W.T, device, B * n, 3 if n <= 4096 else 1, mem=n <= 4096)
        if n in (1024, 4096):
            case = f"butterfly n={_k(n)} B={B} fwd+bwd"
            xg, twg = x.clone().requires_grad_(), tw.clone().requires_grad_()
            gy = torch.randn(B, n, generator=g).to(device)

            def fb():
                kf.butterfly_multiply(xg, twg).backward(gy)
                xg.grad = twg.grad = None

            Wg = W.clone().requires_grad_()

            def fbd():
                (xg @ Wg.T).backward(gy)
                xg.grad = Wg.grad = None

            measure(rows, case, "kernelfuse", fb, device, B * n, 3)
            measure(rows, case, "dense x @ W.T", fbd, device, B * n, 3 if n <= 1024 else 1)
        W = None  # free before the next size


def bench_monarch(rows, device, quick):
    B, d = 1024, 4096
    lin = torch.nn.Linear(d, d).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, d, generator=g).to(device)
    gy = torch.randn(B, d, generator=g).to(device)
    xg = x.clone().requires_grad_()
    for nb in [64] if quick else [4, 16, 64]:
        mon = kf.nn.MonarchLinear(d, d, nblocks=nb).to(device)
        flops = 2 * B * (mon.w1.numel() + mon.w2.numel())
        for mode in ("fwd", "fwd+bwd"):
            case = f"Linear {d}x{d} B={B} {mode}"

            def run(m=mon, mode=mode):
                if mode == "fwd":
                    with torch.no_grad():
                        return m(x)
                m(xg).backward(gy)
                xg.grad = None
                m.zero_grad(set_to_none=True)

            measure(
                rows, case, f"MonarchLinear nblocks={nb}", run, device, B * d, 5, note=f"{flops / 1e9:.2f} GFLOP fwd"
            )
    for mode in ("fwd", "fwd+bwd"):
        case = f"Linear {d}x{d} B={B} {mode}"

        def run_lin(mode=mode):
            if mode == "fwd":
                with torch.no_grad():
                    return lin(x)
            lin(xg).backward(gy)
            xg.grad = None
            lin.zero_grad(set_to_none=True)

        measure(
            rows,
            case,
            "nn.Linear",
            run_lin,
            device,
            B * d,
            3 if mode == "fwd" else 2,
            note=f"{2 * B * d * d / 1e9:.1f} GFLOP fwd",
        )


class FlyMonarch(torch.autograd.Function):
    """Baseline: fly's two-bmm Monarch product (blockdiag_butterfly_multiply, HazyResearch) as a
    custom autograd.Function, transcribed from its formula: x (B, k p), w1 (k, q, p), w2 (l, s, r)
    -> (B, s l) (block c's output t at t l + c: kernelfuse's layout="sl"). The forward saves the
    permuted intermediate for the backward; the backward is two bmm's per factor."""

    @staticmethod
    def forward(ctx, x, w1, w2):
        B = x.shape[0]
        k, q, p = w1.shape
        l, s, r = w2.shape
        out1 = torch.bmm(x.reshape(B, k, p).transpose(0, 1), w1.transpose(-1, -2))  # (k, B, q)
        out1 = out1.transpose(0, 1).reshape(B, r, l).transpose(-1, -2).contiguous().transpose(0, 1)  # (l, B, r)
        out2 = torch.bmm(out1, w2.transpose(-1, -2))  # (l, B, s)
        ctx.save_for_backward(x, w1, w2, out1)
        return out2.permute(1, 2, 0).reshape(B, s * l)

    @staticmethod
    def backward(ctx, dout):
        x, w1, w2, out1 = ctx.saved_tensors
        B = x.shape[0]
        k, q, p = w1.shape
        l, s, r = w2.shape
        d2 = dout.reshape(B, s, l).transpose(-1, -2).contiguous().transpose(0, 1)  # (l, B, s)
        dx = dw1 = dw2 = None
        if ctx.needs_input_grad[2]:
            dw2 = torch.bmm(d2.transpose(-1, -2), out1.conj())  # (l, s, r)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            d1 = torch.bmm(d2, w2.conj(), out=torch.empty(B, l, r, dtype=x.dtype).transpose(0, 1))  # (l, B, r)
            d1 = d1.transpose(0, 1).transpose(-1, -2).contiguous().reshape(B, k, q).transpose(0, 1)  # (k, B, q)
            if ctx.needs_input_grad[0]:
                dx = torch.empty(B, k, p, dtype=x.dtype)
                torch.bmm(d1, w1.conj(), out=dx.transpose(0, 1))
                dx = dx.reshape(B, k * p)
            if ctx.needs_input_grad[1]:
                dw1 = torch.bmm(d1.transpose(-1, -2), x.reshape(B, k, p).transpose(0, 1).conj())  # (k, q, p)
        return dx, dw1, dw2


def saved_extra_bytes(fn, inputs):
    """Bytes autograd keeps for the backward (saved tensors) beyond the storages of `inputs`."""
    own = {t.untyped_storage().data_ptr() for t in inputs}
    seen = set()

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in own and st.data_ptr() not in seen:
            seen.add(st.data_ptr())
            pack.total += st.nbytes()
        return t

    pack.total = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn()
    del y
    return pack.total


def interleaved(fns, device, rounds):
    """Median time (s) of each fn over `rounds` round-robin rounds (after one warm-up round)."""
    times = {name: [] for name in fns}
    for it in range(rounds + 1):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if it:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


FLY = "fly two-bmm Function"


def bench_monarch_vs_fly(rows, device, quick):
    B, nb = 1024, 64
    d = nb * nb
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, d, generator=g).to(device)
    w1 = (torch.randn(nb, nb, nb, generator=g) / nb**0.5).to(device)
    w2 = (torch.randn(nb, nb, nb, generator=g) / nb**0.5).to(device)
    gy = torch.randn(B, d, generator=g).to(device)
    xg, w1g, w2g = (t.clone().requires_grad_() for t in (x, w1, w2))
    impls = {
        "kernelfuse monarch_multiply": lambda a, b, c: kf.monarch_multiply(a, b, c),
        "kernelfuse monarch_multiply layout=sl": lambda a, b, c: kf.monarch_multiply(a, b, c, layout="sl"),
        FLY: FlyMonarch.apply,
    }
    saved = {name: saved_extra_bytes(lambda f=f: f(xg, w1g, w2g), (xg, w1g, w2g)) for name, f in impls.items()}
    threads0 = torch.get_num_threads()
    for nthreads in [threads0] if device != "cpu" else [1, 2]:
        torch.set_num_threads(nthreads)
        for mode in ("fwd", "fwd+bwd"):
            case = f"monarch_multiply {d}x{d} nb={nb} B={B} {mode} {nthreads} thr"

            def make(f, mode=mode):
                if mode == "fwd":

                    def run():
                        with torch.no_grad():
                            return f(x, w1, w2)

                    return run

                def run_b():
                    f(xg, w1g, w2g).backward(gy)
                    xg.grad = w1g.grad = w2g.grad = None

                return run_b

            fns = {name: make(f) for name, f in impls.items()}
            med = interleaved(fns, device, 3 if quick else 9)
            for name, fn in fns.items():
                m = peak_extra_memory(fn, device=device)
                note = f"autograd saves {fmt_bytes(saved[name])} beyond the inputs" if mode != "fwd" else ""
                rows.append(Row(case, name, med[name], B * d, m, note))
                print(
                    f"  {case:40s} {name:28s} {med[name] * 1e3:9.2f} ms  (fly / this: {med[FLY] / med[name]:.2f}x)",
                    flush=True,
                )
    torch.set_num_threads(threads0)


def bench_fft(rows, device, quick):
    sizes = (
        [(1024, 1024), (64, 65536)] if quick else [(1024, 1024), (256, 4096), (64, 65536), (4, 1 << 20), (1, 1 << 22)]
    )
    for B, N in sizes:
        g = torch.Generator().manual_seed(N)
        x = torch.randn(B, N, generator=g, dtype=torch.complex64).to(device)
        xr = torch.randn(B, N, generator=g).to(device)
        case = f"fft N={_k(N)} B={B} c64"
        y0, y1 = kf.monarch_fft(x), torch.fft.fft(x.to(torch.complex128))
        err = ((y0.to(torch.complex128) - y1).norm() / y1.norm()).item()
        measure(
            rows,
            case,
            "kernelfuse monarch_fft",
            lambda: kf.monarch_fft(x),
            device,
            B * N,
            3,
            note=f"rel. err vs f64 {err:.1e}",
        )
        measure(rows, case, "torch.fft.fft", lambda: torch.fft.fft(x), device, B * N, 3)
        case = f"rfft N={_k(N)} B={B} f32"
        measure(rows, case, "kernelfuse monarch_rfft", lambda: kf.monarch_rfft(xr), device, B * N, 3)
        measure(rows, case, "torch.fft.rfft", lambda: torch.fft.rfft(xr), device, B * N, 3)


def bench_gpu_fftconv(rows, device, quick):
    from bench_longconv import fftconv_ref

    B, H = (64, 768) if not quick else (8, 128)
    for dtype, name in ((torch.float16, "f16"), (torch.bfloat16, "bf16")):
        for L in (1024, 4096, 32768):
            case = f"gated fftconv B={B} H={H} L={_k(L)} {name}"
            try:
                g = torch.Generator(device=device).manual_seed(L)
                u, pre, post = (torch.randn(B, H, L, device=device, dtype=dtype, generator=g) for _ in range(3))
                k = torch.randn(H, L, device=device, generator=g) / L**0.5
                D = torch.randn(H, device=device, generator=g)
                pub = FLASHFFTCONV_H100_MS.get(L)
                note = f"FlashFFTConv H100 (published): {pub} ms" if pub and not quick else ""
                measure(
                    rows,
                    case,
                    "kernelfuse fftconv (tensor-core path where it fits)",
                    lambda: kf.fftconv(u, k.to(dtype), D.to(dtype), pregate=pre, postgate=post),
                    device,
                    B * H * L,
                    5,
                    note=note,
                )
                measure(
                    rows, case, "torch.fft reference", lambda: fftconv_ref(u, k, D, pre, post), device, B * H * L, 5
                )
                u = pre = post = None  # free before the next size
            except torch.OutOfMemoryError:
                print(f"{case}: out of memory, skipped")
                torch.cuda.empty_cache()


def summary(rows):
    out = ["| case | kernelfuse (best) | baseline | speed-up |", "|---|---|---|---:|"]
    for c in dict.fromkeys(r.case for r in rows):
        ours = [r for r in rows if r.case == c and (r.impl.startswith("kernelfuse") or r.impl.startswith("Monarch"))]
        base = [
            r
            for r in rows
            if r.case == c
            and (
                r.impl.startswith("dense")
                or r.impl.startswith("nn.")
                or r.impl.startswith("torch.fft")
                or r.impl == FLY
            )
        ]
        if ours and base:
            a, b = min(ours, key=lambda r: r.seconds), base[0]
            out.append(
                f"| {c} | {a.impl}: {a.seconds * 1e3:.1f} ms | {b.impl}: {b.seconds * 1e3:.1f} ms | "
                f"{b.seconds / a.seconds:.2f}x |"
            )
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    ap.add_argument(
        "--only",
        choices=["butterfly", "monarch", "fft"],
        default=None,
        help="one section (the report then goes to results/butterfly_<section>.md by default)",
    )
    ap.add_argument("--out", default=None, help="default bench/results/butterfly.md")
    ap.add_argument("--plot", default=None, help="default bench/plots/butterfly.png")
    args = ap.parse_args(argv)
    suffix = f"_{args.only}" if args.only else ""
    args.out = args.out or os.path.join(os.path.dirname(__file__), "results", f"butterfly{suffix}.md")
    args.plot = args.plot or os.path.join(os.path.dirname(__file__), "plots", f"butterfly{suffix}.png")
    device = args.device
    rows = []
    torch.manual_seed(0)
    if device != "cpu" and args.only is None:
        bench_gpu_fftconv(rows, device, args.quick)
    if args.only in (None, "butterfly"):
        bench_butterfly(rows, device, args.quick)
    if args.only in (None, "monarch"):
        bench_monarch(rows, device, args.quick)
        bench_monarch_vs_fly(rows, device, args.quick)
    if args.only in (None, "fft"):
        bench_fft(rows, device, args.quick)
    table = markdown_table(rows, rate_name="M rows*n/s", rate_scale=1e6, baseline=FLY)
    text = (
        f"### Butterfly / Monarch (`bench/bench_butterfly.py{' --quick' if args.quick else ''}"
        f"{' --device ' + device if device != 'cpu' else ''}`)\n\n{machine_line(device)}\n\n{summary(rows)}\n\n"
        f"{table}\n\nfloat32. butterfly: nblocks = 1, batch 1024, vs a dense n x n matmul (MKL). Linear: "
        "fwd+bwd = gradients for the input and all parameters from a given output gradient. fft: complex64 "
        "in, vs torch.fft (MKL on this CPU); rel. err: Frobenius error vs float64 torch.fft. Peak extra "
        "memory: resident-set (CPU) or allocator (CUDA) peak during one call over the level before it. "
        f"monarch_multiply vs fly: timed interleaved (round-robin, median), at the torch thread count in the "
        f"case name; speed vs {FLY} = its time / this row's.\n"
    )
    save_report(
        text,
        args.out,
        rows,
        args.plot,
        [(lambda r: r.seconds * 1e3, "median time (ms, log)", "butterfly family: time (lower is better)")],
    )
    return rows


if __name__ == "__main__":
    main()
