"""Kronecker algebra for Gaussian processes on Cartesian grids.

Public API: ``kron_matmul``, ``kron_gp_mll``, ``kron_solve``, ``kron_posterior``.

Conventions (every op):
- A grid of D axes with n_d points; N = prod n_d. Grid values are flattened row-major (axis 0
  slowest), the order of ``torch.kron(K_1, K_2, ...)``.
- Vectors live in the LAST dim, any leading dims are a batch: x (..., N). To apply an operator to
  a matrix X (N, r) pass ``X.T`` and transpose the result: ``kron_matmul(fs, X.T).T``.
- ``noise`` is the noise VARIANCE s^2 (a 0-d tensor, or a python number), not a standard deviation.
- Square (covariance) factors are used through their symmetric part 0.5 (K_d + K_d^T); gradients
  with respect to factors are the gradients of that symmetrised definition (hence symmetric).
- float32 and float64; all tensors on one device and of one dtype (a meta tensor among real ones
  is an error naming it, in the wrappers and the raw ops' fake kernels alike).
- Empty inputs give correctly shaped results (a 0 x 0 factor: N = 0, nll 0, an empty alpha).
- Covariance factors (kron_gp_mll / kron_solve / kron_posterior) must be finite: a NaN / inf entry
  is an error naming the factor (before the eigendecomposition).
"""

from __future__ import annotations

import math
import os
from typing import List, Optional, Sequence, Tuple

import torch

from ._autocast import fp32_under_autocast
from ._common import check_devices, check_like, check_tensor

_ops = torch.ops.kernelfuse

Factors = Sequence[torch.Tensor]

_FLOATS = (torch.float32, torch.float64)


# ---------------------------------------------------------------- argument checks
def _check_factors(factors, fn: str, *, square: bool) -> List[torch.Tensor]:
    if isinstance(factors, torch.Tensor) or not isinstance(factors, (list, tuple)):
        raise TypeError(
            f"kernelfuse.{fn}: argument 'factors' must be a list or tuple of 2-D tensors, got {type(factors).__name__}"
        )
    if len(factors) == 0:
        raise ValueError(f"kernelfuse.{fn}: argument 'factors' must hold at least one matrix, got an empty list")
    fs = []
    for i, f in enumerate(factors):
        check_tensor(f, f"factors[{i}]", fn)
        if f.dim() != 2:
            raise ValueError(
                f"kernelfuse.{fn}: argument 'factors[{i}]': expected a 2-D matrix, got shape {tuple(f.shape)}"
            )
        if square and f.shape[0] != f.shape[1]:
            raise ValueError(
                f"kernelfuse.{fn}: argument 'factors[{i}]': expected a square (symmetric PSD) "
                f"matrix, got shape {tuple(f.shape)}"
            )
        if f.dtype not in _FLOATS:
            raise TypeError(
                f"kernelfuse.{fn}: argument 'factors[{i}]': expected dtype float32 or float64, got {f.dtype}"
            )
        if i > 0:
            check_like(f, fs[0], f"factors[{i}]", "factors[0]", fn)
        fs.append(f)
    return fs


def _check_vec(x, name, fn, ref, length, what):
    check_tensor(x, name, fn)
    check_like(x, ref, name, "factors[0]", fn)
    if x.dim() < 1 or x.shape[-1] != length:
        raise ValueError(
            f"kernelfuse.{fn}: argument '{name}': expected shape (..., {length}) with {length} = "
            f"{what}, got {tuple(x.shape)}"
        )


def _noise(noise, ref, fn) -> torch.Tensor:
    if not isinstance(noise, torch.Tensor):
        try:
            v = float(noise)
        except (TypeError, ValueError):
            raise TypeError(
                f"kernelfuse.{fn}: argument 'noise' must be a 0-d tensor or a number (the noise "
                f"variance), got {type(noise).__name__}"
            ) from None
        return torch.tensor(v, dtype=ref.dtype, device=ref.device)
    if noise.numel() != 1 or noise.dim() > 1:
        raise ValueError(
            f"kernelfuse.{fn}: argument 'noise': expected a scalar (0-d tensor, the noise variance), "
            f"got shape {tuple(noise.shape)}"
        )
    check_like(noise, ref, "noise", "factors[0]", fn)
    return noise.reshape(())


