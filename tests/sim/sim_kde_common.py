"""Shared by the kde family's simulator tests (tests/sim/test_sim_kde*.py): the dimension buckets
of kernel_sum_kernel, seeded inputs in the accumulation type, and the forward / backward calls of
the simulator's ops checked against the float64 reference (autograd through it for the backward)."""

import math

import torch
from conftest import assert_close_to_ref, sim_ops
from kernelfuse.reference import kde as ref

KERNELS = ref.KERNELS
COMPACT = ref.COMPACT_KERNELS
F64, F32, F16, BF16 = torch.float64, torch.float32, torch.float16, torch.bfloat16


def _dt(v):
    return str(v).replace("torch.", "")


def reg_max(dtype, bwd):
    return (32 if dtype == F64 else 64) // (2 if bwd else 1)


def chunk(dtype):
    return 16 if dtype == F64 else 32


def bucket_dims(dtype, bwd):
    """d values that reach every dimension bucket and its edges: 2, 4, reg_max (first step, a
    partial step, exactly reg_max), generic (one dim past reg_max, several chunks, partial last)."""
    k, dc = reg_max(dtype, bwd), chunk(dtype)
    return sorted({1, 2, 3, 4, 5, 9, k, k + 1, 2 * dc + 3})


# ---------------------------------------------------------------- data and calls
def _acc(dtype):
    return F64 if dtype == F64 else F32


def _pts(shape, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=F64) * scale).to(dtype)


