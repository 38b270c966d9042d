"""kernelfuse.nn modules and kernelfuse.models.SequenceModel (CPU, fast)."""

import math
import time

import kernelfuse
import pytest
import torch
import torch.nn.functional as F
from kernelfuse.models import SequenceModel
from kernelfuse.nn import S4D, GatedLongConv, LongConv, s4d_init, smooth, squash


def _grads_all(module, loss):
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), name


# ---------------------------------------------------------------- LongConv
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_longconv_shapes_and_grads(bidirectional, channels):
    torch.manual_seed(0)
    m = LongConv(
        5, 40, channels=channels, bidirectional=bidirectional, squash_lambda=0.0, smooth_window=3, kernel_dropout=0.1
    )
    x = torch.randn(2, 33, 5)  # shorter than l_max
    y = m(x)
    assert y.shape == x.shape
    _grads_all(m, y.square().sum())


def test_longconv_matches_plain_conv():
    torch.manual_seed(1)
    H, L = 4, 37
    m = LongConv(H, 50, squash_lambda=0.0, kernel_init_std=0.1).double()
    x = torch.randn(2, L, H, dtype=torch.float64)
    k = m.kernel[:, :L]
    u = x.transpose(1, 2)
    ref = torch.zeros_like(u)
    for t in range(L):
        ref[..., t] = (k[:, : t + 1].flip(-1) * u[..., : t + 1]).sum(-1)
    ref = ref + m.D[:, None] * u
    torch.testing.assert_close(m(x), ref.transpose(1, 2), rtol=1e-10, atol=1e-10)
    mt = LongConv(H, 50, squash_lambda=0.0, transposed=True).double()
    mt.load_state_dict(m.state_dict())
    torch.testing.assert_close(mt(u), ref, rtol=1e-10, atol=1e-10)


def test_longconv_bidirectional_matches_plain():
    torch.manual_seed(2)
    H, Lmax, L = 3, 20, 16
    m = LongConv(H, Lmax, bidirectional=True, squash_lambda=0.0, kernel_init_std=0.1).double()
    u = torch.randn(2, H, L, dtype=torch.float64)
    kf, kb = m.kernel[:, :L], m.kernel[:, Lmax : Lmax + L]
    ref = m.D[:, None] * u
    for t in range(L):
        for s in range(L):
            ref[..., t] = ref[..., t] + (kf[:, t - s] if s <= t else kb[:, s - t - 1]) * u[..., s]
    torch.testing.assert_close(m(u.transpose(1, 2)).transpose(1, 2), ref, rtol=1e-10, atol=1e-10)


def test_squash_hand_computed():
    k = torch.tensor([[-0.5, -0.1, 0.0, 0.05, 0.2, 1.0]])
    torch.testing.assert_close(squash(k, 0.1), torch.tensor([[-0.4, 0.0, 0.0, 0.0, 0.1, 0.9]]))
    assert squash(k, 0.0) is k


def test_smooth_hand_computed():
    k = torch.tensor([[3.0, 0.0, 6.0, 3.0, 9.0]])
    # window 3: mean of k[l-1], k[l], k[l+1] with zeros outside
    torch.testing.assert_close(smooth(k, 3), torch.tensor([[1.0, 3.0, 3.0, 6.0, 4.0]]))
    # window 2: padding 1, mean of k[l-1], k[l]
    torch.testing.assert_close(smooth(k, 2), torch.tensor([[1.5, 1.5, 3.0, 4.5, 6.0]]))
    assert smooth(k, None) is k


def test_longconv_regularised_kernel_order():
    m = LongConv(1, 5, squash_lambda=1.0, smooth_window=3, reg_order="squash_smooth")
    with torch.no_grad():
        m.kernel.copy_(torch.tensor([[4.0, 1.0, 7.0, -4.0, 10.0]]))
    # squash: [3, 0, 6, -3, 9]; smooth(3): [1, 3, 1, 4, 2]
    torch.testing.assert_close(m.regularised_kernel(), torch.tensor([[1.0, 3.0, 1.0, 4.0, 2.0]]))
    # default, safari's order: smooth(3): [5/3, 4, 4/3, 13/3, 2]; squash(1): [2/3, 3, 1/3, 10/3, 1]
    ms = LongConv(1, 5, squash_lambda=1.0, smooth_window=3)
    with torch.no_grad():
        ms.kernel.copy_(m.kernel)
    torch.testing.assert_close(ms.regularised_kernel(), torch.tensor([[2 / 3, 3.0, 1 / 3, 10 / 3, 1.0]]))
    mb = LongConv(1, 3, bidirectional=True, squash_lambda=0.0, smooth_window=3)
    with torch.no_grad():
        mb.kernel.copy_(torch.tensor([[3.0, 0.0, 3.0, 6.0, 0.0, 0.0]]))
    # halves smoothed separately: [1, 2, 1] and [2, 2, 0]
    torch.testing.assert_close(mb.regularised_kernel(), torch.tensor([[1.0, 2.0, 1.0, 2.0, 2.0, 0.0]]))


