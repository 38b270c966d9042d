"""Random features: fwht vs the dense Hadamard matrix, the fused maps vs the float64 reference
(awkward sizes), kernel-approximation statistics (1/sqrt(D) decay, orthogonal < iid, sklearn
RBFSampler equivalence), gradcheck, opcheck, torch.compile, the models, bad inputs."""

import functools
import math

import kernelfuse as kf
import numpy as np
import pytest
import torch
from conftest import assert_close_to_ref as _close
from kernelfuse.features import RandomFeatures, exact_kernel
from kernelfuse.reference import features as ref
from kf_inputs import structured_inputs as _sf_inputs

KINDS = ["cos", "cos_sin", "positive", "relu", "step"]


# ------------------------------------------------------------------ fwht
@functools.lru_cache(maxsize=None)
def _hadamard(n):
    from scipy.linalg import hadamard

    return torch.tensor(hadamard(n, dtype=np.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("normalized", [True, False])
def test_fwht_matches_dense_hadamard(dtype, normalized):
    g = torch.Generator().manual_seed(0)
    for k in range(13):
        n = 1 << k
        H = _hadamard(n) / (math.sqrt(n) if normalized else 1.0)
        for shape in [(3,), (2, 5), (1,), ()] if k < 10 else [(2,)]:
            x = torch.randn(*shape, n, generator=g, dtype=torch.float64)
            out = kf.fwht(x.to(dtype), normalized=normalized)
            assert out.shape == x.shape and out.dtype == dtype
            expected = x.to(dtype).double() @ H
            _close(out, expected, dtype, atol_scale=math.sqrt(n) * (1 if normalized else math.sqrt(n)) * 4)


@pytest.mark.parametrize("n", [1 << 13, 1 << 14, 1 << 16])
def test_fwht_long_rows_and_reference(n):
    x = torch.randn(3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(kf.fwht(x), ref.fwht(x))
    torch.testing.assert_close(kf.fwht(kf.fwht(x)), x)  # orthonormal and symmetric: an involution
    xf = x.float()
    _close(kf.fwht(xf), ref.fwht(x), torch.float32, atol_scale=8.0)


def test_fwht_empty_noncontiguous_and_grad():
    assert kf.fwht(torch.zeros(0, 8)).shape == (0, 8)
    x = torch.randn(16, 6, dtype=torch.float64).T  # non-contiguous (6, 16)
    torch.testing.assert_close(kf.fwht(x), ref.fwht(x.contiguous()))
    xr = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: kf.fwht(t), (xr,))
    assert torch.autograd.gradcheck(lambda t: kf.fwht(t, normalized=False), (xr,))


def test_fwht_bad_inputs():
    with pytest.raises(ValueError, match=r"'x'.*power of two, got size 12"):
        kf.fwht(torch.randn(4, 12))
    with pytest.raises(ValueError, match="'x'.*power of two, got size 0"):
        kf.fwht(torch.randn(4, 0))
    with pytest.raises(ValueError, match="'x'.*dtype"):
        torch.ops.kernelfuse.fwht(torch.ones(4, 8, dtype=torch.int64), True)
    with pytest.raises(TypeError, match="'x'"):
        kf.fwht([1.0, 2.0])


# ------------------------------------------------------------------ random_features vs reference
def _rf_inputs(N, d, D, dtype, bias, seed=0, xscale=0.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, d, generator=g, dtype=torch.float64) * xscale
    W = torch.randn(d, D, generator=g, dtype=torch.float64)
    b = torch.rand(D, generator=g, dtype=torch.float64) * 2 * math.pi if bias else None
    cv = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cv(x), cv(W), cv(b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", KINDS)
def test_random_features_matches_reference(kind, dtype):
    for N, d, D in [
        (0, 3, 5),
        (1, 1, 1),
        (7, 13, 17),
        (50, 7, 33),
        (13, 31, 64),
        (97, 128, 100),
        (8, 300, 40),
        (13, 600, 17),
    ]:
        for bias in (False, True):
            x, W, b = _rf_inputs(N, d, D, dtype, bias, seed=N + d + D)
            out = kf.random_features(x, W, b, kind=kind)
            expected = ref.random_features(x.double(), W.double(), None if b is None else b.double(), kind=kind)
            assert out.shape == (N, 2 * D if kind == "cos_sin" else D)
            if kind == "step" and dtype == torch.float32:  # sign decisions near z = 0 may flip
                z = x.double() @ W.double() + (0 if b is None else b.double())
                mask = z.abs() > 1e-4
                _close(out.double()[mask], expected[mask], dtype)
            else:  # float32: the GEMM's rounding of z grows with sum_k |x_k W_kj|
                zabs = (x.double().abs() @ W.double().abs()).max().item() if N else 0.0
                amax = max(1.0, expected.abs().max().item()) if N else 1.0
                _close(out, expected, dtype, atol_scale=amax * max(1.0, zabs / 4))


@pytest.mark.parametrize("stabilize", ["row", "global", "none"])
def test_positive_stabilizers(stabilize):
    x, W, _ = _rf_inputs(23, 9, 40, torch.float64, False, xscale=1.0)
    out = kf.random_features(x, W, kind="positive", stabilize=stabilize, scale=0.3)
    torch.testing.assert_close(out, ref.random_features(x, W, kind="positive", stabilize=stabilize, scale=0.3))
    if stabilize == "row":
        assert torch.allclose(
            out.max(dim=1).values * torch.exp((x * x).sum(1) / 2), torch.full((23,), 0.3, dtype=torch.float64)
        )
    # batch dims pass through
    xb = x.reshape(23, 1, 9).expand(23, 2, 9)
    assert kf.random_features(xb, W, kind="positive", stabilize=stabilize).shape == (23, 2, 40)


def test_cos_accuracy_float32_large_arguments():
    # float32 cos/sin of the same float32 pre-activations within ~2e-7 absolute (range reduction)
    z = torch.linspace(-3000, 3000, 100003, dtype=torch.float32)
    x = z[:, None]
    W = torch.ones(1, 1)
    out = kf.random_features(x, W, kind="cos_sin", scale=1.0)
    zd = z.double()
    err = (out.double() - torch.cat((zd.cos()[:, None], zd.sin()[:, None]), 1)).abs().max().item()
    assert err < 3e-7


@pytest.mark.parametrize("kind", ["cos", "cos_sin", "positive", "relu"])
def test_random_features_gradcheck(kind):
    x, W, b = _rf_inputs(5, 3, 7, torch.float64, kind != "positive", seed=3)
    x.requires_grad_(True)
    W.requires_grad_(True)
    args = (x, W) if b is None else (x, W, b.requires_grad_(True))
    for stab in ["row", "global", "none"] if kind == "positive" else ["row"]:
        assert torch.autograd.gradcheck(lambda *a: kf.random_features(*a, kind=kind, stabilize=stab, scale=0.7), args)


def test_step_gradient_is_zero():
    x, W, b = _rf_inputs(4, 3, 5, torch.float64, True)
    x.requires_grad_(True)
    kf.random_features(x, W, b, kind="step").sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


# ------------------------------------------------------------------ structured_features
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("block", ["sorf", "fastfood"])
@pytest.mark.parametrize("kind", KINDS)
def test_structured_features_matches_reference(kind, block, dtype):
    for N, d, nb, D in [(0, 3, 1, 4), (1, 1, 2, 2), (9, 7, 3, 20), (31, 13, 2, 32), (5, 64, 2, 100)]:
        signs, perm, P = _sf_inputs(d, nb, block, seed=d + D, dtype=dtype)
        g = torch.Generator().manual_seed(N)
        x = (torch.randn(N, d, generator=g, dtype=torch.float64) * 0.3).to(dtype)
        b = (torch.rand(D, generator=g, dtype=torch.float64) * 6).to(dtype) if kind == "cos" else None
        out = kf.structured_features(x, signs, kind=kind, block=block, perm=perm, b=b, n_features=D)
        expected = ref.structured_features(
            x.double(),
            signs.double(),
            kind=kind,
            block=block,
            perm=perm,
            b=None if b is None else b.double(),
            n_features=D,
        )
        assert out.shape == (N, 2 * D if kind == "cos_sin" else D)
        if kind == "step" and dtype == torch.float32:
            continue  # sign decisions at z ~ 0 differ; the float64 case covers the map
        _close(out, expected, dtype)


@pytest.mark.parametrize("block", ["sorf", "fastfood"])
@pytest.mark.parametrize("kind", ["cos", "cos_sin", "positive", "relu"])
def test_structured_features_gradcheck(kind, block):
    signs, perm, P = _sf_inputs(5, 2, block, seed=4)
    x = (torch.randn(3, 5, dtype=torch.float64) * 0.3).requires_grad_(True)
    b = torch.rand(13, dtype=torch.float64).requires_grad_(True) if kind == "cos" else None
    fn = lambda x, b=None: kf.structured_features(
        x,
        signs,
        kind=kind,
        block=block,
        perm=perm,
        b=b,  # noqa: E731
        n_features=13,
        scale=0.5,
    )
    assert torch.autograd.gradcheck(fn, (x,) if b is None else (x, b))


# ------------------------------------------------------------------ opcheck / compile
def test_opcheck():
    x, W, b = _rf_inputs(6, 5, 9, torch.float64, True)
    torch.library.opcheck(torch.ops.kernelfuse.fwht.default, (torch.randn(3, 16, dtype=torch.float64), True))
    for kind in ("positive",):
        torch.library.opcheck(
            torch.ops.kernelfuse.random_features.default,
            (x.clone().requires_grad_(True), W.clone().requires_grad_(True), b, kind, 0.5, "row"),
        )
    signs, perm, P = _sf_inputs(5, 2, "fastfood")
    torch.library.opcheck(
        torch.ops.kernelfuse.structured_features.default,
        (x.clone().requires_grad_(True), signs, perm, None, 11, "cos_sin", "fastfood", 0.5, "row"),
    )


def test_torch_compile_fullgraph():
    x, W, b = _rf_inputs(8, 5, 12, torch.float32, True)
    signs, _, _ = _sf_inputs(5, 2, "sorf", dtype=torch.float32)

    def f(x, W, b):
        return (
            kf.random_features(x, W, b, kind="cos").sum(-1)
            + kf.fwht(x[:, :4]).sum(-1)
            + kf.structured_features(x, signs, kind="relu", n_features=10).sum(-1)
        )

    torch._dynamo.reset()
    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(cf(x, W, b), f(x, W, b))
    # forward + backward through the compiled graph
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    cf(xa, W, b).sum().backward()
    f(xb, W, b).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)


# ------------------------------------------------------------------ kernel approximation statistics
def _data(n=300, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    med = torch.cdist(X, X).median().item()
    return X, med


def _rel_err(rf, X, kernel, ls):
    phi = rf(X).double()
    K = exact_kernel(kernel, X, X, lengthscale=ls)
    return ((phi @ phi.T - K).norm() / K.norm()).item()


def test_error_decays_like_inverse_sqrt_D():
    X, med = _data()
    errs = []
    for D in (128, 512, 2048):
        errs.append(
            np.mean(
                [
                    _rel_err(RandomFeatures(8, D, lengthscale=med, seed=s, dtype=torch.float64), X, "gaussian", med)
                    for s in range(4)
                ]
            )
        )
    # each 4x in D halves the error (1/sqrt(D)); allow sampling noise
    assert 1.5 < errs[0] / errs[1] < 2.7 and 1.5 < errs[1] / errs[2] < 2.7, errs


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "cauchy", "arccos0", "arccos1", "softmax"])
def test_every_kernel_is_approximated(kernel):
    X, med = _data(n=120, d=6, seed=1)
    ls = med if kernel not in ("softmax",) else 3.0
    err = np.mean(
        [
            _rel_err(RandomFeatures(6, 4096, kernel=kernel, lengthscale=ls, seed=s, dtype=torch.float64), X, kernel, ls)
            for s in range(2)
        ]
    )
    assert err < 0.1, err


@pytest.mark.parametrize("method", ["orf", "sorf", "fastfood"])
def test_orthogonal_methods_beat_iid(method):
    X, med = _data(n=200, d=16, seed=2)
    D = 64  # pairs: 32 frequencies = 2 blocks of 16
    e = {
        m: np.mean(
            [
                _rel_err(
                    RandomFeatures(16, D, method=m, lengthscale=med, seed=s, pairs=True, dtype=torch.float64),
                    X,
                    "gaussian",
                    med,
                )
                for s in range(8)
            ]
        )
        for m in ("rff", method)
    }
    if method == "fastfood":  # Fastfood is unbiased with variance close to iid; not required to win
        assert e[method] < 1.3 * e["rff"], e
    else:
        assert e[method] < 0.85 * e["rff"], e


def test_rff_matches_sklearn_rbfsampler_statistically():
    from sklearn.kernel_approximation import RBFSampler

    X, med = _data(n=200, d=10, seed=3)
    gamma = 1.0 / (2 * med**2)
    Xn = X.numpy()
    K = exact_kernel("gaussian", X, X, lengthscale=med).numpy()
    ours, theirs = [], []
    for s in range(10):
        P = RandomFeatures.rbf_sampler(gamma=gamma, n_components=256, random_state=s, dtype=torch.float64)
        Z = P.fit_transform(Xn)
        assert isinstance(Z, np.ndarray) and Z.shape == (200, 256)
        ours.append(np.linalg.norm(Z @ Z.T - K) / np.linalg.norm(K))
        S = RBFSampler(gamma=gamma, n_components=256, random_state=s).fit(Xn)
        Zs = S.transform(Xn)
        theirs.append(np.linalg.norm(Zs @ Zs.T - K) / np.linalg.norm(K))
    assert abs(np.mean(ours) - np.mean(theirs)) < 0.2 * np.mean(theirs), (np.mean(ours), np.mean(theirs))
    # the same map: feeding sklearn's own draws reproduces its transform
    S = RBFSampler(gamma=gamma, n_components=64, random_state=0).fit(Xn)
    W = torch.as_tensor(S.random_weights_)
    b = torch.as_tensor(S.random_offset_)
    np.testing.assert_allclose(kf.random_features(X, W, b, kind="cos").numpy(), S.transform(Xn), rtol=1e-10, atol=1e-12)


def test_random_features_module_api():
    rf = RandomFeatures(5, 40, seed=0)
    p = rf.get_params()
    assert p["n_features"] == 40 and p["kernel"] == "gaussian"
    x = torch.randn(3, 5)
    y1 = rf(x)
    rf.redraw()
    assert not torch.allclose(y1, rf(x))
    rf2 = RandomFeatures(5, 40, seed=0)
    torch.testing.assert_close(rf2(x), y1)  # seeded: reproducible
    rf.set_params(n_features=10)
    assert rf(x).shape == (3, 10)
    xr = x.clone().requires_grad_(True)
    rf(xr).sum().backward()
    assert xr.grad is not None and torch.isfinite(xr.grad).all()
    for m in ("orf", "sorf", "fastfood"):
        assert RandomFeatures(5, 37, method=m, seed=1)(x).shape == (3, 37)


def test_models_bad_inputs():
    with pytest.raises(ValueError, match="'kernel'"):
        RandomFeatures(3, 10, kernel="rbf")
    with pytest.raises(ValueError, match="'method'"):
        RandomFeatures(3, 10, kernel="laplacian", method="sorf")
    with pytest.raises(ValueError, match="'pairs'"):
        RandomFeatures(3, 11, pairs=True)
    with pytest.raises(ValueError, match="'x'"):
        RandomFeatures(3, 10)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="'kind'"):
        exact_kernel("rbf", torch.randn(2, 3), torch.randn(2, 3))


