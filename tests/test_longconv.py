"""fftconv against the float64 reference (all modes, odd / prime / tiny L, per-batch kernels, gates),
autograd (gradcheck, reference autograd), opcheck, torch.compile, half types, errors; the CPU
runner's block partitions and its ATen FFT fallback; the tensor-core path (CUDA only) and a float64
model of its FFT factorisation. The skip / reverse conventions: tests/test_longconv_conventions.py."""

import kernelfuse as kf
import pytest
import torch
from conftest import TOL
from conftest import assert_close_to_ref as _assert_close
from kernelfuse.reference import longconv as ref
from kf_inputs import fftconv_inputs as _inputs
from longconv_common import MODES

LS = [1, 2, 7, 13, 64, 97, 1000]


def _ref64(u, k, D, pre, post, mode):
    c = lambda t: None if t is None else t.double().cpu()  # noqa: E731
    return ref.fftconv(c(u), c(k), c(D), pregate=c(pre), postgate=c(post), mode=mode)


# ------------------------------------------------------------------ the reference itself
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("L,Lk", [(1, 1), (7, 7), (13, 5), (10, 3)])
def test_reference_matches_direct_sum(mode, L, Lk):
    u, k, D, pre, post = _inputs(2, 3, L, Lk, mode, kshape="batch")
    torch.testing.assert_close(
        ref.fftconv(u, k, D, pregate=pre, postgate=post, mode=mode),
        ref.fftconv_direct(u, k, D, pregate=pre, postgate=post, mode=mode),
    )


