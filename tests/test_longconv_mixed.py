"""Mixed precision of fftconv (fp16 / bf16 u with an fp32 k and D, FlashFFTConv's convention), its
autocast rule, kernelfuse.nn.FlashFFTConv, and the long-convolution layers under torch.autocast.

Everything is compared with the float64 reference evaluated on the same (rounded) inputs, with the
tolerance of u's dtype (conftest.TOL); docs/longconv_fftconv.md lists the measured worst ratios."""

import kernelfuse as kf
import pytest
import torch
from conftest import TOL
from conftest import assert_close_to_ref as _assert_close
from kernelfuse.reference import longconv as ref
from kf_inputs import fftconv_inputs as _inputs

MODES = ["causal", "bidirectional", "circular"]
HALF = [torch.float16, torch.bfloat16]
NAMES = ("u", "k", "D", "pregate", "postgate")


def _d(t):
    return None if t is None else t.detach().double().cpu()


def _ref64(u, k, D, pre, post, mode):
    return ref.fftconv(_d(u), _d(k), _d(D), pregate=_d(pre), postgate=_d(post), mode=mode)


def _mixed(
    dtype,
    B=2,
    H=3,
    L=97,
    Lk=33,
    mode="causal",
    kshape="shared",
    D=True,
    gates=True,
    seed=0,
    k_dtype=torch.float32,
    D_dtype=torch.float32,
    device="cpu",
):
    """u and the gates in ``dtype``; k in k_dtype, D in D_dtype (float32: the mixed case)."""
    u, k, Dv, pre, post = _inputs(B, H, L, Lk, mode, torch.float64, kshape, D=D, gates=gates, seed=seed)
    c = lambda t, dt: None if t is None else t.to(dtype=dt, device=device)  # noqa: E731
    return c(u, dtype), c(k, k_dtype), c(Dv, D_dtype), c(pre, dtype), c(post, dtype)


def _ref_grads(gy, xs, mode):
    """float64 autograd of the reference on the rounded inputs: {name: grad}."""
    leaves = {n: _d(t).requires_grad_(True) for n, t in zip(NAMES, xs) if t is not None}
    y = ref.fftconv(
        leaves["u"],
        leaves["k"],
        leaves.get("D"),
        pregate=leaves.get("pregate"),
        postgate=leaves.get("postgate"),
        mode=mode,
    )
    gs = torch.autograd.grad(y, list(leaves.values()), _d(gy))
    return dict(zip(leaves, gs))


# ------------------------------------------------------------------ forward
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kshape", ["shared", "batch"])
def test_mixed_forward_matches_reference(dtype, mode, kshape, device):
    for i, (L, Lk) in enumerate([(1, 1), (13, 5), (97, 33), (300, 77)]):
        u, k, D, pre, post = _mixed(dtype, L=L, Lk=Lk, mode=mode, kshape=kshape, seed=i, device=device)
        y = kf.fftconv(u, k, D, pregate=pre, postgate=post, mode=mode)
        assert y.dtype == dtype and y.shape == u.shape and y.device == u.device
        _assert_close(y, _ref64(u, k, D, pre, post, mode), dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_mixed_is_more_accurate_than_half_kernel(dtype):
    """The fp32 kernel is used as given: the result equals the one on float32 inputs rounded once
    (CPU: the same float32 computation), and differs from the one with k rounded to u's dtype."""
    u, k, D, pre, post = _mixed(dtype, L=200, Lk=64, seed=3)
    y = kf.fftconv(u, k, D, pregate=pre, postgate=post)
    y32 = kf.fftconv(u.float(), k, D, pregate=pre.float(), postgate=post.float()).to(dtype)
    torch.testing.assert_close(y, y32, rtol=0, atol=0)
    yh = kf.fftconv(u, k.to(dtype), D.to(dtype), pregate=pre, postgate=post)
    assert not torch.equal(y, yh)


@pytest.mark.parametrize("dtype", HALF)
def test_mixed_k_and_D_dtypes_independent(dtype):
    """k and D may each be float32 or u's dtype; each gradient comes back in its input's dtype."""
    for kd, Dd in [(torch.float32, dtype), (dtype, torch.float32), (dtype, dtype), (torch.float32, torch.float32)]:
        u, k, D, pre, post = _mixed(dtype, L=41, Lk=17, k_dtype=kd, D_dtype=Dd, seed=4)
        xs = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
        y = kf.fftconv(xs[0], xs[1], xs[2], pregate=xs[3], postgate=xs[4])
        assert y.dtype == dtype
        _assert_close(y, _ref64(u, k, D, pre, post, "causal"), dtype)
        y.backward(torch.ones_like(y))
        assert [x.grad.dtype for x in xs] == [dtype, kd, Dd, dtype, dtype]


# ------------------------------------------------------------------ gradients
# Gradients against float64 autograd of the reference (on the rounded inputs and the rounded output
# gradient), with the tolerance of u's dtype. du / dpregate / dpostgate are rounded to u's dtype;
# dk and dD are float32 (computed in float32, never rounded to half).
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kshape", ["shared", "one", "batch"])
def test_mixed_gradients_match_reference_autograd(dtype, mode, kshape, device):
    for i, (B, H, L, Lk) in enumerate([(2, 3, 1, 1), (3, 2, 29, 11), (2, 3, 300, 77)]):
        xs0 = _mixed(dtype, B=B, H=H, L=L, Lk=Lk, mode=mode, kshape=kshape, seed=10 + i, device=device)
        xs = [t.clone().requires_grad_(True) for t in xs0]
        y = kf.fftconv(xs[0], xs[1], xs[2], pregate=xs[3], postgate=xs[4], mode=mode)
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(i)).to(dtype=dtype, device=device)
        y.backward(gy)
        exp = _ref_grads(gy, xs0, mode)
        for name, x in zip(NAMES, xs):
            assert x.grad.dtype == x.dtype, (name, x.grad.dtype, x.dtype)
            assert not torch.isnan(x.grad.double()).any(), name
            _assert_close(x.grad, exp[name], dtype)


