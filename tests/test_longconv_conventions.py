"""fftconv's conventions (issue 12; docs/longconv_fftconv.md lists them): skip="gated" (D on the
gated input, H3 / Hyena) against plain-torch transcriptions of H3's and Hyena's formulas and against
the reference (forward, backward, gradcheck, opcheck, torch.compile, half types); the bidirectional
reverse conventions (safari's and H3's k_rev); the convention arguments' errors."""

import kernelfuse as kf
import pytest
import torch
from conftest import TOL
from conftest import assert_close_to_ref as _assert_close
from kernelfuse.reference import longconv as ref
from kf_inputs import fftconv_inputs as _inputs
from longconv_common import MODES


# ------------------------------------------------------------------ conventions (issue 12)
# Plain-torch transcriptions of the peers' formulas, written here from their published definitions;
# docs/longconv_fftconv.md lists the conventions and the mapping.
def _h3_fftconv_h3_ref(k, ssm_kernel, D, q, v, ssm_kernel_rev=None):
    """H3's fftconv_h3_ref at head_dim 1: kv = k * v convolved (FFT size 2L, 1/n on the input
    spectrum, irfft norm "forward"), D applied to the gated kv, then the q gate."""
    L = k.shape[-1]
    n = 2 * L
    kv = k * v
    kv_f = torch.fft.rfft(kv, n=n) / n
    kern_f = torch.fft.rfft(ssm_kernel, n=n)
    if ssm_kernel_rev is not None:
        kern_f = kern_f + torch.fft.rfft(ssm_kernel_rev, n=n).conj()
    y = torch.fft.irfft(kv_f * kern_f, n=n, norm="forward")[..., :L]
    return (y + kv * D[:, None]) * q


def _hyena_order2(x0, x1, v, h, bias):
    """Hyena's operator at order 2 with the gates given: v <- v * x1 (the inner gate), the long
    filter h by FFT (size 2L) plus ``bias * v`` (its D term, on the gated v), then * x0."""
    L = v.shape[-1]
    n = 2 * L
    v = v * x1
    y = torch.fft.irfft(torch.fft.rfft(v, n=n) * torch.fft.rfft(h, n=n) / n, n=n, norm="forward")[..., :L]
    return (y + v * bias[:, None]) * x0