def _safari_long_conv_kernel(k, lam, window, drop=None):
    """safari's LongConvKernel.forward, written out: AvgPool1d(window, stride 1, padding window//2)
    when smoothing, then the squash relu(|k| - lam) sign(k), then kernel dropout (``drop``)."""
    if window:
        k = F.avg_pool1d(k[:, None], window, stride=1, padding=window // 2)[:, 0]
    k = F.relu(k.abs() - lam) * torch.sign(k)
    return drop(k) if drop is not None else k


def test_longconv_smoothing_order_matches_safari():
    torch.manual_seed(3)
    H, Lmax, L = 3, 32, 32
    m = LongConv(H, Lmax, squash_lambda=0.05, smooth_window=5, kernel_init_std=0.1).double().eval()
    exp_k = _safari_long_conv_kernel(m.kernel, 0.05, 5)
    torch.testing.assert_close(m.regularised_kernel(), exp_k)
    u = torch.randn(2, H, L, dtype=torch.float64)
    y = (
        torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(exp_k, n=2 * L), n=2 * L)[..., :L]
        + m.D[:, None] * u
    )
    torch.testing.assert_close(m(u.transpose(1, 2)).transpose(1, 2), y)
    # the other order is a different kernel
    legacy = LongConv(H, Lmax, squash_lambda=0.05, smooth_window=5, reg_order="squash_smooth").double().eval()
    legacy.load_state_dict(m.state_dict())
    assert ((legacy.regularised_kernel() - exp_k).norm() / exp_k.norm()).item() > 0.1
    # kernel dropout last (safari): with a fixed seed, the same mask on the smoothed, squashed kernel
    md = LongConv(H, Lmax, squash_lambda=0.05, smooth_window=5, kernel_dropout=0.3, kernel_init_std=0.1).double()
    torch.manual_seed(7)
    got = md.regularised_kernel()
    torch.manual_seed(7)
    torch.testing.assert_close(got, _safari_long_conv_kernel(md.kernel, 0.05, 5, torch.nn.Dropout(0.3)))
    with pytest.raises(ValueError, match="reg_order"):
        LongConv(2, 8, reg_order="safari_v0")