def test_mixed_fp32_grads_are_float32_accurate():
    """dk and dD of the mixed path are float32 results: within float32-level error of the float64
    gradient on the same rounded inputs (a tighter check than the half tolerance above)."""
    for dtype in HALF:
        xs0 = _mixed(dtype, L=200, Lk=50, seed=7)
        xs = [t.clone().requires_grad_(True) for t in xs0]
        y = kf.fftconv(xs[0], xs[1], xs[2], pregate=xs[3], postgate=xs[4])
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        y.backward(gy)
        exp = _ref_grads(gy, xs0, "causal")
        for i, name in ((1, "k"), (2, "D")):
            assert xs[i].grad.dtype == torch.float32
            _assert_close(xs[i].grad, exp[name], torch.float32, factor=5.0)


# ------------------------------------------------------------------ errors
def test_mixed_dtype_errors():
    u = torch.randn(2, 3, 10)
    k = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"argument 'k'.*dtype BFloat16 \(the dtype of 'u'\) or float32, got Double"):
        kf.fftconv(u.bfloat16(), k.double())
    with pytest.raises(ValueError, match=r"argument 'k'.*dtype Half \(the dtype of 'u'\) or float32, got BFloat16"):
        kf.fftconv(u.half(), k.bfloat16())
    with pytest.raises(ValueError, match=r"argument 'D'.*dtype Half.*or float32, got Double"):
        kf.fftconv(u.half(), k, torch.randn(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"argument 'k'.*dtype Float \(the dtype of 'u'\), got BFloat16"):
        kf.fftconv(u, k.bfloat16())  # a half kernel with float32 activations: not a mixed case
    with pytest.raises(ValueError, match=r"argument 'pregate'.*dtype BFloat16.*got Float"):
        kf.fftconv(u.bfloat16(), k, pregate=u)  # gates stay in u's dtype


# ------------------------------------------------------------------ opcheck, compile (mixed dtypes)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("mode,kshape", [("causal", "shared"), ("bidirectional", "batch"), ("circular", "one")])
def test_opcheck_mixed(dtype, mode, kshape):
    u, k, D, pre, post = _mixed(dtype, L=11, Lk=4, mode=mode, kshape=kshape)
    args = [t.requires_grad_(True) for t in (u, k, D, pre, post)]
    torch.library.opcheck(torch.ops.kernelfuse.fftconv, (*args, mode, None))
    g = torch.randn(u.shape).to(dtype)
    det = [t.detach() for t in args]
    for needs in [(True,) * 5, (False, True, True, False, False)]:
        torch.library.opcheck(torch.ops.kernelfuse.fftconv_bwd, (g, *det, mode, None, *needs))


def test_torch_compile_mixed():
    u, k, D, pre, post = _mixed(torch.bfloat16, L=33, Lk=10, kshape="batch")
    a = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
    b = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]

    def f(u, k, D, pre, post):
        return kf.fftconv(u, k, D, pregate=pre, postgate=post).float().sin().sum()

    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    cf(*a).backward()
    f(*b).backward()
    for x, y in zip(a, b):
        assert x.grad.dtype == y.grad.dtype == x.dtype
        torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=0)


