"""Regression tests of issue 13 (reliability): every requires-grad subset, bad and odd inputs.

One test per repro of the issue, plus the property test of tests/test_bad_inputs.py.
"""

import itertools

import kernelfuse as kf
import pytest
import torch


def _spd(n, g):
    a = torch.randn(n, n, dtype=torch.float64, generator=g)
    return a @ a.T + n * torch.eye(n, dtype=torch.float64)


def _grads_match(build, inputs, mask):
    """Backward with only the inputs in ``mask`` requiring grad equals the full backward's grads."""
    full = [t.detach().clone().requires_grad_(True) for t in inputs]
    build(full).backward()
    part = [t.detach().clone().requires_grad_(bool(m)) for t, m in zip(inputs, mask)]
    build(part).backward()
    for f, p, m in zip(full, part, mask):
        if m:
            torch.testing.assert_close(p.grad, f.grad, rtol=1e-10, atol=1e-12)
        else:
            assert p.grad is None


@pytest.mark.parametrize("mask", [m for m in itertools.product([0, 1], repeat=3) if any(m)])
def test_kron_matmul_every_requires_grad_subset(mask):
    g = torch.Generator().manual_seed(0)
    ins = [
        _spd(2, g),
        torch.randn(3, 3, dtype=torch.float64, generator=g),
        torch.randn(4, 6, dtype=torch.float64, generator=g),
    ]
    _grads_match(lambda t: (kf.kron_matmul([t[0], t[1]], t[2]) ** 2).sum(), ins, mask)


@pytest.mark.parametrize("mask", [m for m in itertools.product([0, 1], repeat=4) if any(m)])
@pytest.mark.parametrize("op", ["mll", "solve"])
def test_kron_gp_mll_and_solve_every_requires_grad_subset(op, mask):
    g = torch.Generator().manual_seed(1)
    ins = [
        _spd(2, g),
        _spd(3, g),
        torch.randn(6, dtype=torch.float64, generator=g),
        torch.tensor(0.3, dtype=torch.float64),
    ]

    def build(t):
        if op == "solve":
            return (kf.kron_solve([t[0], t[1]], t[2], t[3]) ** 2).sum()
        nll, alpha = kf.kron_gp_mll([t[0], t[1]], t[2], t[3])
        return nll + (alpha**2).sum()

    _grads_match(build, ins, mask)


@pytest.mark.parametrize("mask", [m for m in itertools.product([0, 1], repeat=4) if any(m)])
def test_kron_posterior_every_requires_grad_subset(mask):
    g = torch.Generator().manual_seed(2)
    ins = [
        _spd(2, g),
        _spd(3, g),
        torch.randn(5, 2, dtype=torch.float64, generator=g),
        torch.randn(5, 3, dtype=torch.float64, generator=g),
    ]
    y = torch.randn(6, dtype=torch.float64, generator=g)

    def build(t):
        mean, _ = kf.kron_posterior(
            [t[0], t[1]], y, 0.3, cross_factors=[t[2], t[3]], targets="scattered", return_var=False
        )
        return (mean**2).sum()

    _grads_match(build, ins, mask)


# =====================================================================================================
# kron / gp ops (kron_matmul, kron_gp_mll, kron_solve, kron_posterior, grid_kernel, their raw ops and
# *_bwd twins, kernelfuse.gp): issue 13 items 1 (one device, meta included), 2 (non-finite grid points
# and the Toeplitz path), 4 (grid_kernel requires-grad subsets), 5 (empty inputs), 8 (errors naming
# the argument), and a property-style sweep over bad-input classes.
# =====================================================================================================
import math
import re
import time

from kernelfuse.reference import kron as kref
from kernelfuse.reference import kron_grid as gref

F64 = torch.float64
_ops = torch.ops.kernelfuse


def _t(*shape, seed=0, dtype=F64):
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def _raw_cases():
    """Valid arguments of every raw kron / grid op: {op name: (callable, [(name, value), ...])}."""
    g = torch.Generator().manual_seed(5)
    f0, f1 = _spd(2, g), _spd(3, g)
    y = torch.randn(2, 6, dtype=F64, generator=g)
    s2 = torch.tensor(0.3, dtype=F64)
    nll, alpha, eig, rot = _ops.kron_gp_mll([f0, f1], y, s2)
    x = torch.linspace(0, 1, 5, dtype=F64)
    p = torch.tensor([[0.1, -1.0]], dtype=F64)
    cs = [torch.randn(4, 2, dtype=F64, generator=g), torch.randn(4, 3, dtype=F64, generator=g)]
    return {
        "kron_matmul": (
            lambda a: _ops.kron_matmul(a["factors"], a["x"], False),
            [("factors", [f0, torch.randn(3, 4, dtype=F64, generator=g)]), ("x", torch.randn(2, 8, dtype=F64))],
        ),
        "kron_matmul_bwd": (
            lambda a: _ops.kron_matmul_bwd(a["grad"], a["factors"], a["x"], False, True, True),
            [("grad", torch.randn(2, 6, dtype=F64)), ("factors", [f0, f1]), ("x", torch.randn(2, 6, dtype=F64))],
        ),
        "kron_gp_mll": (
            lambda a: _ops.kron_gp_mll(a["factors"], a["y"], a["noise"]),
            [("factors", [f0, f1]), ("y", y), ("noise", s2)],
        ),
        "kron_gp_mll_bwd": (
            lambda a: _ops.kron_gp_mll_bwd(
                a["grad_nll"], a["grad_alpha"], a["factors"], a["noise"], a["eig"], a["alpha_rot"], True, True, True
            ),
            [
                ("grad_nll", torch.ones(2, dtype=F64)),
                ("grad_alpha", torch.randn(2, 6, dtype=F64)),
                ("factors", [f0, f1]),
                ("noise", s2),
                ("eig", eig),
                ("alpha_rot", rot),
            ],
        ),
        "kron_posterior_var": (
            lambda a: _ops.kron_posterior_var(
                a["factors"], a["noise"], a["cross_factors"], "scattered", a["prior_var"], a["eig"]
            ),
            [
                ("factors", [f0, f1]),
                ("noise", s2),
                ("cross_factors", cs),
                ("prior_var", torch.ones(4, dtype=F64)),
                ("eig", eig),
            ],
        ),
        "grid_kernel": (
            lambda a: _ops.grid_kernel(a["x1"], a["x2"], "rbf", a["params"], 0, 0, -1),
            [("x1", x), ("x2", x.clone()), ("params", p)],
        ),
        "grid_kernel_bwd": (
            lambda a: _ops.grid_kernel_bwd(a["grad"], a["x1"], a["x2"], "rbf", a["params"], 0, 0, -1),
            [("grad", torch.randn(5, 5, dtype=F64)), ("x1", x), ("x2", x.clone()), ("params", p)],
        ),
    }


