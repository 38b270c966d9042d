"""kernelfuse's NNGP / NTK against neural-tangents (JAX), the peer library (docs/nngp.md, "neural-tangents").

tests/data/nngp_nt_values.json holds neural-tangents' float64 kernels on fixed inputs, written by
bench/peers/nt_values.py under its own environment (.venv-nt, `make peers-nt`: it pulls TensorFlow,
and jax is never imported here). These tests regenerate the inputs in torch from the same integer
rule and check ours (features.nngp_kernel / ntk_kernel / kernel_diag, the fused nngp_matmul against
K @ W) against NT's numbers: they run everywhere, with or without .venv-nt. Where .venv-nt exists,
the last test also re-runs the script and checks that the committed JSON is current.
"""

import json
import math
import os
import subprocess
import sys

import kernelfuse
import pytest
import torch
from kernelfuse import features as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "nngp_nt_values.json")
SCRIPT = os.path.join(ROOT, "bench", "peers", "nt_values.py")
NT_PYTHON = os.path.join(ROOT, ".venv-nt", "bin", "python")

with open(DATA) as _f:
    VALUES = json.load(_f)
CASES = VALUES["cases"]
# the scale mixture of the "mixture" case: InverseGamma(a, b) with b / (a - 1) = its readout scale
MIXTURE = (3.0, 1.2)
# float64 agreement off the pairs at angle 0: measured <= 1.7e-15 of max |K| (NT's XLA and our
# kernels round differently). At angle 0 see _tolerance.
REL = 1e-12
EPS = 2.0**-52


def stream(rows, cols, seed):
    """bench/peers/nt_values.py's input rule in torch integers (bit-identical to its numpy)."""
    k = torch.arange(rows * cols, dtype=torch.int64)
    h = (k * 2654435761 + seed * 1000003 + 12345) % (1 << 32)
    h = h ^ (h >> 16)
    h = (h * 40503) % (1 << 32)
    h = h ^ (h >> 13)
    return (((h % 65536) - 32768).to(torch.float64) / 16384.0).reshape(rows, cols)


def inputs(index, case):
    seed = 10 * index
    m, n, d = case["m"], case["n"], case["d"]
    x = stream(m, d, seed)
    y = None if n is None else stream(n, d, seed + 1)
    if case["edges"]:
        x[0] = 0.0  # a zero input
        x[1] = y[0]  # an identical pair
        x[2] = -y[1]  # opposite
        x[3] = 2.5 * y[2]  # parallel, exact
        x[4] = y[3] / 10  # parallel, rounded
    w = stream(m if n is None else n, VALUES["w_cols"], seed + 2)
    return x, y, w


def nt_kernels(case):
    return (torch.tensor(case["nngp"], dtype=torch.float64), torch.tensor(case["ntk"], dtype=torch.float64))


def angle0_pairs(case):
    """The pairs at angle 0 in exact arithmetic (the Gram diagonal; the edge rows 1, 3, 4 of x against
    rows 0, 2, 3 of y; row 4 = y row 3 / 10 is parallel only up to one rounding)."""
    if case["n"] is None:
        return [(i, i) for i in range(case["m"])]
    return [(1, 0), (3, 2), (4, 3)] if case["edges"] else []


def _tolerance(case, K):
    """Per-entry tolerance of ours against NT: REL max |K|, looser at the pairs at angle 0. There NT
    takes the angle from arctan2(sqrt(k11 k22 - k12^2), k12) after rounding (jitted, as nt.batch
    runs it): ~1e-8 rad instead of 0, which the ReLU NTK's (pi - t) / 2pi shows at <= 7e-9 of max
    |K| and every step layer takes to its square root (the arc-cosine kernel of order 0 has an
    infinite slope at t = 0): ~eps^(1 / 2^depth) (measured 2.2e-5 at depth 2, 1.3e-3 at depth 3).
    Ours takes cosines within 16 ulp of 1 as 1 (docs/nngp.md) and is exact there:
    test_against_high_precision pins which side the difference is on."""
    tol = torch.full_like(K, REL * float(K.abs().max()))
    bound = EPS ** (0.5 ** case["depth"]) if case["activation"] == "step" else 1e-7
    for i, j in angle0_pairs(case):
        tol[i, j] = bound * float(K.abs().max())
    return tol


