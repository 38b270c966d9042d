"""GPPDESolver: GP-HM ("Solving High Frequency and Multi-Scale PDEs with Gaussian Processes",
ICLR 2024) on a Cartesian collocation grid, built on the Kronecker ops and ``grid_kernel``."""

# Over 600 lines on purpose: one solver class whose pieces (collocation operators, the
# Kronecker-structured normal equations and their preconditioner) share its state.

from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..ops.kron import kron_gp_mll, kron_matmul, kron_posterior
from ..ops.kron_grid import grid_kernel
from ._common import as_tensor, check_axes, check_kind, default_params, to_output

_CLS = "GPPDESolver"

Orders = Tuple[int, ...]


def _grid_values(fn, axes_np, name):
    """fn evaluated on the meshgrid of the axes (each argument an array of the grid's shape)."""
    mesh = np.meshgrid(*axes_np, indexing="ij")
    try:
        v = fn(*mesh)
    except Exception as e:  # noqa: BLE001  (the user's callable: say which one failed)
        raise ValueError(f"kernelfuse.gp.{_CLS}: argument '{name}': calling it on the grid failed: {e!r}") from e
    v = np.array(np.broadcast_to(np.asarray(v, dtype=np.float64), mesh[0].shape))
    if not np.all(np.isfinite(v)):
        raise ValueError(f"kernelfuse.gp.{_CLS}: argument '{name}' returned NaN or infinite values on the grid")
    return v