def _safari_gated_input_skip(u, k, D, pre, post):
    """The op's skip="input" (H3 / Hyena ordering of the gates, D on the ungated u): written out."""
    L = u.shape[-1]
    conv = torch.fft.irfft(torch.fft.rfft(u * pre, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
    return post * (conv + D[:, None] * u)


def test_skip_gated_matches_h3_and_hyena_forward_backward():
    B, H, L = 2, 3, 40
    u, k, D, pre, post = _inputs(B, H, L, L, "causal")
    xs = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
    ys = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
    zs = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
    out = kf.fftconv(xs[0], xs[1], xs[2], pregate=xs[3], postgate=xs[4], skip="gated")
    # H3 names: k (pregate) * v (input), ssm_kernel, D, q (postgate)
    h3 = _h3_fftconv_h3_ref(ys[3], ys[1], ys[2], ys[4], ys[0])
    hy = _hyena_order2(zs[4], zs[3], zs[0], zs[1], zs[2])
    torch.testing.assert_close(out, h3, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, hy, rtol=1e-10, atol=1e-12)
    gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out.backward(gy)
    h3.backward(gy)
    for a, b in zip(xs, ys):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-11)
    # skip="input" is a different formula (D on the ungated input): its own transcription
    y_in = kf.fftconv(u, k, D, pregate=pre, postgate=post, skip="input")
    torch.testing.assert_close(y_in, _safari_gated_input_skip(u, k, D, pre, post), rtol=1e-10, atol=1e-12)
    assert ((y_in - h3).norm() / h3.norm()).item() > 1e-2
    # without a pregate the two conventions agree
    torch.testing.assert_close(
        kf.fftconv(u, k, D, postgate=post, skip="gated"),
        kf.fftconv(u, k, D, postgate=post, skip="input"),
        rtol=0,
        atol=0,
    )


def test_reference_skip_gated_matches_direct_sum():
    for mode in MODES:
        u, k, D, pre, post = _inputs(2, 3, 10, 3, mode, kshape="batch")
        torch.testing.assert_close(
            ref.fftconv(u, k, D, pregate=pre, postgate=post, mode=mode, skip="gated"),
            ref.fftconv_direct(u, k, D, pregate=pre, postgate=post, mode=mode, skip="gated"),
        )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kshape", ["shared", "batch"])
def test_skip_gated_forward_backward_vs_reference(mode, kshape, device):
    for dtype in (torch.float64, torch.float32):
        for _pre_on, post_on in ((True, True), (True, False)):
            u, k, D, pre, post = _inputs(3, 4, 61, 23, mode, dtype, kshape=kshape, seed=7, device=device)
            post = post if post_on else None
            a = [t.clone().requires_grad_(True) if t is not None else None for t in (u, k, D, pre, post)]
            b = [
                t.detach().double().cpu().requires_grad_(True) if t is not None else None for t in (u, k, D, pre, post)
            ]
            y1 = kf.fftconv(a[0], a[1], a[2], pregate=a[3], postgate=a[4], mode=mode, skip="gated")
            y2 = ref.fftconv(b[0], b[1], b[2], pregate=b[3], postgate=b[4], mode=mode, skip="gated")
            _assert_close(y1.detach(), y2.detach(), dtype)
            gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
            y1.backward(gy.to(dtype=dtype, device=device))
            y2.backward(gy)
            tol = TOL[dtype]
            for x, y in zip(a, b):
                if x is None:
                    continue
                torch.testing.assert_close(
                    x.grad.double().cpu(),
                    y.grad,
                    rtol=tol["rtol"] * 10,
                    atol=tol["atol"] * 10 * max(1.0, y.grad.abs().max().item()),
                )


@pytest.mark.parametrize("mode", MODES)
def test_skip_gated_gradcheck(mode):
    u, k, D, pre, post = _inputs(2, 3, 7, 3, mode, seed=3)
    args = [t.requires_grad_(True) for t in (u, k, D, pre, post)]
    fn = lambda u, k, D, pre, post: kf.fftconv(u, k, D, pregate=pre, postgate=post, mode=mode, skip="gated")  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_skip_gated_half_types():
    for dtype in (torch.float16, torch.bfloat16):
        u, k, D, pre, post = _inputs(2, 3, 50, 20, "causal", dtype)
        out = kf.fftconv(u, k, D, pregate=pre, postgate=post, skip="gated")
        exp = ref.fftconv(*(t.double() for t in (u, k, D)), pregate=pre.double(), postgate=post.double(), skip="gated")
        tol = TOL[dtype]
        torch.testing.assert_close(out.double(), exp, rtol=tol["rtol"], atol=tol["atol"] * 10 * exp.abs().max())


@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_skip_gated_opcheck(mode):
    u, k, Dv, pre, post = _inputs(2, 3, 11, 4, mode, torch.float32, kshape="batch")
    args = [t.requires_grad_(True) for t in (u, k, Dv, pre, post)]
    torch.library.opcheck(torch.ops.kernelfuse.fftconv, (*args, mode, None, "gated"))
    g = torch.randn(2, 3, 11)
    det = [t.detach() for t in args]
    for needs in [(True,) * 5, (True, False, True, False, True)]:
        torch.library.opcheck(torch.ops.kernelfuse.fftconv_bwd, (g, *det, mode, None, *needs, "gated"))


def test_skip_gated_torch_compile():
    u, k, D, pre, post = _inputs(2, 3, 33, 10, "causal", torch.float32)
    a = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
    b = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]

    def f(u, k, D, pre, post):
        return kf.fftconv(u, k, D, pregate=pre, postgate=post, skip="gated").sin().sum()

    torch.compile(f, fullgraph=True, backend="aot_eager")(*a).backward()
    f(*b).backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-5, atol=1e-5)


def _safari_bidirectional(u, k_fwd, k_bwd, D):
    """safari's LongConv / S4 bidirectional: pad(k0, (0, L)) + pad(flip(k1), (L, 0)), one circular
    convolution of size 2L (k0, k1 of length L)."""
    L = u.shape[-1]
    kk = torch.nn.functional.pad(k_fwd, (0, L)) + torch.nn.functional.pad(k_bwd.flip(-1), (L, 0))
    return torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(kk, n=2 * L), n=2 * L)[..., :L] + D[:, None] * u