def test_longconv_bidirectional_h3_reverse_matches_plain():
    """reverse="h3": backward tap j multiplies u[t + j] (H3's k_rev; tap 0 on the present)."""
    torch.manual_seed(4)
    H, Lmax, L = 3, 20, 16
    m = LongConv(H, Lmax, bidirectional=True, squash_lambda=0.0, kernel_init_std=0.1, reverse="h3").double()
    u = torch.randn(2, H, L, dtype=torch.float64)
    kf_, kr = m.kernel[:, :L], m.kernel[:, Lmax : Lmax + L]
    ref = m.D[:, None] * u
    for t in range(L):
        for s in range(L):
            w = (kf_[:, t - s] if s <= t else 0) + (kr[:, s - t] if s >= t else 0)
            ref[..., t] = ref[..., t] + w * u[..., s]
    torch.testing.assert_close(m(u.transpose(1, 2)).transpose(1, 2), ref, rtol=1e-10, atol=1e-10)
    s4 = S4D(H, 8, bidirectional=True, reverse="h3").double()
    K = s4.kernel(L)
    v = s4(u.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(v, kernelfuse.fftconv(u, (K[:H], K[H:]), s4.D, mode="bidirectional", reverse="h3"))


def test_longconv_too_long_input():
    with pytest.raises(ValueError, match="l_max"):
        LongConv(2, 8)(torch.randn(1, 9, 2))


# ---------------------------------------------------------------- S4D
@pytest.mark.parametrize("init", ["s4d-lin", "s4d-inv", "s4d-legs", "s4d-real"])
def test_s4d_inits(init):
    A_re, A_im = s4d_init(init, 3, 8)
    assert A_re.shape == A_im.shape == (3, 8)
    assert (A_re < 0).all() and torch.isfinite(A_im).all()
    if init == "s4d-lin":
        torch.testing.assert_close(A_im[0], math.pi * torch.arange(8, dtype=torch.float64))
    if init == "s4d-real":
        torch.testing.assert_close(A_re[0], -torch.arange(1, 9, dtype=torch.float64))
    if init == "s4d-legs":
        torch.testing.assert_close(A_re, torch.full_like(A_re, -0.5), atol=1e-6, rtol=0)
        assert (A_im[0].diff() > 0).all()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_s4d_shapes_and_grads(bidirectional):
    torch.manual_seed(0)
    m = S4D(6, 8, bidirectional=bidirectional)
    x = torch.randn(2, 31, 6)
    y = m(x)
    assert y.shape == x.shape
    _grads_all(m, y.square().sum())


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("init", ["s4d-lin", "s4d-inv", "s4d-legs", "s4d-real"])
def test_s4d_step_matches_conv(discretization, init):
    torch.manual_seed(3)
    m = S4D(4, 16, init=init, discretization=discretization, dt_min=0.01, dt_max=0.2).double()
    B, L = 2, 50
    x = torch.randn(B, L, 4, dtype=torch.float64)
    y_conv = m(x)
    state = m.default_state(B)
    assert state.dtype == torch.complex128
    ys = []
    with torch.no_grad():
        for t in range(L):
            y_t, state = m.step(x[:, t], state)
            ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y_conv.detach(), rtol=0, atol=1e-8)


def test_s4d_bidirectional_matches_two_kernels():
    torch.manual_seed(4)
    H, L = 3, 20
    m = S4D(H, 8, bidirectional=True).double()
    u = torch.randn(2, H, L, dtype=torch.float64)
    K = m.kernel(L)
    kf, kb = K[:H], K[H:]
    ref = m.D[:, None] * u
    for t in range(L):
        for s in range(L):
            ref[..., t] = ref[..., t] + (kf[:, t - s] if s <= t else kb[:, s - t - 1]) * u[..., s]
    torch.testing.assert_close(m(u.transpose(1, 2)).transpose(1, 2), ref, rtol=1e-10, atol=1e-10)
    with pytest.raises(RuntimeError, match="bidirectional"):
        m.step(u[..., 0], m.default_state(2))


# ---------------------------------------------------------------- GatedLongConv
def test_gated_longconv_matches_plain_torch():
    torch.manual_seed(5)
    H, Lmax, L = 4, 40, 29
    m = GatedLongConv(H, Lmax, squash_lambda=0.01, smooth_window=3, kernel_init_std=0.05).double()
    x = torch.randn(2, L, H, dtype=torch.float64)
    # plain torch composition
    z = x @ m.in_proj.weight.T + m.in_proj.bias  # (B, L, 3H)
    z = z.transpose(1, 2)
    zp = F.pad(z, (2, 0))
    w = m.short_conv.weight[:, 0]  # (3H, 3)
    zc = sum(w[:, j, None] * zp[..., j : j + L] for j in range(3)) + m.short_conv.bias[:, None]
    q, k, v = zc.chunk(3, dim=1)
    # default: safari's regulariser order (smooth, then squash) and H3 / Hyena's skip (D on k * v),
    # i.e. H3's fftconv_h3_ref at head_dim 1
    K = _safari_long_conv_kernel(m.long.kernel, 0.01, 3)[:, :L]
    kv = k * v
    n = 2 * L
    conv = torch.fft.irfft(torch.fft.rfft(kv, n=n) / n * torch.fft.rfft(K, n=n), n=n, norm="forward")[..., :L]
    y = q * (conv + m.long.D[:, None] * kv)
    ref = y.transpose(1, 2) @ m.out_proj.weight.T + m.out_proj.bias
    out = m(x)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
    _grads_all(m, out.square().sum())
    # the former convention: skip="input" (D on v), reg_order="squash_smooth"
    mi = GatedLongConv(H, Lmax, squash_lambda=0.01, smooth_window=3, skip="input", reg_order="squash_smooth").double()
    mi.load_state_dict(m.state_dict())
    Ki = m.long.kernel.sign() * (m.long.kernel.abs() - 0.01).clamp(min=0)
    Ki = F.avg_pool1d(Ki[:, None], 3, 1, 1)[:, 0][:, :L]
    conv_i = torch.fft.irfft(torch.fft.rfft(kv, n=n) * torch.fft.rfft(Ki, n=n), n=n)[..., :L]
    ref_i = (q * (conv_i + m.long.D[:, None] * v)).transpose(1, 2) @ m.out_proj.weight.T + m.out_proj.bias
    torch.testing.assert_close(mi(x), ref_i, rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="skip"):
        GatedLongConv(H, Lmax, skip="D")


