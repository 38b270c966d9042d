"""neural-tangents (JAX) as the peer of kernelfuse's NNGP / NTK kernels (docs/nngp.md, "neural-tangents").

Runs ONLY under the interpreter of the separate neural-tangents environment (`make peers-nt` makes
.venv-nt; its pins: bench/peers/requirements-nt.txt); kernelfuse never imports jax in its own process.

    .venv-nt/bin/python bench/peers/nt_values.py values [--out tests/data/nngp_nt_values.json]
        NT's NNGP and NTK (float64, jax x64) on fixed inputs for every case of CASES, written as JSON;
        tests/test_nngp_peer_nt.py regenerates the inputs in torch and checks kernelfuse against them.
    .venv-nt/bin/python bench/peers/nt_values.py matrix --dir D [--batch B]
        the bench: NNGP + NTK matrices of D/x.npy vs D/y.npy (float32, depth from D/config.json);
        times the call, measures the process's peak resident memory, saves the first rows.
    .venv-nt/bin/python bench/peers/nt_values.py product --dir D --batch B --cap S
        K(x, y) @ W row block by row block (nt.batch per block + a matmul), stopping at the time cap.

The two bench modes print one JSON line (prefixed "NT-RESULT ") with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(ROOT, "tests", "data", "nngp_nt_values.json")

# The input rule, written with integer operations only so that torch (tests/test_nngp_peer_nt.py)
# reproduces it bit for bit: entry k of the stream `seed` is a multiple of 2^-14 in [-2, 2).
INPUT_RULE = (
    "h = (k * 2654435761 + seed * 1000003 + 12345) mod 2^32; h ^= h >> 16; h = (h * 40503) mod 2^32; "
    "h ^= h >> 13; value = ((h mod 65536) - 32768) / 16384; row-major (rows, cols)"
)


def stream(rows: int, cols: int, seed: int) -> np.ndarray:
    k = np.arange(rows * cols, dtype=np.int64)
    h = (k * 2654435761 + seed * 1000003 + 12345) % (1 << 32)
    h ^= h >> 16
    h = (h * 40503) % (1 << 32)
    h ^= h >> 13
    return (((h % 65536) - 32768).astype(np.float64) / 16384.0).reshape(rows, cols)


# name, m, n (None: the Gram matrix K(x, x), NT called with x2 = None), d, depth, activation,
# sigma_w2, sigma_b2, readout scale (the scale mixture's E[s] = b / (a - 1) on the readout's
# variances; 1 otherwise), edges (special rows, below)
CASES = [
    ("linear-d0", 4, 6, 5, 0, "relu", 1.3, 0.2, 1.0, False),
    ("relu-d1", 7, 13, 3, 1, "relu", 2.0, 0.0, 1.0, False),
    ("relu-d2-1x1", 1, 1, 1, 2, "relu", 1.3, 0.2, 1.0, False),
    ("relu-d2-wide", 23, 29, 64, 2, "relu", 2.0, 0.05, 1.0, False),
    ("relu-d3", 17, 11, 67, 3, "relu", 2.0, 0.1, 1.0, False),
    ("relu-d4-gram", 19, None, 5, 4, "relu", 1.7, 0.05, 1.0, False),
    ("relu-d3-edges", 8, 7, 4, 3, "relu", 2.0, 0.0, 1.0, True),
    ("relu-d2-mixture", 6, 5, 3, 2, "relu", 2.0, 0.1, 1.2 / (3.0 - 1.0), False),
    ("erf-d1", 13, 7, 2, 1, "erf", 1.0, 0.0, 1.0, False),
    ("erf-d2-gram", 11, None, 9, 2, "erf", 2.0, 0.1, 1.0, False),
    ("erf-d3", 5, 23, 31, 3, "erf", 1.3, 0.2, 1.0, False),
    ("erf-d4", 9, 10, 4, 4, "erf", 2.5, 0.3, 1.0, False),
    ("erf-d2-edges", 8, 7, 4, 2, "erf", 2.0, 0.0, 1.0, True),
    ("step-d1", 7, 5, 3, 1, "step", 2.0, 0.0, 1.0, False),
    ("step-d2", 13, 17, 6, 2, "step", 1.3, 0.2, 1.0, False),
    ("step-d3-gram", 10, None, 3, 3, "step", 2.0, 0.1, 1.0, False),
    ("step-d4", 3, 29, 8, 4, "step", 1.7, 0.05, 1.0, False),
    ("step-d2-edges", 8, 7, 4, 2, "step", 2.0, 0.0, 1.0, True),
]
W_COLS = 3  # the weights W (n, 3) of the nngp_matmul check: stream(n, 3, seed + 2)


def case_inputs(index: int, m: int, n, d: int, edges: bool):
    """x (m, d), y (n, d) or None, W (n or m, 3) of case `index` (seeds 10 index + 0, 1, 2). `edges`:
    x row 0 = 0 (a zero input), row 1 = y row 0 (an identical pair), row 2 = -y row 1 (opposite),
    row 3 = 2.5 y row 2 (parallel, another norm; exact in binary), row 4 = y row 3 / 10 (parallel,
    rounded: x.y, |x|^2 |y|^2 then round differently, the angle-0 conventions of docs/nngp.md)."""
    seed = 10 * index
    x = stream(m, d, seed)
    y = None if n is None else stream(n, d, seed + 1)
    if edges:
        x[0] = 0.0
        x[1] = y[0]
        x[2] = -y[1]
        x[3] = 2.5 * y[2]
        x[4] = y[3] / 10
    w = stream(m if n is None else n, W_COLS, seed + 2)
    return x, y, w


def _import_nt():
    """Imports neural_tangents without neural_tangents.experimental: that subpackage (empirical NTKs
    of TensorFlow models, unused here) is the one that imports TensorFlow through jax2tf, ~75 % of
    the start-up; an empty module stands in for it. stax and nt.batch do not use it."""
    import types

    sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
    import neural_tangents

    return neural_tangents


def network(depth: int, activation: str, sigma_w2: float, sigma_b2: float, readout_scale: float = 1.0):
    """(stax layers, their description) of kernelfuse's network in NT's "ntk" parameterisation.
    relu -> stax.Relu(), erf -> stax.Erf() (a = b = 1, c = 0). step = (1 + sign) / 2 has no NT layer:
    stax.Sign() followed by the next Dense with W_std^2 = sigma_w2 / 4, b_std^2 = sigma_w2 / 4 +
    sigma_b2 gives the same kernels exactly, since E[step step] = (1 + E[sign sign]) / 4 and both
    have a zero derivative (docs/nngp.md)."""
    stax = _import_nt().stax

    act = {"relu": stax.Relu, "erf": stax.Erf, "step": stax.Sign}[activation]
    aname = {"relu": "Relu()", "erf": "Erf()", "step": "Sign()"}[activation]
    layers, desc = [], []
    w2, b2 = sigma_w2, sigma_b2
    for h in range(depth + 1):
        last = h == depth
        sw2, sb2 = (w2 * readout_scale, b2 * readout_scale) if last else (w2, b2)
        layers.append(stax.Dense(1 if last else 512, W_std=math.sqrt(sw2), b_std=math.sqrt(sb2)))
        desc.append(f"Dense(W_std^2={sw2:.6g}, b_std^2={sb2:.6g})")
        if not last:
            layers.append(act())
            desc.append(aname)
            if activation == "step":
                w2, b2 = sigma_w2 / 4, sigma_w2 / 4 + sigma_b2
    return layers, " -> ".join(desc)


def kernel_fn(
    depth: int, activation: str, sigma_w2: float, sigma_b2: float, readout_scale: float = 1.0, batch: int = 0
):
    """(NT's kernel function of `network`, its description): the one builder of every mode. batch = 0:
    jax.jit of stax.serial's kernel_fn (`get` static; 4x faster than eager on the values cases);
    batch > 0: nt.batch of it by blocks of `batch` rows, kept off the device (the bench modes)."""
    nt = _import_nt()
    layers, desc = network(depth, activation, sigma_w2, sigma_b2, readout_scale)
    fn = nt.stax.serial(*layers)[2]
    if batch:
        return nt.batch(fn, batch_size=batch, store_on_device=False), desc
    import jax

    return jax.jit(fn, static_argnames="get"), desc


def _versions():
    import jax

    return {"neural_tangents": _import_nt().__version__, "jax": jax.__version__, "numpy": np.__version__}


def cmd_values(args):
    import jax

    jax.config.update("jax_enable_x64", True)

    out = {
        "about": "neural-tangents' NNGP / NTK (float64, jax x64) on fixed inputs; written by "
        "bench/peers/nt_values.py values (.venv-nt); checked by tests/test_nngp_peer_nt.py",
        "versions": _versions(),
        "input_rule": INPUT_RULE,
        "w_cols": W_COLS,
        "cases": [],
    }
    for i, (name, m, n, d, depth, act, sw2, sb2, scale, edges) in enumerate(CASES):
        x, y, _ = case_inputs(i, m, n, d, edges)
        fn, desc = kernel_fn(depth, act, sw2, sb2, scale)
        k = fn(x, y, get=("nngp", "ntk"))
        K, T = np.asarray(k.nngp, dtype=np.float64), np.asarray(k.ntk, dtype=np.float64)
        assert K.dtype == np.float64 and K.shape == (m, m if n is None else n), (name, K.shape)
        out["cases"].append(
            {
                "name": name,
                "m": m,
                "n": n,
                "d": d,
                "depth": depth,
                "activation": act,
                "sigma_w2": sw2,
                "sigma_b2": sb2,
                "readout_scale": scale,
                "edges": edges,
                "nt_network": desc,
                # the test's check of its inputs: IEEE products, math.fsum's correctly rounded sum
                "x_checksum": math.fsum((x * np.arange(1, x.size + 1).reshape(x.shape)).ravel().tolist()),
                "nngp": K.tolist(),
                "ntk": T.tolist(),
            }
        )
    text = json.dumps(out, indent=None, separators=(",", ":"))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    print(f"wrote {args.out}: {len(CASES)} cases, {len(text) / 1024:.0f} KiB")


# ---------------------------------------------------------------- bench modes (float32)
def _status():
    s = open("/proc/self/status").read()
    return {k: int(re.search(k + r":\s+(\d+)", s).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def _reset_peak():
    """Resets the kernel's resident-set high-water mark of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _bench_kernel_fn(cfg, batch):
    """kernel_fn of the bench's D/config.json network (relu, sigma_w2 = 2, sigma_b2 = 0 by default)."""
    return kernel_fn(
        cfg["depth"], cfg.get("activation", "relu"), cfg.get("sigma_w2", 2.0), cfg.get("sigma_b2", 0.0), batch=batch
    )


def _report(res):
    print("NT-RESULT " + json.dumps(res), flush=True)


def cmd_matrix(args):
    import jax

    cfg = json.load(open(os.path.join(args.dir, "config.json")))
    x, y = np.load(os.path.join(args.dir, "x.npy")), np.load(os.path.join(args.dir, "y.npy"))
    fn, desc = _bench_kernel_fn(cfg, args.batch)
    # the block shape compiles the one block kernel (nt.batch); else the whole call
    warm = (x[: args.batch], y[: args.batch]) if args.batch else (x, y)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*warm, get=("nngp", "ntk")))
    t_warm = time.perf_counter() - t0
    base = _status()["VmRSS"]
    reset = _reset_peak()
    t0 = time.perf_counter()
    k = fn(x, y, get=("nngp", "ntk"))
    jax.block_until_ready(k)
    sec = time.perf_counter() - t0
    st = _status()
    rows = int(cfg.get("save_rows", 200))
    np.save(os.path.join(args.dir, "nt_nngp.npy"), np.asarray(k.nngp[:rows]))
    np.save(os.path.join(args.dir, "nt_ntk.npy"), np.asarray(k.ntk[:rows]))
    _report(
        {
            "seconds": sec,
            "warmup_seconds": t_warm,
            "peak_rss": st["VmHWM"],
            "peak_extra": st["VmHWM"] - base if reset else None,
            "base_rss": base,
            "batch": args.batch,
            "network": desc,
            "dtype": str(np.asarray(k.nngp).dtype),
            "versions": _versions(),
        }
    )


