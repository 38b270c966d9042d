"""kernel_sum / kernel_logsumexp against the float64 reference, autograd, opcheck, compile, errors."""

import math

import kernelfuse as kf
import pytest
import torch
from conftest import TOL
from conftest import assert_close_to_ref as _assert_close
from kernelfuse.ops.kde import KERNELS, kernel_logsumexp_sq
from kernelfuse.reference import kde as ref

SMOOTH = ("gaussian", "laplacian", "cauchy", "matern32", "matern52", "inverse_multiquadric")
SHAPES = [(1, 1, 1), (7, 13, 3), (37, 101, 5), (33, 257, 2), (5, 300, 17)]  # (m, n, d): odd, prime, > tiles


def _data(m, n, d, dtype, device, seed=0, batch=None):
    g = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    x = torch.randn(*lead, m, d, generator=g, dtype=torch.float64)
    y = torch.randn(*lead, n, d, generator=g, dtype=torch.float64)
    return x.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)


def _weights(kind, n, dtype, device, batch=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    if kind is None:
        return None
    shape = (*lead, n) if kind == "vec" else (*lead, n, 3)
    return (0.1 + torch.rand(*shape, generator=g, dtype=torch.float64)).to(dtype=dtype, device=device)


def _ref64(fn, x, y, w, **kw):
    w64 = None if w is None else w.double().cpu()
    h = kw.pop("bandwidth")
    h64 = h.double().cpu() if isinstance(h, torch.Tensor) else h
    return fn(x.double().cpu(), y.double().cpu(), w64, bandwidth=h64, **kw)


# ------------------------------------------------------------------ values vs the reference
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("wkind", [None, "vec", "cols"])
def test_kernel_sum_matches_reference(kernel, dtype, wkind, device):
    for m, n, d in SHAPES:
        x, y = _data(m, n, d, dtype, device)
        w = _weights(wkind, n, dtype, device)
        out = kf.kernel_sum(x, y, w, kernel=kernel, bandwidth=0.9)
        exp = _ref64(ref.kernel_sum, x, y, w, kernel=kernel, bandwidth=0.9)
        assert out.dtype == dtype and out.shape == exp.shape
        _assert_close(out, exp, dtype)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("wkind", [None, "vec", "cols"])
def test_kernel_logsumexp_matches_reference(kernel, dtype, wkind, device):
    for m, n, d in SHAPES:
        x, y = _data(m, n, d, dtype, device, seed=3)
        w = _weights(wkind, n, dtype, device)
        lw = None if w is None else w.log()
        out = kf.kernel_logsumexp(x, y, lw, kernel=kernel, bandwidth=1.7)
        exp = _ref64(ref.kernel_logsumexp, x, y, lw, kernel=kernel, bandwidth=1.7)
        assert out.shape == exp.shape
        fin = torch.isfinite(exp)
        assert torch.equal(torch.isfinite(out.cpu()), fin)  # -inf exactly where no point is in support
        assert (out.cpu()[~fin] == -math.inf).all()
        _assert_close(out.cpu()[fin], exp[fin], dtype)


@pytest.mark.parametrize("kernel", ["gaussian", "epanechnikov", "matern52"])
def test_batched_and_per_dim_bandwidth(kernel, device):
    B, m, n, d = 3, 11, 29, 4
    x, y = _data(m, n, d, torch.float64, device, batch=B)
    h = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64, device=device)
    for w in (
        None,
        _weights("vec", n, torch.float64, device, batch=B),
        _weights("cols", n, torch.float64, device),
        _weights("vec", n, torch.float64, device),
    ):
        out = kf.kernel_sum(x, y, w, kernel=kernel, bandwidth=h)
        if w is not None and w.dim() < 3 and tuple(w.shape) != (B, n):
            w = w.expand(B, *w.shape)
        exp = _ref64(ref.kernel_sum, x, y, w, kernel=kernel, bandwidth=h)
        _assert_close(out, exp, torch.float64)


@pytest.mark.parametrize("kernel", KERNELS)
def test_exclude_self(kernel, device):
    x, _ = _data(45, 1, 3, torch.float64, device)
    out = kf.kernel_sum(x, x, kernel=kernel, bandwidth=1.5, exclude_self=True)
    exp = ref.kernel_sum(x.cpu(), x.cpu(), kernel=kernel, bandwidth=1.5, exclude_self=True)
    _assert_close(out, exp, torch.float64)
    lo = kf.kernel_logsumexp(x, x, kernel=kernel, bandwidth=1.5, exclude_self=True)
    torch.testing.assert_close(
        lo.cpu(), ref.kernel_logsumexp(x.cpu(), x.cpu(), kernel=kernel, bandwidth=1.5, exclude_self=True)
    )


