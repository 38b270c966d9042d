"""Regression tests of issue 13 (reliability) for the kron / gp ops (kron_matmul, kron_gp_mll,
kron_solve, kron_posterior, grid_kernel, their raw ops and *_bwd twins, kernelfuse.gp): every
requires-grad subset, items 1 (one device, meta included), 2 (non-finite grid points and the
Toeplitz path), 4 (grid_kernel requires-grad subsets), 5 (empty inputs), 8 (errors naming the
argument). The property-style sweep over bad-input classes: tests/test_kron_reliability_sweep.py.
"""

import itertools
import math
import re

import kernelfuse as kf
import pytest
import torch
from kernelfuse.reference import kron_grid as gref
from kron_reliability_common import F64, _grads_match, _ops, _positions, _raw_cases, _replace, _spd, _t


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
