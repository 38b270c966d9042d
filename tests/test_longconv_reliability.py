"""Issue 13 (reliability) for fftconv and the long-conv layers: one regression test per repro,
plus a deterministic property-style sweep over bad-input classes (no hypothesis).

Every case must end in a clear error that names the argument, or in a result that matches the
float64 reference; never a wrong answer or a crash."""

import itertools

import kernelfuse as kf
import pytest
import torch
from kernelfuse.reference import longconv as ref
from kf_inputs import fftconv_inputs

op = torch.ops.kernelfuse
MODES = ("causal", "bidirectional", "circular")
NAMES = ("u", "k", "D", "pregate", "postgate")


def _ins(mode="causal", B=2, H=3, L=11, Lk=4, kshape="shared", seed=0):
    return list(fftconv_inputs(B, H, L, Lk, mode, torch.float64, kshape=kshape, seed=seed))


# ------------------------------------------------------------------ item 1: devices, meta
@pytest.mark.parametrize("pos", range(5))
def test_raw_fftconv_meta_in_any_position_is_an_error(pos):
    ins = _ins()
    ins[pos] = ins[pos].to("meta")
    if pos == 0:  # u meta: the others differ from u
        with pytest.raises(
            ValueError, match=r"argument 'k': expected a tensor on meta \(the device of 'u'\), got one on cpu"
        ):
            op.fftconv(*ins, "causal", None)
    else:
        with pytest.raises(ValueError, match=rf"argument '{NAMES[pos]}': expected a tensor on cpu.*got one on meta"):
            op.fftconv(*ins, "causal", None)
        with pytest.raises(ValueError, match=rf"argument '{NAMES[pos]}'.*on meta"):
            kf.fftconv(ins[0], ins[1], ins[2], pregate=ins[3], postgate=ins[4])


@pytest.mark.parametrize("pos", range(6))
def test_raw_fftconv_bwd_meta_in_any_position_is_an_error(pos):
    ins = _ins()
    g = torch.randn(2, 3, 11, dtype=torch.float64)
    args = [g, *ins]
    args[pos] = args[pos].to("meta")
    name = ("grad",) + NAMES
    with pytest.raises(ValueError, match=r"argument '.*': expected a tensor on .*got one on"):
        op.fftconv_bwd(*args, "causal", None, True, True, True, True, True)
    if pos != 1:
        with pytest.raises(ValueError, match=rf"argument '{name[pos]}'"):
            op.fftconv_bwd(*args, "causal", None, True, True, True, True, True)


def test_all_meta_still_works():
    ins = [t.to("meta") for t in _ins()]
    y = op.fftconv(*ins, "causal", None)
    assert y.device.type == "meta" and y.shape == (2, 3, 11)


# ------------------------------------------------------------------ item 8: None, sizes
def test_none_for_required_tensors_names_the_argument():
    u, k, D, pre, post = _ins()
    with pytest.raises(ValueError, match=r"argument 'k': expected a Tensor, got None"):
        op.fftconv(u, None, D, None, None, "causal", None)
    with pytest.raises(ValueError, match=r"argument 'u': expected a Tensor, got None"):
        op.fftconv(None, k, D, None, None, "causal", None)
    with pytest.raises(ValueError, match=r"argument 'grad': expected a Tensor, got None"):
        op.fftconv_bwd(None, u, k, D, None, None, "causal", None, True, True, True, False, False)
    with pytest.raises(RuntimeError, match=r"argument 'mode'"):
        op.fftconv(u, k, D, None, None, None, None)
    with pytest.raises(TypeError, match=r"argument 'k' must be a torch.Tensor"):
        kf.fftconv(u, None)
    # meta path (fake kernel) too
    with pytest.raises(ValueError, match=r"argument 'k': expected a Tensor, got None"):
        op.fftconv(u.to("meta"), None, None, None, None, "causal", None)


def test_huge_sizes_are_size_errors_not_allocations():
    u, k, D, _, _ = _ins()
    with pytest.raises(ValueError, match=r"argument 'fft_size': expected at most 2\^31"):
        kf.fftconv(u, k, D, fft_size=2**40)
    with pytest.raises(ValueError, match=r"argument 'fft_size': expected at most 2\^31"):
        op.fftconv(u.to("meta"), k.to("meta"), None, None, None, "causal", 2**40)
    big = torch.ones(1, 1, 1).expand(1, 1, 2**40)  # no memory behind it
    for mode, kk in (("causal", torch.ones(1, 1)), ("circular", torch.ones(1, 1)), ("bidirectional", torch.ones(1, 2))):
        with pytest.raises(ValueError, match=r"argument 'u': sequence length L = 1099511627776 too long"):
            kf.fftconv(big, kk, mode=mode)