# ------------------------------------------------------------------ autocast
AUTOCAST_CPU = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("adt", AUTOCAST_CPU)
def test_autocast_fftconv_rule(adt):
    """Under autocast: u and the gates in the autocast dtype, k and D in float32, output in the
    autocast dtype; identical to calling the op on the cast inputs. Gradients reach the float32
    leaves in float32. float64 inputs are left alone."""
    u, k, D, pre, post = _mixed(torch.float32, L=50, Lk=20, k_dtype=torch.float32, seed=2)
    xs = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
    with torch.autocast("cpu", dtype=adt):
        y = kf.fftconv(xs[0], xs[1], xs[2], pregate=xs[3], postgate=xs[4])
        y_op = torch.ops.kernelfuse.fftconv(u, k, D, pre, post, "causal", None)
        # half k / D (e.g. from an autocast Linear) are upcast to float32
        y_hk = kf.fftconv(u, k.to(adt), D.to(adt), pregate=pre, postgate=post)
    assert y.dtype == adt and y_op.dtype == adt
    exp = kf.fftconv(u.to(adt), k, D, pregate=pre.to(adt), postgate=post.to(adt))
    torch.testing.assert_close(y, exp, rtol=0, atol=0)
    torch.testing.assert_close(y_op, exp, rtol=0, atol=0)
    torch.testing.assert_close(
        y_hk,
        kf.fftconv(u.to(adt), k.to(adt).float(), D.to(adt).float(), pregate=pre.to(adt), postgate=post.to(adt)),
        rtol=0,
        atol=0,
    )
    _assert_close(y, _ref64(u.to(adt), k, D, pre.to(adt), post.to(adt), "causal"), adt)
    y.float().sum().backward()
    assert all(x.grad is not None and x.grad.dtype == torch.float32 for x in xs)
    with torch.autocast("cpu", dtype=adt):
        y64 = kf.fftconv(u.double(), k.double(), D.double(), pregate=pre.double(), postgate=post.double())
    assert y64.dtype == torch.float64
    with torch.autocast("cpu", dtype=adt, enabled=False):
        assert kf.fftconv(u, k, D).dtype == torch.float32


def test_autocast_fftconv_opcheck_and_compile():
    u, k, D, pre, post = _mixed(torch.float32, L=11, Lk=4, seed=5)
    args = [t.requires_grad_(True) for t in (u, k, D, pre, post)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.library.opcheck(torch.ops.kernelfuse.fftconv, (*args, "causal", None))

    def f(u, k, D, pre, post):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = kf.fftconv(u, k, D, pregate=pre, postgate=post)
        return y, y.float().sin().sum()

    a = [t.detach().clone().requires_grad_(True) for t in args]
    b = [t.detach().clone().requires_grad_(True) for t in args]
    yc, lc = torch.compile(f, fullgraph=True, backend="aot_eager")(*a)
    ye, le = f(*b)
    assert yc.dtype == ye.dtype == torch.bfloat16
    torch.testing.assert_close(yc, ye, rtol=0, atol=0)
    lc.backward()
    le.backward()
    for x, y in zip(a, b):
        assert x.grad.dtype == torch.float32
        torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=0)


# ------------------------------------------------------------------ FlashFFTConv
def _flash_ref(u, k, n, pre=None, post=None):
    """FlashFFTConv's own reference, in float64: irfft(rfft(u * pre, n) rfft(k, n), n)[..., :L] * post."""
    c = lambda t: t if t.dtype == torch.float64 else t.detach().double()  # noqa: E731  (float64: differentiable)
    v = c(u) if pre is None else c(u) * c(pre)
    y = torch.fft.irfft(torch.fft.rfft(v, n=n) * torch.fft.rfft(c(k), n=n), n=n)[..., : u.shape[-1]]
    return y if post is None else y * c(post)


