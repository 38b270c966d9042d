"""Butterfly family, the modules: ButterflyLinear, MonarchLinear (+ from_dense, fly's layout:
from_fly_weights / fly_weights) against dense products and fly's formula, and LongConv(fft="learned")."""

import kernelfuse as kf
import pytest
import torch
from butterfly_common import _fly_monarch, _rand
from conftest import assert_close_to_ref as _close
from kernelfuse import butterfly as bfc


# ------------------------------------------------------------------ fly's layout (interop)
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