def _positions(args):
    """(label, path) of every tensor argument: path = (name,) or (name, index) for a list entry."""
    out = []
    for name, v in args:
        if isinstance(v, (list, tuple)):
            out += [(f"{name}[{i}]", (name, i)) for i in range(len(v))]
        else:
            out.append((name, (name,)))
    return out


def _replace(args, path, fn):
    """args as a dict with the tensor at ``path`` replaced by fn(tensor)."""
    d = {n: (list(v) if isinstance(v, (list, tuple)) else v) for n, v in args}
    if len(path) == 1:
        d[path[0]] = fn(d[path[0]])
    else:
        d[path[0]][path[1]] = fn(d[path[0]][path[1]])
    return d


# ---------------------------------------------------------------- item 1: one device (meta included)
def test_grid_kernel_meta_argument_is_an_error():
    x = torch.linspace(0, 1, 9, dtype=F64)
    with pytest.raises(ValueError, match=r"'x2'.*on cpu.*got one on meta"):
        kf.grid_kernel(x, x.to("meta"), "rbf", torch.zeros(1, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"'params'.*on cpu.*got one on meta"):
        kf.grid_kernel(x, x, "rbf", torch.zeros(1, 2, dtype=F64, device="meta"))


def test_raw_kron_matmul_meta_argument_is_an_error():
    with pytest.raises(ValueError, match=r"'x'.*on cpu.*'factors\[0\]'.*got one on meta"):
        _ops.kron_matmul([torch.randn(3, 3, dtype=F64)], torch.randn(2, 3, dtype=F64, device="meta"), False)


@pytest.mark.parametrize("op", list(_raw_cases()))
def test_raw_ops_meta_in_every_tensor_position(op):
    call, args = _raw_cases()[op]
    for label, path in _positions(args):
        with pytest.raises(ValueError, match=re.escape(f"'{label}'") + ".*(meta|cpu)"):
            call(_replace(args, path, lambda t: t.to("meta")))
    # every tensor on meta: the fake kernel, correctly shaped results
    real = call(dict((n, v) for n, v in args))
    meta = call({n: ([t.to("meta") for t in v] if isinstance(v, list) else v.to("meta")) for n, v in args})
    flat = lambda r: [r] if isinstance(r, torch.Tensor) else [u for e in r for u in flat(e)]  # noqa: E731
    assert [t.shape for t in flat(meta)] == [t.shape for t in flat(real)]
    assert all(t.device.type == "meta" for t in flat(meta))


def test_public_wrappers_meta_in_every_position():
    g = torch.Generator().manual_seed(3)
    f0, f1, y = _spd(2, g), _spd(3, g), torch.randn(6, dtype=F64, generator=g)
    m = lambda t: t.to("meta")  # noqa: E731
    with pytest.raises(ValueError, match=r"'factors\[1\]'.*meta"):
        kf.kron_matmul([f0, m(f1)], y)
    with pytest.raises(ValueError, match=r"'y'.*meta"):
        kf.kron_gp_mll([f0, f1], m(y), 0.1)
    with pytest.raises(ValueError, match=r"'noise'.*meta"):
        kf.kron_solve([f0, f1], y, m(torch.tensor(0.1, dtype=F64)))
    cs = [torch.randn(4, 2, dtype=F64), torch.randn(4, 3, dtype=F64)]
    with pytest.raises(ValueError, match=r"'cross_factors\[0\]'.*meta"):
        kf.kron_posterior([f0, f1], y, 0.1, cross_factors=[m(cs[0]), cs[1]], targets="scattered", prior_var=1.0)
    with pytest.raises(ValueError, match=r"'prior_var'.*meta"):
        kf.kron_posterior(
            [f0, f1], y, 0.1, cross_factors=cs, targets="scattered", prior_var=m(torch.ones(4, dtype=F64))
        )
    with pytest.raises(ValueError, match=r"'prior_var\[1\]'.*meta"):
        kf.kron_posterior(
            [f0, f1],
            y,
            0.1,
            cross_factors=[cs[0][:3], cs[1][:2]],
            targets="grid",
            prior_var=[torch.ones(3, dtype=F64), m(torch.ones(2, dtype=F64))],
        )
    with pytest.raises(ValueError, match=r"'y'.*meta"):
        kf.gp.GridGPRegressor(max_iter=0).fit([torch.arange(3.0), torch.arange(2.0)], m(torch.zeros(3, 2)))


# ---------------------------------------------------------------- item 2: non-finite grid points
def test_grid_kernel_nan_point_gives_nan_row_not_toeplitz():
    x = torch.linspace(0, 1, 9, dtype=F64)
    x[4] = float("nan")
    K = kf.grid_kernel(x, x, "rbf", torch.zeros(1, 2, dtype=F64))
    assert torch.isnan(K[4]).all() and torch.isnan(K[:, 4]).all()
    torch.testing.assert_close(
        K, kf.grid_kernel(x, x, "rbf", torch.zeros(1, 2, dtype=F64), toeplitz=False), equal_nan=True
    )
    with pytest.raises(ValueError, match=r"'x1'.*finite.*toeplitz.*nan at \[4\]"):
        kf.grid_kernel(x, x, "rbf", torch.zeros(1, 2, dtype=F64), toeplitz=True)
    # odd derivative orders too (sign(tau) of a NaN tau was taken as 0: a zero row, not NaN)
    for orders in [(1, 0), (0, 1), (2, 1)]:
        K = kf.grid_kernel(x, x, "rbf", torch.zeros(1, 2, dtype=F64), orders=orders)
        assert torch.isnan(K[4]).all() and torch.isnan(K[:, 4]).all(), orders
        assert torch.isfinite(K[:4, :4]).all(), orders
    xi = torch.tensor([0.0, float("inf")], dtype=F64)  # inf - inf at odd order: NaN, as the reference
    torch.testing.assert_close(
        kf.grid_kernel(xi, xi, "rbf", torch.zeros(1, 2, dtype=F64), orders=(1, 0)),
        gref.grid_kernel(xi, xi, "rbf", torch.zeros(1, 2, dtype=F64), orders=(1, 0)),
        equal_nan=True,
    )


def test_grid_kernel_inf_point_uneven_grid_is_direct():
    x = torch.tensor([0.0, 0.1, 0.5, 0.6, float("inf")], dtype=F64)  # uneven: no Toeplitz grid at all
    p = torch.tensor([[0.0, -1.0]], dtype=F64)
    K = kf.grid_kernel(x, x, "rbf", p)
    torch.testing.assert_close(K, gref.grid_kernel(x, x, "rbf", p), equal_nan=True)
    torch.testing.assert_close(K, kf.grid_kernel(x, x, "rbf", p, toeplitz=False), equal_nan=True)
    with pytest.raises(ValueError, match=r"'x2'.*finite.*inf at \[3\]"):
        kf.grid_kernel(x[:4].contiguous(), x[1:].contiguous(), "rbf", p, toeplitz=True)
    one = torch.tensor([float("nan")], dtype=F64)  # a single point: not a grid either
    assert torch.isnan(kf.grid_kernel(one, one, "rbf", p)).all()


# ---------------------------------------------------------------- item 4: grid_kernel requires-grad subsets
@pytest.mark.parametrize("mask", [m for m in itertools.product([0, 1], repeat=3) if any(m)])
@pytest.mark.parametrize("toeplitz", [None, False])
def test_grid_kernel_every_requires_grad_subset(mask, toeplitz):
    x = torch.linspace(-1, 1, 6, dtype=F64)
    ins = [x, x.clone(), torch.tensor([[0.2, -0.5], [-0.3, 0.1]], dtype=F64)]
    w = _t(6, 6, seed=4)
    _grads_match(lambda t: (kf.grid_kernel(t[0], t[1], "matern52", t[2], toeplitz=toeplitz) * w).sum(), ins, mask)
    full = [t.detach().clone().requires_grad_(True) for t in ins]
    (gref.grid_kernel(*full[:2], "matern52", full[2]) * w).sum().backward()
    mine = [t.detach().clone().requires_grad_(True) for t in ins]
    (kf.grid_kernel(mine[0], mine[1], "matern52", mine[2], toeplitz=toeplitz) * w).sum().backward()
    for a, b in zip(mine, full):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-11)


