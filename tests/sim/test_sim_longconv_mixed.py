"""Mixed precision of fftconv under the CUDA simulator: fp16 / bf16 u (and gates, grad) with an fp32
k and D, the glue's CUDA branch (dispatch to Runner<half, float>, the TC path's <half, float>
instantiation) and the kernels stage_kernel<T, float, float> / kernel_spectrum_kernel<float> /
fftconv_tc_kernel<T, float>, against the float64 reference on the same rounded inputs; gradients
against float64 autograd of the reference, each in its input's dtype (du / dpregate / dpostgate in
u's dtype, dk / dD in float32)."""

import pytest
import torch
from conftest import assert_close_to_ref, run_schedules, sim_ops
from conftest import count_launches as _Count
from kernelfuse.reference import longconv as ref
from kf_inputs import fftconv_inputs
from sim_longconv_common import HALF, STAGE, TC, TC_SPEC, _d

NAMES = ("u", "k", "D", "pregate", "postgate")


def _mixed(
    dtype,
    B,
    H,
    L,
    Lk,
    mode="causal",
    kshape="shared",
    seed=0,
    k_dtype=torch.float32,
    D_dtype=torch.float32,
    D=True,
    gates=True,
):
    u, k, Dv, pre, post = fftconv_inputs(B, H, L, Lk, mode, torch.float64, kshape, D=D, gates=gates, seed=seed)
    c = lambda t, dt: None if t is None else t.to(dt)  # noqa: E731
    return c(u, dtype), c(k, k_dtype), c(Dv, D_dtype), c(pre, dtype), c(post, dtype)


def _ref(xs, mode):
    u, k, D, pre, post = xs
    return ref.fftconv(_d(u), _d(k), _d(D), pregate=_d(pre), postgate=_d(post), mode=mode)


def _ref_grads(gy, xs, mode):
    leaves = {n: _d(t).requires_grad_(True) for n, t in zip(NAMES, xs) if t is not None}
    y = ref.fftconv(
        leaves["u"],
        leaves["k"],
        leaves.get("D"),
        pregate=leaves.get("pregate"),
        postgate=leaves.get("postgate"),
        mode=mode,
    )
    return dict(zip(leaves, torch.autograd.grad(y, list(leaves.values()), gy.double())))


def _fwd(xs, mode, fft_size=None):
    return sim_ops.fftconv(*xs, mode, fft_size)


def _check_fwd(y, xs, mode, dtype):
    assert y.dtype == dtype and y.shape == xs[0].shape
    assert not torch.isnan(y.double()).any(), "NaN in the output (unwritten elements?)"
    assert_close_to_ref(y, _ref(xs, mode), dtype)


def _check_bwd(out, xs, gy, mode, dtype):
    exp = _ref_grads(gy, xs, mode)
    for name, o, x in zip(NAMES, out, xs):
        if x is None:
            assert o.numel() == 0
            continue
        assert o.dtype == x.dtype and o.shape == x.shape, (name, o.dtype, x.dtype, o.shape)
        assert not torch.isnan(o.double()).any(), f"d{name}: NaN"
        assert_close_to_ref(o, exp[name], dtype)


