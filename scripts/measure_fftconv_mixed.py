#!/usr/bin/env python3
"""Worst elementwise error ratios of fftconv's mixed precision (fp16 / bf16 u and gates, fp32 k and
D) against the float64 reference: max |err| / (atol + rtol |ref|) with the TOL table of
tests/conftest.py, for y and every gradient (dk, dD also against the float32 TOL). The numbers in
docs/longconv_fftconv.md ("Dtypes, mixed precision and autocast") come from this script.

    PYTHONPATH=python python scripts/measure_fftconv_mixed.py            # CPU kernels
    <the Makefile's SIM_ENV> PYTHONPATH=python python scripts/measure_fftconv_mixed.py
                                              # the CUDA glue and kernels under the simulator
"""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import kernelfuse  # noqa: E402,F401
from kernelfuse.reference import longconv as ref  # noqa: E402
from kf_inputs import fftconv_inputs  # noqa: E402

TOL = {torch.float16: (1e-2, 1e-3), torch.bfloat16: (2e-2, 1e-2), torch.float32: (2e-6, 1e-6)}
SIM = os.environ.get("KERNELFUSE_SIM_LIB")
if SIM:
    torch.ops.load_library(SIM)
OPS = torch.ops.kernelfuse_sim if SIM else torch.ops.kernelfuse
NAMES = ("u", "k", "D", "pregate", "postgate")


def ratio(o, e, dt):
    rtol, atol = TOL[dt]
    return ((o.double() - e).abs() / (atol * max(1.0, e.abs().max().item()) + rtol * e.abs())).max().item()


def main():
    res = {}
    for dt in (torch.float16, torch.bfloat16):
        for mode in ("causal", "bidirectional", "circular"):
            for kshape in ("shared", "batch"):
                for B, H, L, Lk in [(2, 3, 97, 33), (2, 2, 300, 77), (1, 2, 1000, 500)]:
                    u, k, D, pre, post = fftconv_inputs(B, H, L, Lk, mode, torch.float64, kshape, seed=L)
                    xs = [u.to(dt), k.float(), D.float(), pre.to(dt), post.to(dt)]
                    y = OPS.fftconv(*xs, mode, None)
                    lv = [x.double().requires_grad_(True) for x in xs]
                    yr = ref.fftconv(lv[0], lv[1], lv[2], pregate=lv[3], postgate=lv[4], mode=mode)
                    gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(1)).to(dt)
                    gr = torch.autograd.grad(yr, lv, gy.double())
                    out = OPS.fftconv_bwd(gy, *xs, mode, None, True, True, True, True, True)
                    tc = bool(SIM) and mode == "causal" and (kshape == "shared" or B == 1) and L + Lk - 1 <= 32768
                    path = "tensor-core fwd" if tc else "cufft" if SIM else "cpu"
                    r = res.setdefault((str(dt).split(".")[1], path), {})
                    r["y"] = max(r.get("y", 0.0), ratio(y, yr.detach(), dt))
                    for n, o, e in zip(NAMES, out, gr):
                        r["d" + n] = max(r.get("d" + n, 0.0), ratio(o, e, dt))
                        if n in ("k", "D"):
                            r["d" + n + " (float32 TOL)"] = max(
                                r.get("d" + n + " (float32 TOL)", 0.0), ratio(o, e, torch.float32)
                            )
    for key, v in sorted(res.items()):
        print(key, {a: round(b, 3) for a, b in v.items()})


if __name__ == "__main__":
    main()
