"""Shared by the kron family's simulator tests (tests/sim/test_sim_kron*.py): seeded inputs and
RBF covariance factors, the float32 tolerance factor of the eigendecomposition paths, and the
dtype-checked comparison with the float64 reference."""

import torch
from conftest import assert_close_to_ref

F64, F32 = torch.float64, torch.float32
DTYPES = [F64, F32]


# ------------------------------------------------------------------ inputs
def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=_gen(seed), dtype=F64).to(dtype)


def _rbf(n, g, ls=0.7, jitter=1e-6):
    x = torch.rand(n, 1, generator=g, dtype=F64) * 3
    return torch.exp(-0.5 * (x - x.T) ** 2 / ls**2) + jitter * torch.eye(n, dtype=F64)


def _factors(dims, seed=0, dtype=F64, jitter=1e-6):
    g = _gen(seed)
    return [_rbf(n, g, jitter=jitter).to(dtype) for n in dims]


def _d64(ts):
    return [t.double() for t in ts]


def _s2(v, dtype=F64):
    return torch.tensor(v, dtype=dtype)


# float64: the table's tolerance (measured: under 5 % of it). float32: 100x the table's (measured: up
# to ~70x): the factors are decomposed by a float32 eigh, so the errors are eps32 times the
# conditioning of A = K + s^2 I (max(lam) / s^2 ~ 1e2 here), amplified in the gradients.
def _kfactor(dtype):
    return 100.0 if dtype == F32 else 1.0


def _close(out, exp, dtype, factor=1.0):
    assert out.dtype == dtype, (out.dtype, dtype)
    assert_close_to_ref(out, exp, dtype, factor=factor)