def test_regressor_fixed_noise_trains_the_rest():
    grid = [torch.linspace(0, 1, 5, dtype=F64), torch.linspace(0, 1, 4, dtype=F64)]
    y = torch.sin(3 * grid[0])[:, None] + torch.cos(2 * grid[1])[None, :]
    m = kf.gp.GridGPRegressor(noise=0.05, learn_noise=False, optimizer="adam", max_iter=3).fit(grid, y)
    assert abs(m.hyperparameters_["noise"] - 0.05) < 1e-12 and math.isfinite(m.nll_)
    assert len(m.history_) == 3 and m.history_[-1] < m.history_[0]


# ---------------------------------------------------------------- item 5: empty inputs
def _backward_all(out, ins):
    outs = [out] if isinstance(out, torch.Tensor) else [o for o in out if o is not None]
    sum(o.sum() for o in outs).backward()
    return [t.grad for t in ins]


def test_kron_matmul_empty_factor_forward_and_backward():
    f = torch.zeros(3, 0, dtype=F64, requires_grad=True)
    x = torch.zeros(0, dtype=F64, requires_grad=True)
    out = kf.kron_matmul([f], x)
    assert out.shape == (3,) and bool((out == 0).all())
    gf, gx = _backward_all(out, [f, x])
    assert gf.shape == (3, 0) and gx.shape == (0,)
    f2 = torch.randn(0, 3, dtype=F64, requires_grad=True)
    x2 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    out = kf.kron_matmul([f2, torch.eye(2, dtype=F64)], torch.randn(5, 6, dtype=F64))
    assert out.shape == (5, 0)
    out = kf.kron_matmul([f2], x2)
    assert out.shape == (2, 0)
    gf, gx = _backward_all(out, [f2, x2])
    assert gf.shape == (0, 3) and bool((gx == 0).all()) and gx.shape == (2, 3)


