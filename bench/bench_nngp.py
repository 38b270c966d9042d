"""NNGP / NTK of deep fully connected networks (docs/nngp.md).

Sections (all by default; --only to pick):
  product     the fused K(x, y) @ W (kernelfuse.nngp_matmul) vs the materialised kernel (the torch
              recursion on the m x n matrix, whole where it fits, else in row chunks) and our own
              kernel-matrix op followed by a GEMM: time and peak extra memory. Default m = n = 50,000,
              d = 64, depth 3, ReLU, float32, W (n, 1) (--quick: 5,000).
  width       empirical NNGP / NTK of random torch networks of width 64 ... 4096 against ours:
              relative error vs width (should fall as 1/sqrt(width)); plot bench/plots/nngp_width.png.
  features    random-feature approximation error vs D (NNGPRandomFeatures) against the exact kernel.
  digits      sklearn digits (1797 8x8 images, 10 classes): test accuracy of NNGP / NTK regression on
              one-hot targets vs a finite network (same architecture, trained by Adam on the MSE).

Writes bench/results/nngp.md. Timings on a loaded machine are indicative.
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
import kernelfuse  # noqa: E402
from common import Row, fmt_bytes, fmt_count, machine_line, markdown_table, peak_extra_memory, sync, timeit  # noqa: E402
from kernelfuse import features as F  # noqa: E402
from kernelfuse.reference import nngp as ref  # noqa: E402
from peers.nt import nt_matrix, nt_product_row, nt_status  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def timed_blocks(block, blocks, cap_s, device="cpu"):
    """Runs block(start, size) for the (start, size) pairs of blocks in order until cap_s seconds have
    passed. Returns (seconds, blocks done, peak extra bytes): the peak sampled during the first block
    only (every block holds the same temporaries, the last one fewer; the sampler thread would slow
    the timed run on a small machine); when stopped early, seconds is the time of the blocks done
    scaled by their share of the rows (a projection, said in the row's note)."""
    t0 = time.perf_counter()

    def first():
        block(*blocks[0])
        sync(device)

    peak = peak_extra_memory(first, device=device)
    done, rows = 1, blocks[0][1]
    for s, size in blocks[1:]:
        if time.perf_counter() - t0 > cap_s:
            break
        block(s, size)
        sync(device)
        done, rows = done + 1, rows + size
    t = time.perf_counter() - t0
    return t * sum(size for _, size in blocks) / rows, done, peak


def section_product(args, lines):
    m = n = 5_000 if args.quick else args.n
    d, depth, c = 64, 3, 1
    dev = args.device
    cuda = dev.startswith("cuda")
    torch.manual_seed(0)
    x, y = torch.randn(m, d), torch.randn(n, d)
    w = torch.randn(n, c)
    x, y, w = x.to(dev), y.to(dev), w.to(dev)
    rows = []
    where = torch.cuda.get_device_name() if cuda else f"{kernelfuse.get_num_threads()} thr"
    case = f"m=n={fmt_count(m)} d={d} depth {depth} f32, {where}"
    pairs = float(m) * n
    slow = m > 20000 and not cuda  # one timed run (no warm-up) where a call takes seconds
    tm = lambda fn: timeit(fn, device=dev, warmup=0 if slow else 1, repeat=1 if slow else 3)  # noqa: E731
    pk = lambda fn: peak_extra_memory(fn, device=dev)  # noqa: E731
    for ntk in (False, True):
        fn = lambda: kernelfuse.nngp_matmul(x, y, w, depth=depth, activation="relu", ntk=ntk)  # noqa: E731
        t = tm(fn)
        mem = pk(fn)
        rows.append(Row(case, "fused nngp_matmul" + (" (NTK)" if ntk else ""), t, pairs, mem))
        print(f"  fused ntk={ntk}: {t:.2f} s, {fmt_bytes(mem)}", flush=True)
    # backward (x, y, W gradients), NNGP
    xs, ys, ws = (t.clone().requires_grad_(True) for t in (x, y, w))

    def fb():
        out = kernelfuse.nngp_matmul(xs, ys, ws, depth=depth, activation="relu")
        torch.autograd.grad(out.sum(), (xs, ys, ws))

    t = tm(fb)
    rows.append(Row(case, "fused forward + backward (x, y, W)", t, pairs, pk(fb)))
    print(f"  fused fwd+bwd: {t:.2f} s", flush=True)
    # materialised: whole matrix where it fits (8 m x n float32 temporaries), else row chunks
    budget = args.mem_gb * (1 << 30)
    if cuda:  # the GPU's free memory less a margin, or --mem-gb where it asks for less
        free = 0.8 * torch.cuda.mem_get_info()[0]
        budget = min(budget, free) if args.mem_gb_set else free
    if 8 * 4 * pairs <= budget:
        fnm = lambda: ref.nngp_kernel(x, y, depth, "relu") @ w  # noqa: E731
        t = tm(fnm)
        rows.append(Row(case, "materialised (torch recursion, whole)", t, pairs, pk(fnm)))
    else:
        rows.append(
            Row(
                case,
                "materialised (torch recursion, whole)",
                float("inf"),
                pairs,
                8 * 4 * pairs,
                note=f"not run: ~{fmt_bytes(8 * 4 * pairs)} of m x n temporaries",
            )
        )
    chunk = max(1, min(2048, int(budget / (8 * 4 * n))))
    blocks = [(s, min(chunk, m - s)) for s in range(0, m, chunk)]
    secs, done, peak = timed_blocks(
        lambda s, size: ref.nngp_kernel(x[s : s + size], y, depth, "relu") @ w, blocks, args.ref_cap_s, dev
    )
    note = (
        ""
        if done == len(blocks)
        else f"projected from {done} of {len(blocks)} row blocks (--ref-cap-s {args.ref_cap_s:g})"
    )
    rows.append(Row(case, f"materialised in row chunks of {fmt_count(chunk)}", secs, pairs, peak, note=note))
    print(f"  chunked reference: {secs:.2f} s {note}", flush=True)
    # our kernel-matrix op (the same CPU kernel, Matrix mode) + a GEMM: the whole m x n matrix where
    # it fits the budget, else row blocks of it (each block's matrix, then its GEMM)
    if 4 * pairs <= budget:
        fnk = lambda: F.nngp_kernel(x, y, depth, "relu") @ w  # noqa: E731
        label = f"our kernel matrix (nngp_kernel, whole: {fmt_bytes(4 * pairs)}) + GEMM"
    else:
        kchunk = max(1, int(budget / (4 * n)))

        def fnk():
            return torch.cat([F.nngp_kernel(x[s : s + kchunk], y, depth, "relu") @ w for s in range(0, m, kchunk)])

        label = f"our kernel matrix (nngp_kernel) in row chunks of {fmt_count(kchunk)} + GEMM"
    t = tm(fnk)
    rows.append(Row(case, label, t, pairs, pk(fnk)))
    print(f"  {label}: {t:.2f} s", flush=True)
    # neural-tangents (a subprocess of .venv-nt): the same K(x, y) @ W by nt.batch row blocks
    ntr = None if cuda else nt_product_row(m, d, depth, args.nt_cap_s, x=x, y=y, w=w)
    if cuda:
        nt_note = "neural-tangents: CPU only here (JAX CPU), not in the GPU table"
    elif ntr is None:
        nt_note = "neural-tangents: " + nt_status()[1]
    else:
        secs, peak, note = ntr[:3]
        rows.append(Row(case, "neural-tangents kernel_fn (nt.batch) + matmul", secs, pairs, peak, note=note))
        nt_note = f"neural-tangents 0.6.5 (jax 0.4.30, CPU, float32) in a subprocess: {note}"
        print(f"  neural-tangents: {secs:.2f} s ({note})", flush=True)
    # accuracy of the fused float32 product against float64 on the first 200 rows
    sub = slice(0, 200)
    xd, yd, wd = (t.cpu().double() for t in (x[sub], y, w))
    e = ref.nngp_matmul(xd, yd, wd, depth, "relu", 2.0, 0.0, False)
    o = kernelfuse.nngp_matmul(x[sub], y, w, depth=depth, activation="relu").cpu()
    err = float((o.double() - e).abs().max() / e.abs().max())
    for r in rows:
        if r.seconds == float("inf"):
            r.seconds = float("nan")
    lines += [
        f"### Fused product K(x, y) @ W (`bench/bench_nngp.py{' --quick' if args.quick else ''}`)",
        "",
        machine_line(dev),
        "",
        markdown_table(
            [r for r in rows if r.seconds == r.seconds] + [r for r in rows if r.seconds != r.seconds],
            rate_name="Gpairs/s",
            rate_scale=1e9,
            baseline=label,
        ),
        "",
        f"ReLU NNGP unless marked, W (n, {c}); {where}; memory budget of the "
        f"materialised rows {fmt_bytes(budget)} (whole matrices where they fit it, else row chunks); "
        f"{nt_note}. Fused float32 vs float64 reference "
        f"(first 200 rows): max relative error {err:.1e}.",
        "",
    ]


def _mlp(d, width, depth, seed):
    g = torch.Generator().manual_seed(seed)
    sizes = [d] + [width] * depth + [1]
    return [
        (torch.randn(a, b, generator=g, dtype=torch.float64), torch.randn(b, generator=g, dtype=torch.float64))
        for a, b in zip(sizes[:-1], sizes[1:])
    ]


def _emp(params, x, act, sw2, sb2):
    """(empirical NNGP given the hidden layers, empirical NTK J J^T) of one network."""
    phi = {"relu": torch.relu, "erf": torch.erf}[act]
    flat = [p.clone().requires_grad_(True) for Wb in params for p in Wb]
    h = x
    for i in range(len(params)):
        W, b = flat[2 * i], flat[2 * i + 1]
        z = math.sqrt(sw2 / W.shape[0]) * h @ W + math.sqrt(sb2) * b
        if i == len(params) - 1:
            nngp = (sw2 * h @ h.T / h.shape[1] + sb2).detach()
            h = z
        else:
            h = phi(z)
    out = h[:, 0]
    J = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, flat, retain_graph=True)]) for o in out])
    return nngp, (J @ J.T).detach()


