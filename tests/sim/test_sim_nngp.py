"""CUDA simulator tests of the nngp family (csrc/nngp/nngp_matmul_cuda.cu): nngp_matmul(_bwd) and
nngp_kernel(_bwd) as torch.ops.kernelfuse_sim.* (the CUDA branch of the torch glue, every launch under
the simulator), compared with the float64 reference kernelfuse.reference.nngp (backward: autograd
through the reference).

Launch shapes reached (nngp_matmul_cuda.cu; 128 queries per block, tiles of 32 points, 32-dimension
staging chunks, 8 weight columns / 16 gradient dimensions per grid.y, per-side quantities hoisted
4 layers at a time: depth 0, 2, 3, 4, 5, 9 reach no / one partial / one full / several groups):
  nngp_fwd_kernel    m across 128 (1, 129), n across 32 (1, 33, 65), d across 32 (1, 33), c = 1, 9
                     (two column chunks), Matrix mode (nngp_kernel), n = 0 (memset path)
  nngp_gradx_kernel  the x and y gradients of both ops (the matrix gradient as coefficients), d = 17
                     (two gradient chunks), c = 9 (two weight-column chunks); with the weights
                     gradient fused into the y pass (out2): every need subset, c = 20 (more column
                     chunks than gradient chunks: blocks past d), d = 40 (more gradient chunks),
                     points (m) off the tile (33, 37), queries (n) across the block (130)
"""

import itertools

import pytest
import torch
from conftest import assert_close_to_ref, count_launches, run_schedules, sim_ops
from kernelfuse.reference import nngp as ref

ACTS = ("relu", "erf", "step")
FWD, GRADX = "nngp_matmul: nngp_fwd_kernel", "nngp_matmul: nngp_gradx_kernel"