@pytest.mark.parametrize("dims", [[0], [2, 0], [0, 3]])
def test_kron_mll_solve_empty_factor(dims):
    fs = [
        (_spd(n, torch.Generator().manual_seed(n)) if n else torch.zeros(0, 0, dtype=F64)).requires_grad_(True)
        for n in dims
    ]
    y = torch.zeros(0, dtype=F64, requires_grad=True)
    s2 = torch.tensor(0.2, dtype=F64, requires_grad=True)
    nll, alpha = kf.kron_gp_mll(fs, y, s2)
    assert nll.shape == () and float(nll.detach()) == 0.0 and alpha.shape == (0,)
    grads = _backward_all((nll, alpha), fs + [y, s2])
    for gr, t in zip(grads, fs + [y, s2]):
        assert gr.shape == t.shape and bool((gr == 0).all())
    assert kf.kron_solve([f.detach() for f in fs], torch.zeros(4, 0, dtype=F64), 0.2).shape == (4, 0)
    mean, var = kf.kron_posterior([f.detach() for f in fs], torch.zeros(0, dtype=F64), 0.2)
    assert mean.shape == (0,) and var.shape == (0,)


@pytest.mark.parametrize("targets", ["grid", "scattered"])
def test_kron_posterior_zero_targets(targets):
    g = torch.Generator().manual_seed(6)
    fs = [_spd(2, g).requires_grad_(True), _spd(3, g).requires_grad_(True)]
    y = torch.randn(6, dtype=F64, generator=g, requires_grad=True)
    cs = [
        torch.zeros(0, 2, dtype=F64, requires_grad=True),
        torch.zeros(0 if targets == "scattered" else 2, 3, dtype=F64, requires_grad=True),
    ]
    mean, var = kf.kron_posterior(fs, y, 0.1, cross_factors=cs, targets=targets, prior_var=1.0)
    assert mean.shape == (0,) and var.shape == (0,)
    mean.sum().backward()
    assert all(bool((t.grad == 0).all()) and t.grad.shape == t.shape for t in fs + [y] + cs)


def test_grid_kernel_empty_points_backward():
    x1 = torch.zeros(0, dtype=F64, requires_grad=True)
    x2 = torch.linspace(0, 1, 4, dtype=F64, requires_grad=True)
    p = torch.zeros(1, 2, dtype=F64, requires_grad=True)
    K = kf.grid_kernel(x1, x2, "rbf", p)
    assert K.shape == (0, 4)
    for gr, t in zip(_backward_all(K, [x1, x2, p]), [x1, x2, p]):
        assert gr.shape == t.shape and bool((gr == 0).all())


# ---------------------------------------------------------------- item 8: errors naming the argument
def test_sizes_are_checked_before_the_allocator():
    with pytest.raises(ValueError, match=r"'factors'.*elements.*GiB"):
        kf.kron_matmul([torch.randn(100000, 1)] * 3, torch.randn(1))
    with pytest.raises(ValueError, match=r"'factors'.*overflows int64"):
        kf.kron_matmul([torch.randn(10**6, 1)] * 4, torch.randn(1))
    with pytest.raises(ValueError, match=r"'x2'.*kernel matrix.*\(1000000, 1000000\)"):
        kf.grid_kernel(torch.zeros(10**6), torch.zeros(10**6), "rbf", torch.zeros(1, 2))
    f = torch.eye(2, dtype=F64)
    with pytest.raises(ValueError, match=r"'cross_factors'.*elements"):
        kf.kron_posterior(
            [f] * 3,
            torch.randn(8, dtype=F64),
            0.1,
            cross_factors=[torch.ones(1, 2, dtype=F64).expand(10**5, 2)] * 3,
            targets="grid",
            prior_var=1.0,
        )
    with pytest.raises(ValueError, match=r"'cross_factors'.*elements"):
        _ops.kron_posterior_var(
            [f] * 3,
            torch.tensor(0.1, dtype=F64),
            [torch.ones(1, 2, dtype=F64).expand(10**5, 2)] * 3,
            "grid",
            torch.ones(1, dtype=F64).expand(10**15),
            None,
        )
    with pytest.raises(ValueError, match=r"'factors'.*backward"):
        big = torch.zeros(1, 1).expand(1, 10**10)  # x and grad (1, 10^10) as stride-0 views
        _ops.kron_matmul_bwd(big, [torch.randn(1, 10**5), torch.randn(10**5, 1)] * 2, big, False, False, True)