def test_exclude_self_is_not_a_subtraction():
    # In 64 dimensions the self term dominates by e^90: removing it by subtraction would leave noise.
    x, _ = _data(20, 1, 64, torch.float32, "cpu")
    out = kf.kernel_logsumexp(x, x, bandwidth=1.0, exclude_self=True)
    exp = ref.kernel_logsumexp(x.double(), x.double(), bandwidth=1.0, exclude_self=True)
    torch.testing.assert_close(out.double(), exp, rtol=2e-6, atol=0)
    s = kf.kernel_sum(x.double(), x.double(), bandwidth=3.0, exclude_self=True)
    torch.testing.assert_close(s, ref.kernel_sum(x.double(), x.double(), bandwidth=3.0, exclude_self=True))


def test_float32_accuracy_large_n():
    """Blocked accumulation: float32 within 2e-6 of float64 over 50k points."""
    x, y = _data(64, 50_000, 3, torch.float32, "cpu", seed=7)
    w = torch.rand(50_000, generator=torch.Generator().manual_seed(2))
    out = kf.kernel_sum(x, y, w, bandwidth=0.5)
    exp = ref.kernel_sum(x.double(), y.double(), w.double(), bandwidth=0.5)
    rel = ((out.double() - exp).abs() / exp).max().item()
    assert rel < 2e-6, rel


def test_logsumexp_high_dimension_float32():
    """d = 64, narrow bandwidth: log-sums near -150, below float32's exp range, stay exact in log space."""
    x, y = _data(50, 2000, 64, torch.float32, "cpu", seed=5)
    h = 0.5
    out = kf.kernel_logsumexp(x, y, bandwidth=h)
    assert (out < -100).all()
    assert (kf.kernel_sum(x, y, bandwidth=h) < 1e-38).all()  # the linear domain underflows
    exp = ref.kernel_logsumexp(x.double(), y.double(), bandwidth=h)
    torch.testing.assert_close(out.double(), exp, rtol=2e-6, atol=0)


def test_logsumexp_sq_gives_effective_sample_size():
    x, y = _data(9, 40, 2, torch.float64, "cpu")
    lw = torch.rand(40, dtype=torch.float64).log()
    lse, lse2 = kernel_logsumexp_sq(x, y, lw, kernel="epanechnikov", bandwidth=2.0)
    e1, e2 = ref.kernel_logsumexp_sq(x, y, lw, kernel="epanechnikov", bandwidth=2.0)
    torch.testing.assert_close(lse, e1)
    torch.testing.assert_close(lse2, e2)


def test_empty_inputs(device):
    x, y = _data(5, 0, 3, torch.float32, device)
    assert torch.equal(kf.kernel_sum(x, y).cpu(), torch.zeros(5))
    assert (kf.kernel_logsumexp(x, y).cpu() == -math.inf).all()
    w = torch.ones(0, 2, device=device)
    assert kf.kernel_sum(x, y, w).shape == (5, 2)
    x0, y1 = _data(0, 4, 3, torch.float32, device)
    assert kf.kernel_sum(x0, y1).shape == (0,)
    assert kf.kernel_logsumexp(x0, y1, torch.zeros(4, 2, device=device)).shape == (0, 2)
    # gradients of empty problems are zeros of the right shape
    x.requires_grad_(True)
    kf.kernel_sum(x, y).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_noncontiguous_inputs():
    x, y = _data(12, 31, 4, torch.float64, "cpu")
    xt = x.t().contiguous().t()
    yv = torch.cat([y, y], dim=1)[:, ::2]
    w = torch.rand(31, 6, dtype=torch.float64)[:, ::2]
    out = kf.kernel_sum(xt, yv, w, bandwidth=1.1)
    exp = ref.kernel_sum(x, y[:, :4] if False else yv.contiguous(), w.contiguous(), bandwidth=1.1)
    torch.testing.assert_close(out, exp)


