"""Issue 13 (reliability) for the random-feature ops (fwht, random_features, structured_features and
their *_bwd raw ops) and ssm_kernel (+ bwd): one regression test per repro of the issue, then a
property-style sweep over bad and odd inputs (deterministic enumeration): every case ends in a
clear error naming an argument or a result equal to the float64 reference, never a wrong answer.
"""

import itertools
import math

import kernelfuse as kf
import pytest
import torch
from kernelfuse.reference import features as rf_ref
from kernelfuse.reference import longconv_ssm as ssm_ref
from kf_inputs import structured_inputs
from kf_reliability import Counts, poison, run

ops = torch.ops.kernelfuse
F64 = torch.float64


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _rf_args(N=5, d=3, D=7, seed=0):
    g = _g(seed)
    return (
        torch.randn(N, d, generator=g, dtype=F64) * 0.5,
        torch.randn(d, D, generator=g, dtype=F64),
        torch.rand(D, generator=g, dtype=F64) * 6,
    )


def _ssm_args(H=3, N=4, seed=0):
    g = _g(seed)
    log_dt = torch.log(torch.rand(H, generator=g, dtype=F64) * 0.09 + 0.01)
    A_real = -0.5 * torch.ones(H, N, dtype=F64) + 0.1 * torch.rand(H, N, generator=g, dtype=F64)
    A_imag = math.pi * torch.arange(N, dtype=F64).expand(H, N).clone()
    B = torch.randn(H, N, generator=g, dtype=torch.complex128)
    C = torch.randn(H, N, generator=g, dtype=torch.complex128)
    return log_dt, A_real, A_imag, B, C


# ====================================================================== regression tests (the repros)
def test_repro1_meta_mixed_with_cpu_public():
    with pytest.raises(ValueError, match=r"argument 'W'.*meta"):
        kf.random_features(torch.randn(5, 3), torch.randn(3, 7, device="meta"))
    signs, perm, _ = structured_inputs(3, 2, "fastfood")
    with pytest.raises(ValueError, match=r"argument 'perm'.*meta"):
        kf.structured_features(torch.randn(5, 3, dtype=F64), signs, block="fastfood", perm=perm.to("meta"))
    log_dt, Ar, Ai, B, C = _ssm_args()
    with pytest.raises(ValueError, match=r"argument 'C'.*meta"):
        kf.ssm_kernel(log_dt, Ar, Ai, B, C.to("meta"), 10)


def _raw_calls():
    """(name, tensor argument names, args) of every raw op, float64 CPU."""
    x, W, b = _rf_args()
    out = ops.random_features(x, W, b, "cos", 0.7, "row")
    signs, perm, _ = structured_inputs(3, 2, "fastfood")
    sout = ops.structured_features(x, signs, perm, b, 7, "cos", "fastfood", 0.7, "row")
    log_dt, Ar, Ai, B, C = _ssm_args()
    Bv, Cv = torch.view_as_real(B), torch.view_as_real(C)
    return [
        ("fwht", ["x"], [torch.randn(3, 8, dtype=F64), True]),
        ("random_features", ["x", "W", "b"], [x, W, b, "cos", 0.7, "row"]),
        (
            "random_features_bwd",
            ["grad", "out", "x", "W", "b"],
            [torch.ones_like(out), out, x, W, b, "cos", 0.7, "row", True, True, True],
        ),
        ("structured_features", ["x", "signs", "perm", "b"], [x, signs, perm, b, 7, "cos", "fastfood", 0.7, "row"]),
        (
            "structured_features_bwd",
            ["grad", "out", "x", "signs", "perm", "b"],
            [torch.ones_like(sout), sout, x, signs, perm, b, 7, "cos", "fastfood", 0.7, "row", True, True],
        ),
        ("ssm_kernel", ["log_dt", "A_real", "A_imag", "B", "C"], [log_dt, Ar, Ai, Bv, Cv, 10, "zoh"]),
        (
            "ssm_kernel_bwd",
            ["grad", "log_dt", "A_real", "A_imag", "B", "C"],
            [torch.ones(3, 10, dtype=F64), log_dt, Ar, Ai, Bv, Cv, "zoh"],
        ),
    ]