def truth(xi, yj, depth, act, sw2, sb2):
    """(NNGP, NTK) of one pair by the recursion of docs/nngp.md in 40-digit arithmetic (mpmath, a
    dependency of torch's sympy) from the float64 inputs taken as exact."""
    import mpmath as mp

    with mp.workdps(40):
        xi, yj = [mp.mpf(float(v)) for v in xi], [mp.mpf(float(v)) for v in yj]
        sw2, sb2, d = mp.mpf(sw2), mp.mpf(sb2), len(xi)
        k12 = sw2 * mp.fsum(a * b for a, b in zip(xi, yj)) / d + sb2
        k11 = sw2 * mp.fsum(a * a for a in xi) / d + sb2
        k22 = sw2 * mp.fsum(b * b for b in yj) / d + sb2
        th = k12
        for _ in range(depth):
            if act == "erf":
                a1, a2 = 1 + 2 * k11, 1 + 2 * k22
                f = 2 / mp.pi * mp.asin(2 * k12 / mp.sqrt(a1 * a2))
                g = 4 / mp.pi / mp.sqrt(a1 * a2 - 4 * k12**2)
                f11, f22 = 2 / mp.pi * mp.asin(2 * k11 / a1), 2 / mp.pi * mp.asin(2 * k22 / a2)
            else:
                r = mp.sqrt(k11 * k22)
                c = max(mp.mpf(-1), min(mp.mpf(1), k12 / r)) if r > 0 else mp.mpf(0)
                t = mp.acos(c)
                if act == "relu":
                    f, g = r * (mp.sin(t) + (mp.pi - t) * c) / (2 * mp.pi), (mp.pi - t) / (2 * mp.pi)
                    f11, f22 = k11 / 2, k22 / 2
                else:
                    f, g = (mp.pi - t) / (2 * mp.pi), 0
                    f11, f22 = (mp.mpf(0.5) if k > 0 else mp.mpf(0.25) for k in (k11, k22))
            new = sw2 * f + sb2
            th = new + sw2 * g * th
            k12, k11, k22 = new, sw2 * f11 + sb2, sw2 * f22 + sb2
        return float(k12), float(th)


IDS = [c["name"] for c in CASES]


def test_data_file_is_small_and_covers_the_grid():
    assert os.path.getsize(DATA) < 200 * 1024
    acts = {(c["activation"], c["depth"]) for c in CASES}
    for a in ("relu", "erf", "step"):
        for depth in (1, 2, 3, 4):
            assert (a, depth) in acts, (a, depth)
    assert any(c["n"] is None for c in CASES) and any(c["edges"] for c in CASES)
    assert VALUES["versions"]["neural_tangents"] == "0.6.5"


@pytest.mark.parametrize("index", range(len(CASES)), ids=IDS)
def test_inputs_regenerate_exactly(index):
    case = CASES[index]
    x, _, _ = inputs(index, case)
    weights = torch.arange(1, x.numel() + 1, dtype=torch.float64).reshape(x.shape)
    # IEEE products and math.fsum's correctly rounded sum: the same bits as the script's numpy
    assert math.fsum((x * weights).flatten().tolist()) == case["x_checksum"]
    K, T = nt_kernels(case)
    assert K.shape == T.shape == (case["m"], case["m"] if case["n"] is None else case["n"])


@pytest.mark.parametrize("index", range(len(CASES)), ids=IDS)
def test_kernels_match_neural_tangents(index):
    case = CASES[index]
    x, y, _ = inputs(index, case)
    K_nt, T_nt = nt_kernels(case)
    kw = dict(sigma_w2=case["sigma_w2"], sigma_b2=case["sigma_b2"])
    depth, act, scale = case["depth"], case["activation"], case["readout_scale"]
    mix = None
    if scale != 1.0:  # NT: the readout Dense's variances times E[s]; ours: the inverse-gamma mixture
        mix = MIXTURE
        assert abs(MIXTURE[1] / (MIXTURE[0] - 1) - scale) < 1e-15
    K = F.nngp_kernel(x, y, depth, act, scale_mixture=mix, **kw)
    T = F.ntk_kernel(x, y, depth, act, **kw)
    # NT's NTK of the scaled readout: its Dense adds scale * (Sigma + sigma_w2 E[phi' phi'] Theta)
    T = T * scale
    assert K.dtype == T.dtype == torch.float64
    assert ((K - K_nt).abs() <= _tolerance(case, K_nt)).all(), float((K - K_nt).abs().max())
    assert ((T - T_nt).abs() <= _tolerance(case, T_nt)).all(), float((T - T_nt).abs().max())
    if case["n"] is None:  # the Gram cases: the diagonal recursion too (NT's diagonal is at angle 0)
        for ntk, M, ours in ((False, K_nt, K), (True, T_nt, T)):
            diag = F.kernel_diag(x, depth, act, ntk=ntk, **kw) * scale
            torch.testing.assert_close(diag, torch.diagonal(ours), rtol=REL, atol=REL * float(M.abs().max()))
            assert ((diag - torch.diagonal(M)).abs() <= torch.diagonal(_tolerance(case, M))).all()