# ------------------------------------------------------------------ autograd
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("log_domain", [False, True])
def test_gradcheck(kernel, log_domain):
    x, y = _data(6, 9, 3, torch.float64, "cpu", seed=11)
    x = (x * 0.6).requires_grad_(True)
    y = (y * 0.6).requires_grad_(True)
    w = (0.2 + torch.rand(9, 2, dtype=torch.float64)).requires_grad_(True)
    h = torch.tensor([1.1, 1.6, 1.3], dtype=torch.float64, requires_grad=True)
    if log_domain:
        fn = lambda x, y, w, h: kf.kernel_logsumexp(x, y, w.log(), kernel=kernel, bandwidth=h)  # noqa: E731
        if kernel in ("tophat", "epanechnikov", "linear", "cosine"):
            h = (h * 2.5).detach().requires_grad_(True)  # every query has a point in the support
    else:
        fn = lambda x, y, w, h: kf.kernel_sum(x, y, w, kernel=kernel, bandwidth=h)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, y, w, h), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("log_domain", [False, True])
def test_gradcheck_batched_exclude_self_scalar_bandwidth(log_domain):
    x, _ = _data(8, 1, 2, torch.float64, "cpu", seed=4, batch=2)
    x.requires_grad_(True)
    h = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    w = (0.5 + torch.rand(2, 8, dtype=torch.float64)).requires_grad_(True)
    op = kf.kernel_logsumexp if log_domain else kf.kernel_sum
    fn = lambda x, w, h: op(x, x, w, kernel="matern52", bandwidth=h, exclude_self=True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, h))


def test_backward_matches_reference_autograd():
    x, y = _data(50, 70, 5, torch.float64, "cpu", seed=2)
    w = torch.rand(70, 3, dtype=torch.float64)
    args = [t.clone().requires_grad_(True) for t in (x, y, w)]
    rargs = [t.clone().requires_grad_(True) for t in (x, y, w)]
    g = torch.randn(50, 3, dtype=torch.float64)
    for op, rop, lw in ((kf.kernel_sum, ref.kernel_sum, False), (kf.kernel_logsumexp, ref.kernel_logsumexp, True)):
        a = [t.grad.zero_() if t.grad is not None else None for t in args + rargs]  # noqa: F841
        out = op(args[0], args[1], args[2].log() if lw else args[2], kernel="cauchy", bandwidth=0.8)
        rout = rop(rargs[0], rargs[1], rargs[2].log() if lw else rargs[2], kernel="cauchy", bandwidth=0.8)
        torch.autograd.backward(out, g)
        torch.autograd.backward(rout, g)
        for t, r in zip(args, rargs):
            torch.testing.assert_close(t.grad, r.grad)


def test_float32_gradients_close_to_float64():
    x, y = _data(40, 3000, 3, torch.float32, "cpu", seed=9)
    x.requires_grad_(True)
    kf.kernel_sum(x, y, bandwidth=0.7).sum().backward()
    x64 = x.detach().double().requires_grad_(True)
    kf.kernel_sum(x64, y.double(), bandwidth=0.7).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-5 * x64.grad.abs().max().item())


# ------------------------------------------------------------------ opcheck, compile
def _op_samples():
    x, y = _data(7, 11, 3, torch.float64, "cpu")
    w = torch.rand(11, 2, dtype=torch.float64)
    h = torch.tensor([1.0, 1.5, 0.8], dtype=torch.float64)
    xb, yb = _data(5, 6, 2, torch.float32, "cpu", batch=2)
    hb = torch.tensor(1.2)
    g = torch.randn(7, 2, dtype=torch.float64)
    out = torch.ops.kernelfuse.kernel_logsumexp(x, y, w.log(), h, "gaussian", False)
    return [
        (torch.ops.kernelfuse.kernel_sum, (x.requires_grad_(), y, w.requires_grad_(), h, "matern32", False)),
        (torch.ops.kernelfuse.kernel_sum, (xb, yb, None, hb, "epanechnikov", False)),
        (torch.ops.kernelfuse.kernel_logsumexp, (x, y, w.log(), h.requires_grad_(), "gaussian", False)),
        (torch.ops.kernelfuse.kernel_logsumexp, (xb, xb, None, hb, "laplacian", True)),
        (torch.ops.kernelfuse.kernel_logsumexp_sq, (x.detach(), y, None, h.detach(), "cosine", False)),
        (
            torch.ops.kernelfuse.kernel_sum_bwd,
            (g, x.detach(), y, w.detach(), h.detach(), "cauchy", False, True, True, True),
        ),
        (
            torch.ops.kernelfuse.kernel_sum_bwd,
            (g[:, 0], x.detach(), y, None, h.detach(), "cauchy", False, True, False, False),
        ),
        (
            torch.ops.kernelfuse.kernel_logsumexp_bwd,
            (g, out, x.detach(), y, w.log().detach(), h.detach(), "gaussian", False, True, True, True),
        ),
    ]