# ------------------------------------------------------------------ item 7: fake strides, compile
def _views(t):
    """Non-contiguous, transposed, expanded and offset views with t's values."""
    yield t.transpose(-1, -2).contiguous().transpose(-1, -2)
    yield torch.stack([t, t], dim=-1)[..., 0]  # last-dim stride 2
    yield torch.cat([t.new_zeros(1, *t.shape[1:]), t])[1:]  # storage offset
    if t.shape[0] == 1:
        yield t.expand(*t.shape)


@pytest.mark.parametrize("mode", MODES)
def test_opcheck_on_views(mode):
    u, k, D, pre, post = [t.float() for t in _ins(mode)]
    uv = list(_views(u))
    kv = list(_views(k.unsqueeze(0)))
    for a, b in itertools.product(uv[:2], kv):
        args = (a, b, D, pre.transpose(0, 1).contiguous().transpose(0, 1), post[..., :], mode, None)
        torch.library.opcheck(op.fftconv, args, test_utils=("test_schema", "test_faketensor"))
        g = torch.randn(2, 3, 11).transpose(0, 1).contiguous().transpose(0, 1)
        for needs in [(True,) * 5, (False, True, False, True, False), (True, False, True, False, True)]:
            torch.library.opcheck(
                op.fftconv_bwd, (g, *args[:-2], mode, None, *needs), test_utils=("test_schema", "test_faketensor")
            )
    # mixed precision with outputs not asked for: empty tensors in u's dtype, as the fake kernel says
    torch.library.opcheck(
        op.fftconv_bwd,
        (u.half(), u.half(), k, D, None, None, mode, None, True, False, False, False, False),
        test_utils=("test_faketensor",),
    )


def test_compile_fullgraph_transposed_input():
    u, k, D, pre, post = [t.float() for t in _ins()]
    ut = u.transpose(0, 1).contiguous().transpose(0, 1)
    f = lambda u, k: kf.fftconv(u, k, D, mode="causal") * 2  # noqa: E731
    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(cf(ut, k), f(u, k))


def test_compile_dynamic_no_recompile_per_length():
    torch._dynamo.reset()
    frames = []

    def backend(gm, example_inputs):
        frames.append(gm)
        return gm.forward

    def f(u, k, n):
        return kf.fftconv(u, k, mode="causal", fft_size=n)

    cf = torch.compile(f, dynamic=True, fullgraph=True, backend=backend)
    for L in (17, 33, 50, 64, 97):
        u, k, _, _, _ = [t.float() if t is not None else None for t in _ins(L=L, Lk=5)]
        n = 2 * L + 3
        torch.testing.assert_close(cf(u, k, n), ref.fftconv(u.double(), k.double()).float(), rtol=1e-4, atol=1e-4)
    assert len(frames) == 1, f"{len(frames)} compilations for 5 lengths"
    # mark_dynamic on L: no ConstraintViolationError (the op does not specialise L)
    torch._dynamo.reset()
    cg = torch.compile(lambda u, k: kf.fftconv(u, k, mode="causal"), fullgraph=True, backend="aot_eager")
    for L in (20, 41):
        u = torch.randn(2, 3, L)
        torch._dynamo.mark_dynamic(u, 2)
        torch.testing.assert_close(cg(u, torch.randn(3, 5)).shape, u.shape)


# ------------------------------------------------------------------ gradients, NaN, empty, views
def _loss(ins, mode, skip, gy):
    u, k, D, pre, post = ins
    return (kf.fftconv(u, k, D, pregate=pre, postgate=post, mode=mode, skip=skip) * gy).sum()