# ------------------------------------------------------------------ bad inputs of the ops
def test_random_features_bad_inputs():
    x, W, b = _rf_inputs(4, 3, 5, torch.float32, True)
    with pytest.raises(ValueError, match=r"'W'.*expected 3 rows"):
        kf.random_features(x, W[:2])
    with pytest.raises(ValueError, match=r"'b'.*expected shape \(5,\)"):
        kf.random_features(x, W, b[:3])
    with pytest.raises(ValueError, match="'W'.*dtype"):
        kf.random_features(x, W.double())
    with pytest.raises(ValueError, match="'kind'"):
        kf.random_features(x, W, kind="sin")
    with pytest.raises(ValueError, match="'scale'"):
        kf.random_features(x, W, scale=-1.0)
    with pytest.raises(ValueError, match="'stabilize'"):
        kf.random_features(x, W, kind="positive", stabilize="col")
    signs, perm, P = _sf_inputs(3, 2, "fastfood", dtype=torch.float32)
    with pytest.raises(ValueError, match="'signs'.*power of two"):
        kf.structured_features(torch.randn(2, 5), signs)
    with pytest.raises(ValueError, match="'perm'"):
        kf.structured_features(x, signs, block="fastfood")
    with pytest.raises(ValueError, match="'n_features'"):
        kf.structured_features(x, signs, n_features=100)
    with pytest.raises(ValueError, match="'block'"):
        kf.structured_features(x, signs, block="dct")
    with pytest.raises(ValueError, match="'perm'.*values"):
        kf.structured_features(x, signs, block="fastfood", perm=perm + 10)