def test_repro1_meta_in_every_position_of_every_raw_op():
    for name, tnames, args in _raw_calls():
        tpos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        assert len(tpos) == len(tnames)
        for i, an in zip(tpos, tnames):
            a = list(args)
            a[i] = a[i].to("meta")
            if len(tpos) == 1:  # all meta: the fake kernel's shape
                assert getattr(ops, name)(*a).device.type == "meta"
                continue
            with pytest.raises(ValueError, match=rf"argument '{an}'.*meta"):
                getattr(ops, name)(*a)
        # every tensor on meta: a correctly shaped meta result
        a = [t.to("meta") if isinstance(t, torch.Tensor) else t for t in args]
        res = getattr(ops, name)(*a)
        real = getattr(ops, name)(*args)
        for r, e in zip(res if isinstance(res, tuple) else (res,), real if isinstance(real, tuple) else (real,)):
            assert r.device.type == "meta" and r.shape == e.shape and r.stride() == e.stride(), name


def test_repro5_empty_inputs_forward_and_backward():
    x = torch.randn(5, 0, dtype=F64, requires_grad=True)
    W = torch.randn(0, 7, dtype=F64, requires_grad=True)
    b = torch.rand(7, dtype=F64, requires_grad=True)
    out = kf.random_features(x, W, b)
    torch.testing.assert_close(out, rf_ref.random_features(x, W, b))
    out.sum().backward()
    assert x.grad.shape == (5, 0) and W.grad.shape == (0, 7)
    torch.testing.assert_close(b.grad, (-math.sqrt(2 / 7) * torch.sin(b) * 5).detach())
    assert kf.random_features(torch.randn(5, 0), torch.randn(0, 7)).shape == (5, 7)
    # structured with d = 0 (P = 1), no rows, no features
    signs = torch.ones(2, 3, 1, dtype=F64)
    x0 = torch.randn(4, 0, dtype=F64, requires_grad=True)
    out = kf.structured_features(x0, signs, kind="relu")
    torch.testing.assert_close(out, rf_ref.structured_features(x0, signs, kind="relu"))
    out.sum().backward()
    assert x0.grad.shape == (4, 0)
    signs, perm, _ = structured_inputs(3, 2, "sorf")
    xe = torch.randn(0, 3, dtype=F64, requires_grad=True)
    out = kf.structured_features(xe, signs)
    assert out.shape == (0, 8)
    out.sum().backward()
    assert xe.grad.shape == (0, 3)
    assert kf.structured_features(torch.randn(2, 3, dtype=F64), signs, n_features=0).shape == (2, 0)
    xf = torch.zeros(0, 4, 8, requires_grad=True)
    kf.fwht(xf).sum().backward()
    assert xf.grad.shape == (0, 4, 8)
    a = [t.clone().requires_grad_(True) for t in _ssm_args(H=0, N=3)]
    k = kf.ssm_kernel(*a, 5)
    assert k.shape == (0, 5)
    k.sum().backward()
    assert all(t.grad.shape == t.shape for t in a)


