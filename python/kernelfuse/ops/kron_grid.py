"""1-D grid kernel matrices and their derivatives, the building blocks of Kronecker GP models.

Op (schema in csrc/kernelfuse.cpp, kernels in csrc/kron/grid_kernel_*):
``torch.ops.kernelfuse.grid_kernel`` and its backward twin ``grid_kernel_bwd`` (the gradient for
the hyper-parameters). This module adds the public API, the fake kernels and autograd.

Parameter layout (one row per mixture component; the matrix is the sum over rows):

=========== ===== ====================================== ==============================================
kind        P     row                                    k(tau), tau = x - x'
=========== ===== ====================================== ==============================================
rbf         2     (log_variance, log_lengthscale)        v exp(-tau^2 / (2 l^2))
matern12    2     (log_variance, log_lengthscale)        v exp(-|tau| / l)
matern32    2     (log_variance, log_lengthscale)        v (1 + z) exp(-z), z = sqrt(3) |tau| / l
matern52    2     (log_variance, log_lengthscale)        v (1 + z + z^2 / 3) exp(-z), z = sqrt(5) |tau| / l
sm          3     (log_weight, freq, log_lengthscale)    w exp(-tau^2 / (2 l^2)) cos(freq tau)
stm         3     (log_weight, freq, log_lengthscale)    w matern52(tau; l) cos(freq tau)
=========== ===== ====================================== ==============================================

``sm`` is the spectral mixture kernel (Gaussian spectral density centred at +-freq, std 1/l;
``freq`` in radians per unit of x); ``stm`` the Student-t mixture of GP-HM-StM (a Matern-5/2
spectral density, i.e. Student-t with 5 degrees of freedom, centred at +-freq).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from ._common import check_devices, check_tensor

KINDS = ("rbf", "matern12", "matern32", "matern52", "sm", "stm")
NPARAMS = {"rbf": 2, "matern12": 2, "matern32": 2, "matern52": 2, "sm": 3, "stm": 3}
# Highest total derivative order a + b for which k^(a+b) exists everywhere (each of a, b <= 2).
MAX_ORDER = {"rbf": 4, "matern12": 0, "matern32": 2, "matern52": 4, "sm": 4, "stm": 4}

_ops = torch.ops.kernelfuse


def _check_orders(kind: str, orders) -> Tuple[int, int]:
    try:
        a, b = (int(o) for o in orders)
        ok = all(isinstance(o, int) and not isinstance(o, bool) for o in orders)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"kernelfuse.grid_kernel: argument 'orders' must be a pair of ints (a, b), got {orders!r}")
    if not (0 <= a <= 2 and 0 <= b <= 2):
        raise ValueError(f"kernelfuse.grid_kernel: argument 'orders': expected 0 <= a, b <= 2, got {(a, b)}")
    if a + b > MAX_ORDER[kind]:
        why = {
            "matern12": "matern12 is not differentiable at tau = 0",
            "matern32": "matern32 is twice differentiable at tau = 0",
        }.get(kind, "")
        raise ValueError(
            f"kernelfuse.grid_kernel: argument 'orders': derivative orders {(a, b)} are not defined "
            f"for kind '{kind}' (a + b <= {MAX_ORDER[kind]}{'; ' + why if why else ''})"
        )
    return a, b


def grid_kernel(
    x1: torch.Tensor,
    x2: torch.Tensor,
    kind: str,
    params: torch.Tensor,
    *,
    orders: Sequence[int] = (0, 0),
    toeplitz: Optional[bool] = None,
) -> torch.Tensor:
    """1-D kernel matrix ``K[i, j] = d^a/dx^a d^b/dx'^b k(x1[i], x2[j])`` for ``orders = (a, b)``.

    Args:
        x1: (n1,) points; x2: (n2,) points (same dtype and device; float32 or float64).
        kind: one of ``KINDS`` (see the module docstring for the formulas and ``params`` layout).
        params: (Q, P) one row of hyper-parameters per mixture component (P = 2 or 3 by kind);
            K is the sum over the rows.
        orders: derivative orders (a, b), each 0..2, with a + b <= ``MAX_ORDER[kind]``
            (matern12: 0; matern32: 2; others: 4).
        toeplitz: None detects (CPU: x1 and x2 equal, finite and evenly spaced to rounding; CUDA:
            never, detection would need a host sync), True asserts it (step taken from the end
            points; a NaN or infinite point is then an error naming x1 / x2), False forces the
            direct path. A NaN point gives NaN in its row (x1) or column (x2), at every order. The Toeplitz path evaluates the n lags once (O(n Q)
            kernel work) and fills the matrix from that table.

    Returns:
        (n1, n2) in the dtype of x1; computed in double, float32 rounded once. Differentiable with
        respect to params (analytic dual-number backward, ``grid_kernel_bwd``) and to x1 / x2
        (through the next derivative order; at coincident points of an order beyond MAX_ORDER, the
        symmetric sub-gradient 0).
    """
    check_tensor(x1, "x1", "grid_kernel")
    check_tensor(x2, "x2", "grid_kernel")
    check_tensor(params, "params", "grid_kernel")
    check_devices("grid_kernel", ("x1", x1), ("x2", x2), ("params", params))
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(
            f"kernelfuse.grid_kernel: argument 'kind': unknown kernel kind {kind!r}; expected one of: "
            f"{', '.join(KINDS)}"
        )
    a, b = _check_orders(kind, orders)
    if toeplitz is not None and not isinstance(toeplitz, bool):
        raise TypeError(f"kernelfuse.grid_kernel: argument 'toeplitz' must be None, True or False, got {toeplitz!r}")
    flag = -1 if toeplitz is None else int(toeplitz)
    return _ops.grid_kernel(x1, x2, kind, params, a, b, flag)


# ---------------------------------------------------------------- fake kernels (torch.compile)
@torch.library.register_fake("kernelfuse::grid_kernel")
def _(x1, x2, kind, params, a, b, toeplitz):
    for nm, t in (("x1", x1), ("x2", x2), ("params", params)):
        check_tensor(t, nm, "grid_kernel")
    check_devices("grid_kernel", ("x1", x1), ("x2", x2), ("params", params))
    torch._check(
        x1.dim() == 1 and x2.dim() == 1, lambda: "kernelfuse.grid_kernel: arguments 'x1', 'x2': expected 1-D tensors"
    )
    return x1.new_empty((x1.shape[0], x2.shape[0]))


@torch.library.register_fake("kernelfuse::grid_kernel_bwd")
def _(grad, x1, x2, kind, params, a, b, toeplitz):
    for nm, t in (("grad", grad), ("x1", x1), ("x2", x2), ("params", params)):
        check_tensor(t, nm, "grid_kernel_bwd")
    check_devices("grid_kernel_bwd", ("x1", x1), ("x2", x2), ("params", params), ("grad", grad))
    return params.new_empty(params.shape)


# ---------------------------------------------------------------- autograd
def _setup(ctx, inputs, output):
    x1, x2, kind, params, a, b, toeplitz = inputs
    ctx.kind, ctx.a, ctx.b, ctx.toeplitz = kind, a, b, toeplitz
    ctx.save_for_backward(x1, x2, params)


def _backward(ctx, grad):
    x1, x2, params = ctx.saved_tensors
    need = ctx.needs_input_grad
    grad = grad.contiguous()
    g_x1 = g_x2 = g_p = None
    if need[3]:
        g_p = _ops.grid_kernel_bwd(grad, x1, x2, ctx.kind, params, ctx.a, ctx.b, ctx.toeplitz)
    # d K[i, j] / d x1[i] is the kernel of orders (a + 1, b); d / d x2[j] of (a, b + 1). The moved
    # points are no longer a Toeplitz grid in general, but the derivative formula is the same.
    if need[0]:
        g_x1 = (grad * _ops.grid_kernel(x1, x2, ctx.kind, params, ctx.a + 1, ctx.b, ctx.toeplitz)).sum(1)
    if need[1]:
        g_x2 = (grad * _ops.grid_kernel(x1, x2, ctx.kind, params, ctx.a, ctx.b + 1, ctx.toeplitz)).sum(0)
    return g_x1, g_x2, None, g_p, None, None, None


torch.library.register_autograd("kernelfuse::grid_kernel", _backward, setup_context=_setup)

__all__ = ["KINDS", "MAX_ORDER", "NPARAMS", "grid_kernel"]