# ---------------------------------------------------------------- SequenceModel
@pytest.mark.parametrize("layer", ["s4d", "longconv", "gated"])
@pytest.mark.parametrize("pool", ["mean", "last", None])
def test_sequence_model_forward_backward(layer, pool):
    torch.manual_seed(0)
    m = SequenceModel(
        3,
        8,
        2,
        5,
        layer=layer,
        l_max=24,
        pool=pool,
        dropout=0.1,
        layer_kwargs=dict(d_state=8) if layer == "s4d" else None,
    )
    x = torch.randn(4, 24, 3)
    y = m(x)
    assert y.shape == ((4, 5) if pool else (4, 24, 5))
    _grads_all(m, y.square().mean())


@pytest.mark.parametrize("layer", ["s4d", "longconv"])
def test_sequence_model_overfits_tiny_batch(layer):
    torch.manual_seed(0)
    m = SequenceModel(
        2,
        16,
        1,
        3,
        layer=layer,
        l_max=32,
        pool="last",
        layer_kwargs=dict(d_state=8) if layer == "s4d" else dict(squash_lambda=0.0, kernel_init_std=0.02),
    )
    x, t = torch.randn(8, 32, 2), torch.randint(0, 3, (8,))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(m(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_sequence_model_bad_args():
    with pytest.raises(ValueError, match="l_max"):
        SequenceModel(1, 4, 1, 2, layer="longconv")
    with pytest.raises(ValueError, match="layer"):
        SequenceModel(1, 4, 1, 2, layer="lstm")


def test_sequence_model_torch_compile():
    torch.manual_seed(0)
    m = SequenceModel(2, 8, 1, 3, layer="s4d", layer_kwargs=dict(d_state=4))
    x = torch.randn(2, 16, 2)
    ref = m(x)
    t0 = time.time()
    cm = torch.compile(m, backend="aot_eager", fullgraph=False)
    out = cm(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert m.blocks[0].layer.log_dt.grad is not None
    assert time.time() - t0 < 120


def test_s4d_step_matches_conv_float32():
    torch.manual_seed(6)
    m = S4D(4, 16)
    x = torch.randn(2, 40, 4)
    state = m.default_state(2)
    assert state.dtype == torch.complex64
    with torch.no_grad():
        ys = []
        for t in range(40):
            y_t, state = m.step(x[:, t], state)
            ys.append(y_t)
        torch.testing.assert_close(torch.stack(ys, 1), m(x), rtol=1e-4, atol=1e-4)


def test_longconv_kernel_dropout_only_in_training():
    torch.manual_seed(7)
    m = LongConv(3, 16, squash_lambda=0.0, kernel_dropout=0.5).eval()
    torch.testing.assert_close(m.regularised_kernel(), m.kernel)
    m.train()
    k = m.regularised_kernel()
    assert (k == 0).any() and not torch.equal(k, m.kernel)


def test_training_helpers():
    from kernelfuse.models import KERNEL_PARAMS, SequenceModel, accuracy, param_groups

    torch.manual_seed(0)
    model = SequenceModel(1, 8, 1, 3, layer="s4d")
    groups = param_groups(model, 1e-3, 1e-4, 0.1)
    ker = {id(p) for p in groups[1]["params"]}
    named = dict(model.named_parameters())
    assert ker == {id(p) for n, p in named.items() if n.split(".")[-1] in KERNEL_PARAMS}
    assert groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 0.1
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(named)
    X = torch.randn(10, 5, 1)
    model.eval()
    with torch.no_grad():
        y = model(X).argmax(-1)
    model.train()
    assert accuracy(model, X, y, batch_size=3) == 1.0 and model.training