def _fake_strides_match(op, args):
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = op(*args)
    with FakeTensorMode() as m:
        fa = [m.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fake = op(*fa)
    for r, f in zip(real if isinstance(real, tuple) else (real,), fake if isinstance(fake, tuple) else (fake,)):
        assert r.shape == f.shape and r.stride() == f.stride(), (op, r.stride(), f.stride())


def test_repro7_fake_kernels_match_real_strides_and_opcheck():
    xt = torch.randn(32, 8, dtype=F64).t()  # (8, 32) transposed
    _fake_strides_match(ops.fwht, (xt, True))
    torch.library.opcheck(ops.fwht.default, (xt, True), test_utils=("test_faketensor",))
    x, W, b = _rf_args(N=6, d=4, D=5)
    xT, WT = x.t().contiguous().t(), W.t().contiguous().t()
    out = ops.random_features(xT, WT, b, "cos", 0.5, "row")
    bwd_args = (torch.ones_like(out), out, xT, WT, b, "cos", 0.5, "row", True, True, True)
    _fake_strides_match(ops.random_features_bwd, bwd_args)
    torch.library.opcheck(ops.random_features_bwd.default, bwd_args, test_utils=("test_faketensor",))
    signs, perm, _ = structured_inputs(4, 2, "fastfood")
    sout = ops.structured_features(xT, signs, perm, b, 5, "cos", "fastfood", 0.5, "row")
    sargs = (torch.ones_like(sout), sout, xT, signs, perm, b, 5, "cos", "fastfood", 0.5, "row", True, True)
    _fake_strides_match(ops.structured_features_bwd, sargs)
    torch.library.opcheck(ops.structured_features_bwd.default, sargs, test_utils=("test_faketensor",))
    log_dt, Ar, Ai, B, C = _ssm_args()
    _fake_strides_match(ops.ssm_kernel, (log_dt, Ar.t().contiguous().t(), Ai, None, torch.view_as_real(C), 9, "zoh"))


def test_repro7_compiled_backward_with_transposed_inputs():
    x, W, b = _rf_args(N=6, d=4, D=5)
    for xx, WW in ((x.t().contiguous().t(), W), (x, W.t().contiguous().t())):
        a = [xx.clone().requires_grad_(True), WW.clone().requires_grad_(True)]
        e = [xx.clone().requires_grad_(True), WW.clone().requires_grad_(True)]
        torch._dynamo.reset()
        cf = torch.compile(lambda p, q: kf.random_features(p, q, b) * 2, fullgraph=True, backend="aot_eager")
        cf(*a).sum().backward()
        (kf.random_features(*e, b) * 2).sum().backward()
        for u, v in zip(a, e):
            torch.testing.assert_close(u.grad, v.grad)


@pytest.mark.slow
def test_repro7_inductor_fwht_transposed():
    torch._dynamo.reset()
    x = torch.randn(32, 8).t()
    out = torch.compile(lambda t: kf.fwht(t) * 2, fullgraph=True)(x)
    torch.testing.assert_close(out, kf.fwht(x) * 2)


def test_repro7_default_scale_does_not_recompile_per_feature_count():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    cnt = CompileCounter()
    f = torch.compile(lambda x, W: kf.random_features(x, W) * 2, backend=cnt, dynamic=True, fullgraph=True)
    x = torch.randn(4, 3, dtype=F64)
    for D in (5, 6, 7, 9, 12):
        W = torch.randn(3, D, dtype=F64)
        torch.testing.assert_close(f(x, W), rf_ref.random_features(x, W) * 2)
    assert cnt.frame_count == 1, cnt.frame_count
    # structured: the default n_features (nblocks * P) stays symbolic too
    torch._dynamo.reset()
    cnt = CompileCounter()
    f = torch.compile(lambda x, s: kf.structured_features(x, s, kind="relu"), backend=cnt, dynamic=True, fullgraph=True)
    for nb in (2, 3, 4):
        s, _, _ = structured_inputs(3, nb, "sorf")
        torch.testing.assert_close(f(x, s), rf_ref.structured_features(x, s, kind="relu"))
    assert cnt.frame_count == 1, cnt.frame_count


def test_repro8_huge_sizes_name_the_argument():
    log_dt, Ar, Ai, B, C = _ssm_args()
    with pytest.raises(ValueError, match=r"argument 'L'.*too large"):
        kf.ssm_kernel(log_dt, Ar, Ai, B, C, 2**40)
    with pytest.raises(ValueError, match=r"argument 'L'.*too large"):
        kf.ssm_kernel(log_dt, Ar, Ai, B, C, 2**62)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"argument 'W'.*too large"):
        kf.random_features(x, torch.randn(3, 1).expand(3, 2**40))
    with pytest.raises(ValueError, match=r"argument 'x'.*too large"):
        kf.random_features(torch.randn(1, 3).expand(2**40, 3), torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"argument 'x'.*too large"):
        kf.fwht(torch.randn(1, 8).expand(2**40, 8))
    with pytest.raises(ValueError, match=r"argument 'n_features'"):
        kf.structured_features(x, torch.ones(2, 3, 4), n_features=2**40)
    with pytest.raises(ValueError, match=r"argument 'signs'.*too large"):
        kf.structured_features(x, torch.ones(1, 1, 1).expand(2**38, 3, 4), n_features=4)


def test_repro8_none_for_non_optional_raw_arguments():
    for name, tnames, args in _raw_calls():
        tpos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        for i, an in zip(tpos, tnames):
            if len(tpos) == 1 or (an == "perm" and "structured" in name and False):
                continue  # fwht(None): no tensor left for the dispatcher (torch's own NotImplementedError)
            a = list(args)
            a[i] = None
            if an in ("b", "B"):  # optional
                getattr(ops, name)(*a)
                continue
            with pytest.raises((ValueError, RuntimeError), match=rf"argument '{an}'"):
                getattr(ops, name)(*a)