@pytest.mark.parametrize("op", ["mll", "solve", "posterior"])
def test_nan_factor_is_named_before_eigh(op):
    g = torch.Generator().manual_seed(7)
    f0, f1 = _spd(2, g), _spd(3, g)
    f1[1, 2] = float("nan")
    y = torch.randn(6, dtype=F64, generator=g)
    call = {
        "mll": lambda: kf.kron_gp_mll([f0, f1], y, 0.1),
        "solve": lambda: kf.kron_solve([f0, f1], y, 0.1),
        "posterior": lambda: kf.kron_posterior([f0, f1], y, 0.1),
    }[op]
    with pytest.raises(ValueError, match=r"'factors\[1\]'.*finite.*nan at \[1, 2\]"):
        call()
    f0[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"'factors\[0\]'.*finite.*inf at \[0, 0\]"):
        call()
    with pytest.raises(ValueError, match=r"'factors\[0\]'.*finite"):
        _ops.kron_posterior_var([f0, f1], torch.tensor(0.1, dtype=F64), [], "train", None, None)


def test_raw_none_for_required_tensor_arguments():
    for op, (call, args) in _raw_cases().items():
        for name, v in args:
            if (
                isinstance(v, list)
                or name in ("grad_nll", "grad_alpha", "prior_var", "eig")
                and op != "kron_gp_mll_bwd"
                or name in ("grad_nll", "grad_alpha")
            ):
                continue
            d = dict(args)
            d[name] = None
            with pytest.raises(ValueError, match=re.escape(f"'{name}'") + ".*expected a tensor, got None"):
                call(d)
            # also when another argument is meta (the fake kernel)
            dm = {
                n: ([t.to("meta") for t in u] if isinstance(u, list) else (None if u is None else u.to("meta")))
                for n, u in d.items()
            }
            with pytest.raises((ValueError, TypeError), match=re.escape(f"'{name}'")):
                call(dm)


def test_raw_eig_size_is_checked_before_slicing():
    call, args = _raw_cases()["kron_gp_mll_bwd"]
    for bad in (torch.zeros(3, dtype=F64), torch.zeros(200, dtype=F64), torch.zeros(2, 8, dtype=F64)):
        with pytest.raises(ValueError, match=r"'eig'.*expected shape \(18,\)"):
            call(_replace(args, ("eig",), lambda t: bad))
    call, args = _raw_cases()["kron_posterior_var"]
    with pytest.raises(ValueError, match=r"'eig'.*expected shape \(18,\)"):
        call(_replace(args, ("eig",), lambda t: t[:-1]))
    with pytest.raises(ValueError, match=r"'eig'.*dtype"):
        call(_replace(args, ("eig",), lambda t: t.float()))
    # N = 0 (an empty axis): still checked
    with pytest.raises(ValueError, match=r"'eig'.*expected shape \(6,\)"):
        _ops.kron_posterior_var(
            [torch.eye(2, dtype=F64), torch.zeros(0, 0, dtype=F64)],
            torch.tensor(0.1, dtype=F64),
            [],
            "train",
            None,
            torch.zeros(5, dtype=F64),
        )


# ---------------------------------------------------------------- property-style sweep
def _gref(x1, x2, kind, params, **kw):
    """The grid_kernel reference, and (n1, n2) zeros for no points (vmap over nothing fails)."""
    if x1.numel() == 0 or x2.numel() == 0:
        return torch.zeros(x1.shape[0], x2.shape[0], dtype=F64) + 0 * params.sum()
    return gref.grid_kernel(x1, x2, kind, params, **kw)