@pytest.mark.parametrize("dtype", HALF + [torch.float32])
@pytest.mark.parametrize(
    "L,Lk,n", [(128, 128, 256), (100, 37, 256), (200, 256, 512), (256, 256, 256), (97, 200, 256), (7, 3, 16)]
)
def test_flashfftconv_matches_its_reference(dtype, L, Lk, n):
    """seqlen = 2 L (causal), shorter inputs, a kernel longer than u (no wrap), L = seqlen (the
    circular wrap FlashFFTConv keeps), a kernel longer than u that wraps; plain and gated."""
    g = torch.Generator().manual_seed(L + Lk + n)
    u = torch.randn(3, 4, L, generator=g).to(dtype)
    k = torch.randn(4, Lk, generator=g) / Lk**0.5
    pre = torch.randn(3, 4, L, generator=g).to(dtype)
    post = torch.randn(3, 4, L, generator=g).to(dtype)
    conv = kf.nn.FlashFFTConv(n, dtype=dtype if dtype != torch.float32 else torch.bfloat16)
    y = conv(u, k)
    assert y.dtype == dtype and y.shape == u.shape
    _assert_close(y, _flash_ref(u, k, n), dtype)
    yg = conv(u, k, pre, post)
    _assert_close(yg, _flash_ref(u, k, n, pre, post), dtype)
    # gradients, each in its input's dtype, against float64 autograd of the reference
    xs = [t.clone().requires_grad_(True) for t in (u, k, pre, post)]
    gy = torch.randn(u.shape, generator=g).to(dtype)
    conv(*xs).backward(gy)
    leaves = [_d(t).requires_grad_(True) for t in (u, k, pre, post)]
    exp = torch.autograd.grad(_flash_ref(*leaves[:2], n, *leaves[2:]), leaves, _d(gy))
    for x, e in zip(xs, exp):
        assert x.grad.dtype == x.dtype
        _assert_close(x.grad, e, dtype)


