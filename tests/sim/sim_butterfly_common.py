"""Shared by the butterfly family's simulator tests (tests/sim/test_sim_butterfly*.py): the dtypes,
seeded inputs and twiddles, the real item size, and the checked butterfly_multiply forward."""

import math

import torch
from conftest import assert_close_to_ref, sim_ops
from kernelfuse.reference import butterfly as ref

REAL = [torch.float32, torch.float64]
CPLX = [torch.complex64, torch.complex128]
ALL = REAL + CPLX


def _wide(dtype):
    return torch.complex128 if dtype.is_complex else torch.float64


def _rand(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=_wide(dtype)).to(dtype)


def _twiddle(nblocks, n, dtype, seed=1):
    log_n = max(n.bit_length() - 1, 0)
    return _rand((nblocks, log_n, n // 2, 2, 2), dtype, seed) * math.sqrt(0.5)


def _real_itemsize(dtype):
    return (
        torch.empty(0, dtype=dtype).real.element_size()
        if dtype.is_complex
        else torch.empty(0, dtype=dtype).element_size()
    )


def _bf_fwd_check(x, tw, inc, dtype):
    out = sim_ops.butterfly_multiply(x, tw, inc)
    assert out.shape == x.shape and out.dtype == dtype
    exp = ref.butterfly_multiply(x.to(_wide(dtype)), tw.to(_wide(dtype)), increasing_stride=inc)
    assert_close_to_ref(out, exp, dtype)
    return out