def _safari_amended_bidirectional(u, k_fwd, k_bwd, D):
    """The off-by-one-free variant noted in safari's S4 source: k1[1:] flipped at the end, k1[0]
    on lag 0 (which is H3's k_rev convention)."""
    L = u.shape[-1]
    pad = torch.nn.functional.pad
    kk = pad(k_fwd, (0, L)) + pad(k_bwd[..., 1:].flip(-1), (L + 1, 0)) + pad(k_bwd[..., :1], (0, 2 * L - 1))
    return torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(kk, n=2 * L), n=2 * L)[..., :L] + D[:, None] * u


def _h3_fftconv_ref(u, k, D, k_rev):
    """H3's fftconv_ref (no dropout / gelu): rfft(k) / n + conj(rfft(k_rev) / n), FFT size 2L."""
    L = u.shape[-1]
    n = 2 * L
    k_f = torch.fft.rfft(k, n=n) / n + (torch.fft.rfft(k_rev, n=n) / n).conj()
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * k_f, n=n, norm="forward")[..., :L]
    return y + u * D[:, None]


def test_bidirectional_reverse_conventions_safari_and_h3():
    B, H, L = 2, 3, 24
    u, k, D, _, _ = _inputs(B, H, L, L, "bidirectional", gates=False, seed=11)
    k_fwd, k_bwd = k[:, :L], k[:, L:]
    safari = _safari_bidirectional(u, k_fwd, k_bwd, D)
    h3 = _h3_fftconv_ref(u, k_fwd, D, k_bwd)
    torch.testing.assert_close(kf.fftconv(u, (k_fwd, k_bwd), D, mode="bidirectional"), safari)
    torch.testing.assert_close(kf.fftconv(u, (k_fwd, k_bwd), D, mode="bidirectional", reverse="h3"), h3)
    torch.testing.assert_close(_safari_amended_bidirectional(u, k_fwd, k_bwd, D), h3)
    # one tap apart: safari's k_bwd[j] is H3's k_rev[j + 1] (safari's last tap, on u[t + L], never
    # reaches the sequence)
    shifted = torch.cat([torch.zeros_like(k_bwd[:, :1]), k_bwd[:, :-1]], -1)
    torch.testing.assert_close(_h3_fftconv_ref(u, k_fwd, D, shifted), safari)
    assert ((h3 - safari).norm() / safari.norm()).item() > 1e-2
    torch.testing.assert_close(kf.fftconv(u, kf.ops.longconv.h3_reverse_to_safari(k), D, mode="bidirectional"), h3)
    # gradients of the h3 convention against autograd through the transcription
    a = [t.clone().requires_grad_(True) for t in (u, k_fwd, k_bwd, D)]
    b = [t.clone().requires_grad_(True) for t in (u, k_fwd, k_bwd, D)]
    gy = torch.randn(u.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    kf.fftconv(a[0], (a[1], a[2]), a[3], mode="bidirectional", reverse="h3").backward(gy)
    _h3_fftconv_ref(b[0], b[1], b[3], b[2]).backward(gy)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-9, atol=1e-11)


def test_bidirectional_h3_shorter_kernels_and_gates():
    """reverse="h3" with Lk < L, gates and both skips: against H3's formula with the kernels zero
    padded to L (H3's kernels have L taps)."""
    B, H, L, Lk = 2, 3, 30, 9
    u, k, D, pre, post = _inputs(B, H, L, Lk, "bidirectional", seed=12)
    pad = lambda t: torch.nn.functional.pad(t, (0, L - Lk))  # noqa: E731
    k_fwd, k_rev = pad(k[:, :Lk]), pad(k[:, Lk:])
    for skip in ("input", "gated"):
        out = kf.fftconv(u, k, D, pregate=pre, postgate=post, mode="bidirectional", reverse="h3", skip=skip)
        conv = _h3_fftconv_ref(u * pre, k_fwd, torch.zeros_like(D), k_rev)
        exp = post * (conv + D[:, None] * (u * pre if skip == "gated" else u))
        torch.testing.assert_close(out, exp, rtol=1e-10, atol=1e-12)


def test_convention_errors():
    u, k = torch.randn(2, 3, 10), torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"argument 'skip'.*'both'"):
        kf.fftconv(u, k, skip="both")
    with pytest.raises(ValueError, match=r"argument 'reverse'.*'s4'"):
        kf.fftconv(u, k, reverse="s4")
    with pytest.raises(ValueError, match=r"argument 'skip'.*unknown skip convention 'x'"):
        torch.ops.kernelfuse.fftconv(u, k, None, None, None, "causal", None, "x")