def test_nan_propagates_through_the_stabilisers_and_relu_step():
    x, W, b = _rf_args()
    W[1, 2] = float("nan")
    for kind in ("cos", "cos_sin", "positive", "relu", "step"):
        for stab in ("row", "global", "none"):
            out = kf.random_features(x, W, b, kind=kind, stabilize=stab)
            exp = rf_ref.random_features(x, W, b, kind=kind, stabilize=stab)
            assert torch.equal(out.isnan(), exp.isnan()) and out.isnan().any(), (kind, stab)
            torch.testing.assert_close(out, exp, equal_nan=True)


# ====================================================================== property sweep
def _variants(t):
    """Odd but valid views of t (same values): non-contiguous, offset, expanded (when possible)."""
    v = {}
    if t.dim() >= 2:
        v["noncontig"] = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    v["strided"] = torch.stack((t, torch.full_like(t, 7.0)), -1)[..., 0]
    v["offset"] = torch.cat((torch.zeros(3, dtype=t.dtype), t.reshape(-1)))[3:].view(t.shape)
    if t.dim() >= 1 and t.shape[0] > 0:
        v["expanded"] = t[:1].expand(t.shape)  # different values: the reference sees the same expanded tensor
    return v


def _bad(t, name):
    """Invalid replacements of a tensor argument: (label, tensor)."""
    out = [
        ("int64" if t.dtype != torch.int64 else "float64", t.to(torch.int64 if t.dtype != torch.int64 else F64)),
        ("meta", t.to("meta")),
    ]
    if t.is_floating_point() or t.is_complex():
        out.append(
            (
                "other-float",
                t.to(
                    torch.float32
                    if t.dtype in (F64, torch.complex128) and not t.is_complex()
                    else torch.complex64
                    if t.is_complex()
                    else F64
                ),
            )
        )
    if t.dim() >= 1 and t.shape[-1] > 1:
        out.append(("short-last-dim", t[..., :-1]))
    out.append(("extra-dim", t.unsqueeze(0).expand(2, *t.shape)))
    out.append(("scalar", t.reshape(-1)[0].clone() if t.numel() else torch.tensor(0.0, dtype=t.dtype)))
    return out


def _sweep(c, opname, tnames, build, ref, values_ok=True):
    """build(ts) -> call; ref(ts) -> expected (float64); ts the dict of tensor arguments."""
    base = build.base
    names = list(tnames)
    run(c, (opname, "base"), lambda: build(base), lambda: ref(base), names)
    for n in tnames:
        t = base[n]
        if t is None:
            continue
        for lab, bad in _bad(t, n):
            ts = dict(base, **{n: bad})
            # some "bad" shapes are valid (e.g. a batch dim of x): then the reference decides
            run(c, (opname, n, lab), lambda: build(ts), (lambda: ref(ts)) if n in build.batchable else None, names)
        for lab, v in _variants(t).items():
            ts = dict(base, **{n: v})
            run(c, (opname, n, lab), lambda: build(ts), lambda: ref(ts), names)
        if values_ok and (t.is_floating_point() or t.is_complex()) and n not in build.no_poison:
            for val in (float("nan"), float("inf")):
                ts = dict(base, **{n: poison(t, val)})
                run(c, (opname, n, str(val)), lambda: build(ts), lambda: ref(ts), names)


class _B:
    """A call builder: fn(ts) with attributes base, batchable, no_poison."""

    def __init__(self, fn, base, batchable=(), no_poison=()):
        self.fn, self.base, self.batchable, self.no_poison = fn, base, set(batchable), set(no_poison)

    def __call__(self, ts):
        return self.fn(ts)


def _grad_of(ref_fn, ts, wrt, grad):
    leaves = {
        k: (
            v.detach().double().clone().requires_grad_(k in wrt)
            if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex())
            else v
        )
        for k, v in ts.items()
    }
    out = ref_fn(leaves)
    gs = torch.autograd.grad(out, [leaves[k] for k in wrt], grad.to(out.dtype), allow_unused=True)
    return [torch.zeros_like(leaves[k]) if g is None else g for k, g in zip(wrt, gs)]


def _complex_pair(t):
    return (
        torch.view_as_complex(t.clone(memory_format=torch.contiguous_format))
        if t is not None and not t.is_complex()
        else t
    )


