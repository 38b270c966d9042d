"""Shared by the features family's simulator tests (tests/sim/test_sim_features*.py): the kinds and
dtypes, seeded generators, a launch counter that asserts which kernel ran, and the gradients by
autograd through the float64 reference."""

import torch
from conftest import assert_close_to_ref, count_launches  # tests/sim/conftest.py

_close = assert_close_to_ref

KINDS = ["cos", "cos_sin", "positive", "relu", "step"]
F = [torch.float32, torch.float64]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


class _Launched(count_launches):
    """with _Launched("fwht_stage_kernel"): ... asserts the block launched that kernel (the branch was taken)
    and, with exactly=False, that it did not."""

    def __init__(self, *kernels, exactly=True):
        super().__init__(*(f"features: {k}" for k in kernels))
        self.expect = exactly

    def __exit__(self, *exc):
        super().__exit__(*exc)
        if exc[0] is None:
            for k in self.names:
                assert (self.n[k] > 0) == self.expect, (k, self.expect)


def _ref_grads(fn, inputs, need, grad):
    """d<fn(inputs), grad>/d(inputs[i]) for need[i], by autograd through the float64 reference; None
    elsewhere. Zero where the output does not depend on the input (step)."""
    leaves = [t.detach().double().requires_grad_(n) if t is not None else None for t, n in zip(inputs, need)]
    y = fn(*leaves)
    want = [t for t, n in zip(leaves, need) if n and t is not None]
    if not want:
        return [None] * len(inputs)
    gs = torch.autograd.grad(y, want, grad.double(), allow_unused=True) if y.requires_grad else [None] * len(want)
    it = iter(gs)
    res = []
    for t, n in zip(leaves, need):
        if n and t is not None:
            g = next(it)
            res.append(torch.zeros_like(t) if g is None else g)
        else:
            res.append(None)
    return res


def _grad_close(got, expected, dtype, factor=1.0):
    if expected is None:
        assert got.numel() == 0
        return
    assert got.shape == expected.shape and got.dtype == dtype
    _close(got, expected, dtype, factor=factor)