# ------------------------------------------------------------------ SNNK, FAVOR+, private KDE
def test_snnk_tied_softmax_is_unbiased():
    layer = kf.nn.SNNKLinear(6, 3, activation="softmax", n_features=20000, seed=0, dtype=torch.float64)
    # seeded input: a Monte-Carlo estimate with an unseeded input fails now and then (8.6% seen)
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.4
    with torch.no_grad():
        exact = torch.exp(x @ layer.weight.T + layer.bias)
        rel = (layer(x) - exact).abs() / exact
        assert rel.max() < 0.05 and rel.mean() < 0.02, rel
    layer(x).sum().backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


def test_snnk_learned_params_and_bad_inputs():
    layer = kf.nn.SNNKLinear(64, 32, activation="relu", n_features=16, seed=0)
    n_params = sum(p.numel() for p in layer.parameters())
    assert n_params == 16 * 32 + 32 < 64 * 32 + 32
    assert layer(torch.randn(5, 64)).shape == (5, 32)
    for act in ("gelu", "tanh", "sigmoid", "step", "exp"):
        assert kf.nn.SNNKLinear(8, 4, activation=act, n_features=8, seed=1)(torch.randn(2, 8)).shape == (2, 4)
    with pytest.raises(ValueError, match="'activation'"):
        kf.nn.SNNKLinear(4, 4, activation="swish9")