def _data(m, n, d, c, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = (
        torch.randn(n, generator=g, dtype=torch.float64)
        if c is None
        else torch.randn(n, c, generator=g, dtype=torch.float64)
    )
    return x.to(dtype), y.to(dtype), w.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("act", ACTS)
def test_forward(act, dtype):
    for i, (m, n, d, c, ntk) in enumerate(
        [(1, 1, 1, None, False), (129, 33, 33, 9, True), (5, 65, 3, 1, False), (3, 0, 2, 2, True)]
    ):
        x, y, w = _data(m, n, d, c, dtype, seed=i)
        with count_launches(FWD) as cl:
            out = sim_ops.nngp_matmul(x, y, w, 2, act, 1.7, 0.1, ntk)
        assert cl[FWD] == (1 if n else 0)
        exp = ref.nngp_matmul(x.double(), y.double(), w.double(), 2, act, 1.7, 0.1, ntk)
        assert_close_to_ref(
            out,
            exp,
            dtype,
            factor=1.0 if dtype == torch.float64 else 20.0,
            atol_scale=max(1.0, float(w.abs().sum(0).max()) if n else 1.0),
        )


@pytest.mark.parametrize("act", ACTS)
def test_kernel_matrix(act):
    x, y, _ = _data(130, 34, 5, 1, torch.float64, seed=3)
    for ntk in (False, True):
        K = sim_ops.nngp_kernel(x, y, 3, act, 1.4, 0.2, ntk)
        E = (ref.ntk_kernel if ntk else ref.nngp_kernel)(x, y, 3, act, sigma_w2=1.4, sigma_b2=0.2)
        assert_close_to_ref(K, E, torch.float64)


@pytest.mark.parametrize("act", ACTS)
def test_backward(act):
    for dtype in (torch.float64, torch.float32):
        x, y, w = _data(7, 40, 17, 9, dtype, seed=4)
        g = torch.randn(7, 9, dtype=dtype)
        for ntk in (False, True):
            with count_launches(GRADX, FWD) as cl:
                gx, gy, gw = sim_ops.nngp_matmul_bwd(g, x, y, w, 2, act, 1.5, 0.1, ntk, True, True, True)
            assert cl[GRADX] == 2 and cl[FWD] == 0  # the weights gradient rides on the y pass
            xd, yd, wd = (t.double().requires_grad_(True) for t in (x, y, w))
            exp = torch.autograd.grad(ref.nngp_matmul(xd, yd, wd, 2, act, 1.5, 0.1, ntk), (xd, yd, wd), g.double())
            for a, b in zip((gx, gy, gw), exp):
                assert_close_to_ref(a, b, dtype, factor=1.0 if dtype == torch.float64 else 50.0)
        # the matrix op's backward (coefficients from the matrix gradient)
        G = torch.randn(7, 40, dtype=dtype)
        g1, g2 = sim_ops.nngp_kernel_bwd(G, x, y, 2, act, 1.5, 0.1, True, True, True)
        xd, yd = (t.double().requires_grad_(True) for t in (x, y))
        e1, e2 = torch.autograd.grad(ref.ntk_kernel(xd, yd, 2, act, sigma_w2=1.5, sigma_b2=0.1), (xd, yd), G.double())
        assert_close_to_ref(g1, e1, dtype, factor=1.0 if dtype == torch.float64 else 50.0)
        assert_close_to_ref(g2, e2, dtype, factor=1.0 if dtype == torch.float64 else 50.0)


@pytest.mark.parametrize("act", ACTS)
def test_backward_every_need_subset(act):
    """Every (need_x, need_y, need_weights): the launches (y + weights: one gradx launch with out2;
    weights alone: the forward kernel), each gradient bit for bit the one requested alone (the
    fused weights gradient against the forward kernel's: the same operations on the same K; on a
    GPU the compiler may contract them differently, the reference tolerance covers that), and
    against autograd through the float64 reference."""
    op = sim_ops.nngp_matmul_bwd
    for dtype in (torch.float64, torch.float32):
        for i, (m, n, d, c, ntk) in enumerate([(37, 130, 17, 20, False), (33, 5, 40, 9, True), (3, 2, 2, None, True)]):
            x, y, w = _data(m, n, d, c, dtype, seed=30 + i)
            g = torch.randn((m,) + tuple(w.shape[1:]), dtype=dtype, generator=torch.Generator().manual_seed(i))
            cfg = (2, act, 1.5, 0.1, ntk)
            alone = [op(g, x, y, w, *cfg, *(k == j for j in range(3)))[k] for k in range(3)]
            xd, yd, wd = (t.double().requires_grad_(True) for t in (x, y, w))
            exp = torch.autograd.grad(ref.nngp_matmul(xd, yd, wd, *cfg), (xd, yd, wd), g.double())
            for a, b in zip(alone, exp):
                assert_close_to_ref(a, b, dtype, factor=1.0 if dtype == torch.float64 else 50.0)
            for need in itertools.product([False, True], repeat=3):
                with count_launches(GRADX, FWD) as cl:
                    res = op(g, x, y, w, *cfg, *need)
                nx, ny, nw = need
                assert cl[GRADX] == nx + ny and cl[FWD] == (nw and not ny), (need, dict(cl))
                for k in range(3):
                    assert torch.equal(res[k], alone[k]) if need[k] else res[k].numel() == 0, (need, k)


@pytest.mark.parametrize("act", ACTS)
def test_layer_groups(act):
    """The hoisted per-side quantities come in groups of 4 layers (nngp_matmul_cuda.cu, kLG): depth
    0 (no layer), 4 (one full group), 5 and 9 (the pair states kept between groups); forward,
    matrix and backward against the reference, and the deepest under every schedule."""
    x, y, w = _data(35, 37, 5, 3, torch.float64, seed=40)
    g = torch.randn(35, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for depth in (0, 4, 5, 9):
        ntk = depth % 2 == 1
        cfg = (depth, act, 1.4, 0.05, ntk)
        out = sim_ops.nngp_matmul(x, y, w, *cfg)
        assert_close_to_ref(out, ref.nngp_matmul(x, y, w, *cfg), torch.float64, atol_scale=float(w.abs().sum(0).max()))
        K = sim_ops.nngp_kernel(x, y, *cfg)
        E = (ref.ntk_kernel if ntk else ref.nngp_kernel)(x, y, depth, act, sigma_w2=1.4, sigma_b2=0.05)
        assert_close_to_ref(K, E, torch.float64)
        xd, yd, wd = (t.clone().requires_grad_(True) for t in (x, y, w))
        exp = torch.autograd.grad(ref.nngp_matmul(xd, yd, wd, *cfg), (xd, yd, wd), g)
        res = sim_ops.nngp_matmul_bwd(g, x, y, w, *cfg, True, True, True)
        for a, b in zip(res, exp):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9 * float(b.abs().max()))
    run_schedules(lambda: sim_ops.nngp_matmul_bwd(g, x, y, w, 9, act, 1.4, 0.05, True, True, True, True))


def test_schedules():
    x, y, w = _data(130, 35, 9, 3, torch.float32, seed=9)
    g = torch.randn(130, 3)
    run_schedules(lambda: sim_ops.nngp_matmul(x, y, w, 2, "relu", 2.0, 0.0, True))
    run_schedules(lambda: sim_ops.nngp_matmul_bwd(g, x, y, w, 2, "erf", 2.0, 0.1, True, True, False, False)[0])
    run_schedules(lambda: sim_ops.nngp_matmul_bwd(g, x, y, w, 2, "relu", 2.0, 0.1, False, False, True, True)[1:])