@pytest.mark.parametrize("i", range(8))
def test_opcheck(i):
    op, args = _op_samples()[i]
    torch.library.opcheck(op, args)


def test_torch_compile_fullgraph():
    x, y = _data(16, 40, 3, torch.float32, "cpu")
    w = torch.rand(40)

    def f(x, y, w):
        return (kf.kernel_sum(x, y, w, bandwidth=0.7) + kf.kernel_logsumexp(x, y, w.log(), kernel="laplacian")).sum()

    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    torch.testing.assert_close(cf(xa, y, w), f(xb, y, w))
    cf(xa, y, w).backward()
    f(xb, y, w).backward()
    torch.testing.assert_close(xa.grad, xb.grad)


@pytest.mark.slow
def test_torch_compile_inductor():
    x, y = _data(16, 40, 3, torch.float32, "cpu")
    cf = torch.compile(lambda x, y: kf.kernel_sum(x, y, bandwidth=0.7) * 2, fullgraph=True)
    torch.testing.assert_close(cf(x, y), kf.kernel_sum(x, y, bandwidth=0.7) * 2)


# ------------------------------------------------------------------ bad input
def test_errors_name_the_argument():
    x, y = _data(5, 6, 3, torch.float32, "cpu")
    with pytest.raises(ValueError, match=r"argument 'y'.*3 columns.*\[6, 2\]"):
        kf.kernel_sum(x, y[:, :2])
    with pytest.raises(ValueError, match=r"argument 'y'.*dtype Float.*Double"):
        kf.kernel_sum(x, y.double())
    with pytest.raises(ValueError, match=r"argument 'weights'.*6 rows"):
        kf.kernel_sum(x, y, torch.ones(5))
    with pytest.raises(ValueError, match=r"argument 'weights'.*dtype"):
        kf.kernel_sum(x, y, torch.ones(6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"argument 'bandwidth'.*positive"):
        kf.kernel_sum(x, y, bandwidth=0.0)
    with pytest.raises(ValueError, match=r"argument 'bandwidth'.*positive"):
        kf.kernel_sum(x, y, bandwidth=-1.0)
    with pytest.raises(ValueError, match=r"argument 'bandwidth'.*positive"):
        kf.kernel_sum(x, y, bandwidth=float("nan"))
    with pytest.raises(ValueError, match=r"argument 'bandwidth'.*positive"):
        kf.kernel_sum(x, y, bandwidth=torch.tensor([1.0, float("nan"), 1.0]))
    with pytest.raises(ValueError, match=r"argument 'bandwidth'.*positive"):
        kf.kernel_sum(x, y, bandwidth=torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"argument 'bandwidth'.*\(d,\) = \(3,\)"):
        kf.kernel_sum(x, y, bandwidth=torch.ones(2))
    with pytest.raises(ValueError, match=r"argument 'kernel'.*'gauss'.*gaussian"):
        kf.kernel_sum(x, y, kernel="gauss")
    with pytest.raises(ValueError, match=r"argument 'x'.*\(m, d\)"):
        kf.kernel_sum(x[0], y)
    with pytest.raises(ValueError, match=r"argument 'x'.*float32 or float64.*Int"):
        kf.kernel_sum(x.int(), y.int())
    with pytest.raises(ValueError, match=r"argument 'exclude_self'.*same number of rows"):
        kf.kernel_sum(x, y, exclude_self=True)
    with pytest.raises(ValueError, match=r"argument 'y'.*batch size 2"):
        kf.kernel_sum(x.expand(2, 5, 3), y.expand(3, 6, 3))
    with pytest.raises(TypeError, match=r"argument 'y' must be a torch.Tensor"):
        kf.kernel_sum(x, y.numpy())
    # the raw op checks too (callers may bypass the Python wrapper)
    with pytest.raises(ValueError, match=r"argument 'kernel'"):
        torch.ops.kernelfuse.kernel_sum(x, y, None, torch.tensor(1.0), "nope", False)
    with pytest.raises(ValueError, match=r"argument 'grad'.*expected shape \[5\]"):
        torch.ops.kernelfuse.kernel_sum_bwd(
            torch.ones(4), x, y, None, torch.tensor(1.0), "gaussian", False, True, False, False
        )


def test_devices_that_differ():
    x, y = _data(5, 6, 3, torch.float32, "cpu")
    with pytest.raises(ValueError, match=r"argument 'y'.*device"):
        kf.kernel_sum(x, y.to("meta"))
    with pytest.raises(ValueError, match=r"argument 'weights'.*device"):
        kf.kernel_sum(x, y, torch.ones(6, device="meta"))


def test_build_info():
    info = kf.build_info()
    for key in ("version", "torch_version", "cuda", "cuda_archs", "omp_threads", "cpu_isa"):
        assert key in info
    assert info["version"] == kf.__version__
    assert info["omp_threads"] >= 1


def test_kernel_lists_agree():
    """The ops layer owns its kernel and metric lists; the reference (the spec) keeps its own."""
    from kernelfuse.ops import kde as ops_kde

    assert ops_kde.KERNELS == ref.KERNELS and ops_kde.METRICS == ref.METRICS
    assert set(ref.COMPACT_KERNELS) <= set(ops_kde.KERNELS)


# ------------------------------------------------------------------ CUDA-only paths
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kernel", ["gaussian", "epanechnikov", "matern32"])
def test_half_inputs_accumulate_in_float32(dtype, kernel):
    x, y = _data(257, 1031, 5, torch.float64, "cpu", seed=21)
    w = torch.rand(1031, 2, dtype=torch.float64)
    xs, ys, ws = (t.to("cuda", dtype) for t in (x, y, w))
    out = kf.kernel_sum(xs, ys, ws, kernel=kernel, bandwidth=1.3)
    assert out.dtype == dtype
    # the reference sees the same rounded inputs; the tolerance covers the output rounding
    exp = ref.kernel_sum(xs.double().cpu(), ys.double().cpu(), ws.double().cpu(), kernel=kernel, bandwidth=1.3)
    tol = TOL[dtype]
    torch.testing.assert_close(out.double().cpu(), exp, rtol=tol["rtol"], atol=tol["atol"] * exp.abs().max().item())
    lo = kf.kernel_logsumexp(xs, ys, ws.log(), kernel=kernel, bandwidth=1.3)
    lexp = ref.kernel_logsumexp(
        xs.double().cpu(), ys.double().cpu(), ws.log().double().cpu(), kernel=kernel, bandwidth=1.3
    )
    fin = torch.isfinite(lexp)
    torch.testing.assert_close(lo.double().cpu()[fin], lexp[fin], rtol=tol["rtol"], atol=tol["atol"] * 10)


@pytest.mark.cuda
def test_cuda_backward_matches_cpu():
    x, y = _data(300, 700, 4, torch.float64, "cpu", seed=8)
    w = torch.rand(700, 3, dtype=torch.float64)
    g = torch.randn(300, 3, dtype=torch.float64)
    grads = []
    for dev in ("cpu", "cuda"):
        args = [t.to(dev).requires_grad_(True) for t in (x, y, w)]
        for op, ww in ((kf.kernel_sum, args[2]), (kf.kernel_logsumexp, args[2].log())):
            torch.autograd.backward(
                op(args[0], args[1], ww, kernel="laplacian", bandwidth=0.9, exclude_self=False), g.to(dev)
            )
        grads.append([a.grad.cpu() for a in args])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a)


