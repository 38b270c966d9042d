"""Butterfly family: monarch_fft (+ monarch_rfft / monarch_irfft) against the float64 references and
torch.fft (every power of two, mixed radix, norms, gradcheck, errors), and the exact constructions
as butterfly / Monarch products (FFT and inverse FFT, Hadamard, DCT, the Monarch DFT factors)
against torch.fft / scipy."""

import math

import kernelfuse as kf
import pytest
import torch
from butterfly_common import _rand
from conftest import assert_close_to_ref as _close
from kernelfuse import butterfly as bfc
from kernelfuse.reference import butterfly as ref

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
