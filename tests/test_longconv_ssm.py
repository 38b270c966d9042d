"""ssm_kernel (S4D convolution kernel) against the naive H x N x L float64 reference, long-L
stability, autograd, opcheck, compile, errors."""

import math

import kernelfuse as kf
import pytest
import torch
from conftest import assert_close_to_ref as _assert_close
from kernelfuse.reference import longconv_ssm as ref

DISCS = ("zoh", "bilinear")
CDT = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _params(H, N, dtype=torch.float64, device="cpu", seed=0, with_B=True, dt_range=(1e-3, 1e-1)):
    """S4D-Lin-like parameters: A = -1/2 + i pi n (perturbed), dt log-uniform, random complex B, C."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = math.log(dt_range[0]), math.log(dt_range[1])
    log_dt = lo + (hi - lo) * torch.rand(H, generator=g, dtype=torch.float64)
    A_real = -0.5 * torch.exp(0.3 * torch.randn(H, N, generator=g, dtype=torch.float64))
    A_imag = (
        math.pi
        * torch.arange(N, dtype=torch.float64)
        * (1 + 0.05 * torch.randn(H, N, generator=g, dtype=torch.float64))
    )
    B = torch.randn(H, N, generator=g, dtype=torch.complex128) if with_B else None
    C = torch.randn(H, N, generator=g, dtype=torch.complex128)
    cast = lambda t: None if t is None else t.to(device=device, dtype=CDT[dtype] if t.is_complex() else dtype)  # noqa
    return cast(log_dt), cast(A_real), cast(A_imag), cast(B), cast(C)


def _ref64(args, L, disc):
    a = [None if t is None else (t.to(torch.complex128) if t.is_complex() else t.double()).cpu() for t in args]
    return ref.ssm_kernel(*a, L, discretization=disc)


# ------------------------------------------------------------------ values vs the reference
@pytest.mark.parametrize("disc", DISCS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("N", [1, 3, 64])
@pytest.mark.parametrize("H", [1, 5])
def test_matches_reference(disc, dtype, N, H, device):
    for L in (0, 1, 7, 1000):
        args = _params(H, N, dtype, device, seed=N + 10 * H)
        out = kf.ssm_kernel(*args, L, discretization=disc)
        exp = _ref64(args, L, disc)
        assert out.dtype == dtype and out.shape == (H, L) and out.device.type == device
        _assert_close(out, exp, dtype)


@pytest.mark.parametrize("disc", DISCS)
def test_B_none_means_ones(disc):
    log_dt, Ar, Ai, B, C = _params(4, 9)
    out = kf.ssm_kernel(log_dt, Ar, Ai, None, C, 300, discretization=disc)
    torch.testing.assert_close(out, kf.ssm_kernel(log_dt, Ar, Ai, torch.ones_like(C), C, 300, discretization=disc))
    torch.testing.assert_close(out, ref.ssm_kernel(log_dt, Ar, Ai, None, C, 300, discretization=disc))


def test_block_boundaries_and_many_chunks():
    """L around the internal block (64) and chunk sizes, H=1 (work split over l) and H=3."""
    for H in (1, 3):
        args = _params(H, 5, seed=H)
        for L in (63, 64, 65, 511, 513, 4097, 20000):
            _assert_close(kf.ssm_kernel(*args, L), _ref64(args, L, "zoh"), torch.float64)


def test_noncontiguous_and_conj_inputs():
    log_dt, Ar, Ai, B, C = _params(6, 8)
    Ar_t = Ar.t().contiguous().t()
    Cc = C.conj()  # a lazily conjugated view
    B2 = torch.stack([B, B], -1)[..., 0]
    out = kf.ssm_kernel(log_dt, Ar_t, Ai, B2, Cc, 100)
    exp = ref.ssm_kernel(log_dt, Ar, Ai, B, Cc.resolve_conj(), 100)
    _assert_close(out, exp, torch.float64)


@pytest.mark.parametrize("disc", DISCS)
def test_long_L_stable(disc):
    """L = 100k: no drift from running products; float64 matches exact powers exp(l log Abar)."""
    L = 100_000
    args = _params(2, 16, dt_range=(1e-4, 1e-3), seed=7)  # slow decay: K is far from 0 at l ~ 1e5
    exp = _ref64(args, L, disc)
    assert exp[:, -1000:].abs().max() > 1e-3 * exp.abs().max()  # the tail matters
    out = kf.ssm_kernel(*args, L, discretization=disc)
    _assert_close(out, exp, torch.float64)
    out32 = kf.ssm_kernel(
        *[t.to(CDT[torch.float32] if t.is_complex() else torch.float32) for t in args], L, discretization=disc
    )
    # float32: parameters are rounded to float32 first, so compare with the float64 kernel of the
    # rounded parameters (the kernel itself adds only one rounding)
    exp32 = _ref64([t.to(CDT[torch.float32] if t.is_complex() else torch.float32) for t in args], L, disc)
    _assert_close(out32, exp32, torch.float32)


def test_zoh_small_dt_A_no_cancellation():
    """(exp(dt A) - 1) / A for tiny dt A: computed with expm1, no cancellation."""
    log_dt = torch.full((1,), math.log(1e-9), dtype=torch.float64)
    Ar, Ai = torch.full((1, 2), -0.5, dtype=torch.float64), torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    C = torch.ones(1, 2, dtype=torch.complex128)
    out = kf.ssm_kernel(log_dt, Ar, Ai, None, C, 3)
    torch.testing.assert_close(out, torch.full((1, 3), 4e-9, dtype=torch.float64), rtol=1e-8, atol=0)


# ------------------------------------------------------------------ autograd
@pytest.mark.parametrize("disc", DISCS)
@pytest.mark.parametrize("with_B", [True, False])
def test_gradcheck(disc, with_B):
    args = [t if t is None else t.clone().requires_grad_(True) for t in _params(3, 4, with_B=with_B, seed=3)]
    inputs = tuple(t for t in args if t is not None)

    def fn(*ts):
        it = iter(ts)
        a = [next(it) if t is not None else None for t in args]
        return kf.ssm_kernel(*a, 70, discretization=disc)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("disc", DISCS)
def test_backward_matches_reference_autograd(disc):
    H, N, L = 4, 16, 3000  # several blocks per h and a partial last block
    base = _params(H, N, seed=5)
    a = [t.clone().requires_grad_(True) for t in base]
    r = [t.clone().requires_grad_(True) for t in base]
    g = torch.randn(H, L, dtype=torch.float64)
    torch.autograd.backward(kf.ssm_kernel(*a, L, discretization=disc), g)
    torch.autograd.backward(ref.ssm_kernel(*r, L, discretization=disc), g)
    for x, y in zip(a, r):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-9, atol=1e-9 * y.grad.abs().max().item())


def test_float32_gradients_close_to_float64():
    base = _params(3, 8, seed=6)
    a32 = [t.to(CDT[torch.float32] if t.is_complex() else torch.float32).requires_grad_(True) for t in base]
    a64 = [t.detach().to(torch.complex128 if t.is_complex() else torch.float64).requires_grad_(True) for t in a32]
    g = torch.randn(3, 2000)
    torch.autograd.backward(kf.ssm_kernel(*a32, 2000), g)
    torch.autograd.backward(kf.ssm_kernel(*a64, 2000), g.double())
    for x, y in zip(a32, a64):
        assert x.grad.dtype == x.dtype
        torch.testing.assert_close(x.grad.to(y.dtype), y.grad, rtol=1e-5, atol=1e-5 * y.grad.abs().max().item())


def test_empty_L_gradients_are_zero():
    a = [t.clone().requires_grad_(True) for t in _params(2, 3)]
    out = kf.ssm_kernel(*a, 0)
    assert out.shape == (2, 0)
    out.sum().backward()
    for t in a:
        assert torch.equal(t.grad, torch.zeros_like(t))


@pytest.mark.parametrize("H,N", [(0, 3), (3, 0), (0, 0)])
def test_empty_H_or_N(H, N):
    a = [t.clone().requires_grad_(True) for t in _params(H, N)]
    out = kf.ssm_kernel(*a, 10)
    assert out.shape == (H, 10) and torch.equal(out, torch.zeros(H, 10, dtype=torch.float64))
    out.sum().backward()
    for t in a:
        assert torch.equal(t.grad, torch.zeros_like(t))


# ------------------------------------------------------------------ opcheck, compile
def _op_samples():
    log_dt, Ar, Ai, B, C = _params(3, 5, seed=2)
    Bv, Cv = torch.view_as_real(B), torch.view_as_real(C)
    f32 = [t.float() for t in (log_dt, Ar, Ai, Bv, Cv)]
    g = torch.randn(3, 40, dtype=torch.float64)
    rg = lambda t: t.clone().requires_grad_(True)  # noqa: E731
    return [
        (torch.ops.kernelfuse.ssm_kernel, (rg(log_dt), rg(Ar), rg(Ai), rg(Bv), rg(Cv), 40, "zoh")),
        (torch.ops.kernelfuse.ssm_kernel, (rg(log_dt), Ar, rg(Ai), None, rg(Cv), 17, "bilinear")),
        (torch.ops.kernelfuse.ssm_kernel, (*f32, 130, "zoh")),
        (torch.ops.kernelfuse.ssm_kernel, (log_dt, Ar, Ai, Bv, Cv, 0, "zoh")),
        (torch.ops.kernelfuse.ssm_kernel_bwd, (g, log_dt, Ar, Ai, Bv, Cv, "zoh")),
        (torch.ops.kernelfuse.ssm_kernel_bwd, (g, log_dt, Ar, Ai, None, Cv, "bilinear")),
    ]


@pytest.mark.parametrize("i", range(6))
def test_opcheck(i):
    op, args = _op_samples()[i]
    torch.library.opcheck(op, args)


def test_torch_compile_fullgraph():
    base = _params(4, 6, dtype=torch.float32, seed=4)

    def f(log_dt, Ar, Ai, B, C):
        k = kf.ssm_kernel(log_dt, Ar, Ai, B, C, 50) + kf.ssm_kernel(
            log_dt, Ar, Ai, None, C, 50, discretization="bilinear"
        )
        return (k * k).sum()

    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    a = [t.clone().requires_grad_(True) for t in base]
    b = [t.clone().requires_grad_(True) for t in base]
    torch.testing.assert_close(cf(*a), f(*b))
    cf(*a).backward()
    f(*b).backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad)


def test_torch_compile_dynamic_L():
    base = _params(3, 5, seed=8)
    cf = torch.compile(lambda *a: kf.ssm_kernel(*a[:5], a[5]) * 2, fullgraph=True, backend="aot_eager", dynamic=True)
    for L in (30, 47):
        torch.testing.assert_close(cf(*base, L), kf.ssm_kernel(*base, L) * 2)


@pytest.mark.slow
def test_torch_compile_inductor():
    base = _params(3, 5, dtype=torch.float32, seed=9)
    cf = torch.compile(lambda *a: kf.ssm_kernel(*a, 64).square().sum(-1), fullgraph=True)
    torch.testing.assert_close(cf(*base), kf.ssm_kernel(*base, 64).square().sum(-1))


# ------------------------------------------------------------------ bad input
def test_errors_name_the_argument():
    log_dt, Ar, Ai, B, C = _params(3, 4)
    call = kf.ssm_kernel
    with pytest.raises(ValueError, match=r"argument 'A_imag'.*shape \[3, 4\].*\[3, 5\]"):
        call(log_dt, Ar, torch.zeros(3, 5, dtype=torch.float64), B, C, 10)
    with pytest.raises(ValueError, match=r"argument 'B'.*\(H, N, 2\) = \(3, 4, 2\).*\[3, 3, 2\]"):
        call(log_dt, Ar, Ai, B[:, :3], C, 10)
    with pytest.raises(ValueError, match=r"argument 'C'.*\(H, N, 2\).*\[2, 4, 2\]"):
        call(log_dt, Ar, Ai, B, C[:2], 10)
    with pytest.raises(ValueError, match=r"argument 'log_dt'.*\(H,\) = \(3,\).*\[3, 1\]"):
        call(log_dt[:, None], Ar, Ai, B, C, 10)
    with pytest.raises(ValueError, match=r"argument 'log_dt'.*\(H,\) = \(3,\).*\[2\]"):
        call(log_dt[:2], Ar, Ai, B, C, 10)
    with pytest.raises(ValueError, match=r"argument 'A_real'.*\(H, N\)"):
        call(log_dt, Ar[0], Ai, B, C, 10)
    with pytest.raises(ValueError, match=r"argument 'L'.*>= 0.*-1"):
        call(log_dt, Ar, Ai, B, C, -1)
    with pytest.raises(ValueError, match=r"argument 'L'.*>= 0"):
        torch.ops.kernelfuse.ssm_kernel(log_dt, Ar, Ai, None, torch.view_as_real(C), -1, "zoh")
    with pytest.raises(TypeError, match=r"argument 'L' must be an int"):
        call(log_dt, Ar, Ai, B, C, 10.0)
    with pytest.raises(ValueError, match=r"argument 'discretization'.*'euler'.*zoh, bilinear"):
        call(log_dt, Ar, Ai, B, C, 10, discretization="euler")
    with pytest.raises(ValueError, match=r"argument 'discretization'.*'euler'"):
        torch.ops.kernelfuse.ssm_kernel(log_dt, Ar, Ai, None, torch.view_as_real(C), 5, "euler")
    with pytest.raises(ValueError, match=r"argument 'A_imag'.*dtype Double.*Float"):
        call(log_dt, Ar, Ai.float(), B, C, 10)
    with pytest.raises(ValueError, match=r"argument 'C'.*dtype Double.*Float"):
        call(log_dt, Ar, Ai, B, C.to(torch.complex64), 10)
    with pytest.raises(ValueError, match=r"argument 'log_dt'.*dtype Double.*Float"):
        call(log_dt.float(), Ar, Ai, B, C, 10)
    with pytest.raises(ValueError, match=r"argument 'C'.*complex tensor"):
        call(log_dt, Ar, Ai, B, C.real, 10)
    with pytest.raises(ValueError, match=r"argument 'A_real'.*float32 or float64.*Int"):
        call(log_dt.int(), Ar.int(), Ai.int(), None, C, 10)
    with pytest.raises(TypeError, match=r"argument 'B' must be a torch.Tensor"):
        call(log_dt, Ar, Ai, B.numpy(), C, 10)
    with pytest.raises(ValueError, match=r"argument 'grad'.*\(H, L\) with H = 3"):
        torch.ops.kernelfuse.ssm_kernel_bwd(
            torch.ones(2, 5, dtype=torch.float64), log_dt, Ar, Ai, None, torch.view_as_real(C), "zoh"
        )
