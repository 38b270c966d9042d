"""Our side of the neural-tangents peer (docs/nngp.md): runs bench/peers/nt_values.py under the
separate environment's interpreter (.venv-nt, `make peers-nt`) in a subprocess, so that jax and
TensorFlow never load into the benchmark's process; inputs and results travel as .npy files.

nt_status() -> (ok, reason); nt_matrix(x, y, ...) -> dict; nt_product_row(m, d, depth, cap_s) ->
(seconds, peak_bytes, note) or None.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from typing import Optional, Tuple

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(HERE, "nt_values.py")
NT_PYTHON = os.path.join(ROOT, ".venv-nt", "bin", "python")
ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}

_STATUS: Optional[Tuple[bool, str]] = None


def nt_status() -> Tuple[bool, str]:
    """(True, "neural-tangents X, jax Y") when .venv-nt imports neural_tangents, else (False, why)."""
    global _STATUS
    if _STATUS is None:
        if not os.path.exists(NT_PYTHON):
            _STATUS = (False, f"{os.path.relpath(NT_PYTHON, ROOT)} absent; `make peers-nt` creates it")
        else:
            code = (
                "import sys; sys.path.insert(0, %r); import nt_values as v, jax; "
                "print('neural-tangents', v._import_nt().__version__, 'jax', jax.__version__)" % HERE
            )
            r = _run([NT_PYTHON, "-c", code], timeout=300)
            ok = r.returncode == 0
            _STATUS = (ok, r.stdout.strip().splitlines()[-1] if ok else _tail(r.stderr))
    return _STATUS


def _tail(text: str, n: int = 300) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[-n:]


def _run(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **ENV))


def _call(mode, tmp, args, timeout):
    try:
        r = _run([NT_PYTHON, SCRIPT, mode, "--dir", tmp] + args, timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    for line in r.stdout.splitlines():
        if line.startswith("NT-RESULT "):
            return json.loads(line[len("NT-RESULT ") :]), ""
    return None, f"failed (exit {r.returncode}): {_tail(r.stderr)}"


def _save(tmp, cfg, **arrays):
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f)
    for name, a in arrays.items():
        np.save(os.path.join(tmp, f"{name}.npy"), a.detach().cpu().numpy())


def nt_matrix(x, y, depth=3, activation="relu", sigma_w2=2.0, sigma_b2=0.0, batch=0, save_rows=200, timeout=3600):
    """NT's NNGP + NTK matrices of x vs y (float32 arrays: jax's default dtype), timed in the
    subprocess after a warm-up call that compiles (whole shape, or with nt.batch one block).
    Returns the subprocess's figures (seconds, warmup_seconds, peak_rss, peak_extra = the peak
    resident memory over the level before the timed call, ...) plus "nngp" / "ntk": the first
    `save_rows` rows as torch tensors; or {"error": why}."""
    ok, why = nt_status()
    if not ok:
        return {"error": f"not installed ({why})"}
    cfg = dict(depth=depth, activation=activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, save_rows=save_rows)
    with tempfile.TemporaryDirectory(prefix="kf-nt-") as tmp:
        _save(tmp, cfg, x=x.float(), y=y.float())
        res, err = _call("matrix", tmp, ["--batch", str(int(batch))], timeout)
        if res is None:
            return {"error": err}
        res["nngp"] = torch.from_numpy(np.load(os.path.join(tmp, "nt_nngp.npy")))
        res["ntk"] = torch.from_numpy(np.load(os.path.join(tmp, "nt_ntk.npy")))
    return res


def nt_product_row(
    m: int,
    d: int,
    depth: int,
    cap_s: float,
    *,
    n: Optional[int] = None,
    c: int = 1,
    activation: str = "relu",
    ntk: bool = False,
    seed: int = 0,
    x: Optional[torch.Tensor] = None,
    y: Optional[torch.Tensor] = None,
    w: Optional[torch.Tensor] = None,
    batch: Optional[int] = None,
    return_output: bool = False,
):
    """neural-tangents' time and memory for K(x, y) @ W (x (m, d), y (n, d), W (n, c), float32,
    sigma_w2 = 2, sigma_b2 = 0; NNGP, or the NTK with ntk=True): row blocks of `batch` queries, each
    block's (batch, n) kernel by nt.batch (blocks of batch x batch) and then times W, in a
    subprocess of .venv-nt. Inputs: x, y, w if given, else torch.manual_seed(seed) and randn like
    bench_nngp's product section (x, y, then w).

    Returns None when neural-tangents is not available (nt_status() says why) or the run failed
    (printed); else (seconds, peak_bytes, note): seconds of the timed pass (after a warm-up block
    that compiles) — float("inf") when it had not finished at cap_s, the note then giving the
    blocks done and the time projected from them; peak_bytes the subprocess's peak resident memory
    over its level before the pass (its total peak in the note). return_output: a 4th element, the
    (rows done, c) float32 result."""
    ok, why = nt_status()
    if not ok:
        print(f"neural-tangents: not installed ({why})")
        return None
    n = m if n is None else n
    if x is None or y is None or w is None:
        torch.manual_seed(seed)
        x, y, w = torch.randn(m, d), torch.randn(n, d), torch.randn(n, c)
    w = w[:, None] if w.dim() == 1 else w
    bs = int(batch or min(1000, max(m, n)))  # the subprocess pads both sides to multiples of bs
    cfg = dict(depth=depth, activation=activation, sigma_w2=2.0, sigma_b2=0.0, ntk=bool(ntk))
    with tempfile.TemporaryDirectory(prefix="kf-nt-") as tmp:
        _save(tmp, cfg, x=x.float(), y=y.float(), w=w.float())
        res, err = _call("product", tmp, ["--batch", str(bs), "--cap", str(float(cap_s))], cap_s + 900)
        output = torch.from_numpy(np.load(os.path.join(tmp, "nt_out.npy"))) if res is not None else None
    if res is None:
        print(f"neural-tangents product: {err}")
        return None
    peak = res["peak_extra"] if res["peak_extra"] is not None else res["peak_rss"]
    what = f"nt.batch blocks of {bs}x{bs}, {res['blocks']} row blocks x W; process peak RSS {res['peak_rss'] / 2**30:.2f} GiB"
    extra = (output,) if return_output else ()
    if res["finished"]:
        return (res["seconds"], float(peak), what) + extra
    projected = res["seconds"] * res["blocks"] / max(res["blocks_done"], 1)
    note = (
        f"stopped at the {cap_s:.0f} s cap after {res['blocks_done']} of {res['blocks']} row blocks "
        f"({res['seconds']:.0f} s): ~{projected:.0f} s projected; {what}"
    )
    return (math.inf, float(peak), note) + extra