@pytest.mark.parametrize("mode,skip", [("causal", "input"), ("bidirectional", "gated"), ("circular", "input")])
def test_every_requires_grad_subset(mode, skip):
    ins = _ins(mode, kshape="batch" if mode == "circular" else "shared")
    gy = torch.randn(2, 3, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    full = [t.clone().requires_grad_(True) for t in ins]
    _loss(full, mode, skip, gy).backward()
    for mask in itertools.product([0, 1], repeat=5):
        if not any(mask):
            continue
        part = [t.clone().requires_grad_(bool(m)) for t, m in zip(ins, mask)]
        _loss(part, mode, skip, gy).backward()
        for f, p, m in zip(full, part, mask):
            if m:
                torch.testing.assert_close(p.grad, f.grad, rtol=1e-12, atol=1e-12)
            else:
                assert p.grad is None


# Shapes that take each partition of the runner (csrc/longconv/fftconv_runner.cpp): by heads
# (shared kernel, H >= the 2^19 / n rows of a block: fft_size 8192 gives 64), row ranges with a
# kernel-gradient accumulator per task (shared kernel, few heads), and per-batch kernels.
PARTITIONS = [
    ("by_heads", "causal", 2, 64, 50, 9, "shared", 8192),
    ("row_ranges", "circular", 5, 3, 11, 4, "shared", None),
    ("per_batch", "bidirectional", 5, 3, 11, 4, "batch", None),
]


@pytest.mark.parametrize("name,mode,B,H,L,Lk,kshape,n", PARTITIONS)
@pytest.mark.parametrize("skip", ["input", "gated"])
def test_raw_bwd_every_need_subset_is_bitwise_the_full_request(name, mode, B, H, L, Lk, kshape, n, skip):
    """Each gradient of fftconv_bwd comes from its own backward term: any subset of the needs gives
    bitwise what the full request gives for the gradients asked, and empty tensors for the others."""
    u, k, D, pre, post = _ins(mode, B, H, L, Lk, kshape)
    g = torch.randn(u.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    full = op.fftconv_bwd(g, u, k, D, pre, post, mode, n, True, True, True, True, True, skip)
    for mask in itertools.product([False, True], repeat=5):
        got = op.fftconv_bwd(g, u, k, D, pre, post, mode, n, *mask, skip)
        for name_, f, x, m in zip(NAMES, full, got, mask):
            if m:
                assert torch.equal(x, f), f"{name}: d{name_} with needs {mask} differs from the full request"
            else:
                assert x.numel() == 0


@pytest.mark.parametrize("pos", range(5))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_inputs_propagate(pos, bad):
    for mode in MODES:
        ins = _ins(mode)
        ins[pos] = ins[pos].clone()
        ins[pos].view(-1)[1] = bad
        y = kf.fftconv(*ins[:3], pregate=ins[3], postgate=ins[4], mode=mode)
        yd = ref.fftconv_direct(*ins[:3], pregate=ins[3], postgate=ins[4], mode=mode)
        assert (~torch.isfinite(y))[~torch.isfinite(yd)].all(), "a non-finite expected value came out finite"
        yr = ref.fftconv(*ins[:3], pregate=ins[3], postgate=ins[4], mode=mode)
        fin = torch.isfinite(yr)
        assert torch.equal(torch.isfinite(y), fin)
        torch.testing.assert_close(y[fin], yr[fin])


@pytest.mark.parametrize("B,H", [(0, 3), (2, 0), (0, 0)])
@pytest.mark.parametrize("kshape", ["shared", "batch"])
def test_empty_forward_backward(B, H, kshape):
    ins = [t.requires_grad_(True) for t in _ins(B=B, H=H, kshape=kshape)]
    y = kf.fftconv(ins[0], ins[1], ins[2], pregate=ins[3], postgate=ins[4])
    assert y.shape == (B, H, 11)
    y.sum().backward()
    for t in ins:
        assert t.grad.shape == t.shape and not t.grad.abs().sum()
    with pytest.raises(ValueError, match=r"argument 'u'.*L >= 1"):
        kf.fftconv(torch.randn(B, H, 0), torch.randn(H, 1))


# ------------------------------------------------------------------ property-style sweep
def _classify(fn, expect):
    """'error' (a clear error naming an argument), 'correct', or 'wrong'."""
    try:
        out = fn()
    except (ValueError, TypeError, RuntimeError) as e:
        return "error" if "argument '" in str(e) else "wrong"
    try:
        expect(out)
    except AssertionError:
        return "wrong"
    return "correct"


def _cases():
    g = torch.Generator().manual_seed(7)
    for mode, skip, kshape in itertools.product(MODES, ("input", "gated"), ("shared", "one", "batch")):
        base = _ins(mode, kshape=kshape, seed=len(mode) + len(skip))
        ref_y = ref.fftconv(*base[:3], pregate=base[3], postgate=base[4], mode=mode, skip=skip)

        def good(ins, dt=torch.float64, ref_y=ref_y):
            def chk(y):
                assert y.shape == ref_y.shape and y.dtype == dt
                tol = 1e-9 if dt == torch.float64 else 1e-4
                torch.testing.assert_close(y.double(), ref_y, rtol=tol, atol=tol)

            return chk

        call = lambda ins, mode=mode, skip=skip, **kw: (
            lambda: kf.fftconv(  # noqa: E731
                ins[0], ins[1], ins[2], pregate=ins[3], postgate=ins[4], mode=mode, skip=skip, **kw
            )
        )
        raw = lambda ins, mode=mode, skip=skip: lambda: op.fftconv(*ins, mode, None, skip)  # noqa: E731
        yield call(base), good(base)
        yield call([t.float() for t in base]), good(base, torch.float32)
        for pos in range(5):
            for bad in ("dtype", "meta", "shape", "view"):
                ins = list(base)
                t = ins[pos]
                if bad == "dtype":
                    ins[pos] = t.float() if pos else t.long()
                elif bad == "meta":
                    ins[pos] = t.to("meta")
                elif bad == "shape":
                    # an invalid shape (fewer taps or a broadcastable kernel would be valid input)
                    ins[pos] = (
                        t.narrow(-2, 0, t.shape[-2] - 1) if pos == 1 else (t[..., :-1] if t.dim() > 1 else t[:-1])
                    )
                else:
                    ins[pos] = next(itertools.islice(_views(t if t.dim() > 1 else t[None]), pos % 3, None))
                    if t.dim() == 1:
                        ins[pos] = ins[pos][0]
                yield call(ins), good(base)
                yield raw(ins), good(base)
        # NaN in each input: non-finite wherever the direct sum is
        for pos in range(5):
            ins = [t.clone() for t in base]
            ins[pos].view(-1)[int(torch.randint(ins[pos].numel(), (1,), generator=g))] = float("nan")
            yd = ref.fftconv_direct(*ins[:3], pregate=ins[3], postgate=ins[4], mode=mode, skip=skip)

            def nan_ok(y, yd=yd):
                assert (~torch.isfinite(y))[~torch.isfinite(yd)].all()

            yield call(ins), nan_ok
        # every requires-grad subset: grads equal the full backward's
        gy = torch.randn(base[0].shape, dtype=torch.float64, generator=g)
        full = [t.clone().requires_grad_(True) for t in base]
        (call(full)() * gy).sum().backward()
        for mask in itertools.product([0, 1], repeat=5):
            if not any(mask):
                continue
            part = [t.clone().requires_grad_(bool(m)) for t, m in zip(base, mask)]

            def grads(part=part, mask=mask, call=call, gy=gy, full=full):
                (call(part)() * gy).sum().backward()
                return [p.grad for p in part]

            def gchk(gs, mask=mask, full=full):
                for gr, f, m in zip(gs, full, mask):
                    assert (gr is None) if not m else torch.allclose(gr, f.grad, rtol=1e-10, atol=1e-12)

            yield grads, gchk
        # empty batch
        e = _ins(mode, B=0, kshape=kshape)

        def empty_ok(y):
            assert y.shape == (0, 3, 11)

        yield call(e), empty_ok


def test_property_sweep_bad_inputs():
    counts = {"tried": 0, "error": 0, "correct": 0, "wrong": 0}
    wrong = []
    for i, (fn, expect) in enumerate(_cases()):
        r = _classify(fn, expect)
        counts["tried"] += 1
        counts[r] += 1
        if r == "wrong":
            wrong.append(i)
    print(
        f"\nfftconv property sweep: tried {counts['tried']} / clear error {counts['error']} / "
        f"correct {counts['correct']} / wrong {counts['wrong']}"
    )
    assert counts["wrong"] == 0, wrong


def test_layers_bad_inputs():
    m = kf.nn.LongConv(4, 16)
    with pytest.raises(ValueError, match=r"argument '.*'.*device"):
        m(torch.randn(2, 16, 4, device="meta"))
    with pytest.raises(ValueError, match=r"argument 'k'.*dtype"):
        m(torch.randn(2, 16, 4, dtype=torch.float64))
    y = m(torch.randn(2, 16, 4).transpose(0, 1).contiguous().transpose(0, 1))  # (B, L, H) layout
    assert y.shape == (2, 16, 4) and torch.isfinite(y).all()