def _spec_cases():
    """label -> (ours(args), reference(args), [(name, tensor | list of tensors)], differentiable names)."""
    g = torch.Generator().manual_seed(11)
    r = lambda *s: torch.randn(*s, dtype=F64, generator=g)  # noqa: E731
    f2, f3 = _spd(2, g), _spd(3, g)
    s2 = torch.tensor(0.3, dtype=F64)
    lin = torch.linspace(-1, 1, 6, dtype=F64)
    post = lambda a, **kw: kf.kron_posterior(a["factors"], a["y"], a["noise"], **kw)  # noqa: E731
    rpost = lambda a, **kw: kref.kron_posterior(a["factors"], a["y"], a["noise"], **kw)  # noqa: E731
    fy = [("factors", [f2, f3]), ("y", r(6)), ("noise", s2)]
    cases = {
        "kron_matmul": (
            lambda a: kf.kron_matmul(a["factors"], a["x"]),
            lambda a: kref.kron_matmul(a["factors"], a["x"]),
            [("factors", [r(2, 3), r(3, 2)]), ("x", r(2, 6))],
            ("factors", "x"),
        ),
        "kron_matmul(T)": (
            lambda a: kf.kron_matmul(a["factors"], a["x"], transpose=True),
            lambda a: kref.kron_matmul(a["factors"], a["x"], transpose=True),
            [("factors", [r(3, 2), r(2, 3)]), ("x", r(6))],
            ("factors", "x"),
        ),
        "kron_gp_mll": (
            lambda a: kf.kron_gp_mll(a["factors"], a["y"], a["noise"]),
            lambda a: kref.kron_gp_mll(a["factors"], a["y"], a["noise"]),
            fy,
            ("factors", "y", "noise"),
        ),
        "kron_solve": (
            lambda a: kf.kron_solve(a["factors"], a["y"], a["noise"]),
            lambda a: kref.kron_solve(a["factors"], a["y"], a["noise"]),
            [("factors", [f2, f3]), ("y", r(2, 6)), ("noise", s2)],
            ("factors", "y", "noise"),
        ),
        "kron_posterior(train)": (lambda a: post(a), lambda a: rpost(a), fy, ("factors", "y", "noise")),
        "kron_posterior(grid)": (
            lambda a: post(a, cross_factors=a["cross_factors"], targets="grid", prior_var=a["prior_var"]),
            lambda a: rpost(a, cross_factors=a["cross_factors"], targets="grid", prior_var=a["prior_var"]),
            fy + [("cross_factors", [r(3, 2), r(2, 3)]), ("prior_var", r(6).abs() + 2)],
            ("factors", "y", "noise", "cross_factors"),
        ),
        "kron_posterior(scattered)": (
            lambda a: post(a, cross_factors=a["cross_factors"], targets="scattered", prior_var=a["prior_var"]),
            lambda a: rpost(a, cross_factors=a["cross_factors"], targets="scattered", prior_var=a["prior_var"]),
            fy + [("cross_factors", [r(4, 2), r(4, 3)]), ("prior_var", torch.tensor(2.5, dtype=F64))],
            ("factors", "y", "noise", "cross_factors"),
        ),
        "grid_kernel(auto)": (
            lambda a: kf.grid_kernel(a["x1"], a["x2"], "rbf", a["params"]),
            lambda a: _gref(a["x1"], a["x2"], "rbf", a["params"]),
            [("x1", lin), ("x2", lin.clone()), ("params", r(2, 2) * 0.3)],
            ("x1", "x2", "params"),
        ),
        # one tensor as x1 and x2: the Toeplitz auto-detection sees the perturbed points (item 2)
        "grid_kernel(auto, one x)": (
            lambda a: kf.grid_kernel(a["x1"], a["x1"], "stm", a["params"], orders=(0, 1)),
            lambda a: _gref(a["x1"], a["x1"], "stm", a["params"], orders=(0, 1)),
            [("x1", lin), ("params", r(2, 3) * 0.3)],
            ("x1", "params"),
        ),
        "grid_kernel(toeplitz)": (
            lambda a: kf.grid_kernel(a["x1"], a["x1"], "matern52", a["params"], orders=(1, 1), toeplitz=True),
            lambda a: _gref(a["x1"], a["x1"], "matern52", a["params"], orders=(1, 1)),
            [("x1", lin), ("params", r(1, 2) * 0.3)],
            ("x1", "params"),
        ),
        "grid_kernel(direct)": (
            lambda a: kf.grid_kernel(a["x1"], a["x2"], "sm", a["params"], orders=(2, 0), toeplitz=False),
            lambda a: _gref(a["x1"], a["x2"], "sm", a["params"], orders=(2, 0)),
            [("x1", r(5)), ("x2", r(4)), ("params", r(2, 3) * 0.3)],
            ("x1", "x2", "params"),
        ),
    }
    return cases


def _one_elem(t, v):
    t = t.clone()
    t.view(-1)[min(1, t.numel() - 1)] = v
    return t


def _perturbations(t):
    """(class, fn) applicable to a float64 tensor t."""
    out = [
        ("int64", lambda u: u.round().to(torch.int64)),
        ("float32", lambda u: u.float()),
        ("meta", lambda u: u.to("meta")),
        ("extra_dim", lambda u: u.unsqueeze(0)),
        ("None", lambda u: None),
    ]
    if t.dim() >= 1:
        out += [
            ("wrong_len", lambda u: u[..., :-1]),
            ("empty", lambda u: u[:0]),
            ("nan", lambda u: _one_elem(u, float("nan"))),
            ("inf", lambda u: _one_elem(u, float("inf"))),
            ("noncontig", lambda u: u.t().contiguous().t() if u.dim() == 2 else torch.stack([u, u * 0], -1)[..., 0]),
            ("offset", lambda u: torch.cat([u.new_zeros(1), u.reshape(-1)])[1:].view(u.shape)),
            # stride-0 views: a constant (rank-1 PSD) matrix / a constant vector
            ("expanded", lambda u: u.abs().mean().reshape([1] * u.dim()).expand(u.shape)),
        ]
    return out


def _flat(r):
    if r is None:
        return [None]
    if isinstance(r, torch.Tensor):
        return [r]
    return [u for e in r for u in _flat(e)]


def _assert_matches(got, exp, what):
    got, exp = _flat(got), _flat(exp)
    assert len(got) == len(exp), what
    for a, b in zip(got, exp):
        if a is None or b is None:
            assert a is None and b is None, what
            continue
        assert a.device.type == "cpu" and tuple(a.shape) == tuple(b.shape), (
            f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        )
        tol = dict(rtol=2e-4, atol=2e-5) if a.dtype == torch.float32 else dict(rtol=1e-7, atol=1e-9)
        a, b = a.detach().double(), b.detach().double()
        fa, fb = torch.isfinite(a), torch.isfinite(b)
        assert torch.equal(fa, fb), f"{what}: non-finite entries differ:\n{a}\n{b}"
        torch.testing.assert_close(a[fa], b[fb], **tol, msg=lambda m: f"{what}: {m}")


_SHAPE_CLASSES = ("extra_dim", "wrong_len", "empty")