class GPPDESolver:
    """Gaussian-process PDE solver with a Kronecker prior (GP-HM).

    The unknowns are the solution values u on a Cartesian collocation grid (boundary included).
    Prior: u ~ N(0, K + jitter I) with K = K_1 (x) ... (x) K_D, each K_d a spectral-mixture ("sm")
    or Student-t-mixture ("stm") kernel matrix with log-domain weights (and learnable frequencies)
    on axis d. Derivatives of the GP interpolant at the grid use derivative kernel matrices and
    alpha = (K + jitter I)^-1 u from ``kron_gp_mll``: for orders (o_1, .., o_D),
    D^o u = (K_1^(o_1,0) (x) ... (x) K_D^(o_D,0)) alpha (``kron_matmul``; never an N x N matrix).
    Loss (the negative log joint of GP-HM):

        nll_prior(u) + w_boundary / 2 * sum_b ((u_b - g_b) / s_g)^2 + w_residual / 2 * sum_r (r(u)_r / s_f)^2

    with r the PDE residual on the interior collocation points, s_f the RMS of the source (1 if
    zero) and s_g the RMS of the boundary values (1 if zero): the weights are scale-free.
    Every kernel hyper-parameter and u are fitted jointly (L-BFGS by default, or Adam).

    Use the constructors: ``poisson_1d``, ``poisson_2d``, ``allen_cahn_1d``, ``allen_cahn_2d``,
    ``advection_1d``; then ``fit()`` and ``predict(x)``.
    """

    def __init__(
        self,
        axes,
        residual: Callable,
        orders: Sequence[Orders],
        source_values,
        boundary_mask,
        boundary_values,
        *,
        kernel="sm",
        num_mixtures: int = 30,
        max_freq=None,
        learn_freq: bool = True,
        jitter: float = 1e-10,
        w_boundary: float = 1e8,
        w_residual: float = 1e8,
        dtype: torch.dtype = torch.float64,
        name: str = "pde",
        linear: bool = False,
        kron_sum_terms=None,
        edges=None,
    ):
        if not (isinstance(jitter, (int, float)) and jitter > 0):
            raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'jitter' must be a positive variance, got {jitter!r}")
        for nm, w in (("w_boundary", w_boundary), ("w_residual", w_residual)):
            if not (isinstance(w, (int, float)) and w > 0 and math.isfinite(w)):
                raise ValueError(f"kernelfuse.gp.{_CLS}: argument '{nm}' must be a positive weight, got {w!r}")
        if not (isinstance(num_mixtures, int) and num_mixtures >= 1):
            raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'num_mixtures' must be an int >= 1, got {num_mixtures!r}")
        self.axes = check_axes(axes, "axes", dtype, None, _CLS)
        D = len(self.axes)
        self.kinds = check_kind(kernel, D, _CLS)
        for k in self.kinds:
            if k in ("matern12", "matern32") and any(max(o) > 1 for o in orders):
                raise ValueError(
                    f"kernelfuse.gp.{_CLS}: argument 'kernel': kind {k!r} is not smooth enough for "
                    "second derivatives; use sm, stm, rbf or matern52"
                )
        self.shape = tuple(int(a.numel()) for a in self.axes)
        self.N = int(np.prod(self.shape))
        self.dtype = dtype
        self.residual_fn = residual
        self.orders = [tuple(int(v) for v in o) for o in orders]
        for o in self.orders:
            if len(o) != D or any(v < 0 or v > 2 for v in o):
                raise ValueError(
                    f"kernelfuse.gp.{_CLS}: argument 'orders': each entry needs {D} orders in 0..2, got {o}"
                )
        self.f = as_tensor(source_values, "source", dtype, None, _CLS).reshape(-1)
        mask = torch.as_tensor(np.asarray(boundary_mask, dtype=bool)).reshape(-1)
        if mask.numel() != self.N or self.f.numel() != self.N:
            raise ValueError(f"kernelfuse.gp.{_CLS}: source and boundary mask must cover the grid ({self.N} points)")
        self.bmask = mask
        self.bidx = torch.nonzero(mask).reshape(-1)
        self.ridx = torch.nonzero(~mask).reshape(-1)
        self.g = as_tensor(boundary_values, "boundary", dtype, None, _CLS).reshape(-1)
        if self.g.numel() != self.bidx.numel():
            raise ValueError(
                f"kernelfuse.gp.{_CLS}: argument 'boundary': expected {self.bidx.numel()} values (one per "
                f"boundary point), got {self.g.numel()}"
            )
        fr = self.f[self.ridx]
        self.s_f = float(fr.pow(2).mean().sqrt()) if fr.numel() and float(fr.abs().max()) > 0 else 1.0
        self.s_g = float(self.g.pow(2).mean().sqrt()) if self.g.numel() and float(self.g.abs().max()) > 0 else 1.0
        self.jitter = float(jitter)
        self.w_b, self.w_r = float(w_boundary), float(w_residual)
        mf = list(max_freq) if isinstance(max_freq, (list, tuple)) else [max_freq] * D
        self.params = [
            default_params(k, x, num_mixtures if k in ("sm", "stm") else 1, max_freq=m).clone()
            for k, x, m in zip(self.kinds, self.axes, mf)
        ]
        self.learn_freq = learn_freq
        self.u = torch.zeros(self.N, dtype=dtype)
        self.name = name
        self.linear = linear  # the residual is affine in (u, D^o u): one Gauss-Newton step is exact
        self.dense_max = 4096  # grids up to this size solve the u-step with a dense Jacobian
        # constant-coefficient operators sum_t c_t d^(k_t)/dx_(d_t)^(k_t) with Dirichlet data on whole
        # faces: (c, axis, order) terms and per-axis (low, high) boundary faces (for the collocation solve)
        self.kron_sum_terms = kron_sum_terms
        self.edges = edges
        self.history_: List[float] = []
        self.fit_time_ = 0.0

    # ------------------------------------------------------------------ the model
    def _factors(self, params, orders=None):
        return [
            grid_kernel(x, x, k, p, orders=(orders[d] if orders else 0, 0))
            for d, (x, k, p) in enumerate(zip(self.axes, self.kinds, params))
        ]

    def _params_full(self, free):
        """Per-axis (Q, P) parameters from the free tensors (frequencies frozen if not learned)."""
        out = []
        for k, p, base in zip(self.kinds, free, self.params):
            if k in ("sm", "stm") and not self.learn_freq:
                p = torch.stack([p[:, 0], base[:, 1], p[:, 2]], 1)
            out.append(p)
        return out

    def derivatives(self, params, alpha) -> Dict[Orders, torch.Tensor]:
        return {o: kron_matmul(self._factors(params, o), alpha) for o in self.orders}

    def loss_terms(self, u, params):
        K = self._factors(params)
        nll, alpha = kron_gp_mll(K, u, torch.tensor(self.jitter, dtype=self.dtype))
        derivs = self.derivatives(params, alpha)
        u_s = u - self.jitter * alpha  # the interpolant at the grid: K alpha = (K + jitter I) alpha - jitter alpha
        r = self.residual_fn(u_s, derivs, self.f)[self.ridx] / self.s_f
        b = (u[self.bidx] - self.g) / self.s_g
        return nll, 0.5 * self.w_b * b.pow(2).sum(), 0.5 * self.w_r * r.pow(2).sum()

    # ------------------------------------------------------------------ fitting
    def _whitening(self, params):
        """Per-axis eigenbases of the kernel factors (no gradient): u = A^(1/2) v, A = K + jitter I."""
        with torch.no_grad():
            K = self._factors(params)
            ev, Qs = zip(*[torch.linalg.eigh(k) for k in K])
            lam = ev[0]
            for e in ev[1:]:
                lam = torch.outer(lam, e).reshape(-1)
            lam = lam.clamp_min(0) + self.jitter
            Qs = list(Qs)
            D = {o: self._factors(params, o) for o in self.orders}
        sq = lam.sqrt()
        half = lambda v: kron_matmul(Qs, sq * kron_matmul(Qs, v, transpose=True))  # noqa: E731  A^(1/2)
        ihalf = lambda v: kron_matmul(Qs, kron_matmul(Qs, v, transpose=True) / sq)  # noqa: E731  A^(-1/2)
        return K, D, half, ihalf

    def _solve_u(self, params, u0, *, gn_iter=8, cg_iter=2000, cg_tol=1e-12, verbose=False):
        """Minimise the loss over u at fixed hyper-parameters: Gauss-Newton in the whitened variable
        v (u = A^(1/2) v, so the prior term is |v|^2 / 2) with matrix-free CG on the normal
        equations; the PDE residual is pointwise in (u, D^o u), its partials come from torch.func.jvp.
        One Gauss-Newton step solves a linear PDE exactly (to the CG tolerance)."""
        K, Dm, half, ihalf = self._whitening(params)
        cb = math.sqrt(self.w_b) / self.s_g
        cr = math.sqrt(self.w_r) / self.s_f
        ridx, bidx = self.ridx, self.bidx
        orders = self.orders
        N = self.N

        def fields(v):
            alpha = ihalf(v)
            return kron_matmul(K, alpha), [kron_matmul(Dm[o], alpha) for o in orders]

        def res_of(us, ds):
            return self.residual_fn(us, dict(zip(orders, ds)), self.f)

        with torch.no_grad():
            v = ihalf(u0)
            for it in range(gn_iter):
                us, ds = fields(v)
                # pointwise partials of the residual with respect to u and each derivative field: the
                # residual is pointwise, so the gradient of its sum holds every partial
                with torch.enable_grad():
                    us_ = us.detach().requires_grad_(True)
                    ds_ = [t.detach().requires_grad_(True) for t in ds]
                    r0 = res_of(us_, ds_)
                    grads = torch.autograd.grad(r0.sum(), [us_] + ds_, allow_unused=True)
                r0 = r0.detach()
                cu = grads[0] if grads[0] is not None else torch.zeros_like(us)
                cds = [g if g is not None else torch.zeros_like(us) for g in grads[1:]]
                mask = torch.zeros(N, dtype=us.dtype)
                mask[ridx] = 1.0
                cu, cds = cu * mask * cr, [c * mask * cr for c in cds]

                def J(dv):
                    a = ihalf(dv)
                    jr = cu * kron_matmul(K, a)
                    for c, o in zip(cds, orders):
                        jr = jr + c * kron_matmul(Dm[o], a)
                    return dv, cb * half(dv)[..., bidx], jr

                def JT(y0, yb, yr):
                    sb = torch.zeros(yb.shape[:-1] + (N,), dtype=y0.dtype)
                    sb[..., bidx] = yb
                    w = kron_matmul(K, cu * yr, transpose=True)
                    for c, o in zip(cds, orders):
                        w = w + kron_matmul(Dm[o], c * yr, transpose=True)
                    return y0 + cb * half(sb) + ihalf(w)

                R0 = (v, cb * (half(v)[bidx] - self.g), (cr * r0) * mask)
                rhs = -JT(*R0)

                def normal(dv):
                    return JT(*J(dv))

                k = 0
                if N <= self.dense_max:
                    # small grids: the Jacobian as a dense matrix (J applied to the identity), then a
                    # QR least-squares solve of J dv = -R (no squared condition number)
                    eye = torch.eye(N, dtype=v.dtype)
                    Jm = torch.cat(J(eye), -1).T
                    Rv = torch.cat(R0, -1)
                    x = torch.linalg.lstsq(Jm, -Rv[:, None]).solution[:, 0]
                else:
                    x, k = self._cg(normal, rhs, cg_iter, cg_tol)
                v = v + x
                if verbose:
                    print(f"  [{self.name}] GN {it}: CG {k + 1} its, |dv| {float(x.norm()):.3e}", flush=True)
                if float(x.norm()) <= 1e-8 * max(float(v.norm()), 1e-300) or self.linear:
                    break
            return half(v)

    def _solve_collocation(self, params):
        """The limit of infinite boundary / residual weights for a constant-coefficient operator
        L = sum_t c_t D_(d_t)^(k_t) (a Kronecker sum) with Dirichlet data on whole faces: exact
        collocation, L u = f on the interior points and u = g on the boundary, with the GP
        differentiation matrices D_d^(k) = K_d^(k,0) (K_d + jitter I)^-1 of each axis. Eliminating the
        boundary leaves sum_d (I (x) .. M_d .. (x) I) U = F on the interior grid, solved by the fast
        diagonalisation method (eigendecomposition of each M_d): O(sum n_d^3 + N sum n_d)."""
        D = len(self.axes)
        with torch.no_grad():
            Dmat = {}
            for c, d, k in self.kron_sum_terms:  # noqa: B007
                if (d, k) not in Dmat:
                    x, kind, p = self.axes[d], self.kinds[d], params[d]
                    Kd = grid_kernel(x, x, kind, p)
                    Kk = grid_kernel(x, x, kind, p, orders=(k, 0))
                    A = Kd + self.jitter * torch.eye(x.numel(), dtype=self.dtype)
                    Dmat[(d, k)] = torch.linalg.solve(A, Kk.T).T  # Kk A^-1 (A symmetric)
            interior = []
            for d, (lo, hi) in enumerate(self.edges):
                n = self.shape[d]
                interior.append(torch.arange(1 if lo else 0, n - 1 if hi else n))
            ub = torch.zeros(self.N, dtype=self.dtype)
            ub[self.bidx] = self.g
            Ub = ub.reshape(self.shape)
            Lub = torch.zeros(self.shape, dtype=self.dtype)
            for c, d, k in self.kron_sum_terms:
                Lub = Lub + c * torch.movedim(torch.tensordot(Dmat[(d, k)], Ub, dims=([1], [d])), 0, d)
            F = (self.f.reshape(self.shape) - Lub)[torch.meshgrid(*interior, indexing="ij")]
            # per-axis interior operators and their eigendecompositions
            Vs, Vinv, mus = [], [], []
            for d in range(D):
                I = interior[d]
                M = torch.zeros(len(I), len(I), dtype=self.dtype)
                for c, dd, k in self.kron_sum_terms:
                    if dd == d:
                        M = M + c * Dmat[(d, k)][I][:, I]
                mu, V = torch.linalg.eig(M)
                Vs.append(V)
                Vinv.append(torch.linalg.inv(V))
                mus.append(mu)
            T = F.to(torch.complex128)
            for d in range(D):  # mode products with V_d^-1
                T = torch.movedim(torch.tensordot(Vinv[d], T, dims=([1], [d])), 0, d)
            denom = mus[0]
            for mu in mus[1:]:
                denom = denom[..., None] + mu
            T = T / denom
            for d in range(D):
                T = torch.movedim(torch.tensordot(Vs[d], T, dims=([1], [d])), 0, d)
            U = Ub.clone()
            U[torch.meshgrid(*interior, indexing="ij")] = T.real.to(self.dtype)
            return U.reshape(-1)

    @staticmethod
    def _cg(matvec, rhs, max_iter, tol):
        x = torch.zeros_like(rhs)
        r = rhs.clone()
        p = r.clone()
        rr = r @ r
        r0 = float(rr.sqrt())
        k = 0
        for k in range(max_iter):  # noqa: B007
            Ap = matvec(p)
            step = rr / (p @ Ap)
            x = x + step * p
            r = r - step * Ap
            rr_new = r @ r
            if float(rr_new.sqrt()) <= tol * max(r0, 1e-300):
                break
            p = r + (rr_new / rr) * p
            rr = rr_new
        return x, k + 1

    def fit(
        self,
        max_iter: int = 5,
        *,
        method: str = "alternate",
        hyper_iter: int = 10,
        optimizer: str = "adam",
        lr: Optional[float] = None,
        gn_iter: int = 8,
        cg_iter: int = 2000,
        time_limit: Optional[float] = None,
        u_solver: str = "auto",
        verbose: bool = False,
    ):
        """Fit u and the kernel hyper-parameters. Returns self (warm-starts from the current state).

        method "alternate" (default): an exact minimisation over u at fixed hyper-parameters, then
        ``max_iter`` rounds of (a) ``hyper_iter`` Adam (or L-BFGS) steps on the kernel
        hyper-parameters at fixed u (at the optimum in u, the gradient with respect to the
        hyper-parameters is that of the joint loss) and (b) a new exact u solve.
        The u solve (``u_solver``): "auto" = "gauss_newton" on grids up to ``dense_max`` (4096)
        points (whitened Gauss-Newton with a dense least-squares step; with CG beyond that) and
        "collocation" above it when the operator is a constant-coefficient Kronecker sum with
        Dirichlet faces (poisson_1d/2d, advection_1d): the limit of infinite weights, solved by
        fast diagonalisation (see ``_solve_collocation``).
        method "joint": GP-HM's plain joint optimisation of (u, hyper-parameters) by L-BFGS
        (``max_iter`` function evaluations) or Adam (``max_iter`` steps); much slower to converge.
        ``time_limit`` (seconds) stops early between steps."""
        if method not in ("alternate", "joint"):
            raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'method' must be 'alternate' or 'joint', got {method!r}")
        if optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'optimizer' must be 'lbfgs' or 'adam', got {optimizer!r}")
        if u_solver not in ("auto", "collocation", "gauss_newton"):
            raise ValueError(
                f"kernelfuse.gp.{_CLS}: argument 'u_solver' must be 'auto', 'collocation' or "
                f"'gauss_newton', got {u_solver!r}"
            )
        if u_solver == "collocation" and self.kron_sum_terms is None:
            raise ValueError(
                f"kernelfuse.gp.{_CLS}: argument 'u_solver': 'collocation' needs a constant-coefficient "
                "linear operator with Dirichlet faces (poisson_1d, poisson_2d, advection_1d)"
            )
        # auto: a dense Gauss-Newton (least-squares) solve on small grids, the collocation limit on
        # large grids for constant-coefficient linear operators, Gauss-Newton + CG otherwise
        colloc = u_solver == "collocation" or (
            u_solver == "auto" and self.kron_sum_terms is not None and self.N > self.dense_max
        )

        def solve_u(params, u0):
            if colloc:
                return self._solve_collocation(params)
            return self._solve_u(params, u0, gn_iter=gn_iter, cg_iter=cg_iter, verbose=verbose)

        t0 = time.perf_counter()
        out_of_time = lambda: time_limit is not None and time.perf_counter() - t0 > time_limit  # noqa: E731
        if method == "alternate":
            u = solve_u(self.params, self.u)
            for rnd in range(max_iter):
                if out_of_time() or hyper_iter == 0:
                    break
                free = [p.clone().requires_grad_(True) for p in self.params]
                if optimizer == "adam":
                    opt = torch.optim.Adam(free, lr=lr or 1e-2)
                    for _ in range(hyper_iter):
                        opt.zero_grad()
                        loss = sum(self.loss_terms(u, self._params_full(free)))
                        loss.backward()
                        opt.step()
                        self.history_.append(float(loss.detach()))
                else:
                    opt = torch.optim.LBFGS(
                        free,
                        lr=lr or 1.0,
                        max_iter=hyper_iter,
                        line_search_fn="strong_wolfe",
                        tolerance_grad=1e-12,
                        tolerance_change=1e-15,
                    )

                    def closure():
                        opt.zero_grad()
                        loss = sum(self.loss_terms(u, self._params_full(free)))
                        loss.backward()
                        self.history_.append(float(loss.detach()))
                        return loss

                    opt.step(closure)
                self.params = [p.detach().clone() for p in self._params_full(free)]
                u = solve_u(self.params, u)
                with torch.no_grad():
                    self.history_.append(float(sum(self.loss_terms(u, self.params))))
                if verbose:
                    print(f"  [{self.name}] round {rnd}: loss {self.history_[-1]:.6e}", flush=True)
            self.u = u.detach().clone()
        else:
            self._fit_joint(max_iter, optimizer, lr, t0, time_limit, verbose)
        self.fit_time_ += time.perf_counter() - t0
        with torch.no_grad():
            K = self._factors(self.params)
            _, self.alpha_ = kron_gp_mll(K, self.u, torch.tensor(self.jitter, dtype=self.dtype))
        return self

    def _fit_joint(self, max_iter, optimizer, lr, t0, time_limit, verbose):
        u = self.u.clone().requires_grad_(True)
        free = [p.clone().requires_grad_(True) for p in self.params]

        def objective():
            return sum(self.loss_terms(u, self._params_full(free)))

        if optimizer == "adam":
            opt = torch.optim.Adam([u] + free, lr=lr or 1e-2)
            for _ in range(max_iter):
                opt.zero_grad()
                loss = objective()
                loss.backward()
                opt.step()
                self.history_.append(float(loss.detach()))
                if time_limit is not None and time.perf_counter() - t0 > time_limit:
                    break
        else:
            opt = torch.optim.LBFGS(
                [u] + free,
                lr=lr or 1.0,
                max_iter=max_iter,
                max_eval=int(max_iter * 1.25),
                history_size=50,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-12,
                tolerance_change=1e-15,
            )

            class _Stop(Exception):
                pass

            def closure():
                if time_limit is not None and time.perf_counter() - t0 > time_limit:
                    raise _Stop
                opt.zero_grad()
                loss = objective()
                loss.backward()
                self.history_.append(float(loss.detach()))
                if verbose and len(self.history_) % 100 == 0:
                    print(f"  [{self.name}] eval {len(self.history_)}: loss {self.history_[-1]:.6e}", flush=True)
                return loss

            try:
                opt.step(closure)
            except _Stop:
                pass
        self.u = u.detach().clone()
        self.params = [p.detach().clone() for p in self._params_full(free)]

    # ------------------------------------------------------------------ prediction
    @property
    def solution_(self) -> np.ndarray:
        """The fitted solution values on the collocation grid, shape of the grid."""
        return self.u.reshape(self.shape).numpy()

    def predict(self, x):
        """The GP interpolant k(x, X) alpha at new points.

        ``x``: (M, D) scattered points (or (M,) for a 1-D problem) -> (M,); or a list of D 1-D
        arrays (a grid) -> that grid's shape. numpy in gives numpy out; torch in gives torch out."""
        if not hasattr(self, "alpha_"):
            raise RuntimeError(f"kernelfuse.gp.{_CLS}: call fit() first")
        D = len(self.axes)
        with torch.no_grad():
            if isinstance(x, (list, tuple)):
                numpy_out = not (len(x) and isinstance(x[0], torch.Tensor))
                axes = check_axes(x, "x", self.dtype, None, _CLS)
                if len(axes) != D:
                    raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'x': expected {D} axes, got {len(axes)}")
                cross = [grid_kernel(a, b, k, p) for a, b, k, p in zip(axes, self.axes, self.kinds, self.params)]
                out = kron_matmul(cross, self.alpha_).reshape([a.numel() for a in axes])
            else:
                numpy_out = not isinstance(x, torch.Tensor)
                xt = as_tensor(x, "x", self.dtype, None, _CLS)
                if xt.dim() == 1 and D == 1:
                    xt = xt[:, None]
                if xt.dim() != 2 or xt.shape[1] != D:
                    raise ValueError(
                        f"kernelfuse.gp.{_CLS}: argument 'x': expected points of shape (M, {D}) or a list "
                        f"of {D} axes, got shape {tuple(xt.shape)}"
                    )
                cross = [
                    grid_kernel(xt[:, d].contiguous(), self.axes[d], self.kinds[d], self.params[d]) for d in range(D)
                ]
                out = kron_posterior(
                    self._factors(self.params),
                    self.u,
                    self.jitter,
                    cross_factors=cross,
                    targets="scattered",
                    return_var=False,
                )[0]
        return to_output(out, numpy_out)

    def relative_l2_error(self, exact: Callable, x=None) -> float:
        """||u - u_exact|| / ||u_exact|| on the collocation grid (x None) or at the given points."""
        if x is None:
            ue = _grid_values(exact, [a.numpy() for a in self.axes], "exact").reshape(-1)
            u = self.u.numpy()
        else:
            xa = np.asarray(x, dtype=np.float64)
            xa = xa[:, None] if xa.ndim == 1 else xa
            ue = np.asarray(exact(*[xa[:, d] for d in range(xa.shape[1])]), dtype=np.float64)
            u = np.asarray(self.predict(xa))
        return float(np.linalg.norm(u - ue) / max(np.linalg.norm(ue), 1e-300))

    # ------------------------------------------------------------------ constructors
    @staticmethod
    def _box(n_grid, domain, D):
        ns = [int(n_grid)] * D if isinstance(n_grid, (int, np.integer)) else [int(v) for v in n_grid]
        doms = [tuple(domain)] * D if np.ndim(domain) == 1 else [tuple(d) for d in domain]
        if len(ns) != D or len(doms) != D or any(n < 3 for n in ns):
            raise ValueError(f"kernelfuse.gp.{_CLS}: argument 'n_grid': expected {D} sizes >= 3, got {n_grid!r}")
        for lo, hi in doms:
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise ValueError(
                    f"kernelfuse.gp.{_CLS}: argument 'domain': expected (lo, hi) with lo < hi, got {domain!r}"
                )
        return [np.linspace(lo, hi, n) for n, (lo, hi) in zip(ns, doms)]

    @staticmethod
    def _edge_mask(shape, edges):
        """edges: per axis (low?, high?) -> mask of grid points on those faces."""
        m = np.zeros(shape, dtype=bool)
        for d, (lo, hi) in enumerate(edges):
            idx = [slice(None)] * len(shape)
            if lo:
                idx[d] = 0
                m[tuple(idx)] = True
            if hi:
                idx[d] = shape[d] - 1
                m[tuple(idx)] = True
        return m

    @classmethod
    def _build(cls, axes_np, residual, orders, source, boundary, edges, name, **kw):
        for nm, fn in (("source", source), ("boundary", boundary)):
            if not callable(fn):
                raise TypeError(
                    f"kernelfuse.gp.{_CLS}: argument '{nm}' must be a callable of numpy arrays, got {type(fn).__name__}"
                )
        shape = tuple(len(a) for a in axes_np)
        mask = cls._edge_mask(shape, edges)
        f = _grid_values(source, axes_np, "source")
        g = _grid_values(boundary, axes_np, "boundary")[mask]
        return cls(axes_np, residual, orders, f, mask, g, name=name, edges=edges, **kw)

    @classmethod
    def poisson_1d(cls, source, boundary, n_grid: int = 400, domain=(0.0, 1.0), **kw):
        """u_xx = source(x) on the interval, u = boundary(x) at both ends."""
        axes = cls._box(n_grid, domain, 1)
        return cls._build(
            axes,
            lambda u, d, f: d[(2,)] - f,
            [(2,)],
            source,
            boundary,
            [(True, True)],
            "poisson_1d",
            linear=True,
            kron_sum_terms=[(1.0, 0, 2)],
            **kw,
        )

    @classmethod
    def poisson_2d(cls, source, boundary, n_grid=200, domain=(0.0, 1.0), **kw):
        """u_xx + u_yy = source(x, y) on the rectangle, u = boundary(x, y) on its edges."""
        axes = cls._box(n_grid, domain, 2)
        return cls._build(
            axes,
            lambda u, d, f: d[(2, 0)] + d[(0, 2)] - f,
            [(2, 0), (0, 2)],
            source,
            boundary,
            [(True, True), (True, True)],
            "poisson_2d",
            linear=True,
            kron_sum_terms=[(1.0, 0, 2), (1.0, 1, 2)],
            **kw,
        )

    @classmethod
    def allen_cahn_1d(cls, source, boundary, n_grid: int = 400, domain=(0.0, 1.0), **kw):
        """u_xx + u (u^2 - 1) = source(x), u = boundary(x) at both ends (stationary Allen-Cahn)."""
        axes = cls._box(n_grid, domain, 1)
        return cls._build(
            axes,
            lambda u, d, f: d[(2,)] + u * (u * u - 1) - f,
            [(2,)],
            source,
            boundary,
            [(True, True)],
            "allen_cahn_1d",
            **kw,
        )

    @classmethod
    def allen_cahn_2d(cls, source, boundary, n_grid=200, domain=(0.0, 1.0), **kw):
        """u_xx + u_yy + u (u^2 - 1) = source(x, y), u = boundary(x, y) on the edges."""
        axes = cls._box(n_grid, domain, 2)
        return cls._build(
            axes,
            lambda u, d, f: d[(2, 0)] + d[(0, 2)] + u * (u * u - 1) - f,
            [(2, 0), (0, 2)],
            source,
            boundary,
            [(True, True), (True, True)],
            "allen_cahn_2d",
            **kw,
        )

    @classmethod
    def advection_1d(
        cls, initial, beta: float, boundary=None, n_grid=(200, 200), domain=((0.0, 2 * math.pi), (0.0, 1.0)), **kw
    ):
        """u_t + beta u_x = 0 on space-time (axis 0: x, axis 1: t), u(x, 0) = initial(x) and u =
        boundary(x, t) on the x-ends (default: the exact solution initial(x - beta t))."""
        if not callable(initial):
            raise TypeError(f"kernelfuse.gp.{_CLS}: argument 'initial' must be a callable of numpy arrays")
        b = float(beta)
        bnd = boundary if boundary is not None else (lambda x, t: initial(x - b * t))

        def boundary_all(x, t):
            return np.where(t == t.min(), initial(x), bnd(x, t))

        axes = cls._box(n_grid, domain, 2)
        return cls._build(
            axes,
            lambda u, d, f: d[(0, 1)] + b * d[(1, 0)] - f,
            [(1, 0), (0, 1)],
            lambda x, t: np.zeros_like(x),
            boundary_all,
            [(True, True), (True, False)],
            "advection_1d",
            linear=True,
            kron_sum_terms=[(b, 0, 1), (1.0, 1, 1)],
            **kw,
        )


__all__ = ["GPPDESolver"]