def cmd_product(args):
    """K(x, y) @ W by row blocks of `batch` queries: nt.batch over the columns of each block, then the
    block's (batch, n) kernel times W; stops (and says so) when the elapsed time passes the cap."""
    import jax

    cfg = json.load(open(os.path.join(args.dir, "config.json")))
    x, y, w = (np.load(os.path.join(args.dir, f)) for f in ("x.npy", "y.npy", "w.npy"))
    m, bs = x.shape[0], args.batch
    # nt.batch needs both sides divisible by the block: zero rows pad x (dropped from the output) and
    # y (with zero weights: no contribution)
    x = np.concatenate([x, np.zeros((-m % bs, x.shape[1]), x.dtype)])
    y = np.concatenate([y, np.zeros((-y.shape[0] % bs, y.shape[1]), y.dtype)])
    w = np.concatenate([w, np.zeros((y.shape[0] - w.shape[0], w.shape[1]), w.dtype)])
    fn, desc = _bench_kernel_fn(cfg, args.batch)
    get = "ntk" if cfg.get("ntk") else "nngp"
    t0 = time.perf_counter()
    jax.block_until_ready(fn(x[: args.batch], y[: args.batch], get=get))
    t_warm = time.perf_counter() - t0
    base = _status()["VmRSS"]
    reset = _reset_peak()
    blocks = math.ceil(x.shape[0] / args.batch)
    out = np.zeros((x.shape[0], w.shape[1]), dtype=np.float32)
    t0 = time.perf_counter()
    done = 0
    for b in range(blocks):
        s = slice(b * args.batch, (b + 1) * args.batch)
        Kb = np.asarray(fn(x[s], y, get=get))
        out[s] = Kb @ w
        done += 1
        if time.perf_counter() - t0 > args.cap:
            break
    sec = time.perf_counter() - t0
    st = _status()
    np.save(os.path.join(args.dir, "nt_out.npy"), out[: min(done * args.batch, m)])
    _report(
        {
            "seconds": sec,
            "warmup_seconds": t_warm,
            "blocks_done": done,
            "blocks": blocks,
            "finished": done == blocks,
            "peak_rss": st["VmHWM"],
            "peak_extra": st["VmHWM"] - base if reset else None,
            "base_rss": base,
            "batch": args.batch,
            "network": desc,
            "versions": _versions(),
        }
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("values", help="the JSON of NT's float64 kernels on the test inputs")
    v.add_argument("--out", default=DEFAULT_OUT)
    mtx = sub.add_parser("matrix", help="bench: NNGP + NTK matrices, time and peak memory")
    mtx.add_argument("--dir", required=True)
    mtx.add_argument("--batch", type=int, default=0, help="nt.batch block size (0: one jitted call)")
    p = sub.add_parser("product", help="bench: K(x, y) @ W by row blocks, with a time cap")
    p.add_argument("--dir", required=True)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--cap", type=float, default=600.0)
    args = ap.parse_args(argv)
    {"values": cmd_values, "matrix": cmd_matrix, "product": cmd_product}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