def _classify(ours, ref, args, label, what, cls):
    """'error' (a clear error naming ``label``) or 'correct' (matches the float64 reference). A shape
    perturbation may make another argument the inconsistent one (a shorter factor: x no longer fits):
    then naming any argument of the op is clear."""
    try:
        got = ours(args)
    except (ValueError, TypeError, RuntimeError) as e:
        names = [label] if cls not in _SHAPE_CLASSES else [lb for lb, _ in _positions(list(args.items()))] + list(args)
        assert any(f"'{n}'" in str(e) for n in names), f"{what}: the error does not name '{label}': {e}"
        return "error"
    rargs = {
        n: ([t.detach().double() for t in v] if isinstance(v, list) else v.detach().double()) for n, v in args.items()
    }  # (a None left in would fail here: a missing argument must be an error)
    _assert_matches(got, ref(rargs), what)
    return "correct"


def test_property_bad_inputs_kron_and_grid_ops(capsys):
    t0 = time.perf_counter()
    counts = {"tried": 0, "error": 0, "correct": 0}
    per_class = {}
    for op, (ours, ref, args, diff) in _spec_cases().items():
        for label, path in _positions(args):
            base = dict(args)
            t = base[path[0]] if len(path) == 1 else base[path[0]][path[1]]
            for cls, fn in _perturbations(t):
                res = _classify(ours, ref, _replace(args, path, fn), label, f"{op} / {label} / {cls}", cls)
                counts["tried"] += 1
                counts[res] += 1
                per_class.setdefault(cls, {"error": 0, "correct": 0})[res] += 1
        # every requires-grad subset of the differentiable positions: grads vs the reference's autograd
        pos = [(lb, p) for lb, p in _positions(args) if p[0] in diff]
        w = None
        for mask in itertools.product([0, 1], repeat=len(pos)):
            if not any(mask):
                continue
            grads = []
            for fwd in (ours, ref):
                a = {
                    n: ([u.detach().clone() for u in v] if isinstance(v, list) else v.detach().clone()) for n, v in args
                }
                leaves = []
                for (lb, p), m in zip(pos, mask):  # noqa: B007
                    leaf = (a[p[0]] if len(p) == 1 else a[p[0]][p[1]]).requires_grad_(bool(m))
                    leaves.append(leaf)
                outs = [o for o in _flat(fwd(a)) if o is not None and o.requires_grad]
                if w is None:
                    w = [_t(*o.shape, seed=20 + i) for i, o in enumerate(outs)]
                sum((o * wi).sum() for o, wi in zip(outs, w)).backward()
                grads.append([lf.grad for lf in leaves])
            for (lb, _), m, gm, gr in zip(pos, mask, *grads):
                if m:
                    torch.testing.assert_close(
                        gm, gr, rtol=1e-7, atol=1e-9, msg=lambda s: f"{op} grad {lb} {mask}: {s}"
                    )
                else:
                    assert gm is None, f"{op}: grad of {lb} without requires_grad"
            counts["tried"] += 1
            counts["correct"] += 1
            per_class.setdefault("requires_grad_subset", {"error": 0, "correct": 0})["correct"] += 1
    # the raw ops: bad dtype / device / None must be clear errors, views must not change the result
    for op, (call, args) in _raw_cases().items():
        base = _flat(call(dict(args)))
        for label, path in _positions(args):
            t = args[[n for n, _ in args].index(path[0])][1]
            t = t if len(path) == 1 else t[path[1]]
            cases = [c for c in _perturbations(t) if c[0] in ("int64", "float32", "meta", "noncontig", "offset")]
            if len(path) == 1:
                cases.append(("None", lambda u: None))
            for cls, fn in cases:
                counts["tried"] += 1
                what = f"raw {op} / {label} / {cls}"
                try:
                    got = call(_replace(args, path, fn))
                except (ValueError, TypeError, RuntimeError) as e:
                    assert f"'{label}'" in str(e), f"{what}: the error does not name '{label}': {e}"
                    counts["error"] += 1
                    per_class.setdefault(cls, {"error": 0, "correct": 0})["error"] += 1
                    continue
                optional = label in ("grad_nll", "grad_alpha", "prior_var", "eig")
                assert cls in ("noncontig", "offset") or (cls == "None" and optional), what
                if cls == "None":  # an optional argument left out: its results are checked by the public-op cases
                    counts["correct"] += 1
                    per_class.setdefault(cls, {"error": 0, "correct": 0})["correct"] += 1
                    continue
                _assert_matches(got, base, what)
                counts["correct"] += 1
                per_class.setdefault(cls, {"error": 0, "correct": 0})["correct"] += 1
    dt = time.perf_counter() - t0
    with capsys.disabled():
        print(
            f"\nkron/gp bad-input sweep: tried {counts['tried']}, clear error {counts['error']}, "
            f"correct {counts['correct']} ({dt:.1f} s)"
        )
        print("  " + ", ".join(f"{c}: {v['error']} err / {v['correct']} ok" for c, v in per_class.items()))
    assert counts["tried"] == counts["error"] + counts["correct"]