MAX_DIMS = 8


def _fake_args(fn, *named, optional=()):
    """The fake kernels' checks: every non-optional tensor argument given (a raw call with None
    reaches the fake kernel when another argument is meta), all tensors on one device."""
    for name, v in named:
        if name in optional:
            continue
        if isinstance(v, (list, tuple)):
            for i, t in enumerate(v):
                check_tensor(t, f"{name}[{i}]", fn)
        else:
            check_tensor(v, name, fn)
    check_devices(fn, *named)


def _memory_limit(t) -> float:
    """Bytes a tensor on t's device may plausibly take: host RAM + swap for CPU tensors (as the C++
    glue's check_alloc), 1 PiB elsewhere."""
    if t.device.type != "cpu":
        return float(2**50)
    try:
        ram = float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1e18
    swap = 0.0
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("SwapTotal:"):
                    swap = float(line.split()[1]) * 1024
    except OSError:
        pass
    return ram + swap


def _check_size(numel: int, ref, name: str, fn: str, what: str) -> None:
    """A clear error naming ``name`` before an allocation of ``numel`` elements that cannot succeed."""
    nbytes = float(numel) * ref.element_size()
    lim = _memory_limit(ref)
    if numel >= 2**63 or nbytes > lim:
        raise ValueError(
            f"kernelfuse.{fn}: argument '{name}': {what} would have {numel} elements "
            f"({nbytes / 2**30:.1f} GiB of {ref.dtype}), more than the memory available "
            f"({lim / 2**30:.1f} GiB)"
        )


def _check_dims(fs, fn):
    if len(fs) > MAX_DIMS:
        raise ValueError(f"kernelfuse.{fn}: argument 'factors': at most {MAX_DIMS} axes are supported, got {len(fs)}")


def _prod(xs):
    out = 1
    for x in xs:
        out *= int(x)
    return out


# ---------------------------------------------------------------- plain-torch building blocks
def _kron_vec(vs: Sequence[torch.Tensor]) -> torch.Tensor:
    out = vs[0]
    for v in vs[1:]:
        out = (out[:, None] * v[None, :]).reshape(-1)
    return out


