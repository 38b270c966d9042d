"""Butterfly family: butterfly_multiply and monarch_multiply (+ fly's "sl" layout, the GEMM paths)
against the float64 references; gradcheck, opcheck and torch.compile of every op of the family.
monarch_fft / rfft / irfft and the exact constructions: tests/test_butterfly_fft.py; ButterflyLinear,
MonarchLinear (+ from_dense, fly's weights) and the learned-FFT LongConv: tests/test_butterfly_nn.py."""

import kernelfuse as kf
import pytest
import torch
from butterfly_common import CPLX, REAL, _fly_monarch, _rand, _twiddle, _wide
from conftest import assert_close_to_ref as _close
from kernelfuse import butterfly as bfc
from kernelfuse.reference import butterfly as ref


# ------------------------------------------------------------------ butterfly_multiply
@pytest.mark.parametrize("dtype", REAL + CPLX)
@pytest.mark.parametrize("inc", [True, False])
def test_butterfly_matches_reference(dtype, inc, device):
    for n in [1, 2, 4, 8, 32, 256]:
        for nblocks in [1, 2, 3]:
            for batch in [(37,), (2, 3), (1,), (0,), (16,)]:
                x = _rand((*batch, n), dtype, seed=n + nblocks, device=device)
                tw = _twiddle(nblocks, n, dtype, device=device)
                out = kf.butterfly_multiply(x, tw, increasing_stride=inc)
                assert out.shape == x.shape and out.dtype == dtype
                exp = ref.butterfly_multiply(x.to(_wide(dtype)).cpu(), tw.to(_wide(dtype)).cpu(), increasing_stride=inc)
                _close(out.cpu(), exp, dtype, factor=4.0)


