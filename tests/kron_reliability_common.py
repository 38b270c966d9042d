"""Shared inputs of the kron / grid_kernel reliability tests (issue 13): tests/test_kron_reliability.py
and tests/test_kron_reliability_sweep.py. SPD factors, the every-requires-grad-subset check, valid
arguments of every raw kron / grid op, and the helpers that name and replace one tensor argument."""

import torch

F64 = torch.float64
_ops = torch.ops.kernelfuse


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
