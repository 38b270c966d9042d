"""Shared by the long-convolution family's simulator tests (tests/sim/test_sim_longconv*.py): the
modes, half dtypes and launch names of fftconv's kernels, the simulator's fftconv / fftconv_bwd calls,
the float64 reference and its autograd gradients on the same (rounded) inputs, and the checks."""

import torch
from conftest import assert_close_to_ref, sim_ops
from kernelfuse.reference import longconv as ref

MODES = ["causal", "bidirectional", "circular"]
HALF = [torch.float16, torch.bfloat16]
STAGE = "fftconv: stage_kernel"
SPECTRAL = "fftconv: spectral_kernel"
TC = "fftconv_tc: fftconv_tc_kernel"
TC_SPEC = "fftconv_tc: kernel_spectrum_kernel"


def _d(t):
    return None if t is None else t.double()


def _ref(u, k, D, pre, post, mode, skip="input"):
    """float64 reference on the (rounded) inputs."""
    return ref.fftconv(_d(u), _d(k), _d(D), pregate=_d(pre), postgate=_d(post), mode=mode, skip=skip)


def _fwd(u, k, D, pre, post, mode, fft_size=None, skip="input"):
    return sim_ops.fftconv(u, k, D, pre, post, mode, fft_size, skip)


NEED_NAMES = ("u", "k", "D", "pregate", "postgate")


def _ref_grads(gy, u, k, D, pre, post, mode, skip="input"):
    """{name: float64 gradient} by autograd through the float64 reference (present inputs only)."""
    xs = {n: _d(t).requires_grad_(True) for n, t in zip(NEED_NAMES, (u, k, D, pre, post)) if t is not None}
    y = ref.fftconv(
        xs["u"], xs["k"], xs.get("D"), pregate=xs.get("pregate"), postgate=xs.get("postgate"), mode=mode, skip=skip
    )
    gs = torch.autograd.grad(y, list(xs.values()), gy.double())
    return dict(zip(xs.keys(), gs))


def _check_bwd(out, exp, present, needs, dtype, factor=1.0):
    """out: the 5-tuple of fftconv_bwd; exp: _ref_grads; needs: the five flags passed."""
    for name, o, need in zip(NEED_NAMES, out, needs):
        if need and name in present:
            e = exp[name]
            assert o.dtype == dtype and o.shape == e.shape, (name, o.dtype, o.shape, e.shape)
            assert not torch.isnan(o.double()).any(), f"d{name}: NaN (unwritten elements?)"
            assert_close_to_ref(o, e, dtype, factor=factor)
        else:
            assert o.numel() == 0, f"d{name} not wanted (need={need}, present={name in present}) but returned {o.shape}"


def _bwd(gy, u, k, D, pre, post, mode, needs=(True,) * 5, fft_size=None, skip="input"):
    return sim_ops.fftconv_bwd(gy, u, k, D, pre, post, mode, fft_size, *needs, skip)


def _present(D, pre, post):
    return (
        {"u", "k"}
        | ({"D"} if D is not None else set())
        | ({"pregate"} if pre is not None else set())
        | ({"postgate"} if post is not None else set())
    )


def _half_check(out, exp, dtype, factor=1.0):
    assert out.dtype == dtype and not torch.isnan(out.double()).any()
    assert_close_to_ref(out, exp, dtype, factor=factor)