def test_flashfftconv_module_api():
    conv = kf.nn.FlashFFTConv(256, dtype=torch.bfloat16)
    assert conv.seqlen == 256 and conv.dtype == torch.bfloat16 and "seqlen=256" in repr(conv)
    assert list(conv.parameters()) == [] and list(conv.buffers()) == []
    kf.nn.FlashFFTConv(1024, torch.float16, use_32_butterfly=False)
    with pytest.raises(ValueError, match=r"argument 'seqlen'"):
        kf.nn.FlashFFTConv(0)
    with pytest.raises(TypeError, match=r"argument 'dtype'"):
        kf.nn.FlashFFTConv(256, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"argument 'u'.*exceeds the FFT size seqlen = 256"):
        conv(torch.randn(1, 2, 300).bfloat16(), torch.randn(2, 10))
    with pytest.raises(ValueError, match=r"argument 'k'.*exceeds the FFT size"):
        conv(torch.randn(1, 2, 30).bfloat16(), torch.randn(2, 300))
    with pytest.raises(ValueError, match=r"argument 'u'.*\(B, H, L\)"):
        conv(torch.randn(2, 30), torch.randn(2, 30))

    # a model written for FlashFFTConv (one module shared by the layers, its buffers in the
    # checkpoint) loads its state dict with this module in place
    class Layer(torch.nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.k = torch.nn.Parameter(torch.randn(2, 128))
            self.flashfftconv = conv

        def forward(self, x):
            return self.flashfftconv(x, self.k)

    model = torch.nn.Sequential(Layer(conv), Layer(conv))
    sd = model.state_dict()
    sd["0.flashfftconv.f_32_fft"] = torch.randn(32, 32, 2)
    sd["1.flashfftconv.twiddle_factors_fft_32_1K"] = torch.randn(32, 1024, 2)
    model.load_state_dict(sd, strict=True)
    y = model(torch.randn(3, 2, 128).bfloat16())
    assert y.dtype == torch.bfloat16


def test_flashfftconv_autocast_and_compile():
    conv = kf.nn.FlashFFTConv(256, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    u, pre, post = (torch.randn(2, 3, 128, generator=g) for _ in range(3))
    k = torch.randn(3, 128, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(u, k, pre, post)
    assert y.dtype == torch.bfloat16
    _assert_close(y, _flash_ref(u.bfloat16(), k, 256, pre.bfloat16(), post.bfloat16()), torch.bfloat16)
    y.float().sum().backward()
    assert k.grad.dtype == torch.float32
    f = lambda u, k: conv(u, k)  # noqa: E731
    ub = u.bfloat16()
    torch.testing.assert_close(
        torch.compile(f, fullgraph=True, backend="aot_eager")(ub, k.detach()), f(ub, k.detach()), rtol=0, atol=0
    )


# ------------------------------------------------------------------ layers under autocast
@pytest.mark.parametrize("adt", AUTOCAST_CPU)
def test_longconv_layers_under_autocast(adt):
    """LongConv / S4D / GatedLongConv under CPU autocast: the convolution runs mixed (activations
    in adt, the float32 kernel as is), the outputs are in adt and close to the float32 layer; the
    parameters' gradients are float32."""
    torch.manual_seed(0)
    layers = [
        kf.nn.LongConv(4, 64, kernel_init_std=0.1, squash_lambda=0.0),
        kf.nn.LongConv(4, 64, bidirectional=True, channels=2, kernel_init_std=0.1, squash_lambda=0.0),
        kf.nn.S4D(4, 8),
        kf.nn.S4D(4, 8, bidirectional=True),
        kf.nn.GatedLongConv(4, 64, kernel_init_std=0.1, squash_lambda=0.0),
    ]
    x = torch.randn(2, 50, 4)
    for layer in layers:
        y32 = layer(x)
        with torch.autocast("cpu", dtype=adt):
            y = layer(x)
        assert y.dtype == adt, type(layer).__name__
        tol = TOL[adt]
        torch.testing.assert_close(
            y.float(), y32, rtol=tol["rtol"] * 4, atol=tol["atol"] * 4 * max(1.0, y32.abs().max().item())
        )
        layer.zero_grad()
        y.float().sum().backward()
        for name, p in layer.named_parameters():
            assert p.grad is None or p.grad.dtype == p.dtype, name


# ------------------------------------------------------------------ CUDA (runs only where a GPU is)
@pytest.mark.cuda
@pytest.mark.parametrize("adt", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("L,Lk", [(100, 100), (1024, 300), (16385, 100)])  # 16385: past the TC path's sizes
def test_cuda_autocast_and_mixed(adt, L, Lk):
    """CUDA autocast runs fftconv mixed (u, gates -> adt, k, D float32); the TC path (L + Lk - 1 <=
    32768) and the cuFFT path against the float64 reference; gradients in each leaf's dtype."""
    u, k, D, pre, post = _mixed(torch.float32, B=3, H=2, L=L, Lk=Lk, k_dtype=torch.float32, device="cuda", seed=L)
    xs = [t.clone().requires_grad_(True) for t in (u, k, D, pre, post)]
    with torch.autocast("cuda", dtype=adt):
        y = kf.fftconv(xs[0], xs[1], xs[2], pregate=xs[3], postgate=xs[4])
    assert y.dtype == adt
    exp = _ref64(u.to(adt), k, D, pre.to(adt), post.to(adt), "causal")
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}[adt]  # test_longconv.py's TC_TOL
    assert (y.double().cpu() - exp).abs().max().item() <= tol * max(1.0, exp.abs().max().item())
    y.float().sum().backward()
    assert all(x.grad.dtype == torch.float32 for x in xs)
    conv = kf.nn.FlashFFTConv(2 * L if L < 16385 else 32770, dtype=adt)
    yf = conv(u.to(adt), k, pre.to(adt), post.to(adt))
    assert yf.dtype == adt and yf.device == u.device


# ------------------------------------------------------------------ mixed precision with the H3/Hyena skip
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("mode", MODES)
def test_mixed_gated_skip_forward_and_gradients(dtype, mode, device):
    """fp16/bf16 u and gates with fp32 k and D, skip="gated" (D multiplies u * pregate), against the
    float64 reference with the same convention; gradients in each input's dtype."""
    xs0 = _mixed(dtype, B=2, H=3, L=61, Lk=23, mode=mode, seed=77, device=device)
    xs = [t.clone().requires_grad_(True) for t in xs0]
    y = kf.fftconv(xs[0], xs[1], xs[2], pregate=xs[3], postgate=xs[4], mode=mode, skip="gated")
    _assert_close(
        y, ref.fftconv(*map(_d, xs0[:3]), pregate=_d(xs0[3]), postgate=_d(xs0[4]), mode=mode, skip="gated"), dtype
    )
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(5)).to(dtype=dtype, device=device)
    y.backward(gy)
    leaves = {n: _d(t).requires_grad_(True) for n, t in zip(NAMES, xs0)}
    y64 = ref.fftconv(
        leaves["u"],
        leaves["k"],
        leaves["D"],
        pregate=leaves["pregate"],
        postgate=leaves["postgate"],
        mode=mode,
        skip="gated",
    )
    exp = dict(zip(leaves, torch.autograd.grad(y64, list(leaves.values()), _d(gy))))
    for name, x in zip(NAMES, xs):
        assert x.grad.dtype == x.dtype, name
        _assert_close(x.grad, exp[name], dtype)