# ------------------------------------------------------------------ cuFFT path (stage_kernel<T, float, float>)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize(
    "mode,kshape", [("causal", "batch"), ("bidirectional", "shared"), ("circular", "one"), ("bidirectional", "batch")]
)
def test_mixed_cufft_path_forward_backward(dtype, mode, kshape):
    for i, (B, H, L, Lk) in enumerate([(2, 3, 1, 1), (3, 2, 97, 33), (2, 2, 300, 77)]):
        xs = _mixed(dtype, B, H, L, Lk, mode, kshape, seed=60 + i)
        with _Count(TC, STAGE) as c:
            y = _fwd(xs, mode)
        assert c.n[TC] == 0 and c.n[STAGE] > 0
        _check_fwd(y, xs, mode, dtype)
        gy = torch.randn(xs[0].shape, generator=torch.Generator().manual_seed(i)).to(dtype)
        _check_bwd(sim_ops.fftconv_bwd(gy, *xs, mode, None, *(True,) * 5), xs, gy, mode, dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_mixed_causal_shared_backward_and_fallback(dtype, env_switch):
    """Causal, shared kernel: the backward (always the cuFFT path: CorrAccumulate, dk gathered in
    float32) and the forward with the TC path disabled; every subset of need_* flags once."""
    xs = _mixed(dtype, 2, 3, 61, 20, seed=70)
    gy = torch.randn(xs[0].shape, generator=torch.Generator().manual_seed(7)).to(dtype)
    _check_bwd(sim_ops.fftconv_bwd(gy, *xs, "causal", None, *(True,) * 5), xs, gy, "causal", dtype)
    exp = _ref_grads(gy, xs, "causal")
    for needs in [
        (False, True, False, False, False),
        (False, False, True, False, False),
        (True, False, False, True, True),
    ]:
        out = sim_ops.fftconv_bwd(gy, *xs, "causal", None, *needs)
        for name, o, x, need in zip(NAMES, out, xs, needs):
            if need:
                assert o.dtype == x.dtype
                assert_close_to_ref(o, exp[name], dtype)
            else:
                assert o.numel() == 0
    env_switch("KERNELFUSE_NO_TC_FFTCONV", "1")
    with _Count(TC, STAGE) as c:
        y = _fwd(xs, "causal")
    assert c.n[TC] == 0 and c.n[STAGE] > 0
    _check_fwd(y, xs, "causal", dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_mixed_k_D_dtype_combinations(dtype):
    """k float32 with D half and the reverse: the glue reads both in float32 (stage_kernel<T, float,
    float>), returns dk / dD in the dtypes they came in; k and D both half: the plain half path."""
    for kd, Dd in [(torch.float32, dtype), (dtype, torch.float32), (dtype, dtype)]:
        xs = _mixed(dtype, 2, 2, 45, 12, "bidirectional", seed=71, k_dtype=kd, D_dtype=Dd)
        _check_fwd(_fwd(xs, "bidirectional"), xs, "bidirectional", dtype)
        gy = torch.randn(xs[0].shape, generator=torch.Generator().manual_seed(8)).to(dtype)
        _check_bwd(sim_ops.fftconv_bwd(gy, *xs, "bidirectional", None, *(True,) * 5), xs, gy, "bidirectional", dtype)


def test_mixed_stage_schedules():
    """Thread-schedule independence of the mixed stage kernels (forward and backward)."""
    xs = _mixed(torch.bfloat16, 2, 3, 300, 77, "bidirectional", "batch", seed=72)
    gy = torch.randn(xs[0].shape, generator=torch.Generator().manual_seed(9)).bfloat16()
    y = run_schedules(lambda: _fwd(xs, "bidirectional"))
    _check_fwd(y, xs, "bidirectional", torch.bfloat16)
    out = run_schedules(lambda: sim_ops.fftconv_bwd(gy, *xs, "bidirectional", None, *(True,) * 5))
    _check_bwd(out, xs, gy, "bidirectional", torch.bfloat16)


# ------------------------------------------------------------------ tensor-core path (fftconv_tc_kernel<T, float>)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("L,Lk,B,H", [(200, 57, 3, 2), (300, 100, 2, 2), (3001, 1000, 1, 1), (17, 17, 5, 1)])
def test_mixed_tc_path(dtype, L, Lk, B, H, env_switch):
    """N = 256 (radix-16 only), 512 (a radix-2 pass first), 4096 (three radix-16 passes); odd B.
    The fp32 kernel goes into the fp32 spectrum unrounded; D read in float32."""
    xs = _mixed(dtype, B, H, L, Lk, seed=L)
    with _Count(TC, TC_SPEC, STAGE) as c:
        y = _fwd(xs, "causal")
    assert c.n[TC] == 1 and c.n[TC_SPEC] == 1 and c.n[STAGE] == 0, c.n
    _check_fwd(y, xs, "causal", dtype)
    env_switch("KERNELFUSE_NO_TC_FFTCONV", "1")
    with _Count(TC, STAGE) as c:
        y2 = _fwd(xs, "causal")
    assert c.n[TC] == 0 and c.n[STAGE] > 0
    _check_fwd(y2, xs, "causal", dtype)


def test_mixed_tc_gates_and_skip_absent():
    for pre_on, post_on, D_on in [(False, False, False), (True, False, True), (False, True, False)]:
        xs = list(_mixed(torch.float16, 2, 3, 70, 20, seed=80, D=D_on))
        if not pre_on:
            xs[3] = None
        if not post_on:
            xs[4] = None
        with _Count(TC) as c:
            y = _fwd(xs, "causal")
        assert c.n[TC] == 1
        _check_fwd(y, xs, "causal", torch.float16)


def test_mixed_tc_schedules():
    xs = _mixed(torch.float16, 3, 2, 200, 57, seed=81)
    y = run_schedules(lambda: _fwd(xs, "causal"))
    _check_fwd(y, xs, "causal", torch.float16)


# ------------------------------------------------------------------ mixed precision with skip="gated"
def _ref_gated(xs, mode):
    u, k, D, pre, post = xs
    return ref.fftconv(_d(u), _d(k), _d(D), pregate=_d(pre), postgate=_d(post), mode=mode, skip="gated")


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_mixed_gated_skip_cufft_path(dtype, mode, env_switch):
    """stage_kernel<T, float, float> with the H3/Hyena skip, forward and backward."""
    env_switch("KERNELFUSE_NO_TC_FFTCONV", "1")
    xs = _mixed(dtype, 2, 3, 97, 33, mode, "shared", seed=91)
    y = sim_ops.fftconv(*xs, mode, None, "gated")
    assert y.dtype == dtype
    assert_close_to_ref(y, _ref_gated(xs, mode), dtype)
    gy = torch.randn(xs[0].shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    leaves = {n: _d(t).requires_grad_(True) for n, t in zip(NAMES, xs)}
    y64 = ref.fftconv(
        leaves["u"],
        leaves["k"],
        leaves["D"],
        pregate=leaves["pregate"],
        postgate=leaves["postgate"],
        mode=mode,
        skip="gated",
    )
    exp = dict(zip(leaves, torch.autograd.grad(y64, list(leaves.values()), gy.double())))
    out = sim_ops.fftconv_bwd(gy, *xs, mode, None, *(True,) * 5, "gated")
    for name, o, x in zip(NAMES, out, xs):
        assert o.dtype == x.dtype, name
        assert_close_to_ref(o, exp[name], dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_mixed_gated_skip_tc_path(dtype):
    """fftconv_tc_kernel<T, float> with the H3/Hyena skip (forward)."""
    xs = _mixed(dtype, 2, 2, 200, 57, "causal", "shared", seed=92)
    with _Count(TC, STAGE) as c:
        y = sim_ops.fftconv(*xs, "causal", None, "gated")
    assert c.n[TC] > 0
    assert_close_to_ref(y, _ref_gated(xs, "causal"), dtype)