def _bandwidth(kind, d, dtype, kernel):
    """A bandwidth in the accumulation type (what the glue passes to the kernel; the reference gets
    the same values in float64). Scaled with sqrt(2 d) so s = |x - y|^2 / h^2 is O(1) in every d:
    compact kernels see points inside and outside their support."""
    base = math.sqrt(2.0 * max(d, 1)) * (1.1 if kernel in COMPACT else 0.8)
    if kind == "scalar":
        return torch.tensor(base, dtype=_acc(dtype))
    f = torch.tensor([0.8, 1.0, 1.25, 0.9, 1.1], dtype=F64).repeat(d // 5 + 1)[:d]
    return (base * f).to(_acc(dtype))


def _weights(kind, n, dtype, seed, B=None):
    """None; "vec" (n,) / (B, n); c (int): (n, c) / (B, n, c); ("shared", c): (n, c) for a batch,
    expanded as the Python wrapper does (batch stride 0)."""
    if kind is None:
        return None
    g = torch.Generator().manual_seed(seed)
    lead = () if B is None else (B,)
    if kind == "vec":
        w = 0.2 + torch.rand(*lead, n, generator=g, dtype=F64)
    elif isinstance(kind, tuple):
        w = (0.2 + torch.rand(n, kind[1], generator=g, dtype=F64)).expand(B, n, kind[1])
    else:
        w = 0.2 + torch.rand(*lead, n, kind, generator=g, dtype=F64)
    return w.to(dtype)


def _d64(t):
    return None if t is None else t.double()


def _fwd_ref(op, x, y, w, h, kernel, excl, metric="euclidean", p=2.0):
    kw = dict(kernel=kernel, bandwidth=h.double(), exclude_self=excl, metric=metric, p=p)
    if op == "sum":
        return (ref.kernel_sum(x.double(), y.double(), _d64(w), **kw),)
    if op == "lse":
        return (ref.kernel_logsumexp(x.double(), y.double(), _d64(w), **kw),)
    return ref.kernel_logsumexp_sq(x.double(), y.double(), _d64(w), **kw)


def _fwd_sim(op, x, y, w, h, kernel, excl, metric="euclidean", p=2.0):
    if op == "sum":
        return (sim_ops.kernel_sum(x, y, w, h, kernel, excl, metric, p),)
    if op == "lse":
        return (sim_ops.kernel_logsumexp(x, y, w, h, kernel, excl, metric, p),)
    return tuple(sim_ops.kernel_logsumexp_sq(x, y, w, h, kernel, excl, metric, p))


def _check_fwd(outs, exps, dtype, factor=1.0):
    for out, exp in zip(outs, exps):
        assert out.dtype == dtype and out.shape == exp.shape, (out.dtype, out.shape, exp.shape)
        out = out.double()
        fin = torch.isfinite(exp)
        # -inf exactly where no point is in the support (log domain); no NaN anywhere
        assert torch.equal(torch.isfinite(out), fin), (out[~fin], exp[~fin])
        assert torch.equal(out[~fin], exp[~fin])
        if fin.any():
            assert_close_to_ref(out[fin], exp[fin], dtype, factor=factor)


def run_fwd(op, x, y, w, h, kernel="gaussian", excl=False, factor=1.0, sim=None, metric="euclidean", p=2.0):
    """op: "sum" (w: weights), "lse" / "lse_sq" (w: log-weights)."""
    outs = _fwd_sim(op, x, y, w, h, kernel, excl, metric, p) if sim is None else sim()
    _check_fwd(outs, _fwd_ref(op, x, y, w, h, kernel, excl, metric, p), x.dtype, factor)
    return outs


def _ref_grads(op, grad, x, y, w, h, kernel, excl, metric="euclidean", p=2.0, with_h=False):
    """(gx, gy, gw, out) by autograd through the float64 reference (with_h: (gx, gy, gw, out, gh))."""
    x64 = x.double().clone().requires_grad_(True)  # clone: x may be y (and .double() of float64 is x)
    y64 = y.double().clone().requires_grad_(True)
    w64 = None if w is None else w.double().clone().requires_grad_(True)
    h64 = h.double().clone().requires_grad_(with_h)
    kw = dict(kernel=kernel, bandwidth=h64, exclude_self=excl, metric=metric, p=p)
    fn = ref.kernel_sum if op == "sum" else ref.kernel_logsumexp
    out = fn(x64, y64, w64, **kw)
    leaves = [x64, y64] + ([w64] if w is not None else []) + ([h64] if with_h else [])
    g = torch.autograd.grad(out, leaves, grad.double(), allow_unused=True)
    g = [torch.zeros_like(t) if gi is None else gi for t, gi in zip(leaves, g)]
    res = g[0], g[1], (g[2] if w is not None else None), out.detach()
    return res + (g[-1],) if with_h else res


def run_bwd(
    op,
    x,
    y,
    w,
    h,
    kernel="gaussian",
    excl=False,
    need=(True, True, True),
    factor=1.0,
    seed=7,
    sim_out=None,
    metric="euclidean",
    p=2.0,
    need_h=False,
):
    """kernel_sum_bwd (op "sum") / kernel_logsumexp_bwd (op "lse") against reference autograd
    (need_h: also the in-pass bandwidth gradient of a scalar bandwidth)."""
    dtype = x.dtype
    fshape = x.shape[:-1] + ((w.shape[-1],) if (w is not None and w.dim() == y.dim()) else ())
    grad = _pts(fshape, dtype, seed)
    egx, egy, egw, eout, *egh = _ref_grads(op, grad, x, y, w, h, kernel, excl, metric, p, with_h=need_h)
    nx, ny, nw = need
    tail = (metric, p, need_h)
    if op == "sum":
        gx, gy, gw, gh = sim_ops.kernel_sum_bwd(grad, x, y, w, h, kernel, excl, nx, ny, nw, *tail)
    else:
        out = eout.to(dtype) if sim_out is None else sim_out
        gx, gy, gw, gh = sim_ops.kernel_logsumexp_bwd(grad, out, x, y, w, h, kernel, excl, nx, ny, nw, *tail)
    if need_h:
        assert gh.shape == h.shape and torch.isfinite(gh).all()
        assert_close_to_ref(gh, egh[0], dtype, factor=factor * 4)  # one sum over all pairs
    else:
        assert gh.numel() == 0
    for got, exp, want in ((gx, egx, nx), (gy, egy, ny), (gw, egw, nw and w is not None)):
        if not want:
            assert got.numel() == 0
            continue
        assert got.dtype == dtype and got.shape == exp.shape, (got.shape, exp.shape)
        assert torch.isfinite(got).all()
        assert_close_to_ref(got, exp, dtype, factor=factor)
    return gx, gy, gw