@pytest.mark.parametrize("index", range(len(CASES)), ids=IDS)
def test_fused_matmul_matches_neural_tangents(index):
    """kernelfuse.nngp_matmul(x, y, W) (the fused op: no m x n matrix) against NT's K @ W."""
    case = CASES[index]
    x, y, w = inputs(index, case)
    y = x if y is None else y
    kw = dict(depth=case["depth"], activation=case["activation"], sigma_w2=case["sigma_w2"], sigma_b2=case["sigma_b2"])
    scale = case["readout_scale"]
    for ntk, M in zip((False, True), nt_kernels(case)):
        out = kernelfuse.nngp_matmul(x, y, w, ntk=ntk, **kw) * scale
        tol = _tolerance(case, M) @ w.abs() + 1e-15
        assert ((out - M @ w).abs() <= tol).all(), (ntk, float((out - M @ w).abs().max()))
        # and a single column (W of shape (n,))
        out1 = kernelfuse.nngp_matmul(x, y, w[:, 1], ntk=ntk, **kw) * scale
        assert ((out1 - M @ w[:, 1]).abs() <= tol[:, 1]).all()


@pytest.mark.parametrize("index", range(len(CASES)), ids=IDS)
def test_against_high_precision(index):
    """Ours (and NT) against the 40-digit recursion at the pairs at angle 0 and at 4 other pairs:
    ours within 1e-13 of max |K| (measured <= 4e-16) everywhere but at the step kernel's rounded
    parallel pair (true angle ~1e-16, which the next step layer makes ~1e-8 rad; ours takes it as 0:
    1e-9 of max |K| at depth 2; NT rounds it to 0 as well there)."""
    case = CASES[index]
    x, y, _ = inputs(index, case)
    y = x if y is None else y
    K_nt, T_nt = nt_kernels(case)
    depth, act, scale = case["depth"], case["activation"], case["readout_scale"]
    kw = dict(sigma_w2=case["sigma_w2"], sigma_b2=case["sigma_b2"])
    g = torch.Generator().manual_seed(index)
    others = [(int(torch.randint(x.shape[0], (1,), generator=g)), int(torch.randint(y.shape[0], (1,), generator=g)))]
    others += [(0, 0), (x.shape[0] - 1, y.shape[0] - 1), (x.shape[0] // 2, y.shape[0] // 3)]
    for i, j in angle0_pairs(case) + others:
        k, t = truth(x[i], y[j], depth, act, case["sigma_w2"], case["sigma_b2"])
        k, t = k * scale, t * scale
        ours_k = float(F.nngp_kernel(x[i : i + 1], y[j : j + 1], depth, act, **kw)) * scale
        ours_t = float(F.ntk_kernel(x[i : i + 1], y[j : j + 1], depth, act, **kw)) * scale
        rounded = case["edges"] and (i, j) == (4, 3) and act == "step" and depth >= 2
        for ours, exact, M in ((ours_k, k, K_nt), (ours_t, t, T_nt)):
            scale_k = float(M.abs().max())
            assert abs(ours - exact) <= (1e-7 if rounded else 1e-13) * scale_k, (i, j, ours, exact)
            # NT: within the tolerance of _tolerance from the truth as well
            assert abs(float(M[i, j]) - exact) <= float(_tolerance(case, M)[i, j]) + 1e-13 * scale_k


def test_json_is_current():
    """Re-runs bench/peers/nt_values.py under .venv-nt and compares with the committed JSON."""
    if not os.path.exists(NT_PYTHON):
        pytest.skip(f"{NT_PYTHON} absent (`make peers-nt` creates it): the committed JSON is not re-derived")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "v.json")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
        r = subprocess.run(
            [NT_PYTHON, SCRIPT, "values", "--out", out], capture_output=True, text=True, env=env, timeout=600
        )
        assert r.returncode == 0, r.stderr[-3000:]
        with open(out) as f:
            fresh = json.load(f)
    assert fresh["versions"] == VALUES["versions"] and fresh["input_rule"] == VALUES["input_rule"]
    assert [c["name"] for c in fresh["cases"]] == IDS, "the script's CASES changed: re-run it into tests/data"
    for old, new in zip(CASES, fresh["cases"]):
        meta = {k: v for k, v in old.items() if k not in ("nngp", "ntk")}
        assert meta == {k: v for k, v in new.items() if k not in ("nngp", "ntk")}, old["name"]
        for key in ("nngp", "ntk"):
            a, b = (torch.tensor(c[key], dtype=torch.float64) for c in (old, new))
            # the same machine gives the same bits; another CPU's XLA may round differently
            assert float((a - b).abs().max()) <= 1e-14 * float(a.abs().max()), (old["name"], key)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
