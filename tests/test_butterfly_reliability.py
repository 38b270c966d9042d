"""Issue 13 (reliability) for the butterfly family: butterfly_multiply, monarch_multiply,
monarch_fft, monarch_rfft, monarch_irfft and the raw ops (+ _bwd). One regression test per repro
of the issue that concerns them (meta mixed with CPU, unbounded DFT cache, fake strides /
storage offset / dynamic length, huge sizes and None naming the argument, every requires-grad
subset), then a property sweep over bad and odd inputs (deterministic enumeration, counts
printed; tests/kf_reliability.py)."""

import threading

import kernelfuse as kf
import kf_reliability as rel
import pytest
import torch
from kernelfuse import butterfly as kfb
from kernelfuse.reference import butterfly as ref

ops = torch.ops.kernelfuse
F64, C128 = torch.float64, torch.complex128


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _bf(rows=3, n=8, nblocks=2, dtype=F64, seed=0):
    g = _g(seed)
    log_n = n.bit_length() - 1
    return (
        torch.randn(rows, n, generator=g, dtype=dtype),
        torch.randn(nblocks, log_n, n // 2, 2, 2, generator=g, dtype=dtype) * 0.7,
    )


def _mm(rows=3, dtype=F64, seed=1):
    g = _g(seed)  # n = k p = 2 * 4, k q = 2 * 3 = l r = 3 * 2, output l s = 3 * 5
    return (
        torch.randn(rows, 8, generator=g, dtype=dtype),
        torch.randn(2, 3, 4, generator=g, dtype=dtype),
        torch.randn(3, 5, 2, generator=g, dtype=dtype),
    )


def _raw_calls():
    """(op name, tensor argument names, args) of every raw butterfly op, float64 / complex128 CPU."""
    x, tw = _bf()
    mx, w1, w2 = _mm()
    return [
        ("butterfly_multiply", ["x", "twiddle"], [x, tw, True]),
        ("butterfly_multiply_bwd", ["grad", "x", "twiddle"], [torch.ones_like(x), x, tw, False, True, True]),
        ("monarch_multiply", ["x", "w1", "w2"], [mx, w1, w2]),
        (
            "monarch_multiply_bwd",
            ["grad", "x", "w1", "w2"],
            [torch.ones(3, 15, dtype=F64), mx, w1, w2, True, True, True],
        ),
        ("monarch_fft", ["x"], [torch.randn(3, 12, dtype=C128, generator=_g(2)), False, "ortho"]),
    ]


# ====================================================================== repro 1: meta mixed with CPU
def test_repro1_meta_in_every_position_of_every_raw_op():
    for name, tnames, args in _raw_calls():
        op = getattr(ops, name)
        real = op(*args)
        for an, a in rel.meta_positions(name, tnames, args):
            if an is None or len(tnames) == 1:  # all meta: the fake kernel's shapes and strides
                res = op(*a)
                for r, e in zip(rel.as_tuple(res), rel.as_tuple(real)):
                    assert r.device.type == "meta" and r.shape == e.shape and r.stride() == e.stride(), name
                continue
            with pytest.raises(ValueError, match=rf"argument '{an}'.*meta"):
                op(*a)


def test_repro1_meta_mixed_with_cpu_public():
    x, tw = _bf()
    with pytest.raises(ValueError, match=r"argument 'twiddle'.*meta"):
        kf.butterfly_multiply(x, tw.to("meta"))
    with pytest.raises(ValueError, match=r"argument 'x'.*meta"):
        kf.butterfly_multiply(x.to("meta"), tw)
    mx, w1, w2 = _mm()
    for i, name in enumerate(("x", "w1", "w2")):
        a = [mx, w1, w2]
        a[i] = a[i].to("meta")
        with pytest.raises(ValueError, match=rf"argument '{name}'.*meta"):
            kf.monarch_multiply(*a)
    # one tensor on meta: a meta result of the right shape
    assert kf.monarch_rfft(torch.randn(3, 12, device="meta")).shape == (3, 7)
    assert kf.monarch_fft(torch.randn(3, 12, device="meta", dtype=C128)).shape == (3, 12)


def test_fake_kernels_check_shapes_like_the_kernels():
    x, tw = _bf()
    with pytest.raises(ValueError, match="argument 'twiddle'"):
        ops.butterfly_multiply(x.to("meta"), tw[:, :2].to("meta"), True)
    with pytest.raises(ValueError, match="argument 'grad'"):
        ops.butterfly_multiply_bwd(x[:2].to("meta"), x.to("meta"), tw.to("meta"), True, True, True)
    mx, w1, w2 = _mm()
    with pytest.raises(ValueError, match="argument 'w2'"):
        ops.monarch_multiply(mx.to("meta"), w1.to("meta"), w2[:2].to("meta"))
    with pytest.raises(ValueError, match="argument 'x'"):
        ops.monarch_fft(torch.randn(3, 8, device="meta"), False, "ortho")  # real: the op takes complex
    with pytest.raises(ValueError, match="argument 'x'.*prime factor"):
        ops.monarch_fft(torch.randn(2, 4099, device="meta", dtype=C128), False, "ortho")


# ====================================================================== repro 6: the DFT / twiddle cache
def _fft_lengths(count, start=2):
    return [n for n in range(start, start + 3 * count) if rel_prime_ok(n)][:count]


def rel_prime_ok(n):
    from kernelfuse.ops.butterfly import _largest_prime_factor

    return _largest_prime_factor(n) <= 64  # cheap tables (no dense prime DFT): keeps the test fast


@pytest.fixture
def fft_cache():
    prev = kfb.set_monarch_fft_cache_limit(kfb.DEFAULT_FFT_CACHE_LIMIT)
    kfb.clear_monarch_fft_cache()
    yield
    kfb.set_monarch_fft_cache_limit(prev)
    kfb.clear_monarch_fft_cache()


def test_repro6_cache_is_bounded_over_many_lengths_and_right_after_eviction(fft_cache):
    info = kfb.monarch_fft_cache_info()
    assert info["limit"] == kfb.DEFAULT_FFT_CACHE_LIMIT == 256 * 2**20 and info["bytes"] == 0
    limit = 2**18
    assert kfb.set_monarch_fft_cache_limit(limit) == kfb.DEFAULT_FFT_CACHE_LIMIT
    lengths = _fft_lengths(150, start=200)
    g = _g(3)
    first = {}
    peak = 0
    for n in lengths:
        x = torch.randn(2, n, dtype=C128, generator=g)
        y = kf.monarch_fft(x)
        r = kf.monarch_rfft(x.real)
        if n in (lengths[0], lengths[1], lengths[-1]):
            first[n] = (x, y, r)
        info = kfb.monarch_fft_cache_info()
        peak = max(peak, info["bytes"])
        assert info["bytes"] <= 2 * limit  # each of the two caches within the cap
    info = kfb.monarch_fft_cache_info()
    assert info["evictions"] > 0 and info["entries"] > 0 and peak > limit // 4, info
    assert info["evictions"] >= 50  # the tables of most lengths came and went
    # results after eviction (the first lengths' tables are gone) equal the first ones, and torch.fft
    for n, (x, y, r) in first.items():  # noqa: B007
        torch.testing.assert_close(kf.monarch_fft(x), y, rtol=0, atol=0)
        torch.testing.assert_close(kf.monarch_fft(x), torch.fft.fft(x), rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(kf.monarch_rfft(x.real), r, rtol=0, atol=0)
    # clear empties, the cap stays; cap 0: nothing cached, still right
    kfb.clear_monarch_fft_cache()
    info = kfb.monarch_fft_cache_info()
    assert info["bytes"] == 0 and info["entries"] == 0 and info["limit"] == limit
    kfb.set_monarch_fft_cache_limit(0)
    x = torch.randn(3, 360, dtype=C128, generator=g)
    torch.testing.assert_close(kf.monarch_fft(x), torch.fft.fft(x), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(kf.monarch_irfft(kf.monarch_rfft(x.real), 360), x.real, rtol=1e-12, atol=1e-12)
    assert kfb.monarch_fft_cache_info()["bytes"] == 0
    # lowering the cap evicts down to it at once
    kfb.set_monarch_fft_cache_limit(limit)
    for n in lengths[:50]:
        kf.monarch_fft(torch.randn(1, n, dtype=C128))
    kfb.set_monarch_fft_cache_limit(limit // 8)
    assert kfb.monarch_fft_cache_info()["bytes"] <= 2 * (limit // 8)
    with pytest.raises(ValueError, match="argument 'limit_bytes'"):
        kfb.set_monarch_fft_cache_limit(-5)
    with pytest.raises(ValueError, match="argument 'limit_bytes'"):
        ops.monarch_fft_cache(-7, False)


def test_repro6_cache_is_thread_safe(fft_cache):
    kfb.set_monarch_fft_cache_limit(256 * 1024)
    lengths = _fft_lengths(60, start=100)
    xs = {n: torch.randn(2, n, dtype=C128, generator=_g(n)) for n in lengths}
    exp = {n: torch.fft.fft(x) for n, x in xs.items()}
    errors = []

    def work(k):
        try:
            for i in range(3):
                for n in lengths[k::2] + lengths[::-3]:
                    y = kf.monarch_fft(xs[n]) if (i + n) % 2 else kf.monarch_rfft(xs[n].real)
                    e = exp[n] if (i + n) % 2 else torch.fft.rfft(xs[n].real)
                    if not torch.allclose(y, e, rtol=1e-12, atol=1e-10):
                        errors.append(n)
        except Exception as err:  # noqa: BLE001
            errors.append(repr(err))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert kfb.monarch_fft_cache_info()["bytes"] <= 2 * 256 * 1024


# ====================================================================== repro 7: views, fake strides, dynamic length
def test_repro7_rfft_storage_offset_and_views():
    x = torch.randn(17, dtype=F64, generator=_g(4))[1:]
    torch.testing.assert_close(kf.monarch_rfft(x), torch.fft.rfft(x))
    base = torch.randn(5, 24, dtype=F64, generator=_g(5))
    for v in (
        base[:, 1:13],
        base[:, ::2],
        base.t().contiguous().t()[:, :20],
        base[:1].expand(4, 24),
        base.reshape(-1)[3 : 3 + 40].view(2, 20),
    ):
        for op, r in ((kf.monarch_rfft, torch.fft.rfft), (kf.monarch_fft, torch.fft.fft)):
            torch.testing.assert_close(op(v), r(v))
        X = torch.fft.rfft(v)
        torch.testing.assert_close(kf.monarch_irfft(X[..., 1:], v.shape[-1]), torch.fft.irfft(X[..., 1:], v.shape[-1]))
    xv = torch.randn(4, 8, dtype=F64, generator=_g(6)).t()  # every op with a transposed / offset / expanded x
    tw = _bf(n=4)[1]
    for v in (xv, xv[1:5], xv[:1].expand(4, 4)):
        torch.testing.assert_close(kf.butterfly_multiply(v, tw), ref.butterfly_multiply(v, tw))
    mx, w1, w2 = _mm()
    for v in (mx.t().contiguous().t(), torch.randn(9 * 8, dtype=F64)[1:65].view(8, 8), mx[:1].expand(3, 8)):
        for layout in ("ls", "sl"):
            torch.testing.assert_close(
                kf.monarch_multiply(v, w1, w2, layout=layout), ref.monarch_multiply(v, w1, w2, layout=layout)
            )
    w1t, w2e = w1.transpose(1, 2).contiguous().transpose(1, 2), w2[:1].expand(3, 5, 2)
    torch.testing.assert_close(kf.monarch_multiply(mx, w1t, w2e), ref.monarch_multiply(mx, w1, w2e))


def test_repro7_fake_strides_match_real_and_opcheck():
    x, tw = _bf(rows=6, n=8)
    xt = x.t().contiguous().t()
    rel.fake_strides_match(ops.butterfly_multiply, (xt, tw, True))
    rel.fake_strides_match(ops.butterfly_multiply, (torch.randn(5, 1, dtype=F64).t().t(), tw[:, :0, :0], True))
    rel.fake_strides_match(ops.butterfly_multiply_bwd, (xt, xt, tw, True, True, True))
    mx, w1, w2 = _mm(rows=4)
    mxt = mx.t().contiguous().t()
    rel.fake_strides_match(ops.monarch_multiply, (mxt, w1.transpose(1, 2).contiguous().transpose(1, 2), w2))
    g = torch.randn(15, 4, dtype=F64).t()
    rel.fake_strides_match(ops.monarch_multiply_bwd, (g, mxt, w1, w2, True, True, True))
    z = torch.randn(12, 5, dtype=C128).t()
    rel.fake_strides_match(ops.monarch_fft, (z, True, "forward"))
    for op, args in (
        (ops.butterfly_multiply, (xt, tw, True)),
        (ops.butterfly_multiply_bwd, (xt, xt, tw, True, True, True)),
        (ops.monarch_multiply, (mxt, w1, w2)),
        (ops.monarch_multiply_bwd, (g, mxt, w1, w2, True, True, True)),
        (ops.monarch_fft, (z, False, "ortho")),
    ):
        torch.library.opcheck(op.default, args, test_utils=("test_schema", "test_faketensor"))


def test_repro7_rfft_dynamic_length_under_compile():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    cnt = CompileCounter()
    f = torch.compile(lambda v: kf.monarch_rfft(v, norm="ortho") * 2, backend=cnt, fullgraph=True)
    for n in (16, 18, 24, 30):  # even lengths: one graph for all of them (no ConstraintViolationError)
        x = torch.randn(3, n, dtype=F64, generator=_g(n))
        torch._dynamo.mark_dynamic(x, 1)
        torch.testing.assert_close(f(x), torch.fft.rfft(x, norm="ortho") * 2)
    assert cnt.frame_count == 1, cnt.frame_count
    # odd lengths take the other branch (a parity guard, one more graph), still dynamic
    for n in (15, 21):
        x = torch.randn(3, n, dtype=F64, generator=_g(n))
        torch._dynamo.mark_dynamic(x, 1)
        torch.testing.assert_close(f(x), torch.fft.rfft(x, norm="ortho") * 2)
    assert cnt.frame_count == 2, cnt.frame_count
    # backward through the compiled graph
    torch._dynamo.reset()
    xg = torch.randn(2, 20, dtype=F64, requires_grad=True)
    torch._dynamo.mark_dynamic(xg, 1)
    cf = torch.compile(lambda v: kf.monarch_rfft(v).abs().sum(), backend="aot_eager", fullgraph=True)
    cf(xg).backward()
    xe = xg.detach().clone().requires_grad_(True)
    torch.fft.rfft(xe).abs().sum().backward()
    torch.testing.assert_close(xg.grad, xe.grad)


@pytest.mark.slow
def test_repro7_inductor_butterfly_transposed():
    torch._dynamo.reset()
    x, tw = _bf(rows=32, n=8, dtype=torch.float32)
    xt = x.t().contiguous().t()
    out = torch.compile(lambda t: kf.butterfly_multiply(t, tw) * 2, fullgraph=True)(xt)
    torch.testing.assert_close(out, kf.butterfly_multiply(xt, tw) * 2)


# ====================================================================== repro 8: sizes and None name the argument
def test_repro8_huge_sizes_name_the_argument():
    huge = 2**40
    with pytest.raises(ValueError, match=r"argument 'x'.*too large"):
        kf.butterfly_multiply(torch.randn(1, 8).expand(huge, 8), torch.randn(1, 3, 4, 2, 2))
    with pytest.raises(ValueError, match=r"argument 'twiddle'.*too large"):
        kf.butterfly_multiply(torch.randn(2, 8), torch.randn(1, 1, 1, 1, 1).expand(huge, 3, 4, 2, 2))
    with pytest.raises(ValueError, match=r"argument 'x'.*too large"):  # x is checked first
        ops.butterfly_multiply_bwd(
            torch.randn(1, 8).expand(huge, 8),
            torch.randn(1, 8).expand(huge, 8),
            torch.randn(1, 3, 4, 2, 2),
            True,
            True,
            False,
        )
    mx, w1, w2 = _mm()
    with pytest.raises(ValueError, match=r"argument 'x'.*too large"):
        kf.monarch_multiply(mx[:1].expand(huge, 8), w1, w2)
    with pytest.raises(ValueError, match=r"argument 'w2'.*too large"):
        kf.monarch_multiply(mx, w1, torch.randn(1, 1, 1, dtype=F64).expand(3, huge, 2))
    with pytest.raises(ValueError, match=r"argument 'x'.*too large"):
        kf.monarch_fft(torch.randn(1, dtype=torch.complex64).expand(huge))
    with pytest.raises(ValueError, match=r"argument 'x'.*too large"):
        kf.monarch_fft(torch.randn(1, 8, dtype=torch.complex64).expand(huge, 8))
    with pytest.raises(ValueError, match=r"argument 'x'.*too large"):
        kf.monarch_fft(torch.randn(1, 8).expand(huge, 8))  # real: the promoted copy
    with pytest.raises(ValueError, match=r"argument 'x'.*too large"):
        kf.monarch_rfft(torch.randn(1).expand(huge))
    with pytest.raises(ValueError, match=r"argument 'x'.*too large"):
        kf.monarch_rfft(torch.randn(1).expand(3**25))  # odd: the promoted full transform
    with pytest.raises(ValueError, match=r"argument 'x'.*prime factor"):
        kf.monarch_rfft(torch.randn(1).expand(2 * 4099))  # refused before any copy
    with pytest.raises(ValueError, match=r"argument 'n'.*prime factor"):
        kf.monarch_irfft(torch.randn(5, dtype=torch.complex64), 4099)


def test_repro8_none_for_non_optional_raw_arguments():
    for name, tnames, args in _raw_calls():
        tpos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        if len(tpos) == 1:
            continue  # monarch_fft(None): no tensor left for the dispatcher (torch's own error)
        for i, an in zip(tpos, tnames):
            a = list(args)
            a[i] = None
            with pytest.raises(ValueError, match=rf"argument '{an}'.*None"):
                getattr(ops, name)(*a)
            # None beside a meta tensor: the fake kernel says the same
            a = [t.to("meta") if isinstance(t, torch.Tensor) else t for t in a]
            with pytest.raises(ValueError, match=rf"argument '{an}'.*None"):
                getattr(ops, name)(*a)


# ====================================================================== repro 4 / 5: grads, empty
def test_repro4_every_requires_grad_subset(capsys):
    c = rel.Counts()
    x, tw = _bf(rows=3, n=8, seed=7)
    for inc in (True, False):
        rel.grad_subsets(
            c,
            f"butterfly[{inc}]",
            lambda t: kf.butterfly_multiply(t["x"], t["tw"], increasing_stride=inc),
            lambda t: ref.butterfly_multiply(t["x"], t["tw"], increasing_stride=inc),
            {"x": x, "tw": tw},
        )
    xc, twc = _bf(rows=2, n=4, dtype=C128, seed=8)
    rel.grad_subsets(
        c,
        "butterfly[complex]",
        lambda t: kf.butterfly_multiply(t["x"], t["tw"]),
        lambda t: ref.butterfly_multiply(t["x"], t["tw"]),
        {"x": xc, "tw": twc},
    )
    mx, w1, w2 = _mm(seed=9)
    for layout in ("ls", "sl"):
        rel.grad_subsets(
            c,
            f"monarch[{layout}]",
            lambda t: kf.monarch_multiply(t["x"], t["w1"], t["w2"], layout=layout),
            lambda t: ref.monarch_multiply(t["x"], t["w1"], t["w2"], layout=layout),
            {"x": mx, "w1": w1, "w2": w2},
        )
    cm = [t.to(C128) + 0.5j * torch.randn(t.shape, dtype=F64, generator=_g(10)) for t in _mm(rows=2, seed=10)]
    rel.grad_subsets(
        c,
        "monarch[complex]",
        lambda t: kf.monarch_multiply(t["x"], t["w1"], t["w2"]),
        lambda t: ref.monarch_multiply(t["x"], t["w1"], t["w2"]),
        dict(zip(("x", "w1", "w2"), cm)),
    )
    z = torch.randn(2, 12, dtype=C128, generator=_g(11))
    rel.grad_subsets(
        c,
        "monarch_fft",
        lambda t: kf.monarch_fft(t["x"], norm="ortho"),
        lambda t: ref.monarch_fft(t["x"], norm="ortho"),
        {"x": z},
    )
    for n in (12, 9):
        xr = torch.randn(2, n, dtype=F64, generator=_g(n))
        rel.grad_subsets(
            c, f"monarch_rfft[{n}]", lambda t: kf.monarch_rfft(t["x"]), lambda t: ref.monarch_rfft(t["x"]), {"x": xr}
        )
        X = torch.fft.rfft(xr)
        rel.grad_subsets(
            c,
            f"monarch_irfft[{n}]",
            lambda t: kf.monarch_irfft(t["X"], n),
            lambda t: ref.monarch_irfft(t["X"], n),
            {"X": X},
        )
    c.report(capsys, "butterfly grads")


def test_repro5_empty_inputs():
    for rows in (0,):
        x = torch.randn(rows, 8, dtype=F64, requires_grad=True)
        tw = torch.randn(1, 3, 4, 2, 2, dtype=F64, requires_grad=True)
        y = kf.butterfly_multiply(x, tw)
        assert y.shape == (0, 8)
        y.sum().backward()
        assert x.grad.shape == (0, 8) and torch.equal(tw.grad, torch.zeros_like(tw))
        mx, w1, w2 = [t.clone().requires_grad_(True) for t in _mm()]
        xe = mx[:0].detach().requires_grad_(True)
        out = kf.monarch_multiply(xe, w1, w2)
        assert out.shape == (0, 15)
        out.sum().backward()
        assert xe.grad.shape == (0, 8) and torch.equal(w1.grad, torch.zeros_like(w1))
    assert kf.monarch_fft(torch.zeros(0, 12, dtype=C128)).shape == (0, 12)
    assert kf.monarch_rfft(torch.zeros(0, 12, dtype=F64)).shape == (0, 7)
    assert kf.monarch_rfft(torch.zeros(4, 0, 9, dtype=F64)).shape == (4, 0, 5)
    assert kf.monarch_irfft(torch.zeros(0, 7, dtype=C128), 12).shape == (0, 12)
    with pytest.raises(ValueError, match="argument 'x'"):
        kf.monarch_fft(torch.zeros(3, 0, dtype=C128))


# ====================================================================== property sweep
def _fft_ref(fn):
    """The torch.fft reference, with empty inputs (MKL refuses them) answered by torch's meta shape."""

    def f(t):
        if next(iter(t.values())).numel() == 0:
            r = fn({k: v.to("meta") for k, v in t.items()})
            return torch.zeros(r.shape, dtype=r.dtype)
        return fn(t)

    return f


def test_property_sweep_butterfly_ops(capsys):
    c = rel.Counts()
    x, tw = _bf(rows=3, n=8, seed=21)
    for inc in (True, False):
        rel.sweep(
            c,
            f"butterfly_multiply[{inc}]",
            rel.Builder(
                lambda t: kf.butterfly_multiply(t["x"], t["twiddle"], increasing_stride=inc), {"x": x, "twiddle": tw}
            ),
            lambda t: ref.butterfly_multiply(t["x"], t["twiddle"], increasing_stride=inc),
        )
    rel.sweep(
        c,
        "raw butterfly_multiply",
        rel.Builder(
            lambda t: ops.butterfly_multiply(t["x"], t["twiddle"], True), {"x": x, "twiddle": tw}, strict=("twiddle",)
        ),
        lambda t: ref.butterfly_multiply(t["x"], t["twiddle"]),
    )
    xc, twc = _bf(rows=2, n=4, dtype=C128, seed=22)
    rel.sweep(
        c,
        "butterfly_multiply[complex]",
        rel.Builder(lambda t: kf.butterfly_multiply(t["x"], t["twiddle"]), {"x": xc, "twiddle": twc}),
        lambda t: ref.butterfly_multiply(t["x"], t["twiddle"]),
    )

    def bf_grads(t):
        leaves = {k: v.detach().to(F64).clone().requires_grad_(True) for k, v in t.items() if k != "grad"}
        out = ref.butterfly_multiply(leaves["x"], leaves["twiddle"], increasing_stride=False)
        return torch.autograd.grad(out, [leaves["x"], leaves["twiddle"]], t["grad"].to(F64))

    gy = torch.randn(3, 8, dtype=F64, generator=_g(23))
    rel.sweep(
        c,
        "raw butterfly_multiply_bwd",
        rel.Builder(
            lambda t: ops.butterfly_multiply_bwd(t["grad"], t["x"], t["twiddle"], False, True, True),
            {"grad": gy, "x": x, "twiddle": tw},
            strict=("grad", "twiddle"),
        ),
        bf_grads,
    )

    mx, w1, w2 = _mm(seed=24)
    for layout in ("ls", "sl"):
        rel.sweep(
            c,
            f"monarch_multiply[{layout}]",
            rel.Builder(
                lambda t: kf.monarch_multiply(t["x"], t["w1"], t["w2"], layout=layout), {"x": mx, "w1": w1, "w2": w2}
            ),
            lambda t: ref.monarch_multiply(t["x"], t["w1"], t["w2"], layout=layout),
        )

    def mm_grads(t):
        leaves = {k: v.detach().to(F64).clone().requires_grad_(True) for k, v in t.items() if k != "grad"}
        out = ref.monarch_multiply(leaves["x"], leaves["w1"], leaves["w2"])
        return torch.autograd.grad(out, [leaves["x"], leaves["w1"], leaves["w2"]], t["grad"].to(F64))

    gm = torch.randn(3, 15, dtype=F64, generator=_g(25))
    rel.sweep(
        c,
        "raw monarch_multiply_bwd",
        rel.Builder(
            lambda t: ops.monarch_multiply_bwd(t["grad"], t["x"], t["w1"], t["w2"], True, True, True),
            {"grad": gm, "x": mx, "w1": w1, "w2": w2},
            strict=("grad", "w1", "w2"),
        ),
        mm_grads,
    )

    z = torch.randn(3, 12, dtype=C128, generator=_g(26))
    for inverse in (False, True):
        rel.sweep(
            c,
            f"monarch_fft[{inverse}]",
            rel.Builder(lambda t: kf.monarch_fft(t["x"], inverse=inverse, norm="ortho"), {"x": z}, superset=True),
            _fft_ref(lambda t: ref.monarch_fft(t["x"], inverse=inverse, norm="ortho")),
        )
    rel.sweep(
        c,
        "raw monarch_fft",
        rel.Builder(lambda t: ops.monarch_fft(t["x"], False, "forward"), {"x": z}, superset=True),
        _fft_ref(lambda t: ref.monarch_fft(t["x"], norm="forward") if t["x"].is_complex() else 1 / 0),
    )
    for n in (12, 9, 1):
        xr = torch.randn(3, n, dtype=F64, generator=_g(27 + n))
        rel.sweep(
            c,
            f"monarch_rfft[{n}]",
            rel.Builder(lambda t: kf.monarch_rfft(t["x"], norm="ortho"), {"x": xr}, superset=True),
            _fft_ref(lambda t: ref.monarch_rfft(t["x"], norm="ortho")),
        )
        X = torch.fft.rfft(xr)
        rel.sweep(
            c,
            f"monarch_irfft[{n}]",
            rel.Builder(lambda t: kf.monarch_irfft(t["X"], n), {"X": X}, superset=True),
            _fft_ref(lambda t: ref.monarch_irfft(t["X"], n)),
        )
    c.report(capsys, "butterfly")
