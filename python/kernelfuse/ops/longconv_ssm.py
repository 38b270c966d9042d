"""S4D convolution kernel: K = 2 Re sum_n C_n Bbar_n Abar_n^l, a fused Vandermonde product.

Ops (schemas in csrc/kernelfuse.cpp, kernels in csrc/longconv/ssm_*):
``torch.ops.kernelfuse.ssm_kernel`` and its backward twin ``ssm_kernel_bwd``. This module adds the
public Python API, the fake (meta) kernels for torch.compile, and autograd.

Complex operands: the public function takes complex B and C (complex64 with float32 parameters,
complex128 with float64); the ops take them as real (re, im) pairs of shape (H, N, 2)
(``torch.view_as_real``), so the op schemas, fake kernels, opcheck and torch.compile only ever see
real tensors. Gradients reach the complex tensors through view_as_real (torch's convention:
grad = dLoss/dRe + i dLoss/dIm).
"""

from __future__ import annotations

from typing import Optional

import torch

from ._common import check_one_device, check_tensor

DISCRETIZATIONS = ("zoh", "bilinear")

_ops = torch.ops.kernelfuse


def _as_pairs(t: torch.Tensor, name: str) -> torch.Tensor:
    check_tensor(t, name, "ssm_kernel")
    if not t.is_complex():
        raise ValueError(
            f"kernelfuse.ssm_kernel: argument '{name}': expected a complex tensor (H, N) "
            f"(complex64 or complex128), got dtype {t.dtype} with shape {tuple(t.shape)}"
        )
    return torch.view_as_real(t.resolve_conj())


def ssm_kernel(
    log_dt: torch.Tensor,
    A_real: torch.Tensor,
    A_imag: torch.Tensor,
    B: Optional[torch.Tensor],
    C: torch.Tensor,
    L: int,
    *,
    discretization: str = "zoh",
) -> torch.Tensor:
    """The S4D convolution kernel ``K[h, l] = 2 Re sum_n C[h,n] Bbar[h,n] Abar[h,n]^l``, l < L.

    Args:
        log_dt: (H,) log step sizes; dt = exp(log_dt).
        A_real, A_imag: (H, N) the diagonal state matrix A = A_real + i A_imag. A_real < 0 is taken
            as given (a layer may store it in log form and pass -exp(log_A_real)).
        B: complex (H, N), or None for ones (S4D variants that fold B into C).
        C: complex (H, N).
        L: kernel length >= 0 (L = 0 gives an (H, 0) tensor).
        discretization: "zoh" (Abar = exp(dt A), Bbar = (Abar - 1)/A B) or "bilinear"
            (Abar = (1 + dt A/2)/(1 - dt A/2), Bbar = dt/(1 - dt A/2) B).

    Returns:
        (H, L) real, in the dtype of A_real (float32 or float64; B and C the matching complex dtype).
        Computed in double precision whatever the dtype: float32 results are the float64 kernel
        rounded once (relative error ~1e-7 of max|K|); powers Abar^l are exact exponentials
        exp(l log Abar), re-anchored every few products, so there is no drift at long L (checked
        at L = 100k). Memory O(H (N + L)) forward and backward (never H x N x L); differentiable
        in every tensor input.
    """
    for t, name in ((log_dt, "log_dt"), (A_real, "A_real"), (A_imag, "A_imag")):
        check_tensor(t, name, "ssm_kernel")
    check_one_device("ssm_kernel", (("log_dt", log_dt), ("A_real", A_real), ("A_imag", A_imag), ("B", B), ("C", C)))
    if not isinstance(discretization, str) or discretization not in DISCRETIZATIONS:
        raise ValueError(
            f"kernelfuse.ssm_kernel: argument 'discretization': unknown discretization "
            f"{discretization!r}; expected one of: {', '.join(DISCRETIZATIONS)}"
        )
    if isinstance(L, bool) or not isinstance(L, (int, torch.SymInt)):
        raise TypeError(f"kernelfuse.ssm_kernel: argument 'L' must be an int, got {type(L).__name__}")
    if isinstance(L, int) and L < 0:
        raise ValueError(f"kernelfuse.ssm_kernel: argument 'L': expected a length >= 0, got {L}")
    Bv = None if B is None else _as_pairs(B, "B")
    Cv = _as_pairs(C, "C")
    return _ops.ssm_kernel(log_dt, A_real, A_imag, Bv, Cv, L, discretization)


# ---------------------------------------------------------------- fake kernels (torch.compile)
@torch.library.register_fake("kernelfuse::ssm_kernel")
def _(log_dt, A_real, A_imag, B, C, L, discretization):
    check_one_device("ssm_kernel", (("log_dt", log_dt), ("A_real", A_real), ("A_imag", A_imag), ("B", B), ("C", C)))
    torch._check(
        A_real.dim() == 2,
        lambda: f"kernelfuse.ssm_kernel: argument 'A_real': expected shape (H, N), got {tuple(A_real.shape)}",
    )
    torch._check(L >= 0, lambda: f"kernelfuse.ssm_kernel: argument 'L': expected a length >= 0, got {L}")
    return A_real.new_empty((A_real.shape[0], L))


@torch.library.register_fake("kernelfuse::ssm_kernel_bwd")
def _(grad, log_dt, A_real, A_imag, B, C, discretization):
    check_one_device(
        "ssm_kernel_bwd",
        (("grad", grad), ("log_dt", log_dt), ("A_real", A_real), ("A_imag", A_imag), ("B", B), ("C", C)),
    )
    torch._check(
        A_real.dim() == 2,
        lambda: f"kernelfuse.ssm_kernel_bwd: argument 'A_real': expected shape (H, N), got {tuple(A_real.shape)}",
    )
    H, N = A_real.shape
    return (
        A_real.new_empty((H,)),
        A_real.new_empty((H, N)),
        A_real.new_empty((H, N)),
        A_real.new_empty((H, N, 2)) if B is not None else A_real.new_empty((0,)),
        A_real.new_empty((H, N, 2)),
    )


# ---------------------------------------------------------------- autograd
def _setup(ctx, inputs, output):
    log_dt, A_real, A_imag, B, C, L, discretization = inputs
    ctx.discretization = discretization
    ctx.save_for_backward(log_dt, A_real, A_imag, B, C)


def _backward(ctx, grad):
    log_dt, A_real, A_imag, B, C = ctx.saved_tensors
    g_log_dt, g_Ar, g_Ai, g_B, g_C = _ops.ssm_kernel_bwd(
        grad.contiguous(), log_dt, A_real, A_imag, B, C, ctx.discretization
    )
    need = ctx.needs_input_grad
    return (
        g_log_dt if need[0] else None,
        g_Ar if need[1] else None,
        g_Ai if need[2] else None,
        g_B if (need[3] and B is not None) else None,
        g_C if need[4] else None,
        None,
        None,
    )


torch.library.register_autograd("kernelfuse::ssm_kernel", _backward, setup_context=_setup)

__all__ = ["DISCRETIZATIONS", "ssm_kernel"]