# ---------------------------------------------------------------- kron_matmul
@fp32_under_autocast
def kron_matmul(factors: Factors, x: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
    """(K_1 (x) ... (x) K_D) @ x without forming the Kronecker matrix.

    Args:
        factors: D matrices K_d of shape (n_d, m_d); rectangular allowed.
        x: (..., M), M = prod m_d (prod n_d when transpose=True); leading dims are a batch. For a
            matrix X (M, r) call ``kron_matmul(factors, X.T).T``.
        transpose: use K_d^T, i.e. compute (K_1 (x) ... (x) K_D)^T @ x.

    Returns:
        (..., prod n_d) (prod m_d when transpose). Differentiable in x and every factor (the
        backward is the op ``kernelfuse::kron_matmul_bwd``). One GEMM per axis (cyclic mode
        products, see docs/kron.md): O(B * sum_d n_d * prod of the intermediate grid).
    """
    fs = _check_factors(factors, "kron_matmul", square=False)
    mats = [f.transpose(0, 1) if transpose else f for f in fs]
    M = _prod(m.shape[1] for m in mats)
    _check_vec(x, "x", "kron_matmul", fs[0], M, "prod of the factors' " + ("rows" if transpose else "columns"))
    lead = x.shape[:-1]
    N = _prod(m.shape[0] for m in mats)
    # explicit batch size: reshape(-1, 0) of an empty x is ambiguous
    out = _ops.kron_matmul(fs, x.reshape(math.prod(lead), M), bool(transpose))
    return out.reshape(*lead, N)


@torch.library.register_fake("kernelfuse::kron_matmul")
def _(factors, x, transpose):
    _fake_args("kron_matmul", ("factors", factors), ("x", x))
    N = _prod(f.shape[1 if transpose else 0] for f in factors)
    return x.new_empty((x.shape[0], N))


@torch.library.register_fake("kernelfuse::kron_matmul_bwd")
def _(grad, factors, x, transpose, need_x, need_factors):
    _fake_args("kron_matmul_bwd", ("grad", grad), ("factors", factors), ("x", x))
    dx = x.new_empty(x.shape) if need_x else x.new_empty((0,))
    dfs = [f.new_empty(f.shape) for f in factors] if need_factors else []
    return dx, dfs


def _matmul_setup(ctx, inputs, output):
    factors, x, transpose = inputs
    ctx.transpose = transpose
    ctx.D = len(factors)
    ctx.save_for_backward(x, *factors)


def _matmul_backward(ctx, grad):
    x, *factors = ctx.saved_tensors
    need_f = any(ctx.needs_input_grad[0])
    need_x = ctx.needs_input_grad[1]
    dx, dfs = _ops.kron_matmul_bwd(grad, factors, x, ctx.transpose, need_x, need_f)
    dfl = [d if n else None for d, n in zip(dfs, ctx.needs_input_grad[0])] if need_f else [None] * ctx.D
    return dfl, (dx if need_x else None), None


torch.library.register_autograd("kernelfuse::kron_matmul", _matmul_backward, setup_context=_matmul_setup)


# ---------------------------------------------------------------- kron_gp_mll / kron_solve
@torch.library.register_fake("kernelfuse::kron_gp_mll")
def _(factors, y, noise):
    _fake_args("kron_gp_mll", ("factors", factors), ("y", y), ("noise", noise))
    P = sum(int(f.shape[0]) + int(f.shape[0]) ** 2 for f in factors)
    return y.new_empty((y.shape[0],)), y.new_empty(y.shape), y.new_empty((P,)), y.new_empty(y.shape)


@torch.library.register_fake("kernelfuse::kron_gp_mll_bwd")
def _(grad_nll, grad_alpha, factors, noise, eig, alpha_rot, need_y, need_noise, need_factors):
    _fake_args(
        "kron_gp_mll_bwd",
        ("factors", factors),
        ("grad_nll", grad_nll),
        ("grad_alpha", grad_alpha),
        ("noise", noise),
        ("eig", eig),
        ("alpha_rot", alpha_rot),
        optional=("grad_nll", "grad_alpha"),
    )
    dy = alpha_rot.new_empty(alpha_rot.shape) if need_y else alpha_rot.new_empty((0,))
    dn = noise.new_empty(()) if need_noise else noise.new_empty((0,))
    dfs = [f.new_empty(f.shape) for f in factors] if need_factors else []
    return dy, dn, dfs


def _mll_setup(ctx, inputs, output):
    factors, y, noise = inputs
    _, _, eig, alpha_rot = output
    ctx.noise_shape = noise.shape
    ctx.save_for_backward(noise, eig, alpha_rot, *factors)


def _mll_backward(ctx, g_nll, g_alpha, g_eig, g_rot):
    noise, eig, alpha_rot, *factors = ctx.saved_tensors
    nf = ctx.needs_input_grad[0]
    need_f, need_y, need_n = any(nf), ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    dy, dn, dfs = _ops.kron_gp_mll_bwd(g_nll, g_alpha, factors, noise, eig, alpha_rot, need_y, need_n, need_f)
    dfl = [d if n else None for d, n in zip(dfs, nf)] if need_f else [None] * len(factors)
    return dfl, (dy if need_y else None), (dn.reshape(ctx.noise_shape) if need_n else None)


torch.library.register_autograd("kernelfuse::kron_gp_mll", _mll_backward, setup_context=_mll_setup)


def _mll_impl(fs, y, noise):
    """(nll (lead), alpha (y's shape), eig, alpha_rot) through the op."""
    N = y.shape[-1]
    lead = y.shape[:-1]
    nll, alpha, eig, rot = _ops.kron_gp_mll(fs, y.reshape(math.prod(lead), N), noise)
    return nll.reshape(lead), alpha.reshape(y.shape), eig, rot


@fp32_under_autocast
def kron_gp_mll(factors: Factors, y: torch.Tensor, noise) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact negative log marginal likelihood of a GP on a grid, and the weights alpha.

    With K = K_1 (x) ... (x) K_D (each K_d (n_d, n_d) symmetric PSD; used as 0.5 (K_d + K_d^T)) and
    A = K + s^2 I:
        nll   = 0.5 y^T A^{-1} y + 0.5 log det A + N/2 log(2 pi)
        alpha = A^{-1} y

    Args:
        factors: D <= 8 square matrices K_d (n_d, n_d).
        y: (N,) or (..., N) with N = prod n_d; leading dims are independent outputs (same K).
        noise: s^2, the noise VARIANCE: a 0-d tensor (differentiable) or a number.

    Returns:
        (nll, alpha): nll of shape y.shape[:-1] (0-d for a vector y), alpha of y's shape. Both are
        differentiable in the factors, y and noise through an analytic backward (the op
        ``kernelfuse::kron_gp_mll_bwd``; no differentiation through eigh, which is unstable for
        repeated eigenvalues). Gradients w.r.t. factors are those of the symmetrised definition.

    Method: K_d = Q_d diag(lam_d) Q_d^T (eigh); A^{-1} y = Q diag(1/(lam + s^2)) Q^T y by mode
    products with Q = (x) Q_d, lam = (x) lam_d; log det A = sum log(lam + s^2) exactly, without any
    clamping of eigenvalues. Eigenvalues of a PSD factor can come out slightly negative from
    rounding; they are used as they are (so the log-det is the exact one of the factors as given).
    If some lam + s^2 <= 0 (A not positive definite) the nll is NaN (or -inf), never silently clamped.
    """
    fs = _check_factors(factors, "kron_gp_mll", square=True)
    _check_dims(fs, "kron_gp_mll")
    N = _prod(f.shape[0] for f in fs)
    _check_vec(y, "y", "kron_gp_mll", fs[0], N, "prod n_d of the factors")
    s2 = _noise(noise, fs[0], "kron_gp_mll")
    nll, alpha, _, _ = _mll_impl(fs, y, s2)
    return nll, alpha


@fp32_under_autocast
def kron_solve(factors: Factors, y: torch.Tensor, noise) -> torch.Tensor:
    """(K_1 (x) ... (x) K_D + s^2 I)^{-1} y for square symmetric PSD factors K_d (n_d, n_d).

    y: (N,) or (..., N), N = prod n_d; noise: s^2 (variance), 0-d tensor or number. Returns y's
    shape; differentiable in the factors, y and noise (the alpha output of :func:`kron_gp_mll`).
    """
    fs = _check_factors(factors, "kron_solve", square=True)
    _check_dims(fs, "kron_solve")
    N = _prod(f.shape[0] for f in fs)
    _check_vec(y, "y", "kron_solve", fs[0], N, "prod n_d of the factors")
    s2 = _noise(noise, fs[0], "kron_solve")
    return _mll_impl(fs, y, s2)[1]


# ---------------------------------------------------------------- kron_posterior
def _rowwise_contract(
    ws: Sequence[torch.Tensor], t: torch.Tensor, dims: Sequence[int], chunk_elems: int = 1 << 22
) -> torch.Tensor:
    """out[b, i] = sum_j prod_d ws[d][i, j_d] t[b, j] for ws[d] (M, n_d), t (B, N) -> (B, M).
    Targets in chunks: memory O(B * N / n_D * chunk), never an M x N matrix."""
    B = t.shape[0]
    D = len(dims)
    M = ws[0].shape[0]
    last = dims[-1]
    rest = _prod(dims[:-1])
    T = t.reshape(B * rest, last)
    step = max(1, chunk_elems // max(1, B * rest))
    outs = []
    for i0 in range(0, M, step) if M else [0]:  # M = 0: one empty chunk keeps the graph (zero grads)
        W = [w[i0 : i0 + step] for w in ws]
        m = W[0].shape[0]
        s = (T @ W[-1].transpose(0, 1)).reshape(B, *dims[:-1], m)  # contract the last axis
        for d in range(D - 2, -1, -1):
            # s (B, n_0..n_d, m): contract axis n_d with W[d][i, :] per target i
            s = (s * W[d].transpose(0, 1).reshape(*([1] * (d + 1)), dims[d], m)).sum(-2)
        outs.append(s.reshape(B, m))
    if not outs:
        return t.new_zeros(B, 0)
    return torch.cat(outs, dim=1)


def _prior(prior_var, M, ref, fn, dims=None):
    if isinstance(prior_var, (list, tuple)):
        if dims is None or len(prior_var) != len(dims):
            raise ValueError(
                f"kernelfuse.{fn}: argument 'prior_var': a list of per-axis vectors needs one "
                f"(m_d,) vector per axis of a grid of targets"
            )
        vs = []
        for d, v in enumerate(prior_var):
            if isinstance(v, torch.Tensor):
                check_devices(fn, ("factors[0]", ref), (f"prior_var[{d}]", v))
            v = torch.as_tensor(v, dtype=ref.dtype, device=ref.device).reshape(-1)
            if v.shape[0] != dims[d]:
                raise ValueError(
                    f"kernelfuse.{fn}: argument 'prior_var[{d}]': expected shape ({dims[d]},), got {tuple(v.shape)}"
                )
            vs.append(v)
        return _kron_vec(vs)
    if isinstance(prior_var, torch.Tensor):
        check_devices(fn, ("factors[0]", ref), ("prior_var", prior_var))
    p = torch.as_tensor(prior_var, dtype=ref.dtype, device=ref.device)
    try:
        return torch.broadcast_to(p, (M,))
    except RuntimeError:
        raise ValueError(
            f"kernelfuse.{fn}: argument 'prior_var': expected a scalar or a tensor broadcastable "
            f"to ({M},), got shape {tuple(p.shape)}"
        ) from None


@fp32_under_autocast
def kron_posterior(
    factors: Factors,
    y: torch.Tensor,
    noise,
    *,
    cross_factors: Optional[Factors] = None,
    targets: str = "grid",
    prior_var=None,
    return_var: bool = True,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Posterior mean and exact marginal variance of the latent GP f, given y = f + noise on a grid.

    Training data: factors K_d (n_d, n_d) symmetric PSD (the prior covariance K = (x) K_d on the
    grid), y (N,) or (..., N), noise s^2 (variance). With A = K + s^2 I and Ks the cross-covariance
    (targets x training points):  mean = Ks A^{-1} y,  var = prior_var - diag(Ks A^{-1} Ks^T).

    Targets:
        cross_factors=None: the training grid itself (Ks = K, M = N). prior_var defaults to
            diag(K) = (x) diag(K_d) and then var = (x)(Q_d o Q_d) @ (lam s^2 / (lam + s^2)),
            computed without cancellation, as cheap as the mean.
        targets="grid": another grid; cross_factors[d] (m_d, n_d) are the per-axis
            cross-covariances k_d(x*_d, x_d); M = prod m_d, outputs flattened row-major.
            var = prior_var - (x)((Ks_d Q_d) o (Ks_d Q_d)) @ (1 / (lam + s^2)).
        targets="scattered": M arbitrary points; cross_factors[d] (M, n_d) holds, for every target
            i, the row k_d(x*_i[d], x_d) (product kernel: Ks[i] = (x)_d cross_factors[d][i]).
            O(M N) time by successive contractions in chunks of targets; no M x N matrix.
        prior_var: the prior variance k(x*, x*) at the targets: a scalar, a tensor broadcastable to
            (M,), or (grid targets) a list of per-axis (m_d,) vectors (Kronecker product). Required
            for cross targets; optional on the training grid.

        return_var: False skips the variance (returns (mean, None)).

    Returns:
        mean (..., M) (batch of y), var (M,) (the same for every output of a batch). The mean is
        differentiable in factors, y, noise and cross_factors; var is computed without autograd
        (returned detached) by the op ``kernelfuse::kron_posterior_var``, reusing the
        eigendecompositions of the solve.
    """
    fn = "kron_posterior"
    fs = _check_factors(factors, fn, square=True)
    _check_dims(fs, fn)
    dims = [f.shape[0] for f in fs]
    N = _prod(dims)
    _check_vec(y, "y", fn, fs[0], N, "prod n_d of the factors")
    s2 = _noise(noise, fs[0], fn)
    if targets not in ("grid", "scattered"):
        raise ValueError(f"kernelfuse.{fn}: argument 'targets': expected 'grid' or 'scattered', got {targets!r}")
    cs = None
    if cross_factors is not None:
        if isinstance(cross_factors, torch.Tensor) or not isinstance(cross_factors, (list, tuple)):
            raise TypeError(
                f"kernelfuse.{fn}: argument 'cross_factors' must be a list or tuple of 2-D tensors, "
                f"got {type(cross_factors).__name__}"
            )
        if len(cross_factors) != len(fs):
            raise ValueError(
                f"kernelfuse.{fn}: argument 'cross_factors': expected {len(fs)} matrices (one per "
                f"axis), got {len(cross_factors)}"
            )
        cs = []
        for d, c in enumerate(cross_factors):
            name = f"cross_factors[{d}]"
            check_tensor(c, name, fn)
            check_like(c, fs[0], name, "factors[0]", fn)
            if c.dim() != 2 or c.shape[1] != dims[d]:
                raise ValueError(
                    f"kernelfuse.{fn}: argument '{name}': expected shape (m, {dims[d]}) (targets x "
                    f"training points of axis {d}), got {tuple(c.shape)}"
                )
            if targets == "scattered" and cs and c.shape[0] != cs[0].shape[0]:
                raise ValueError(
                    f"kernelfuse.{fn}: argument '{name}': scattered targets need the same number of "
                    f"rows M = {cs[0].shape[0]} in every cross factor, got {tuple(c.shape)}"
                )
            cs.append(c)
        if targets == "grid":
            # the mean's mode products: (B, n_0..n_{D-1}) -> (B, m_0..m_{D-1}), axis by axis
            cur, peak = list(dims), _prod(dims)
            for d, c in enumerate(cs):
                cur[d] = c.shape[0]
                peak = max(peak, _prod(cur))
            _check_size(
                _prod(y.shape[:-1]) * peak,
                fs[0],
                "cross_factors",
                fn,
                f"the posterior on the grid of targets {tuple(c.shape[0] for c in cs)} (or an intermediate)",
            )
        else:
            _check_size(
                _prod(y.shape[:-1]) * cs[0].shape[0],
                fs[0],
                "cross_factors",
                fn,
                f"the posterior mean at {cs[0].shape[0]} scattered targets",
            )
        if prior_var is None and return_var:
            raise ValueError(
                f"kernelfuse.{fn}: argument 'prior_var' is required with cross_factors (the prior "
                f"variance k(x*, x*) at the targets: a scalar for a stationary kernel)"
            )
    _, alpha, eig, _ = _mll_impl(fs, y, s2)
    lead = y.shape[:-1]
    if cs is None:
        mean = y - s2 * alpha  # K A^{-1} y = y - s^2 A^{-1} y
        M, kind, pdims = N, "train", dims
    elif targets == "grid":
        pdims = [c.shape[0] for c in cs]
        M, kind = _prod(pdims), "grid"
        mean = kron_matmul(cs, alpha)
    else:
        M, kind, pdims = cs[0].shape[0], "scattered", None
        mean = _rowwise_contract(cs, alpha.reshape(-1, N), dims).reshape(*lead, M)
    if not return_var:
        return mean, None
    with torch.no_grad():
        prior = None if prior_var is None else _prior(prior_var, M, fs[0], fn, pdims).contiguous()
        var = _ops.kron_posterior_var(
            [f.detach() for f in fs],
            s2.detach(),
            [] if cs is None else [c.detach() for c in cs],
            kind,
            prior,
            eig.detach(),
        )
    return mean, var


@torch.library.register_fake("kernelfuse::kron_posterior_var")
def _(factors, noise, cross_factors, targets, prior_var, eig):
    _fake_args(
        "kron_posterior_var",
        ("factors", factors),
        ("noise", noise),
        ("cross_factors", cross_factors),
        ("prior_var", prior_var),
        ("eig", eig),
        optional=("prior_var", "eig"),
    )
    if targets == "train":
        M = _prod(f.shape[0] for f in factors)
    elif targets == "grid":
        M = _prod(c.shape[0] for c in cross_factors)
    else:
        M = cross_factors[0].shape[0]
    return factors[0].new_empty((M,))


__all__ = ["kron_gp_mll", "kron_matmul", "kron_posterior", "kron_solve"]