def test_property_sweep_random_feature_ops_and_ssm_kernel(capsys):
    c = Counts()
    x, W, b = _rf_args(N=6, d=4, D=5, seed=11)
    signs, perm, _ = structured_inputs(4, 2, "fastfood", seed=3)
    ssigns, _, _ = structured_inputs(4, 2, "sorf", seed=4)

    # ---- fwht (public and raw)
    xf = torch.randn(3, 8, dtype=F64, generator=_g(1))
    _sweep(
        c,
        "fwht",
        ["x"],
        _B(lambda t: kf.fwht(t["x"]), {"x": xf}, batchable=("x",)),
        lambda t: rf_ref.fwht(t["x"].double()),
    )
    _sweep(
        c,
        "raw fwht",
        ["x"],
        _B(lambda t: ops.fwht(t["x"], False), {"x": xf}, batchable=("x",)),
        lambda t: rf_ref.fwht(t["x"].double(), normalized=False),
    )

    # ---- random_features: public (every kind) and raw forward / backward
    for kind in ("cos", "cos_sin", "positive", "relu", "step"):
        stab = "global" if kind == "positive" else "row"
        _sweep(
            c,
            f"random_features[{kind}]",
            ["x", "W", "b"],
            _B(
                lambda t: kf.random_features(t["x"], t["W"], t["b"], kind=kind, stabilize=stab),
                {"x": x, "W": W, "b": b},
                batchable=("x",),
            ),
            lambda t: rf_ref.random_features(
                t["x"].double(), t["W"].double(), t["b"].double(), kind=kind, stabilize=stab
            ),
        )
    _sweep(
        c,
        "raw random_features",
        ["x", "W", "b"],
        _B(
            lambda t: ops.random_features(t["x"], t["W"], t["b"], "positive", 0.6, "row"),
            {"x": x, "W": W, "b": b},
            batchable=("x",),
        ),
        lambda t: rf_ref.random_features(t["x"].double(), t["W"].double(), t["b"].double(), kind="positive", scale=0.6),
    )
    rfw = lambda t: rf_ref.random_features(t["x"], t["W"], t["b"], kind="cos", scale=0.6)  # noqa: E731
    out = ops.random_features(x, W, b, "cos", 0.6, "row")
    grad = torch.randn(out.shape, dtype=F64, generator=_g(5))
    _sweep(
        c,
        "raw random_features_bwd",
        ["grad", "out", "x", "W", "b"],
        _B(
            lambda t: ops.random_features_bwd(
                t["grad"], t["out"], t["x"], t["W"], t["b"], "cos", 0.6, "row", True, True, True
            ),
            {"grad": grad, "out": out, "x": x, "W": W, "b": b},
            no_poison=("out",),
        ),
        lambda t: _grad_of(rfw, t, ["x", "W", "b"], t["grad"]),
        values_ok=True,
    )

    # ---- structured_features
    bS = b.clone()
    for block, sg, pm in (("sorf", ssigns, None), ("fastfood", signs, perm)):
        for kind in ("cos", "positive", "relu"):
            base = {"x": x, "signs": sg, "b": bS}
            if pm is not None:
                base["perm"] = pm
            _sweep(
                c,
                f"structured_features[{block},{kind}]",
                list(base),
                _B(
                    lambda t: kf.structured_features(
                        t["x"], t["signs"], kind=kind, block=block, perm=t.get("perm"), b=t["b"], n_features=5
                    ),
                    base,
                    batchable=("x",),
                    no_poison=("signs",),
                ),
                lambda t: rf_ref.structured_features(
                    t["x"].double(),
                    t["signs"].double(),
                    kind=kind,
                    block=block,
                    perm=t.get("perm"),
                    b=t["b"].double(),
                    n_features=5,
                ),
            )
    sfw = lambda t: rf_ref.structured_features(
        t["x"],
        t["signs"],
        kind="cos",
        block="fastfood",
        perm=t["perm"],  # noqa
        b=t["b"],
        n_features=5,
        scale=0.6,
    )
    sout = ops.structured_features(x, signs, perm, bS, 5, "cos", "fastfood", 0.6, "row")
    _sweep(
        c,
        "raw structured_features_bwd",
        ["grad", "out", "x", "signs", "perm", "b"],
        _B(
            lambda t: ops.structured_features_bwd(
                t["grad"], t["out"], t["x"], t["signs"], t["perm"], t["b"], 5, "cos", "fastfood", 0.6, "row", True, True
            ),
            {"grad": grad, "out": sout, "x": x, "signs": signs, "perm": perm, "b": bS},
            batchable=("x",),
            no_poison=("out", "signs"),
        ),
        lambda t: _grad_of(sfw, t, ["x", "b"], t["grad"]),
    )

    # ---- ssm_kernel (public, raw, raw bwd)
    log_dt, Ar, Ai, B, C = _ssm_args(H=3, N=4, seed=6)
    sbase = {"log_dt": log_dt, "A_real": Ar, "A_imag": Ai, "B": B, "C": C}
    sref = lambda t: ssm_ref.ssm_kernel(
        t["log_dt"],
        t["A_real"],
        t["A_imag"],
        _complex_pair(t["B"]),  # noqa: E731
        _complex_pair(t["C"]),
        12,
    )
    _sweep(
        c,
        "ssm_kernel",
        list(sbase),
        _B(
            lambda t: kf.ssm_kernel(t["log_dt"], t["A_real"], t["A_imag"], t["B"], t["C"], 12),
            sbase,
            no_poison=("A_real", "A_imag"),
        ),
        sref,
    )
    rbase = dict(sbase, B=torch.view_as_real(B), C=torch.view_as_real(C))
    _sweep(
        c,
        "raw ssm_kernel",
        list(rbase),
        _B(
            lambda t: ops.ssm_kernel(t["log_dt"], t["A_real"], t["A_imag"], t["B"], t["C"], 12, "bilinear"),
            rbase,
            no_poison=("A_real", "A_imag"),
        ),
        lambda t: ssm_ref.ssm_kernel(
            t["log_dt"],
            t["A_real"],
            t["A_imag"],
            _complex_pair(t["B"]),
            _complex_pair(t["C"]),
            12,
            discretization="bilinear",
        ),
    )
    sg = torch.randn(3, 12, dtype=F64, generator=_g(7))
    _sweep(
        c,
        "raw ssm_kernel_bwd",
        ["grad"] + list(rbase),
        _B(
            lambda t: ops.ssm_kernel_bwd(t["grad"], t["log_dt"], t["A_real"], t["A_imag"], t["B"], t["C"], "zoh"),
            dict(rbase, grad=sg),
            batchable=("grad",),
            no_poison=("A_real", "A_imag"),
        ),
        lambda t: _grad_of(
            lambda u: ssm_ref.ssm_kernel(
                u["log_dt"],
                u["A_real"],
                u["A_imag"],
                torch.view_as_complex(u["B"]),
                torch.view_as_complex(u["C"]),
                u["grad"].shape[-1],
            ),
            {k: (v.clone(memory_format=torch.contiguous_format) if v.dim() == 3 else v) for k, v in t.items()},
            ["log_dt", "A_real", "A_imag", "B", "C"],
            t["grad"],
        ),
    )

    # ---- every requires-grad subset of the public ops: each subset's grads equal the full backward's
    def subsets(label, fn, ins):
        keys = list(ins)
        full = {k: v.detach().clone().requires_grad_(True) for k, v in ins.items()}
        torch.autograd.backward(fn(full), torch.ones_like(fn(full)))
        for r in range(1, len(keys) + 1):
            for sub in itertools.combinations(keys, r):
                c.tried += 1
                part = {k: v.detach().clone().requires_grad_(k in sub) for k, v in ins.items()}
                try:
                    o = fn(part)
                    o.backward(torch.ones_like(o))
                    ok = all((part[k].grad is None) == (k not in sub) for k in keys) and all(
                        torch.allclose(part[k].grad, full[k].grad, rtol=1e-12, atol=1e-13) for k in sub
                    )
                except Exception as err:  # noqa: BLE001
                    c.wrong.append(((label, sub), f"{type(err).__name__}: {err}"[:200]))
                    continue
                if ok:
                    c.correct += 1
                else:
                    c.wrong.append(((label, sub), "grads differ from the full backward's"))

    subsets("fwht", lambda t: kf.fwht(t["x"]) ** 2, {"x": xf})
    for kind in ("cos", "cos_sin", "positive", "relu"):
        subsets(
            f"random_features[{kind}]",
            lambda t: kf.random_features(t["x"], t["W"], t["b"], kind=kind),
            {"x": x, "W": W, "b": b},
        )
    for block, sg_, pm in (("sorf", ssigns, None), ("fastfood", signs, perm)):
        subsets(
            f"structured_features[{block}]",
            lambda t: kf.structured_features(
                t["x"], sg_, kind="positive", block=block, perm=pm, b=t["b"], n_features=5
            ),
            {"x": x, "b": bS},
        )
    subsets("ssm_kernel", lambda t: kf.ssm_kernel(t["log_dt"], t["A_real"], t["A_imag"], t["B"], t["C"], 12), sbase)

    c.report(capsys, "features/ssm")