def test_butterfly_reference_is_dense_product():
    # each stage as an explicit sparse n x n matrix
    n, log_n = 8, 3
    tw = _twiddle(2, n, torch.float64)
    M = torch.eye(n, dtype=torch.float64)
    inc = True
    for b in range(2):
        for t in range(log_n):
            h = 1 << (t if inc else log_n - 1 - t)
            S = torch.zeros(n, n, dtype=torch.float64)
            for p in range(n // 2):
                i = (p // h) * 2 * h + p % h
                j = i + h
                (a, bb), (c, d) = tw[b, t, p].tolist()
                S[i, i], S[i, j], S[j, i], S[j, j] = a, bb, c, d
            M = S @ M
        inc = not inc
    x = _rand((5, n), torch.float64)
    torch.testing.assert_close(ref.butterfly_multiply(x, tw), x @ M.T)
    torch.testing.assert_close(kf.butterfly_multiply(x, tw), x @ M.T)
    torch.testing.assert_close(bfc.butterfly_to_dense(tw), M)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("inc", [True, False])
def test_butterfly_gradcheck(dtype, inc):
    for n, nblocks, rows in [(2, 1, 3), (8, 2, 5), (16, 1, 17)]:  # 17 rows: a full lane block plus one
        x = _rand((rows, n), dtype, seed=3).requires_grad_()
        tw = _twiddle(nblocks, n, dtype).requires_grad_()
        assert torch.autograd.gradcheck(
            lambda a, b: kf.butterfly_multiply(a, b, increasing_stride=inc), (x, tw), fast_mode=rows > 5
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_butterfly_backward_vs_reference_autograd(dtype, device):
    # rows not a multiple of the lane count, float32 sums over rows
    for n, nblocks, rows in [(64, 2, 45), (1024, 1, 20)]:
        x = _rand((rows, n), dtype, seed=5, device=device)
        tw = _twiddle(nblocks, n, dtype, device=device)
        g = _rand((rows, n), dtype, seed=6, device=device)
        xa, ta = x.clone().requires_grad_(), tw.clone().requires_grad_()
        kf.butterfly_multiply(xa, ta).backward(g)
        xr = x.to(_wide(dtype)).cpu().requires_grad_()
        tr = tw.to(_wide(dtype)).cpu().requires_grad_()
        ref.butterfly_multiply(xr, tr).backward(g.to(_wide(dtype)).cpu())
        _close(xa.grad.cpu(), xr.grad, dtype, factor=10)
        _close(ta.grad.cpu(), tr.grad, dtype, factor=50)


def test_butterfly_backward_checkpointed():
    # n = 2^14, 2 blocks, complex128: the stage inputs of a block (29 x 2 MiB) exceed the per-thread
    # budget, so the kernel recomputes them from checkpoints.
    n = 1 << 14
    x = _rand((3, n), torch.complex128, seed=7).requires_grad_()
    tw = _twiddle(2, n, torch.complex128).requires_grad_()
    g = _rand((3, n), torch.complex128, seed=8)
    kf.butterfly_multiply(x, tw).backward(g)
    xr, tr = x.detach().clone().requires_grad_(), tw.detach().clone().requires_grad_()
    ref.butterfly_multiply(xr, tr).backward(g)
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(tw.grad, tr.grad)


def test_butterfly_empty_batch_grad():
    x = torch.zeros(0, 8, dtype=torch.float64, requires_grad=True)
    tw = _twiddle(1, 8, torch.float64).requires_grad_()
    kf.butterfly_multiply(x, tw).sum().backward()
    assert torch.equal(tw.grad, torch.zeros_like(tw))


def test_butterfly_noncontiguous_input():
    x = _rand((16, 6), torch.float64)[:, :4]
    tw = _twiddle(1, 4, torch.float64)
    torch.testing.assert_close(kf.butterfly_multiply(x, tw), ref.butterfly_multiply(x, tw))


def test_lazy_conjugate_inputs():
    x = _rand((5, 8), torch.complex128, 1)
    tw = _twiddle(1, 8, torch.complex128)
    torch.testing.assert_close(
        kf.butterfly_multiply(x.conj(), tw.conj()),
        ref.butterfly_multiply(x.conj().resolve_conj(), tw.conj().resolve_conj()),
    )
    w1, w2 = _rand((2, 3, 4), torch.complex128, 2), _rand((3, 5, 2), torch.complex128, 3)
    torch.testing.assert_close(
        kf.monarch_multiply(x.conj(), w1.conj(), w2), ref.monarch_multiply(x.conj(), w1.conj(), w2)
    )
    torch.testing.assert_close(kf.monarch_fft(x.conj()), torch.fft.fft(x.conj()))


def test_butterfly_errors():
    x = torch.randn(3, 8)
    tw = _twiddle(1, 8, torch.float32)
    with pytest.raises(ValueError, match="'x'.*power of two"):
        kf.butterfly_multiply(torch.randn(3, 6), _twiddle(1, 4, torch.float32))
    with pytest.raises(ValueError, match="'twiddle'.*\\(nblocks, 3, 4, 2, 2\\)"):
        kf.butterfly_multiply(x, torch.randn(1, 2, 4, 2, 2))
    with pytest.raises(TypeError, match="'twiddle'.*float32"):
        kf.butterfly_multiply(x, tw.double())
    with pytest.raises(TypeError, match="'x'"):
        kf.butterfly_multiply(x.int(), tw)
    with pytest.raises(ValueError, match="'twiddle'"):  # the C++ check, past the Python wrapper
        torch.ops.kernelfuse.butterfly_multiply(x, torch.randn(1, 3, 3, 2, 2), True)
    with pytest.raises(ValueError, match="'x'.*power of two"):
        torch.ops.kernelfuse.butterfly_multiply(torch.randn(2, 12), torch.randn(1, 3, 6, 2, 2), True)


# ------------------------------------------------------------------ monarch_multiply
MONARCH_SHAPES = [  # (k, q, p), (l, s, r) with l r = k q
    ((4, 4, 4), (4, 4, 4)),
    ((3, 5, 4), (5, 2, 3)),
    ((3, 5, 4), (3, 7, 5)),
    ((1, 6, 7), (2, 1, 3)),
    ((6, 1, 1), (1, 3, 6)),
    ((2, 3, 5), (6, 4, 1)),
]


@pytest.mark.parametrize("dtype", REAL + CPLX)
def test_monarch_matches_reference(dtype, device):
    for (k, q, p), (l, s, r) in MONARCH_SHAPES:
        for batch in [(9,), (2, 3), (0,), ()]:
            x = _rand((*batch, k * p), dtype, seed=k + q, device=device)
            w1 = _rand((k, q, p), dtype, seed=2, device=device)
            w2 = _rand((l, s, r), dtype, seed=3, device=device)
            out = kf.monarch_multiply(x, w1, w2)
            assert out.shape == (*batch, l * s) and out.dtype == dtype
            w = _wide(dtype)
            exp = ref.monarch_multiply(x.to(w).cpu(), w1.to(w).cpu(), w2.to(w).cpu())
            _close(out.cpu(), exp, dtype, factor=4)


def test_monarch_reference_is_dense_product():
    # M = P2 blockdiag(w2) P blockdiag(w1) with the permutation written as a matrix
    (k, q, p), (l, s, r) = (3, 5, 4), (5, 2, 3)
    w1, w2 = _rand((k, q, p), torch.float64, 1), _rand((l, s, r), torch.float64, 2)
    B1 = torch.block_diag(*w1)
    B2 = torch.block_diag(*w2)
    P = torch.zeros(k * q, k * q, dtype=torch.float64)
    for c in range(l):
        for b in range(r):
            P[c * r + b, b * l + c] = 1
    M = B2 @ P @ B1
    x = _rand((4, k * p), torch.float64, 3)
    torch.testing.assert_close(ref.monarch_multiply(x, w1, w2), x @ M.T)
    torch.testing.assert_close(bfc.monarch_to_dense(w1, w2), M)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_monarch_gradcheck(dtype):
    for (k, q, p), (l, s, r) in MONARCH_SHAPES[:4]:
        x = _rand((3, k * p), dtype, 1).requires_grad_()
        w1 = _rand((k, q, p), dtype, 2).requires_grad_()
        w2 = _rand((l, s, r), dtype, 3).requires_grad_()
        assert torch.autograd.gradcheck(kf.monarch_multiply, (x, w1, w2))


def test_monarch_errors():
    x = torch.randn(2, 12)
    w1, w2 = torch.randn(3, 5, 4), torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="'w1'.*k \\* p = n = 12"):
        kf.monarch_multiply(x, torch.randn(3, 5, 5), w2)
    with pytest.raises(ValueError, match="'w2'.*l \\* r = k \\* q = 15"):
        kf.monarch_multiply(x, w1, torch.randn(5, 2, 4))
    with pytest.raises(TypeError, match="'w2'.*float32"):
        kf.monarch_multiply(x, w1, w2.double())
    with pytest.raises(ValueError, match="'w1'"):
        torch.ops.kernelfuse.monarch_multiply(x, torch.randn(3, 5, 5), w2)


# ------------------------------------------------------------------ fly's layout (interop)
@pytest.mark.parametrize("dtype", REAL + CPLX)
def test_monarch_layout_sl_is_fly(dtype, device):
    for (k, q, p), (l, s, r) in MONARCH_SHAPES:
        x = _rand((9, k * p), dtype, seed=k + q, device=device)
        w1 = _rand((k, q, p), dtype, seed=2, device=device)
        w2 = _rand((l, s, r), dtype, seed=3, device=device)
        out = kf.monarch_multiply(x, w1, w2, layout="sl")
        assert out.shape == (9, l * s) and out.dtype == dtype
        w = _wide(dtype)
        _close(out.cpu(), _fly_monarch(x.to(w).cpu(), w1.to(w).cpu(), w2.to(w).cpu()), dtype, factor=4)
        ls = kf.monarch_multiply(x, w1, w2)  # the two layouts: one reshape + transpose apart, exactly
        assert torch.equal(out, ls.unflatten(-1, (l, s)).transpose(-1, -2).flatten(-2))
        torch.testing.assert_close(
            ref.monarch_multiply(x.to(w).cpu(), w1.to(w).cpu(), w2.to(w).cpu(), layout="sl"),
            _fly_monarch(x.to(w).cpu(), w1.to(w).cpu(), w2.to(w).cpu()),
        )
        xb = _rand((2, 3, k * p), dtype, seed=5, device=device)  # batch dims
        _close(
            kf.monarch_multiply(xb, w1, w2, layout="sl").reshape(6, -1).cpu(),
            _fly_monarch(xb.reshape(6, -1).to(w).cpu(), w1.to(w).cpu(), w2.to(w).cpu()),
            dtype,
            factor=4,
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_monarch_layout_sl_grads_match_fly(dtype):
    for (k, q, p), (l, s, r) in MONARCH_SHAPES:
        ins = [_rand(sh, dtype, i).requires_grad_() for i, sh in enumerate([(7, k * p), (k, q, p), (l, s, r)])]
        g = _rand((7, l * s), dtype, 9)
        got = torch.autograd.grad(kf.monarch_multiply(*ins, layout="sl"), ins, g)
        exp = torch.autograd.grad(_fly_monarch(*ins), ins, g)
        for a, b in zip(got, exp):
            torch.testing.assert_close(a, b)
    x, w1, w2 = (
        t.requires_grad_() for t in (_rand((3, 12), dtype, 1), _rand((3, 5, 4), dtype, 2), _rand((5, 2, 3), dtype, 3))
    )
    assert torch.autograd.gradcheck(lambda *a: kf.monarch_multiply(*a, layout="sl"), (x, w1, w2))
    with pytest.raises(ValueError, match="'layout'"):
        kf.monarch_multiply(x, w1, w2, layout="cs")


@pytest.mark.parametrize(
    "env",
    [
        {"KERNELFUSE_MONARCH_GEMM": "aten"},
        {"KERNELFUSE_MONARCH_CHUNK_BYTES": "1"},
        {"KERNELFUSE_MONARCH_GEMM": "aten", "KERNELFUSE_MONARCH_CHUNK_BYTES": "1"},
    ],
)
def test_monarch_gemm_paths_env(env):
    # Read once per process, so each in a child. KERNELFUSE_MONARCH_GEMM=aten: the CPU GEMMs by
    # ATen's bmm_out / baddbmm on the strided views (the path of torch builds without MKL, and of
    # CUDA). KERNELFUSE_MONARCH_CHUNK_BYTES=1: the smallest row chunks (32 rows), so that 100 rows
    # take 4 chunks with a short last one and dw1 / dw2 accumulate over chunks. Every subset of
    # inputs requiring grad, real and complex.
    import subprocess
    import sys

    code = (
        "import itertools, torch, kernelfuse as kf\n"
        "from kernelfuse.reference import butterfly as ref\n"
        "g = torch.Generator().manual_seed(0)\n"
        "for dt in (torch.float64, torch.complex128):\n"
        "    for (k, q, p), (l, s, r) in [((3, 5, 4), (5, 2, 3)), ((2, 3, 5), (6, 4, 1)), ((4, 4, 4), (4, 4, 4))]:\n"
        "        for M in (100, 33, 1):\n"
        "            ins = [torch.randn(*sh, generator=g, dtype=dt) for sh in [(M, k * p), (k, q, p), (l, s, r)]]\n"
        "            torch.testing.assert_close(kf.monarch_multiply(*ins), ref.monarch_multiply(*ins))\n"
        "            gy = torch.randn(M, l * s, generator=g, dtype=dt)\n"
        "            for need in itertools.product([False, True], repeat=3):\n"
        "                if not any(need):\n"
        "                    continue\n"
        "                xs = [t.clone().requires_grad_(n) for t, n in zip(ins, need)]\n"
        "                got = torch.autograd.grad(kf.monarch_multiply(*xs), [t for t in xs if t.requires_grad], gy)\n"
        "                exp = torch.autograd.grad(ref.monarch_multiply(*xs), [t for t in xs if t.requires_grad], gy)\n"
        "                for a, b in zip(got, exp):\n"
        "                    torch.testing.assert_close(a, b)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(__import__("os").environ, **env),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr[-3000:]


# ------------------------------------------------------------------ opcheck / compile
def test_opcheck():
    x = _rand((3, 4), torch.float64, 1)
    tw = _twiddle(2, 4, torch.float64)
    torch.library.opcheck(torch.ops.kernelfuse.butterfly_multiply, (x.requires_grad_(), tw.requires_grad_(), True))
    xc = _rand((2, 4), torch.complex128, 2).requires_grad_()
    twc = _twiddle(1, 4, torch.complex128).requires_grad_()
    torch.library.opcheck(torch.ops.kernelfuse.butterfly_multiply, (xc, twc, False))
    g = _rand((3, 4), torch.float64, 3)
    torch.library.opcheck(torch.ops.kernelfuse.butterfly_multiply_bwd, (g, x.detach(), tw.detach(), True, True, True))
    xm = _rand((2, 12), torch.float64, 4).requires_grad_()
    w1 = _rand((3, 5, 4), torch.float64, 5).requires_grad_()
    w2 = _rand((5, 2, 3), torch.float64, 6).requires_grad_()
    torch.library.opcheck(torch.ops.kernelfuse.monarch_multiply, (xm, w1, w2))
    torch.library.opcheck(
        torch.ops.kernelfuse.monarch_multiply_bwd,
        (_rand((2, 10), torch.float64, 7), xm.detach(), w1.detach(), w2.detach(), True, True, True),
    )
    xf = _rand((1, 72), torch.complex128, 8).requires_grad_()
    torch.library.opcheck(torch.ops.kernelfuse.monarch_fft, (xf, False, "backward"))
    torch.library.opcheck(torch.ops.kernelfuse.monarch_fft, (xf, True, "ortho"))


def test_torch_compile_fullgraph():
    def f(x, tw, w1, w2):
        y = kf.butterfly_multiply(x, tw)
        z = kf.monarch_multiply(y, w1, w2) + kf.monarch_multiply(y, w1, w2, layout="sl")
        return kf.monarch_fft(z).abs()

    x = _rand((6, 16), torch.float32, 1)
    tw = _twiddle(1, 16, torch.float32)
    w1, w2 = _rand((4, 4, 4), torch.float32, 2), _rand((4, 4, 4), torch.float32, 3)
    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(cf(x, tw, w1, w2), f(x, tw, w1, w2))
    xs = x.clone().requires_grad_()
    cf(xs, tw, w1, w2).sum().backward()
    xe = x.clone().requires_grad_()
    f(xe, tw, w1, w2).sum().backward()
    torch.testing.assert_close(xs.grad, xe.grad)