def _softmax_attention(q, k, v, causal):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        L = q.shape[-2]
        s = s.masked_fill(torch.triu(torch.ones(L, L, dtype=torch.bool), 1), float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("causal", [False, True])
def test_favor_attention_vs_exact_softmax_and_reference(causal):
    from kernelfuse.nn.features import favor_attention, favor_attention_reference

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 8, generator=g, dtype=torch.float64) * 0.5 for _ in range(3))
    att = kf.nn.FavorAttention(8, n_features=8192, causal=causal, seed=0, chunk_size=16, dtype=torch.float64).eval()
    out = att(q, k, v)
    exact = _softmax_attention(q, k, v, causal)
    assert ((out - exact).norm() / exact.norm()).item() < 0.05
    qf, kf_ = att.feature_maps(q, k)  # fixed features: the chunked prefix sums equal the quadratic form
    torch.testing.assert_close(
        favor_attention(qf, kf_, v, causal=causal, chunk_size=5, eps=0.0),
        favor_attention_reference(qf, kf_, v, causal=causal),
    )
    qr = q.clone().requires_grad_(True)
    att(qr, k, v).sum().backward()
    assert torch.isfinite(qr.grad).all()


def _performer_favor(q, k, v, omega, causal):
    """Performer's FAVOR+ (positive features), transcribed: x' = x d^(-1/4), phi(x) =
    exp(w.x' - |x'|^2/2 - stab) / sqrt(m); queries stabilised by their own max over the features,
    keys by the max over features and sequence of their (batch, head); non-causal
    phi(q) (phi(k)^T v) / (phi(q) . sum_j phi(k_j)), causal with prefix sums; no eps."""
    d, m = q.shape[-1], omega.shape[1]
    xq, xk = q * d**-0.25, k * d**-0.25
    wq, wk = xq @ omega, xk @ omega
    pq = torch.exp(wq - (xq**2).sum(-1, keepdim=True) / 2 - wq.amax(-1, keepdim=True)) / math.sqrt(m)
    pk = torch.exp(wk - (xk**2).sum(-1, keepdim=True) / 2 - wk.amax((-1, -2), keepdim=True)) / math.sqrt(m)
    if not causal:
        return (pq @ (pk.transpose(-1, -2) @ v)) / (pq @ pk.sum(-2)[..., None])
    kv = torch.cumsum(pk[..., :, :, None] * v[..., :, None, :], dim=-3)  # (..., L, m, e)
    num = torch.einsum("...lm,...lme->...le", pq, kv)
    den = torch.einsum("...lm,...lm->...l", pq, torch.cumsum(pk, dim=-2))
    return num / den[..., None]