# ------------------------------------------------------------------ values vs the reference
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fftconv_matches_reference(mode, dtype, device):
    for L in LS:
        for Lk in sorted({L, max(1, L // 3), 1}):
            u, k, D, pre, post = _inputs(2, 3, L, Lk, mode, dtype, seed=L + Lk, device=device)
            out = kf.fftconv(u, k, D, pregate=pre, postgate=post, mode=mode)
            assert out.dtype == dtype and out.shape == u.shape
            assert not torch.isnan(out).any()
            _assert_close(out, _ref64(u, k, D, pre, post, mode), dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kshape", ["shared", "one", "batch"])
@pytest.mark.parametrize("D,gates", [(False, False), (True, False), (False, True), (True, True)])
def test_kernel_shapes_skip_and_gates(mode, kshape, D, gates, device):
    for L, Lk in [(97, 40), (13, 13), (64, 1)]:
        u, k, Dv, pre, post = _inputs(3, 5, L, Lk, mode, torch.float64, kshape=kshape, D=D, gates=gates, device=device)
        out = kf.fftconv(u, k, Dv, pregate=pre, postgate=post, mode=mode)
        _assert_close(out, _ref64(u, k, Dv, pre, post, mode), torch.float64)
    # one gate at a time
    u, k, Dv, pre, post = _inputs(2, 4, 31, 9, mode, torch.float64, kshape=kshape, device=device)
    _assert_close(kf.fftconv(u, k, Dv, pregate=pre, mode=mode), _ref64(u, k, Dv, pre, None, mode), torch.float64)
    _assert_close(kf.fftconv(u, k, Dv, postgate=post, mode=mode), _ref64(u, k, Dv, None, post, mode), torch.float64)


@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_fft_size_does_not_change_the_result(mode):
    L, Lk = 50, 20
    u, k, D, pre, post = _inputs(2, 3, L, Lk, mode)
    exp = _ref64(u, k, D, pre, post, mode)
    least = L + Lk - 1 if mode == "causal" else L + Lk
    for n in (least, least + 1, 97, 128, 3 * L):
        _assert_close(kf.fftconv(u, k, D, pregate=pre, postgate=post, mode=mode, fft_size=n), exp, torch.float64)


def test_bidirectional_kernel_pair_and_safari_convention():
    """A pair (k_fwd, k_bwd) is cat([k_fwd, k_bwd], -1); with Lk = L it is safari's 2L kernel."""
    B, H, L = 2, 3, 16
    u, k, D, _, _ = _inputs(B, H, L, L, "bidirectional", gates=False)
    out = kf.fftconv(u, (k[:, :L], k[:, L:]), D, mode="bidirectional")
    _assert_close(out, _ref64(u, k, D, None, None, "bidirectional"), torch.float64)
    # safari's LongConv bidirectional forward, written out
    k_fwd, k_bwd = k[:, :L], k[:, L:]
    kk = torch.nn.functional.pad(k_fwd, (0, L)) + torch.nn.functional.pad(k_bwd.flip(-1), (L, 0))
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(kk, n=2 * L), n=2 * L)[..., :L] + D[:, None] * u
    torch.testing.assert_close(out, y)


def test_many_blocks_and_larger_sizes():
    """More rows than one block (per-batch and shared kernels, odd fft sizes), float32 and float64."""
    for dtype in (torch.float64, torch.float32):
        for kshape in ("shared", "batch"):
            u, k, D, pre, post = _inputs(5, 7, 4099, 1001, "causal", dtype, kshape=kshape, seed=3)
            out = kf.fftconv(u, k, D, pregate=pre, postgate=post)
            _assert_close(out, _ref64(u, k, D, pre, post, "causal"), dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types(dtype, device):
    for mode in MODES:
        u, k, D, pre, post = _inputs(2, 4, 97, 33, mode, dtype, device=device)
        out = kf.fftconv(u, k, D, pregate=pre, postgate=post, mode=mode)
        assert out.dtype == dtype
        exp = _ref64(u, k, D, pre, post, mode)  # from the rounded inputs
        tol = TOL[dtype]
        torch.testing.assert_close(out.double().cpu(), exp, rtol=tol["rtol"], atol=tol["atol"] * 10 * exp.abs().max())
        # gradients flow and have the input dtypes
        ug = u.clone().requires_grad_(True)
        kg = k.clone().requires_grad_(True)
        kf.fftconv(ug, kg, D, pregate=pre, postgate=post, mode=mode).float().sum().backward()
        assert ug.grad.dtype == dtype and kg.grad.dtype == dtype
        assert torch.isfinite(ug.grad.float()).all() and torch.isfinite(kg.grad.float()).all()


def test_empty_batch_and_heads():
    for B, H in [(0, 3), (2, 0)]:
        u = torch.randn(B, H, 10)
        k = torch.randn(H, 4, requires_grad=True)
        D = torch.randn(H, requires_grad=True)
        out = kf.fftconv(u, k, D)
        assert out.shape == (B, H, 10)
        out.sum().backward()
        assert torch.equal(k.grad, torch.zeros_like(k)) and torch.equal(D.grad, torch.zeros_like(D))


def test_noncontiguous_inputs():
    u, k, D, pre, post = _inputs(3, 4, 29, 11, "causal")
    ut = u.transpose(0, 1).contiguous().transpose(0, 1)
    kt = torch.cat([k, k], dim=-1)[:, ::2]
    exp = _ref64(u, kt.contiguous(), D, pre, post, "causal")
    _assert_close(kf.fftconv(ut, kt, D, pregate=pre[..., :], postgate=post), exp, torch.float64)


# ------------------------------------------------------------------ autograd
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kshape", ["shared", "one", "batch"])
def test_gradcheck(mode, kshape):
    for L, Lk in [(7, 3), (5, 5), (1, 1)]:
        u, k, D, pre, post = _inputs(2, 3, L, Lk, mode, kshape=kshape, seed=L)
        args = [t.requires_grad_(True) for t in (u, k, D, pre, post)]
        fn = lambda u, k, D, pre, post: kf.fftconv(u, k, D, pregate=pre, postgate=post, mode=mode)  # noqa: E731
        assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=L > 1)


def test_gradcheck_partial_inputs():
    """Subsets of the inputs requiring grad, absent D / gates."""
    u, k, D, pre, post = _inputs(2, 3, 9, 4, "causal", seed=5)
    k.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda k: kf.fftconv(u, k, None, postgate=post), (k,))
    u.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u: kf.fftconv(u, k.detach(), D, pregate=pre), (u,))
    post.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: kf.fftconv(u.detach(), k.detach(), D, postgate=p), (post,))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kshape", ["shared", "batch"])
def test_backward_matches_reference_autograd(mode, kshape, device):
    for dtype in (torch.float64, torch.float32):
        u, k, D, pre, post = _inputs(3, 4, 97, 40, mode, dtype, kshape=kshape, seed=2, device=device)
        a = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
        b = [t.detach().double().cpu().requires_grad_(True) for t in (u, k, D, pre, post)]
        gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        kf.fftconv(a[0], a[1], a[2], pregate=a[3], postgate=a[4], mode=mode).backward(gy.to(dtype=dtype, device=device))
        ref.fftconv(b[0], b[1], b[2], pregate=b[3], postgate=b[4], mode=mode).backward(gy)
        for x, y in zip(a, b):
            assert not torch.isnan(x.grad).any()
            tol = TOL[dtype]
            torch.testing.assert_close(
                x.grad.double().cpu(),
                y.grad,
                rtol=tol["rtol"] * 10,
                atol=tol["atol"] * 10 * max(1.0, y.grad.abs().max().item()),
            )


