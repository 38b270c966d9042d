"""Butterfly family: butterfly_multiply, monarch_multiply, monarch_fft (+ rfft/irfft) against the
float64 references / torch.fft / scipy; gradcheck, opcheck, torch.compile, exact constructions
(FFT, inverse FFT, Hadamard, DCT), ButterflyLinear, MonarchLinear (+ from_dense, fly's layout: from_fly_weights / fly_weights), learned LongConv."""

import math

import kernelfuse as kf
import pytest
import torch
from conftest import assert_close_to_ref as _close
from kernelfuse import butterfly as bfc
from kernelfuse.reference import butterfly as ref

REAL = [torch.float64, torch.float32]
CPLX = [torch.complex128, torch.complex64]


def _rand(shape, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    wide = torch.complex128 if dtype.is_complex else torch.float64
    return torch.randn(*shape, generator=g, dtype=wide).to(dtype=dtype, device=device)


def _twiddle(nblocks, n, dtype, seed=1, device="cpu"):
    log_n = max(n.bit_length() - 1, 0)
    return _rand((nblocks, log_n, n // 2, 2, 2), dtype, seed, device) * math.sqrt(0.5)


def _wide(dtype):
    return torch.complex128 if dtype.is_complex else torch.float64


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
def _fly_monarch(x, w1, w2):
    """fly's (HazyResearch) blockdiag_butterfly_multiply, transcribed from its formula: x (B, k p),
    w1 (k, q, p), w2 (l, s, r) -> (B, s l), block c's output t at t l + c."""
    B = x.shape[0]
    k, q, p = w1.shape
    l, s, r = w2.shape
    out1 = torch.bmm(x.reshape(B, k, p).transpose(0, 1), w1.transpose(-1, -2))  # (k, B, q)
    out1 = out1.transpose(0, 1).reshape(B, r, l).transpose(-1, -2).contiguous().transpose(0, 1)  # (l, B, r)
    out2 = torch.bmm(out1, w2.transpose(-1, -2))  # (l, B, s)
    return out2.permute(1, 2, 0).reshape(B, s * l)


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


@pytest.mark.parametrize("inf,outf,nb", [(12, 20, 4), (24, 12, 4), (10, 7, 3), (16, 16, 4)])
def test_monarch_linear_fly_weights(inf, outf, nb):
    # fly's MonarchLinear: blocks of ceil(in/nb) x ceil(out/nb); w1 (nb, p, p), w2 (nb, s, p) when
    # nb p < nb s, else w1 (nb, s, p), w2 (nb, s, s); x zero padded to nb p, output cropped, + bias.
    p, s = -(-inf // nb), -(-outf // nb)
    shapes = ((nb, p, p), (nb, s, p)) if p < s else ((nb, s, p), (nb, s, s))
    w1, w2 = _rand(shapes[0], torch.float64, 1), _rand(shapes[1], torch.float64, 2)
    bias = _rand((outf,), torch.float64, 3)
    m = kf.nn.MonarchLinear.from_fly_weights(w1, w2, bias, in_features=inf, out_features=outf)
    assert m.layout == "sl" and (m.in_features, m.out_features) == (inf, outf)
    x = _rand((5, inf), torch.float64, 4)
    fly = _fly_monarch(torch.nn.functional.pad(x, (0, nb * p - inf)), w1, w2)[:, :outf] + bias
    torch.testing.assert_close(m(x), fly)
    torch.testing.assert_close(m(x), x @ m.dense_weight().T + bias)
    e1, e2, eb = m.fly_weights()  # export: the same tensors back
    assert torch.equal(e1, w1) and torch.equal(e2, w2) and torch.equal(eb, bias)
    m(x).sum().backward()
    assert m.w1.grad.shape == w1.shape and m.w2.grad.shape == w2.shape
    with pytest.raises(ValueError, match="layout='ls'"):
        kf.nn.MonarchLinear(inf, outf, nblocks=nb).fly_weights()
    with pytest.raises(ValueError, match="'w2'"):
        kf.nn.MonarchLinear.from_fly_weights(w1, _rand((nb + 1, s, 2), torch.float64, 5))


@pytest.mark.parametrize("inf,outf,nb", [(16, 16, 4), (24, 12, 4), (12, 20, 4)])
def test_monarch_linear_layout_sl(inf, outf, nb):
    src = kf.nn.MonarchLinear(inf, outf, nblocks=nb, layout="sl", dtype=torch.float64)
    x = _rand((3, inf), torch.float64, 1)
    torch.testing.assert_close(src(x), x @ src.dense_weight().T + src.bias)
    w1, w2, b = src.fly_weights()
    fly = _fly_monarch(torch.nn.functional.pad(x, (0, src.in_padded - inf)), w1, w2)[:, :outf] + b
    torch.testing.assert_close(src(x), fly)
    lin = torch.nn.Linear(inf, outf, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(src.dense_weight())
    m = kf.nn.MonarchLinear.from_dense(lin, nblocks=nb, layout="sl")  # exact recovery in fly's layout
    torch.testing.assert_close(m.dense_weight(), lin.weight.detach())
    assert "layout='sl'" in repr(m)
    with pytest.raises(ValueError, match="'layout'"):
        kf.nn.MonarchLinear(8, 8, layout="bad")


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


# ------------------------------------------------------------------ monarch_fft
POW2 = [2**e for e in range(1, 23)]


def _fft_rel_err(N, rows, dtype=torch.complex64, inverse=False, norm="backward", seed=0):
    x = _rand((rows, N), dtype, seed)
    y = kf.monarch_fft(x, inverse=inverse, norm=norm)
    exp = ref.monarch_fft(x.to(torch.complex128), inverse=inverse, norm=norm)
    return ((y.to(torch.complex128) - exp).norm() / exp.norm()).item()


def test_monarch_fft_every_power_of_two_float32():
    for N in POW2:
        rows = max(1, min(16, (1 << 16) // N))
        err = _fft_rel_err(N, rows, seed=N % 97)
        assert err < 1e-6 * max(1, math.log2(N)), (N, err)


@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
@pytest.mark.parametrize("inverse", [False, True])
def test_monarch_fft_float64_mixed_radix(norm, inverse, device):
    for N in [1, 2, 3, 5, 6, 12, 64, 65, 97, 100, 128, 360, 1000, 1009, 4096, 6561]:
        x = _rand((3, N), torch.complex128, N, device)
        y = kf.monarch_fft(x, inverse=inverse, norm=norm)
        exp = ref.monarch_fft(x.cpu(), inverse=inverse, norm=norm)
        err = ((y.cpu() - exp).norm() / exp.norm()).item()
        assert err < 1e-13, (N, err)


def test_monarch_fft_batch_shapes_and_real_input():
    x = _rand((2, 3, 96), torch.float32)
    y = kf.monarch_fft(x)
    assert y.shape == x.shape and y.dtype == torch.complex64
    _close(y, torch.fft.fft(x.double()), torch.float32, factor=20)
    assert kf.monarch_fft(torch.zeros(0, 16, dtype=torch.complex64)).shape == (0, 16)


@pytest.mark.parametrize("N", [1, 2, 7, 16, 100, 1024, 4096])
def test_monarch_rfft_irfft(N):
    x = _rand((4, N), torch.float64, N)
    X = kf.monarch_rfft(x)
    torch.testing.assert_close(X, torch.fft.rfft(x))
    torch.testing.assert_close(kf.monarch_irfft(X, N), torch.fft.irfft(X, N))
    Xn = _rand((4, N // 2 + 1), torch.complex128, 1)  # imaginary parts at 0 and n/2 are ignored, like torch
    torch.testing.assert_close(kf.monarch_irfft(Xn, N), torch.fft.irfft(Xn, N))
    x32 = x.float()
    _close(kf.monarch_rfft(x32), torch.fft.rfft(x), torch.float32, factor=30)


@pytest.mark.parametrize("inverse,norm", [(False, "backward"), (True, "ortho"), (True, "backward")])
def test_monarch_fft_gradcheck(inverse, norm):
    for N in [6, 96]:  # one level, two levels
        x = _rand((1, N), torch.complex128, 3).requires_grad_()
        assert torch.autograd.gradcheck(lambda a: kf.monarch_fft(a, inverse=inverse, norm=norm), (x,), fast_mode=N > 6)
    xr = _rand((2, 12), torch.float64, 4).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: kf.monarch_rfft(a), (xr,))
    X = _rand((2, 7), torch.complex128, 5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: kf.monarch_irfft(a, 12), (X,))


@pytest.mark.parametrize("n", [9, 12, 64])
def test_monarch_rfft_irfft_grads_match_torch(n):
    x = _rand((2, n), torch.float64, 1).requires_grad_()
    ga = torch.autograd.grad(kf.monarch_rfft(x, norm="ortho").abs().pow(2).sum(), x)[0]
    gb = torch.autograd.grad(torch.fft.rfft(x, norm="ortho").abs().pow(2).sum(), x)[0]
    torch.testing.assert_close(ga, gb)
    X = _rand((2, n // 2 + 1), torch.complex128, 2).requires_grad_()
    ga = torch.autograd.grad(kf.monarch_irfft(X, n).pow(2).sum(), X)[0]
    gb = torch.autograd.grad(torch.fft.irfft(X, n).pow(2).sum(), X)[0]
    torch.testing.assert_close(ga, gb)


def test_monarch_fft_errors():
    with pytest.raises(ValueError, match="'norm'"):
        kf.monarch_fft(torch.randn(4, dtype=torch.complex64), norm="bad")
    with pytest.raises(TypeError, match="'x'"):
        kf.monarch_fft(torch.arange(4))
    with pytest.raises(ValueError, match="'x'.*prime factor"):
        kf.monarch_fft(torch.randn(2, 2 * 2053, dtype=torch.complex64))
    with pytest.raises(ValueError, match="'x'.*complex"):
        torch.ops.kernelfuse.monarch_fft(torch.randn(4), False, "backward")


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


# ------------------------------------------------------------------ exact constructions
@pytest.mark.parametrize("n", [2, 4, 16, 256, 4096])
def test_fft_and_inverse_as_butterfly(n):
    x = _rand((3, n), torch.complex128, n)
    perm = bfc.bitreversal_permutation(n)
    for inverse in (False, True):
        for norm in ("backward", "ortho", "forward"):
            tw = bfc.butterfly_fft_twiddle(n, inverse=inverse, norm=norm, dtype=torch.complex128)
            y = kf.butterfly_multiply(x[..., perm], tw)
            exp = torch.fft.ifft(x, norm=norm) if inverse else torch.fft.fft(x, norm=norm)
            torch.testing.assert_close(y, exp)
    tw32 = bfc.butterfly_fft_twiddle(n)
    _close(
        kf.butterfly_multiply(x.to(torch.complex64)[..., perm], tw32),
        torch.fft.fft(x),
        torch.float32,
        factor=10 * math.log2(n),
    )


@pytest.mark.parametrize("n", [1, 2, 8, 64, 1024])
def test_hadamard_as_butterfly(n):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    H = torch.from_numpy(scipy_linalg.hadamard(n)).double()
    x = _rand((5, n), torch.float64, n)
    for inc in (True, False):
        y = kf.butterfly_multiply(x, bfc.hadamard_twiddle(n, dtype=torch.float64), increasing_stride=inc)
        torch.testing.assert_close(y, x @ H / math.sqrt(n))
        y = kf.butterfly_multiply(
            x, bfc.hadamard_twiddle(n, normalized=False, dtype=torch.float64), increasing_stride=inc
        )
        torch.testing.assert_close(y, x @ H)


@pytest.mark.parametrize("n", [2, 4, 8, 128, 2048])
@pytest.mark.parametrize("norm", [None, "ortho"])
def test_dct_as_butterfly(n, norm):
    sfft = pytest.importorskip("scipy.fft")
    x = _rand((4, n), torch.float64, n)
    perm, tw = bfc.dct_butterfly(n, norm=norm, dtype=torch.complex128)
    y = kf.butterfly_multiply(x[..., perm].to(torch.complex128), tw).real
    exp = torch.from_numpy(sfft.dct(x.numpy(), type=2, norm=norm, axis=-1))
    torch.testing.assert_close(y, exp)


@pytest.mark.parametrize("n,n1", [(16, None), (64, 8), (60, 4), (1024, None), (2, 1), (7, 7)])
def test_monarch_dft_factors(n, n1):
    x = _rand((3, n), torch.complex128, n)
    for inverse in (False, True):
        w1, w2, pin, pout = bfc.monarch_dft_factors(n, inverse=inverse, n1=n1, dtype=torch.complex128)
        y = kf.monarch_multiply(x[..., pin], w1, w2)[..., pout]
        torch.testing.assert_close(y, torch.fft.ifft(x) if inverse else torch.fft.fft(x))


# ------------------------------------------------------------------ modules
@pytest.mark.parametrize("init", ["randn", "ortho", "identity"])
@pytest.mark.parametrize("complex_", [False, True])
def test_butterfly_linear(init, complex_):
    m = kf.nn.ButterflyLinear(10, 7, nblocks=2, init=init, complex=complex_, dtype=torch.float64)
    assert m.n == 16 and m.twiddle.shape == (2, 4, 8, 2, 2)
    x = _rand((3, 10), torch.float64, 1)
    y = m(x)
    assert y.shape == (3, 7)
    B = bfc.butterfly_to_dense(m.twiddle.detach())
    exp = torch.nn.functional.pad(x, (0, 6)).to(B.dtype) @ B.T
    torch.testing.assert_close(y, exp[:, :7] + m.bias)
    if init == "identity":
        torch.testing.assert_close(B, torch.eye(16, dtype=B.dtype))
    if init == "ortho":
        torch.testing.assert_close(B.conj().T @ B, torch.eye(16, dtype=B.dtype))
    y.abs().sum().backward()
    assert m.twiddle.grad is not None and torch.isfinite(m.twiddle.grad).all()


def test_butterfly_linear_fft_init():
    m = kf.nn.ButterflyLinear(32, 32, init="fft", complex=True, bias=False, dtype=torch.float64)
    x = _rand((4, 32), torch.float64, 2)
    torch.testing.assert_close(m(x), torch.fft.fft(x, norm="ortho"))
    with pytest.raises(ValueError, match="complex=True"):
        kf.nn.ButterflyLinear(8, 8, init="fft")
    with pytest.raises(ValueError, match="'init'"):
        kf.nn.ButterflyLinear(8, 8, init="bad")


@pytest.mark.parametrize("inf,outf,nb", [(16, 16, 4), (10, 7, 3), (12, 20, 4), (5, 3, 1), (64, 64, 8)])
def test_monarch_linear(inf, outf, nb):
    m = kf.nn.MonarchLinear(inf, outf, nblocks=nb, dtype=torch.float64)
    x = _rand((2, 3, inf), torch.float64, 1)
    y = m(x)
    assert y.shape == (2, 3, outf)
    torch.testing.assert_close(y, x @ m.dense_weight().T + m.bias)
    y.sum().backward()
    assert m.w1.grad is not None and m.w2.grad is not None


@pytest.mark.parametrize("inf,outf,nb", [(16, 16, 4), (64, 64, 8), (24, 12, 4), (10, 7, 3), (36, 36, 6)])
def test_monarch_from_dense(inf, outf, nb):
    src = kf.nn.MonarchLinear(inf, outf, nblocks=nb, dtype=torch.float64)
    lin = torch.nn.Linear(inf, outf, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(src.dense_weight())
    m = kf.nn.MonarchLinear.from_dense(lin, nblocks=nb)
    # a Monarch matrix is recovered exactly (when the padding does not cut its support)
    if inf % nb == 0 and outf % nb == 0:
        torch.testing.assert_close(m.dense_weight(), lin.weight.detach())
    torch.testing.assert_close(m.bias, lin.bias)
    # projection of a random dense matrix: no worse than another Monarch matrix, error < |W|
    lin2 = torch.nn.Linear(inf, outf, dtype=torch.float64)
    m2 = kf.nn.MonarchLinear.from_dense(lin2, nblocks=nb)
    W = lin2.weight.detach()
    err = (m2.dense_weight() - W).norm()
    assert err < W.norm()
    for scale in (0.9, 1.1):
        other = m2.dense_weight() * scale
        assert err <= (other - W).norm() + 1e-12


# ------------------------------------------------------------------ LongConv(fft="learned")
def test_longconv_learned_fft():
    torch.manual_seed(0)
    fixed = kf.nn.LongConv(4, 50, transposed=True, squash_lambda=0.0)
    learned = kf.nn.LongConv(4, 50, transposed=True, squash_lambda=0.0, fft="learned")
    learned.load_state_dict(fixed.state_dict(), strict=False)
    assert learned.fft_size == 128
    u = torch.randn(2, 4, 37)
    _close(learned(u), fixed(u).double(), torch.float32, factor=50)
    learned(u).pow(2).sum().backward()
    for p in (learned.fft_w1, learned.fft_w2, learned.ifft_w1, learned.ifft_w2, learned.kernel, learned.D):
        assert p.grad is not None and torch.isfinite(torch.view_as_real(p.grad) if p.is_complex() else p.grad).all()
    with pytest.raises(ValueError, match="'fft'"):
        kf.nn.LongConv(4, 8, fft="bad")
    with pytest.raises(ValueError, match="causal"):
        kf.nn.LongConv(4, 8, fft="learned", bidirectional=True)