@pytest.mark.parametrize("causal", [False, True])
def test_favor_attention_matches_performer_formula(causal):
    g = torch.Generator().manual_seed(3)
    d = 32
    q, k, v = (torch.randn(2, 3, 45, d, generator=g, dtype=torch.float64) for _ in range(3))
    att = kf.nn.FavorAttention(
        d, n_features=64, causal=causal, seed=1, chunk_size=16, eps=0.0, dtype=torch.float64
    ).eval()
    exp = _performer_favor(q, k, v, att.omega, causal)
    torch.testing.assert_close(att(q, k, v), exp, rtol=1e-9, atol=1e-11)
    att.eps = 1e-6  # the default, relative: moves the output by ~1e-5 (the absolute 1e-6: by 46-100%)
    rel = ((att(q, k, v) - exp).norm() / exp.norm()).item()
    assert rel < 1e-3, rel


@pytest.mark.parametrize("causal", [False, True])
def test_favor_attention_rows_independent_of_the_batch(causal):
    """A (batch, head) slice's output does not depend on the other slices (stabilisers per slice)."""
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(3, 2, 40, 32, generator=g) for _ in range(3))
    att = kf.nn.FavorAttention(32, n_features=128, causal=causal, seed=0, chunk_size=16).eval()
    out = att(q, k, v)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[1:] *= 1.5
    k2[1:] *= 1.5
    k2[0, 1] *= 2.0  # another head of row 0
    v2[1:] *= 1.5
    out2 = att(q2, k2, v2)
    torch.testing.assert_close(out2[0, 0], out[0, 0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(att(q[:1, :1], k[:1, :1], v[:1, :1])[0, 0], out[0, 0], rtol=1e-6, atol=1e-7)


def test_favor_attention_eps_is_relative():
    """Scaling the features (what the stabilisers do) leaves the eps > 0 output unchanged."""
    from kernelfuse.nn.features import favor_attention

    g = torch.Generator().manual_seed(5)
    qf, kf_ = (torch.rand(2, 30, 16, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 30, 4, generator=g, dtype=torch.float64)
    for causal in (False, True):
        base = favor_attention(qf, kf_, v, causal=causal, chunk_size=7, eps=1e-3)
        for sq, sk in ((1e-8, 1.0), (1.0, 1e-9), (1e5, 1e-7)):
            torch.testing.assert_close(
                favor_attention(qf * sq, kf_ * sk, v, causal=causal, chunk_size=7, eps=1e-3),
                base,
                rtol=1e-10,
                atol=1e-12,
            )
        # all features zero: 0, not NaN
        assert torch.equal(favor_attention(qf * 0, kf_, v, causal=causal, eps=0.0), torch.zeros_like(base))


def test_favor_redraw_interval():
    att = kf.nn.FavorAttention(4, n_features=16, redraw_interval=2, seed=0).train()
    x = torch.randn(1, 5, 4)
    w0 = att.omega.clone()
    att(x, x, x)
    att(x, x, x)
    assert torch.equal(att.omega, w0)
    att(x, x, x)  # third call: redrawn
    assert not torch.equal(att.omega, w0)
    with pytest.raises(ValueError, match="'q', 'k'"):
        att(torch.randn(1, 5, 3), x, x)


def test_discrete_samplers_distribution():
    import random
    from fractions import Fraction

    from kernelfuse.kde._private import sample_discrete_gaussian, sample_discrete_laplace

    rng = random.Random(0)
    lap = np.array([sample_discrete_laplace(Fraction(3), rng) for _ in range(4000)])
    gau = np.array([sample_discrete_gaussian(Fraction(9), rng) for _ in range(4000)])
    # discrete Laplace scale t: variance 2 e^{-1/t} / (1 - e^{-1/t})^2 ~ 17.5 for t = 3
    r = math.exp(-1 / 3)
    assert abs(lap.mean()) < 0.25 and abs(lap.var() / (2 * r / (1 - r) ** 2) - 1) < 0.12
    assert abs(gau.mean()) < 0.15 and abs(gau.var() / 9 - 1) < 0.1
    assert lap.dtype.kind == "i" and gau.dtype.kind == "i"


@pytest.mark.parametrize("delta", [0.0, 1e-6])
def test_private_kde_error_shrinks_with_epsilon(delta):
    from kernelfuse.kde import PrivateKernelDensity
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer().data
    X = (X - X.mean(0)) / X.std(0)
    Xt = torch.tensor(X)
    ls = torch.cdist(Xt, Xt).median().item()
    truth = exact_kernel("gaussian", Xt[:100], Xt, lengthscale=ls).mean(1)
    errs = []
    for eps in (0.05, 50.0):
        e = []
        for s in range(3):
            p = PrivateKernelDensity(eps, delta=delta, radius=20.0, n_features=128, lengthscale=ls, seed=s).fit(X)
            e.append((p.kernel_mean(Xt[:100]) - truth).abs().mean().item())
        errs.append(np.mean(e))
        assert np.mean(e) < 3 * p.error_bound() + 0.1  # noise bound + random-feature error
    assert errs[1] < errs[0] and errs[1] < 0.05, errs
    lp = p.score_samples(X[:3])
    assert lp.shape == (3,) and np.isfinite(lp).all()
    with pytest.raises(ValueError, match="'epsilon'"):
        PrivateKernelDensity(0.0, radius=1.0)
    with pytest.raises(ValueError, match="'Y'"):
        p.kernel_mean(np.zeros((2, 3)))


def test_regression_zero_input_dim_cpu():
    # d = 0: the glue's x.reshape({-1, d}) threw "cannot reshape tensor of 0 elements"; z = b then.
    x = torch.zeros(3, 0, dtype=torch.float64)
    W = torch.zeros(0, 5, dtype=torch.float64)
    b = torch.rand(5, dtype=torch.float64)
    out = torch.ops.kernelfuse.random_features(x, W, b, "cos", 1.0, "row")
    torch.testing.assert_close(out, torch.cos(b).expand(3, 5))