def section_width(args, lines):
    widths = [64, 256, 1024] if args.quick else [64, 128, 256, 512, 1024, 2048, 4096]
    seeds = 3 if args.quick else 5
    x = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    res = {}
    for act in ("relu", "erf"):
        K = F.nngp_kernel(x, x, 2, act, sigma_b2=0.1)
        T = F.ntk_kernel(x, x, 2, act, sigma_b2=0.1)
        for wd in widths:
            e1, e2 = [], []
            for s in range(seeds):
                a, b = _emp(_mlp(6, wd, 2, s), x, act, 2.0, 0.1)
                e1.append(float((a - K).norm() / K.norm()))
                e2.append(float((b - T).norm() / T.norm()))
            res[(act, wd)] = (float(np.mean(e1)), float(np.mean(e2)))
            print(f"  width {act} {wd}: {res[(act, wd)]}", flush=True)
    lines += [
        "### Wide networks converge to the closed forms",
        "",
        f"8 inputs in 6 dimensions, depth 2, sigma_w2 = 2, sigma_b2 = 0.1; mean over {seeds} random networks of "
        "the relative Frobenius error |K_emp - K| / |K| (NNGP: the readout's covariance given the network's "
        "hidden layers; NTK: J J^T from autograd).",
        "",
        "| width | ReLU NNGP | ReLU NTK | erf NNGP | erf NTK |",
        "|---:|---:|---:|---:|---:|",
    ]
    for wd in widths:
        lines.append(
            f"| {wd} | {res[('relu', wd)][0]:.4f} | {res[('relu', wd)][1]:.4f} | "
            f"{res[('erf', wd)][0]:.4f} | {res[('erf', wd)][1]:.4f} |"
        )
    slopes = []
    for act in ("relu", "erf"):
        for k, name in ((0, "NNGP"), (1, "NTK")):
            lw = np.log(widths)
            le = np.log([res[(act, wd)][k] for wd in widths])
            slopes.append(f"{act} {name} {np.polyfit(lw, le, 1)[0]:.2f}")
    lines += ["", "Log-log slopes of error vs width (1/sqrt(width) is -0.5): " + ", ".join(slopes) + ".", ""]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 4))
        for act in ("relu", "erf"):
            for k, name, ls in ((0, "NNGP", "-"), (1, "NTK", "--")):
                ax.loglog(widths, [res[(act, wd)][k] for wd in widths], ls, marker="o", label=f"{act} {name}")
        ax.loglog(
            widths,
            [res[("relu", widths[0])][1] * math.sqrt(widths[0] / wd) for wd in widths],
            ":",
            color="k",
            label="1/sqrt(width)",
        )
        ax.set_xlabel("width")
        ax.set_ylabel("relative error vs closed form")
        ax.set_title("Empirical NNGP / NTK of wide networks (depth 2)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        os.makedirs(os.path.join(HERE, "plots"), exist_ok=True)
        fig.savefig(os.path.join(HERE, "plots", "nngp_width.png"), dpi=110)
        lines += ["![width](../plots/nngp_width.png)", ""]
    except ImportError:
        pass


def section_features(args, lines):
    X = torch.randn(300, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    Ds = [64, 256, 1024] if args.quick else [64, 256, 1024, 4096]
    lines += [
        "### Random features: relative Frobenius error of the Gram matrix vs D",
        "",
        "300 points in 8 dimensions, depth 2, sigma_b2 = 0.1, mean over 3 draws (NNGPRandomFeatures; NTK: "
        "tensor-product sketch with D index pairs per layer).",
        "",
        "| D | ReLU NNGP | ReLU NTK | erf NNGP | erf NTK |",
        "|---:|---:|---:|---:|---:|",
    ]
    exact = {
        (a, k): (ref.ntk_kernel if k else ref.nngp_kernel)(X, X, 2, a, sigma_b2=0.1)
        for a in ("relu", "erf")
        for k in (False, True)
    }
    for D in Ds:
        cells = []
        for a in ("relu", "erf"):
            for k in (False, True):
                e = []
                for s in range(3):
                    phi = F.NNGPRandomFeatures(8, width=D, depth=2, activation=a, sigma_b2=0.1, ntk=k, seed=s)(X)
                    e.append(float((phi @ phi.T - exact[(a, k)]).norm() / exact[(a, k)].norm()))
                cells.append(f"{np.mean(e):.4f}")
        lines.append(f"| {D} | " + " | ".join(cells) + " |")
    lines.append("")


def section_digits(args, lines):
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        lines += ["(digits: scikit-learn not installed, skipped)", ""]
        return
    Xd, yd = load_digits(return_X_y=True)
    Xd = Xd / 16.0
    Xtr, Xte, ytr, yte = train_test_split(Xd, yd, test_size=0.3, random_state=0, stratify=yd)
    Xtr_t, Xte_t = torch.tensor(Xtr), torch.tensor(Xte)
    Ytr = torch.nn.functional.one_hot(torch.tensor(ytr), 10).double() - 0.1
    rows = [
        "### sklearn digits: infinite-width regression vs a finite network",
        "",
        f"{len(Xtr)} train / {len(Xte)} test images (8x8, scaled to [0, 1]), one-hot targets minus 0.1, "
        "depth 2 ReLU, sigma_w2 = 2, sigma_b2 = 0.05.",
        "",
        "| model | test accuracy | time |",
        "|---|---:|---:|",
    ]
    kw = dict(depth=2, activation="relu", sigma_w2=2.0, sigma_b2=0.05)
    for kernel in ("nngp", "ntk"):
        t0 = time.perf_counter()
        mean, info = F.nngp_posterior(Xtr_t, Ytr, Xte_t, kernel=kernel, noise=1e-2, tol=1e-6, **kw)
        acc = float((mean.argmax(1).numpy() == yte).mean())
        rows.append(
            f"| {kernel.upper()} regression (PCG, noise 1e-2, {info['iterations']} iterations) | {acc:.4f} | "
            f"{time.perf_counter() - t0:.2f} s |"
        )
    t0 = time.perf_counter()
    acc = float((F.ntk_gradient_flow(Xtr_t, Ytr, Xte_t, 1.0 / 64, **kw).argmax(1).numpy() == yte).mean())
    rows.append(f"| NTK gradient flow, lr t = 1/64 (closed form) | {acc:.4f} | {time.perf_counter() - t0:.2f} s |")
    for width in (256, 1024):
        torch.manual_seed(0)
        layers, fan = [], 64
        for _ in range(2):
            layers += [torch.nn.Linear(fan, width), torch.nn.ReLU()]
            fan = width
        net = torch.nn.Sequential(*layers, torch.nn.Linear(fan, 10))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        t0 = time.perf_counter()
        Xf, Yf = Xtr_t.float(), Ytr.float()
        for _ in range(300 if args.quick else 1000):
            opt.zero_grad()
            loss = ((net(Xf) - Yf) ** 2).mean()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = float((net(Xte_t.float()).argmax(1).numpy() == yte).mean())
        rows.append(
            f"| finite network width {width}, float32 (Adam lr 1e-3, full batch, {300 if args.quick else 1000} steps) | "
            f"{acc:.4f} | {time.perf_counter() - t0:.2f} s |"
        )
        print(f"  digits width {width}: {acc}", flush=True)
    lines += rows + [""]


# ---------------------------------------------------------------- peers: neural-tangents (JAX)
def section_peers(args, lines, sizes=None):
    """neural-tangents' kernel_fn (NNGP + NTK matrices, a subprocess of .venv-nt) against ours on the
    same inputs: m = n = 2k / 5k / 10k (--quick: 2k), d = 64, depth 3, ReLU, float32."""
    sizes = sizes or ((2_000,) if args.quick else (2_000, 5_000, 10_000))
    ok, why = nt_status()
    lines += ["### Peer: neural-tangents (`bench/bench_nngp.py --only peers`)", ""]
    if not ok:
        print(f"neural-tangents: not installed ({why})", flush=True)
        lines += [f"neural-tangents: not installed ({why}); not compared.", ""]
        return
    lines += [machine_line("cpu") + f"; {why} (a subprocess of .venv-nt, jax CPU, float32)", ""]
    d, depth, rows, errs, r = 64, 3, [], [], 200
    for m in sizes:
        torch.manual_seed(0)
        x, y, w = torch.randn(m, d), torch.randn(m, d), torch.randn(m, 1)
        case, pairs = f"m=n={fmt_count(m)} d={d} depth {depth} f32", float(m) * m
        batch = 0 if m <= 2_000 else 1_000
        res = nt_matrix(x, y, depth=depth, batch=batch)
        how = f"nt.batch({batch})" if batch else "jax.jit"
        if "error" in res:
            print(f"  neural-tangents {m}: {res['error']}", flush=True)
            rows.append(Row(case, "neural-tangents kernel_fn (NNGP + NTK)", float("nan"), pairs, note=res["error"]))
            continue
        rows.append(
            Row(
                case,
                "neural-tangents kernel_fn (NNGP + NTK)",
                res["seconds"],
                pairs,
                res["peak_extra"],
                note=f"{how}; first call (compiles) {res['warmup_seconds']:.1f} s; process peak RSS "
                f"{fmt_bytes(res['peak_rss'])}",
            )
        )
        print(f"  NT {m}: {res['seconds']:.2f} s, {fmt_bytes(res['peak_extra'])}", flush=True)
        both = lambda: (F.nngp_kernel(x, y, depth, "relu"), F.ntk_kernel(x, y, depth, "relu"))  # noqa: E731
        t = timeit(both, warmup=1, repeat=3 if m <= 5_000 else 1)
        rows.append(Row(case, "ours: nngp_kernel + ntk_kernel (matrices)", t, pairs, peak_extra_memory(both)))
        fused = lambda: (  # noqa: E731
            kernelfuse.nngp_matmul(x, y, w, depth=depth, activation="relu"),
            kernelfuse.nngp_matmul(x, y, w, depth=depth, activation="relu", ntk=True),
        )
        t = timeit(fused, warmup=1, repeat=3 if m <= 5_000 else 1)
        rows.append(Row(case, "ours: fused nngp_matmul K @ W + Theta @ W", t, pairs, peak_extra_memory(fused)))
        print(f"  ours {m}: done", flush=True)
        r = res["nngp"].shape[0]
        K, T = F.nngp_kernel(x[:r], y, depth, "relu"), F.ntk_kernel(x[:r], y, depth, "relu")
        K64 = ref.nngp_kernel(x[:r].double(), y.double(), depth, "relu")
        T64 = ref.ntk_kernel(x[:r].double(), y.double(), depth, "relu")
        rel = lambda a, b: float((a.double() - b.double()).abs().max() / b.double().abs().max())  # noqa: E731
        errs.append(
            f"| {fmt_count(m)} | {rel(K, res['nngp']):.1e} / {rel(T, res['ntk']):.1e} | "
            f"{rel(K, K64):.1e} / {rel(T, T64):.1e} | {rel(res['nngp'], K64):.1e} / {rel(res['ntk'], T64):.1e} |"
        )
    lines += [
        markdown_table(rows, rate_name="Gpairs/s", rate_scale=1e9, baseline="neural-tangents kernel_fn (NNGP + NTK)"),
        "",
        "Every row computes both kernels (NNGP and NTK) of the same inputs; the fused rows their products with "
        "W (m, 1) (NT's K @ W is its matrix and a GEMM). Peak extra memory: resident memory over the level "
        "before the call (NT: the subprocess's kernel high-water mark, reset after the compiling warm-up).",
        "",
        f"Max |difference| on the first {r} rows, relative to max |K| (NNGP / NTK):",
        "",
        "| m = n | ours vs NT (both f32) | ours f32 vs f64 reference | NT f32 vs f64 reference |",
        "|---:|---:|---:|---:|",
        *errs,
        "",
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    ap.add_argument("--n", type=int, default=50_000, help="m = n of the product section")
    ap.add_argument(
        "--mem-gb",
        type=float,
        default=None,
        help="memory budget of the materialised rows (GiB; cpu: 4, cuda: 80%% of free)",
    )
    ap.add_argument("--threads", type=int, default=None, help="threads of the kernels and of torch (default: as set)")
    ap.add_argument(
        "--ref-cap-s",
        type=float,
        default=300.0,
        help="time cap of the torch-recursion row-chunk baseline (s; projected past it)",
    )
    ap.add_argument("--nt-cap-s", type=float, default=600.0, help="time cap of the neural-tangents product row (s)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda: the product section only)")
    ap.add_argument("--only", nargs="*", default=["product", "width", "features", "digits", "peers"])
    ap.add_argument("--out", default=os.path.join(HERE, "results", "nngp.md"))
    args = ap.parse_args(argv)
    args.mem_gb_set = args.mem_gb is not None
    args.mem_gb = 4.0 if args.mem_gb is None else args.mem_gb
    if args.device != "cpu":
        if not (args.device.startswith("cuda") and torch.cuda.is_available()):
            print(f"bench_nngp: device {args.device} not available; skipped")
            return
        if not kernelfuse.build_info().get("cuda"):
            print("bench_nngp: kernelfuse built without CUDA; skipped")
            return
        args.only = [s for s in args.only if s == "product"]  # the other sections are CPU studies
    if args.threads:
        torch.set_num_threads(args.threads)
        kernelfuse.set_num_threads(args.threads)
    lines = ["## NNGP / NTK kernels (`bench/bench_nngp.py`)", ""]
    for name in args.only:
        print(f"== {name}", flush=True)
        {
            "product": section_product,
            "width": section_width,
            "features": section_features,
            "digits": section_digits,
            "peers": section_peers,
        }[name](args, lines)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