def test_sizes_of_stride0_views_are_checked():
    """An expanded (stride-0) y or cross factor is far larger than its storage: the results' size is
    checked, naming it, before the allocator sees it."""
    f = torch.eye(2, dtype=F64)
    y = torch.zeros(1, 2, dtype=F64).expand(10**13, 2)
    with pytest.raises(ValueError, match=r"'y'.*elements"):
        kf.kron_gp_mll([f], y, 0.1)
    with pytest.raises(ValueError, match=r"'y'.*elements"):
        kf.kron_solve([f], y, 0.1)
    with pytest.raises(ValueError, match=r"'x'.*elements|'factors'.*elements"):
        kf.kron_matmul([f], y)
    c = torch.ones(1, 2, dtype=F64).expand(10**13, 2)
    with pytest.raises(ValueError, match=r"'cross_factors'.*scattered"):
        kf.kron_posterior([f], torch.zeros(2, dtype=F64), 0.1, cross_factors=[c], targets="scattered", prior_var=1.0)
    with pytest.raises(ValueError, match=r"'cross_factors'.*scattered"):
        _ops.kron_posterior_var(
            [f], torch.tensor(0.1, dtype=F64), [c], "scattered", torch.ones(1, dtype=F64).expand(10**13), None
        )


# ------------------------------------------------------------------ kernel sums (issue 13, items 3 and 9)
def test_kernel_logsumexp_nan_in_nan_out():
    """A NaN query coordinate gave -inf (kernel_sum gave NaN); now NaN, as do a NaN point (every
    query) and a NaN log-weight (its column), in every entry point, with and without batches."""
    x = torch.tensor([[float("nan")]])
    assert torch.isnan(kf.kernel_logsumexp(x, torch.zeros(3, 1))).all()
    assert torch.isnan(kf.kernel_sum(x, torch.zeros(3, 1))).all()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, dtype=torch.float64, generator=g)
    y = torch.randn(7, 2, dtype=torch.float64, generator=g)
    xn = x.clone()
    xn[2, 1] = float("nan")
    out = kf.kernel_logsumexp(xn, y, kernel="epanechnikov", bandwidth=0.7)
    ref = kf.kernel_logsumexp(x, y, kernel="epanechnikov", bandwidth=0.7)
    assert torch.isnan(out[2]) and torch.equal(out[[0, 1, 3, 4]], ref[[0, 1, 3, 4]])
    yn = y.clone()
    yn[4, 0] = float("nan")
    assert torch.isnan(kf.kernel_logsumexp(x, yn)).all()
    lw = torch.zeros(7, 3, dtype=torch.float64)
    lw[1, 2] = float("nan")
    o = kf.kernel_logsumexp(x, y, lw)
    assert torch.isnan(o[:, 2]).all() and torch.isfinite(o[:, :2]).all()
    lse, lse2 = torch.ops.kernelfuse.kernel_logsumexp_sq(
        xn, y, None, torch.tensor(1.0, dtype=torch.float64), "gaussian", False
    )
    assert torch.isnan(lse[2]) and torch.isnan(lse2[2]) and torch.isfinite(lse[[0, 1, 3, 4]]).all()
    ob = kf.kernel_logsumexp(torch.stack([xn, x]), torch.stack([y, y]))
    assert torch.isnan(ob[0, 2]) and torch.isfinite(ob[1]).all()


def test_issue13_one_line_repros_as_written():
    """Each one-line repro of issue 13, as the issue writes it, with the fixed behaviour (the
    families' tests cover each class in depth: tests/test_reliability_*.py)."""
    # 1: a meta tensor mixed with CPU ones is an error naming it
    with pytest.raises(ValueError, match=r"argument 'W'.*meta"):
        kf.random_features(torch.randn(5, 3), torch.randn(3, 7, device="meta"))
    # 2: a NaN point is a NaN row (the direct path), not a Toeplitz row
    x = torch.linspace(0, 1, 9, dtype=torch.float64)
    x[4] = float("nan")
    assert torch.isnan(kf.grid_kernel(x, x, "rbf", torch.zeros(1, 2, dtype=torch.float64))[4]).all()
    # 3: NaN in, NaN out
    assert torch.isnan(kf.kernel_logsumexp(torch.tensor([[float("nan")]]), torch.zeros(3, 1))).all()
    # 4: backward with only some inputs requiring grad
    x = torch.randn(1, 2, requires_grad=True)
    kf.kron_matmul([torch.randn(2, 2)], x).sum().backward()
    assert x.grad.shape == (1, 2)
    # 5: empty in, correctly shaped result out
    assert kf.random_features(torch.randn(5, 0), torch.randn(0, 7)).shape == (5, 7)
    # 6: the DFT / twiddle cache stays bounded over distinct lengths n = 2...2021 (every 9th here, dense
    # prime-size DFTs included; a table above the cap is used for its call only)
    from kernelfuse import butterfly as kfb

    prev = kfb.set_monarch_fft_cache_limit(8 * 2**20)
    try:
        for n in range(2, 2022, 9):
            kf.monarch_fft(torch.randn(1, n, dtype=torch.complex64))
            assert kfb.monarch_fft_cache_info()["bytes"] <= 2 * 8 * 2**20
        xp = torch.randn(2, 2017, dtype=torch.complex128)  # prime: a 2017 x 2017 dense DFT, over the cap
        torch.testing.assert_close(kf.monarch_fft(xp), torch.fft.fft(xp))
    finally:
        kfb.set_monarch_fft_cache_limit(prev)
        kfb.clear_monarch_fft_cache()
    # 7: a storage offset
    xo = torch.randn(17)[1:]
    torch.testing.assert_close(kf.monarch_rfft(xo), torch.fft.rfft(xo))