# ------------------------------------------------------------------ opcheck, compile
def _opcheck_cases():
    yield "causal", "shared", True, True
    yield "causal", "one", True, False
    yield "bidirectional", "batch", False, True
    yield "circular", "shared", True, True


@pytest.mark.parametrize("mode,kshape,D,gates", list(_opcheck_cases()))
def test_opcheck(mode, kshape, D, gates):
    u, k, Dv, pre, post = _inputs(2, 3, 11, 4, mode, torch.float32, kshape=kshape, D=D, gates=gates)
    args = [t.requires_grad_(True) if t is not None else None for t in (u, k, Dv, pre, post)]
    torch.library.opcheck(torch.ops.kernelfuse.fftconv, (*args, mode, None))
    if mode != "circular":  # circular: fft_size is L
        torch.library.opcheck(torch.ops.kernelfuse.fftconv, (*args, mode, 64))
    g = torch.randn(2, 3, 11)
    det = [t.detach() if t is not None else None for t in args]
    for needs in [(True,) * 5, (False, True, False, True, False)]:
        torch.library.opcheck(torch.ops.kernelfuse.fftconv_bwd, (g, *det, mode, None, *needs))


def test_torch_compile_forward_backward():
    u, k, D, pre, post = _inputs(2, 3, 33, 10, "causal", torch.float32, kshape="batch")
    a = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
    b = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]

    def f(u, k, D, pre, post):
        return (kf.fftconv(u, k, D, pregate=pre, postgate=post, mode="causal").sin()).sum()

    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    cf(*a).backward()
    f(*b).backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ errors