@pytest.mark.parametrize("kernel", ["gaussian", "cosine"])
def test_few_queries_many_points(kernel):
    """m small, n large: the points of a query block are split over threads and recombined."""
    x, y = _data(5, 4099, 3, torch.float64, "cpu", seed=13)
    w = 0.1 + torch.rand(4099, 2, dtype=torch.float64)
    args = [t.clone().requires_grad_(True) for t in (x, y, w)]
    g = torch.randn(5, 2, dtype=torch.float64)
    for op, rop, logw in ((kf.kernel_sum, ref.kernel_sum, False), (kf.kernel_logsumexp, ref.kernel_logsumexp, True)):
        for a in args:
            a.grad = None
        ww = args[2].log() if logw else args[2]
        out = op(args[0], args[1], ww, kernel=kernel, bandwidth=2.5)
        torch.autograd.backward(out, g)
        rargs = [t.clone().requires_grad_(True) for t in (x, y, w)]
        rww = rargs[2].log() if logw else rargs[2]
        rout = rop(rargs[0], rargs[1], rww, kernel=kernel, bandwidth=2.5)
        torch.autograd.backward(rout, g)
        torch.testing.assert_close(out, rout)
        for a, r in zip(args, rargs):
            torch.testing.assert_close(a.grad, r.grad)
    lse, lse2 = kernel_logsumexp_sq(x, y, w.log(), kernel=kernel, bandwidth=2.5)
    e1, e2 = ref.kernel_logsumexp_sq(x, y, w.log(), kernel=kernel, bandwidth=2.5)
    torch.testing.assert_close(lse, e1)
    torch.testing.assert_close(lse2, e2)
