"""Regression tests of issue 13 (reliability): every requires-grad subset, bad and odd inputs.

One test per repro of the issue, plus the property test of tests/test_bad_inputs.py.
"""
import itertools

import pytest
import torch

import kernelfuse as kf


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
    ins = [_spd(2, g), torch.randn(3, 3, dtype=torch.float64, generator=g), torch.randn(4, 6, dtype=torch.float64, generator=g)]
    _grads_match(lambda t: (kf.kron_matmul([t[0], t[1]], t[2]) ** 2).sum(), ins, mask)


@pytest.mark.parametrize("mask", [m for m in itertools.product([0, 1], repeat=4) if any(m)])
@pytest.mark.parametrize("op", ["mll", "solve"])
def test_kron_gp_mll_and_solve_every_requires_grad_subset(op, mask):
    g = torch.Generator().manual_seed(1)
    ins = [_spd(2, g), _spd(3, g), torch.randn(6, dtype=torch.float64, generator=g), torch.tensor(0.3, dtype=torch.float64)]

    def build(t):
        if op == "solve":
            return (kf.kron_solve([t[0], t[1]], t[2], t[3]) ** 2).sum()
        nll, alpha = kf.kron_gp_mll([t[0], t[1]], t[2], t[3])
        return nll + (alpha ** 2).sum()
    _grads_match(build, ins, mask)


@pytest.mark.parametrize("mask", [m for m in itertools.product([0, 1], repeat=4) if any(m)])
def test_kron_posterior_every_requires_grad_subset(mask):
    g = torch.Generator().manual_seed(2)
    ins = [_spd(2, g), _spd(3, g), torch.randn(5, 2, dtype=torch.float64, generator=g),
           torch.randn(5, 3, dtype=torch.float64, generator=g)]
    y = torch.randn(6, dtype=torch.float64, generator=g)

    def build(t):
        mean, _ = kf.kron_posterior([t[0], t[1]], y, 0.3, cross_factors=[t[2], t[3]], targets="scattered",
                                    return_var=False)
        return (mean ** 2).sum()
    _grads_match(build, ins, mask)