def test_errors():
    u = torch.randn(2, 3, 10)
    k = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"argument 'u'.*\(B, H, L\)"):
        kf.fftconv(u[0], k)
    with pytest.raises(ValueError, match=r"argument 'k'.*\(H, Lk\).*got \[5, 4\]"):
        kf.fftconv(u, torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"argument 'k'.*\(B, H, Lk\).*got \[4, 3, 4\]"):
        kf.fftconv(u, torch.randn(4, 3, 4))
    with pytest.raises(ValueError, match=r"argument 'k'.*Lk = 11 > L = 10"):
        kf.fftconv(u, torch.randn(3, 11))
    with pytest.raises(ValueError, match=r"argument 'k'.*2 \* Lk taps"):
        kf.fftconv(u, torch.randn(3, 5), mode="bidirectional")
    with pytest.raises(ValueError, match=r"argument 'pregate'.*shape of u \[2, 3, 10\], got \[2, 3, 9\]"):
        kf.fftconv(u, k, pregate=torch.randn(2, 3, 9))
    with pytest.raises(ValueError, match=r"argument 'postgate'.*shape of u"):
        kf.fftconv(u, k, postgate=torch.randn(3, 10))
    with pytest.raises(ValueError, match=r"argument 'D'.*\(H,\) = \(3,\), got \[2\]"):
        kf.fftconv(u, k, torch.randn(2))
    with pytest.raises(ValueError, match=r"argument 'k'.*dtype Float.*got Double"):
        kf.fftconv(u, k.double())
    with pytest.raises(ValueError, match=r"argument 'D'.*dtype Float.*got Double"):
        kf.fftconv(u, k, torch.randn(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"argument 'u'.*float32 or float64.*Long"):
        kf.fftconv(u.long(), k.long())
    with pytest.raises(ValueError, match=r"argument 'mode'.*unknown mode 'same'"):
        kf.fftconv(u, k, mode="same")
    with pytest.raises(ValueError, match=r"argument 'fft_size'.*>= L \+ Lk - 1 = 13, got 12"):
        kf.fftconv(u, k, fft_size=12)
    with pytest.raises(ValueError, match=r"argument 'fft_size'.*>= L \+ Lk = 12, got 11"):
        kf.fftconv(u, torch.randn(3, 4), mode="bidirectional", fft_size=11)
    with pytest.raises(ValueError, match=r"argument 'fft_size'.*fft_size = L = 10, got 16"):
        kf.fftconv(u, k, mode="circular", fft_size=16)
    with pytest.raises(ValueError, match=r"argument 'fft_size'.*positive int"):
        kf.fftconv(u, k, fft_size=0)
    with pytest.raises(ValueError, match=r"argument 'k'.*pair.*bidirectional"):
        kf.fftconv(u, (k, k))
    with pytest.raises(ValueError, match=r"argument 'u'.*L >= 1"):
        kf.fftconv(torch.randn(2, 3, 0), torch.randn(3, 0))
    with pytest.raises(TypeError, match=r"argument 'u' must be a torch.Tensor"):
        kf.fftconv([1.0], k)
    with pytest.raises(ValueError, match=r"argument 'k'.*device"):
        kf.fftconv(u, k.to("meta"))
    with pytest.raises(ValueError, match=r"argument 'grad'.*shape of u"):
        torch.ops.kernelfuse.fftconv_bwd(
            torch.randn(2, 3, 9), u, k, None, None, None, "causal", None, True, True, False, False, False
        )


@pytest.mark.parametrize("kshape", ["shared", "batch"])
def test_block_partitions_forward_backward(kshape):
    """Shapes that split the rows into several tasks: by heads (shared kernel, many heads), by row
    ranges (per-batch kernels) and row ranges with partial kernel-gradient sums (few heads)."""
    for B, H, L, Lk in [(2, 64, 8192, 3000), (40, 2, 2000, 2000)]:
        u, k, D, pre, post = _inputs(B, H, L, Lk, "causal", kshape=kshape, seed=B)
        a = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
        b = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
        gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        y1 = kf.fftconv(a[0], a[1], a[2], pregate=a[3], postgate=a[4])
        y2 = ref.fftconv(b[0], b[1], b[2], pregate=b[3], postgate=b[4])
        _assert_close(y1.detach(), y2.detach(), torch.float64)
        y1.backward(gy)
        y2.backward(gy)
        for x, y in zip(a, b):
            torch.testing.assert_close(x.grad, y.grad, rtol=1e-9, atol=1e-9 * max(1.0, y.grad.abs().max().item()))


def test_more_tasks_than_batch_rows():
    """Shared kernel with few heads and B < threads: the rows are split into blocks of fewer rows
    than the H kernel rows every task packs through its real buffer (which must hold them all)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(8)
    try:
        for B, H, L, Lk in [(2, 100, 37, 9), (3, 40, 64, 64)]:
            u, k, D, pre, post = _inputs(B, H, L, Lk, "causal", seed=H)
            a = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
            b = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
            y1 = kf.fftconv(a[0], a[1], a[2], pregate=a[3], postgate=a[4])
            y2 = ref.fftconv(b[0], b[1], b[2], pregate=b[3], postgate=b[4])
            _assert_close(y1.detach(), y2.detach(), torch.float64)
            gy = torch.randn(u.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
            y1.backward(gy)
            y2.backward(gy)
            for x, y in zip(a, b):
                torch.testing.assert_close(x.grad, y.grad)
    finally:
        torch.set_num_threads(threads)


def test_aten_fft_fallback(env_switch):
    """The path without MKL (ATen's FFT through the dispatcher) gives the same results."""
    env_switch("KERNELFUSE_NO_MKL_FFT", "1")
    for mode in MODES:
        for kshape in ("shared", "batch"):
            u, k, D, pre, post = _inputs(3, 5, 97, 30, mode, kshape=kshape, seed=4)
            a = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
            b = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
            y1 = kf.fftconv(a[0], a[1], a[2], pregate=a[3], postgate=a[4], mode=mode)
            y2 = ref.fftconv(b[0], b[1], b[2], pregate=b[3], postgate=b[4], mode=mode)
            _assert_close(y1.detach(), y2.detach(), torch.float64)
            gy = torch.randn(u.shape, dtype=torch.float64)
            y1.backward(gy)
            y2.backward(gy)
            for x, y in zip(a, b):
                torch.testing.assert_close(x.grad, y.grad)


# Tensor-core path (csrc/longconv/fftconv_tc_cuda.cu): CUDA fp16 / bf16, causal, shared kernel.
# Compiled, not run here (no GPU): these tests only run where CUDA is available. Error bound: max
# |y - y64| <= tol * max(1, max |y64|), y64 the float64 reference on the same half-rounded inputs;
# tol = 1e-2 (fp16), 5e-2 (bf16): every radix pass rounds the spectrum to the storage type.
TC_TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2}


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("L", [1, 7, 100, 1024, 4096, 16385])  # 16385: FFT size > 32768, cuFFT fallback
@pytest.mark.parametrize("gates", [True, False])
def test_fftconv_tensor_core_half(dtype, L, gates):
    B, H = 3, 2  # odd B: the last complex sequence has an empty imaginary row
    u, k, D, pre, post = _inputs(B, H, L, L, "causal", dtype=dtype, device="cuda", gates=gates, seed=L)
    y = kf.fftconv(u, k, D, pregate=pre, postgate=post)
    assert y.dtype == dtype and y.device.type == "cuda" and y.shape == (B, H, L)
    expected = _ref64(u, k, D, pre, post, "causal")
    scale = max(1.0, expected.abs().max().item())
    err = (y.double().cpu() - expected).abs().max().item()
    assert err <= TC_TOL[dtype] * scale, f"max error {err:.3g} > {TC_TOL[dtype]} * {scale:.3g}"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fftconv_tensor_core_half_skip_gated(dtype):
    """skip="gated" on the tensor-core path (D * u * pregate in its store loop) and the cuFFT
    backward with it."""
    u, k, D, pre, post = _inputs(3, 2, 500, 200, "causal", dtype=dtype, device="cuda", seed=8)
    y = kf.fftconv(u, k, D, pregate=pre, postgate=post, skip="gated")
    c = lambda t: t.double().cpu()  # noqa: E731
    expected = ref.fftconv(c(u), c(k), c(D), pregate=c(pre), postgate=c(post), skip="gated")
    scale = max(1.0, expected.abs().max().item())
    assert (y.double().cpu() - expected).abs().max().item() <= TC_TOL[dtype] * scale


def _tc_model_passes(N):
    """The pass list of fftconv_tc_cuda.cu: (S, radix) in forward order."""
    m = N.bit_length() - 1
    r = 1 << (m % 4)
    passes = [(N, r)] if r > 1 else []
    S = N // r
    while S >= 16:
        passes.append((S, 16))
        S //= 16
    return passes


def _tc_model_fft(x, passes, inverse=False, unitary=True):
    """Float64 model of the kernel's in-place DIF passes (digit-reversed output) and their exact
    inverses; checks the index and twiddle algebra of the CUDA file on CPU (not the CUDA code)."""
    x = x.clone()
    N = x.shape[-1]
    order = reversed(passes) if inverse else passes
    sgn = 1.0 if inverse else -1.0
    for S, R in order:
        s = S // R
        blk = x.reshape(*x.shape[:-1], N // S, R, s)  # (.., block, n1 | k1, n2)
        n2 = torch.arange(s, dtype=torch.float64)
        k1 = torch.arange(R, dtype=torch.float64)
        tw = torch.exp(1j * sgn * 2 * torch.pi * torch.outer(k1, n2) / S)  # (k1, n2)
        F = torch.exp(1j * sgn * 2 * torch.pi * torch.outer(k1, k1) / R) / (R**0.5 if unitary else 1.0)
        if inverse:
            blk = torch.einsum("nk,...ks->...ns", F, blk * tw)
        else:
            blk = torch.einsum("kn,...ns->...ks", F, blk) * tw
        x = blk.reshape(x.shape)
    return x


@pytest.mark.parametrize("N", [256, 512, 1024, 2048, 4096, 8192])
def test_fftconv_tensor_core_algorithm_model(N):
    # The factorisation the tensor-core kernel uses, run in float64 on CPU: digit-reversed
    # unitary forward, fp32-style kernel spectrum from the unscaled passes, inverse back to order.
    g = torch.Generator().manual_seed(N)
    L = N // 2
    u = torch.randn(2, L, generator=g, dtype=torch.float64)
    k = torch.randn(L, generator=g, dtype=torch.float64) / L**0.5
    passes = _tc_model_passes(N)
    z = torch.zeros(N, dtype=torch.complex128)
    z[:L] = u[0] + 1j * u[1]
    kk = torch.zeros(N, dtype=torch.complex128)
    kk[:L] = k
    K = _tc_model_fft(kk, passes, unitary=False)
    Z = _tc_model_fft(z, passes)
    # digit-reversed spectra are a permutation of torch.fft's
    assert torch.allclose(torch.sort(K.abs()).values, torch.sort(torch.fft.fft(kk).abs()).values, atol=1e-9)
    y = _tc_model_fft(Z * K, passes, inverse=True)[:L]
    expected = ref.fftconv(u[:, None, :], k[None, :])[:, 0, :]
    torch.testing.assert_close(y.real, expected[0], atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(y.imag, expected[1], atol=1e-9, rtol=1e-9)
