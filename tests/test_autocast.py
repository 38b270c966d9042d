"""torch.autocast rules of every kernelfuse op (python/kernelfuse/ops/_autocast.py, docs/autocast.md)
and the modules built on them, under CPU autocast (bfloat16 and float16).

fftconv's mixed rule is tested in tests/test_longconv_mixed.py; here: the float32 rule of every
other op (half inputs -> float32, computed and returned in float32, bitwise equal to the call on
the upcast inputs; float64 untouched), through the public wrappers and torch.ops directly, with
opcheck and torch.compile, and a registry check that no forward op was left without a decision."""

import kernelfuse as kf
import pytest
import torch
from kernelfuse.ops import _autocast

ADTS = [torch.bfloat16, torch.float16]


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _cases():
    """name -> function of a cast c applied to fixed inputs (c makes them half, float32, ...)."""
    g = _g(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    spd = lambda n: torch.eye(n) + 0.1 * torch.ones(n, n)  # noqa: E731
    C = torch.randn(4, 3, dtype=torch.complex64, generator=g)
    x5, y7, w7, W38, b8 = r(5, 3), r(7, 3), r(7).abs(), r(3, 8), r(8)
    x6, x5b, gp = r(6), r(5), torch.tensor([[0.1, -0.3]])
    f3, f4, x12 = r(3, 3), r(4, 4), r(2, 12)
    s3, s4, y12 = spd(3), spd(4), r(12)
    ldt, Are, Aim = r(4) - 2, -r(4, 3).abs(), r(4, 3)
    xb, tw = r(2, 8), r(1, 3, 4, 2, 2)
    xm, w1, w2 = r(2, 16), r(4, 4, 4), r(4, 4, 4)
    signs = torch.sign(r(2, 3, 4))
    return {
        "kernel_sum": lambda c: kf.kernel_sum(c(x5), c(y7), c(w7), bandwidth=0.7),
        "kernel_logsumexp": lambda c: kf.kernel_logsumexp(c(x5), c(y7), None, bandwidth=c(torch.tensor(0.7))),
        "kernel_logsumexp_sq": lambda c: kf.ops.kde.kernel_logsumexp_sq(c(x5), c(y7), None, bandwidth=0.7),
        "grid_kernel": lambda c: kf.grid_kernel(c(x6), c(x5b), "rbf", c(gp)),
        "kron_matmul": lambda c: kf.kron_matmul([c(f3), c(f4)], c(x12)),
        "kron_gp_mll": lambda c: kf.kron_gp_mll([c(s3), c(s4)], c(y12), 0.1),
        "kron_posterior_var": lambda c: kf.kron_posterior([c(s3), c(s4)], c(y12), 0.1),
        "ssm_kernel": lambda c: kf.ssm_kernel(
            c(ldt), c(Are), c(Aim), None, C.to(torch.complex128) if c(ldt).dtype == torch.float64 else C, 10
        ),
        "butterfly_multiply": lambda c: kf.butterfly_multiply(c(xb), c(tw)),
        "monarch_multiply": lambda c: kf.monarch_multiply(c(xm), c(w1), c(w2)),
        "monarch_fft": lambda c: kf.monarch_fft(c(xm)),
        "fwht": lambda c: kf.fwht(c(xm)),
        "random_features": lambda c: kf.random_features(c(x5), c(W38), c(b8)),
        "structured_features": lambda c: kf.structured_features(c(x5), c(signs)),
    }


def _flat(out):
    return [out] if isinstance(out, torch.Tensor) else [t for t in out if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("adt", ADTS)
@pytest.mark.parametrize("name", sorted(_cases()))
def test_fp32_rule_through_the_wrappers(name, adt):
    f = _cases()[name]
    exp = _flat(f(lambda t: t.to(adt).float()))  # no autocast, float32 inputs holding half values
    with torch.autocast("cpu", dtype=adt):
        got = _flat(f(lambda t: t.to(adt)))  # half inputs, e.g. the output of an autocast Linear
        got32 = _flat(f(lambda t: t.to(adt).float()))
        got64 = _flat(f(lambda t: t.to(adt).double()))
    for a, b, c64 in zip(got, exp, got64):
        assert a.dtype == b.dtype and a.dtype in (torch.float32, torch.complex64), (name, a.dtype)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert c64.dtype in (torch.float64, torch.complex128), (name, c64.dtype)
    for a, b in zip(got32, exp):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # outside autocast half inputs are still an error (no silent upcast)
    with pytest.raises((TypeError, ValueError), match=r"dtype"):
        f(lambda t: t.to(adt))


def test_fp32_rule_on_torch_ops_directly():
    g = _g(2)
    x, y = torch.randn(5, 3, generator=g), torch.randn(7, 3, generator=g)
    h = torch.tensor(0.8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.ops.kernelfuse.kernel_sum(x.bfloat16(), y.bfloat16(), None, h, "gaussian", False)
        outk = torch.ops.kernelfuse.kron_matmul([torch.eye(3).bfloat16(), torch.eye(2)], torch.randn(4, 6), False)
    assert out.dtype == torch.float32 and outk.dtype == torch.float32
    exp = torch.ops.kernelfuse.kernel_sum(x.bfloat16().float(), y.bfloat16().float(), None, h, "gaussian", False)
    torch.testing.assert_close(out, exp, rtol=0, atol=0)


def test_gradients_reach_half_leaves_in_their_dtype():
    """Under autocast the upcast is part of the graph: a bf16 leaf gets a bf16 gradient."""
    g = _g(3)
    x = torch.randn(6, 16, generator=g).bfloat16().requires_grad_(True)
    tw = torch.randn(1, 4, 8, 2, 2, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = kf.butterfly_multiply(x, tw)
    y.sum().backward()
    assert x.grad.dtype == torch.bfloat16 and tw.grad.dtype == torch.float32


def test_every_forward_op_has_an_autocast_rule():
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("kernelfuse::")]
    fwd = sorted(n.split("::")[1] for n in names if not n.endswith("_bwd"))
    assert set(fwd) == set(_autocast.FP32_OPS) | set(_autocast.MIXED_OPS) | set(_autocast.NO_TENSOR_OPS), fwd
    for n in set(fwd) - set(_autocast.NO_TENSOR_OPS):
        for key in ("AutocastCPU", "AutocastCUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"kernelfuse::{n}", key), (n, key)


def test_opcheck_under_autocast():
    g = _g(4)
    x = torch.randn(5, 3, generator=g).bfloat16()
    y = torch.randn(7, 3, generator=g).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.library.opcheck(
            torch.ops.kernelfuse.kernel_sum, (x.requires_grad_(True), y, None, torch.tensor(0.9), "gaussian", False)
        )
        torch.library.opcheck(
            torch.ops.kernelfuse.monarch_multiply,
            (torch.randn(2, 16).bfloat16(), torch.randn(4, 4, 4), torch.randn(4, 4, 4)),
        )


def test_torch_compile_under_autocast():
    g = _g(5)
    x = torch.randn(6, 16, generator=g)
    w1, w2 = torch.randn(4, 4, 4, generator=g), torch.randn(4, 4, 4, generator=g)
    lin = torch.nn.Linear(16, 16)

    def f(x, w1, w2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = lin(x)  # bf16 under autocast
            y = kf.monarch_multiply(h, w1, w2)  # float32 rule
            s = kf.kernel_sum(h, h, None, bandwidth=2.0)  # float32 rule
        return y, s

    yc, sc = torch.compile(f, fullgraph=True, backend="aot_eager")(x, w1, w2)
    ye, se = f(x, w1, w2)
    assert yc.dtype == ye.dtype == torch.float32 and sc.dtype == torch.float32
    torch.testing.assert_close(yc, ye, rtol=0, atol=0)
    torch.testing.assert_close(sc, se, rtol=0, atol=0)


# ------------------------------------------------------------------ modules under autocast
def _close(a, b, adt, factor=8.0):
    tol = {torch.bfloat16: (2e-2, 1e-2), torch.float16: (1e-2, 1e-3)}[adt]
    torch.testing.assert_close(
        a.float(), b.float(), rtol=tol[0] * factor, atol=tol[1] * factor * max(1.0, b.abs().max().item())
    )


@pytest.mark.parametrize("adt", ADTS)
def test_modules_under_autocast(adt):
    """Each module runs under CPU autocast, close to its float32 output (a Linear in front makes the
    op inputs half, as in a real model); parameter gradients in the parameters' dtype."""
    torch.manual_seed(0)
    x = torch.randn(3, 32, 16)
    mods = {
        "ButterflyLinear": torch.nn.Sequential(torch.nn.Linear(16, 16), kf.nn.ButterflyLinear(16, 12)),
        "MonarchLinear": torch.nn.Sequential(torch.nn.Linear(16, 16), kf.nn.MonarchLinear(16, 20, nblocks=4)),
        "SNNKLinear": torch.nn.Sequential(torch.nn.Linear(16, 16), kf.nn.SNNKLinear(16, 8, seed=0)),
        "SequenceModel-s4d": kf.models.SequenceModel(16, 8, 2, 3, layer="s4d", l_max=32),
        "SequenceModel-gated": kf.models.SequenceModel(16, 8, 1, 3, layer="gated", l_max=32),
    }
    for name, m in mods.items():
        m.eval()
        y32 = m(x)
        with torch.autocast("cpu", dtype=adt):
            y = m(x)
        assert torch.isfinite(y.float()).all(), name
        _close(y, y32, adt, factor=16.0 if "Sequence" in name else 8.0)
        m.zero_grad()
        y.float().sum().backward()
        for pn, p in m.named_parameters():
            assert p.grad is None or p.grad.dtype == p.dtype, (name, pn)
    fa = kf.nn.FavorAttention(8, 64, seed=0).eval()
    q, k, v = (torch.randn(2, 10, 8) * 0.3 for _ in range(3))
    y32 = fa(q, k, v)
    with torch.autocast("cpu", dtype=adt):
        y = fa(q.to(adt), k.to(adt), v.to(adt))
    _close(y, y32, adt, factor=8.0)
