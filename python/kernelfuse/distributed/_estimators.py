"""Estimators fitted on data sharded over the ranks: KernelDensity, GaussianKDE, PrivateKernelDensity.

Each rank passes its own rows to ``fit``; global statistics (row counts, weight totals, means and
covariances, the private sketch) are all-reduced, so every rank ends with the same model as a
single process fitted on the concatenated rows. Densities are kernel log-sums over the global
data (:func:`kernelfuse.distributed.kernel_logsumexp_sq`): queries replicated ("reduce") or
sharded (``queries_sharded=True``: "ring", or "gather" when the data is small). Sampling draws
from the global mixture: every rank draws the same centres and offsets (same ``random_state``),
each fills the rows of the centres it holds, one all-reduce assembles them, so every rank returns
the same samples -- those of the single-process estimator for the same ``random_state``.
"""

from __future__ import annotations

import math
import numbers
import random
import secrets
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from ..kde import _kernel_density as _kdm
from ..kde._gaussian_kde import _LOG_2PI
from ..kde._kernel_density import KernelDensity as _KernelDensity
from ..kde._private import PrivateKernelDensity as _PrivateKernelDensity
from ..kde._private import _rational, sample_discrete_gaussian, sample_discrete_laplace
from ..kde._sampling import choose_centres, sample_offsets
from ..ops.features import random_features
from ._comm import all_gather_rows, all_gather_sizes, all_reduce_sum, group_info
from ._kernel_sums import kernel_logsumexp, kernel_logsumexp_sq

__all__ = ["KernelDensity", "GaussianKDE", "PrivateKernelDensity"]


def _owned_rows(data_local: torch.Tensor, idx: np.ndarray, offset: int, group) -> torch.Tensor:
    """data_global[idx] assembled from the shards: each rank fills the rows it holds, one all-reduce."""
    n_local = data_local.shape[0]
    out = torch.zeros(len(idx), data_local.shape[1], dtype=data_local.dtype, device=data_local.device)
    mine = (idx >= offset) & (idx < offset + n_local)
    if mine.any():
        sel = torch.from_numpy(np.nonzero(mine)[0]).to(data_local.device)
        out[sel] = data_local[torch.from_numpy(idx[mine] - offset).to(data_local.device)]
    (out,) = all_reduce_sum([out], group)
    return out


def _lse_sq(q, support, log_w, queries_sharded, group, grad, **kw):
    args = dict(x_sharded=bool(queries_sharded), y_sharded=True, group=group, **kw)
    if grad:
        lse = kernel_logsumexp(q, support, log_w, **args)
        with torch.no_grad():
            l1, l2 = kernel_logsumexp_sq(q.detach(), support, log_w, **args)
    else:
        lse, l2 = kernel_logsumexp_sq(q, support, log_w, **args)
        l1 = lse
    return lse, _kdm._kish_neff(l1.detach(), l2.detach())


class KernelDensity(_KernelDensity):
    """:class:`kernelfuse.kde.KernelDensity` fitted on sharded rows (scikit-learn's parameters, plus):

    Parameters
    ----------
    group : torch.distributed process group, default None (the default group)
    queries_sharded : bool, default False
        False: every rank passes the same queries to ``score_samples`` and gets all densities
        (one all-reduce); True: each rank passes its own queries and gets their densities
        (ring / all-gather of the data).

    ``fit(X_local, sample_weight=None)`` accepts an empty shard on some ranks. The "scott" and
    "silverman" rules use the global row count, the normaliser the global weight total.
    ``sample`` draws from the global mixture and returns the same samples on every rank; with
    ``sample_weight`` it all-gathers the weights (n floats) on first use.
    """

    def __init__(
        self,
        *,
        bandwidth=1.0,
        algorithm="auto",
        kernel="gaussian",
        metric="euclidean",
        atol=0,
        rtol=0,
        breadth_first=True,
        leaf_size=40,
        metric_params=None,
        dtype=None,
        device=None,
        min_neff=2.0,
        group=None,
        queries_sharded=False,
    ):
        super().__init__(
            bandwidth=bandwidth,
            algorithm=algorithm,
            kernel=kernel,
            metric=metric,
            atol=atol,
            rtol=rtol,
            breadth_first=breadth_first,
            leaf_size=leaf_size,
            metric_params=metric_params,
            dtype=dtype,
            device=device,
            min_neff=min_neff,
        )
        self.group = group
        self.queries_sharded = queries_sharded

    def fit(self, X, y=None, sample_weight=None):
        kernel, bandwidth, metric, p = self._validate_hyperparameters()
        g, size, rank, _ = group_info(self.group, "KernelDensity.fit")
        default = X.dtype if isinstance(X, torch.Tensor) and X.dtype.is_floating_point else torch.float64
        dtype = _kdm._resolve_dtype(self.dtype, default)
        data, is_torch = _kdm._to_tensor(X, "X", dtype=dtype, device=self.device)
        self.n_features_in_ = int(data.shape[1])
        n_local, d = data.shape
        if not bool(torch.isfinite(data).all()):
            raise ValueError("X: contains NaN or infinity")
        data = data.detach().contiguous()
        if sample_weight is not None:
            w, _ = _kdm._to_tensor(sample_weight, "sample_weight", dtype=torch.float64, device=data.device, ndim=1)
            if w.shape[0] != n_local:
                raise ValueError(f"sample_weight: expected shape ({n_local},) to match X, got {tuple(w.shape)}")
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError("sample_weight: must be finite and non-negative")
            w = w.detach()
            local_total = float(w.sum())
        else:
            w, local_total = None, float(n_local)
        sizes = all_gather_sizes([n_local, d, w is not None], g, data.device).tolist()
        if len({s[1] for s in sizes}) > 1 or len({s[2] for s in sizes}) > 1:
            raise ValueError(
                f"X: the ranks disagree on the number of features or on sample_weight: "
                f"{[(s[1], bool(s[2])) for s in sizes]} (rank by rank)"
            )
        counts = [s[0] for s in sizes]
        n = sum(counts)
        if n == 0 or d == 0:
            raise ValueError(f"X: expected at least one sample and one feature over all ranks, got {n} x {d}")
        if metric == "haversine" and d != 2:
            raise ValueError(f"metric: 'haversine' needs 2 features (latitude, longitude in radians), X has {d}")
        (tot,) = all_reduce_sum([torch.tensor([local_total], dtype=torch.float64, device=data.device)], g)
        total = float(tot)
        if not total > 0:
            raise ValueError("sample_weight: the weights sum to zero")
        if bandwidth == "scott":
            h = n ** (-1.0 / (d + 4))
        elif bandwidth == "silverman":
            h = (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
        else:
            h = bandwidth
        log_norm = math.log(total) + _kdm.log_kernel_normaliser(kernel, d) + d * math.log(h)
        log_integral = _kdm.log_ball_volume(metric, p, d) - _kdm.log_ball_volume("euclidean", 2.0, d)
        if metric != "euclidean":
            _kdm.warn_unnormalised(metric, log_integral, f"{type(self).__name__}.fit")
        self._torch_io = is_torch
        self.kernel_, self.metric_, self.p_ = kernel, metric, p
        self.bandwidth_ = float(h)
        self.data_ = data
        self.sample_weight_ = None if w is None else w.to(dtype)
        self._sample_weight64 = None
        self.log_normaliser_ = log_norm
        self._warned_few_points = False
        self.density_integral_ = math.exp(log_integral)
        self.n_samples_global_, self._counts, self._offset = n, counts, sum(counts[:rank])
        if w is None:
            self._support, self._log_weights = data, None
        else:
            keep = w > 0
            self._support = data[keep].contiguous()
            self._log_weights = torch.log(w[keep]).to(dtype)
        return self

    def _queries(self, X):
        is_torch = isinstance(X, torch.Tensor)
        q, _ = _kdm._to_tensor(X, "X", dtype=self.data_.dtype, device=self.data_.device)
        if q.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X: has {q.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        return q, is_torch, (X.device if is_torch else None)

    def score_samples(self, X):
        """Log-density over the global data of each row of ``X`` (this rank's queries when
        ``queries_sharded``, else the same queries on every rank); sets ``n_eff_``."""
        self._check_fitted()
        q, is_torch, orig_device = self._queries(X)
        extra = {} if self.metric_ == "euclidean" else dict(metric=self.metric_, p=self.p_)
        grad = torch.is_grad_enabled() and q.requires_grad
        lse, n_eff = _lse_sq(
            q,
            self._support,
            self._log_weights,
            self.queries_sharded,
            self.group,
            grad,
            kernel=self.kernel_,
            bandwidth=self.bandwidth_,
            **extra,
        )
        log_density = lse - self.log_normaliser_
        if is_torch:
            self.n_eff_ = n_eff.to(orig_device)
            return log_density.to(orig_device)
        self.n_eff_ = n_eff.cpu().numpy()
        return log_density.detach().cpu().numpy().astype(np.float64, copy=False)

    def score(self, X, y=None):
        """Total log-likelihood of ``X`` (of every rank's queries when they are sharded)."""
        out = self.score_samples(X)
        t = out if isinstance(out, torch.Tensor) else torch.from_numpy(np.asarray(out))
        total = t.sum()
        if self.queries_sharded:
            (total,) = all_reduce_sum([total.reshape(1).double()], group_info(self.group, "score")[0])
            total = total[0]
        return total if isinstance(out, torch.Tensor) else float(total)

    def sample(self, n_samples=1, random_state=None):
        """``n_samples`` draws from the global mixture, the same on every rank (and the same as the
        single-process estimator's for the same ``random_state``)."""
        self._check_fitted()
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 0:
            raise ValueError(f"n_samples: expected a non-negative int, got {n_samples!r}")
        g = group_info(self.group, "KernelDensity.sample")[0]
        if self.sample_weight_ is not None and self._sample_weight64 is None:
            self._sample_weight64 = all_gather_rows(self.sample_weight_.double(), self._counts, 0, g).cpu().numpy()
        rng = _kdm._check_random_state(random_state)
        n, d = self.n_samples_global_, self.data_.shape[1]
        idx = choose_centres(rng, int(n_samples), n, self._sample_weight64)
        offsets = sample_offsets(self.kernel_, rng, int(n_samples), d)
        offsets = torch.from_numpy(offsets * self.bandwidth_).to(device=self.data_.device, dtype=self.data_.dtype)
        out = _owned_rows(self.data_, idx, self._offset, g) + offsets
        return out if self._fit_is_torch() else out.cpu().numpy()


class GaussianKDE:
    """Full-covariance Gaussian KDE (``scipy.stats.gaussian_kde`` semantics) on sharded data.

    Args:
        dataset: this rank's points as (d, n_local) (scipy's layout; n_local may be 0).
        bw_method: None / "scott", "silverman", a positive number, or a callable taking this object.
        weights: this rank's non-negative weights (n_local,); normalised by the global total.
        group: the process group (None: default).
        queries_sharded: as :class:`KernelDensity`.
        dtype: compute dtype of the kernel sums (float64 default).

    Attributes: ``d``, ``n`` (global), ``neff``, ``factor``, ``covariance``, ``cho_cov``,
    ``log_det``; the weighted mean and covariance come from two all-reduces (global mean, then the
    centred second moments). Methods: ``logpdf``, ``evaluate`` / ``pdf`` / ``__call__``,
    ``resample`` (the same draws on every rank and as the single-process
    :class:`kernelfuse.kde.GaussianKDE` for the same seed; all-gathers the n weights).
    Outputs are tensors for tensor input, numpy arrays otherwise.
    """

    def __init__(
        self, dataset, bw_method=None, weights=None, *, group=None, queries_sharded=False, dtype=torch.float64
    ):
        self.group, self.queries_sharded, self._dtype = group, queries_sharded, dtype
        g, size, rank, _ = group_info(group, "GaussianKDE")
        self._torch_io = isinstance(dataset, torch.Tensor)
        data = dataset if self._torch_io else torch.from_numpy(np.asarray(dataset, dtype=np.float64))
        data = data.reshape(1, -1) if data.dim() < 2 else data
        data = data.to(torch.float64).detach()
        if not bool(torch.isfinite(data).all()):
            raise ValueError("dataset: contains NaN or infinity")
        d, n_local = data.shape
        if weights is not None:
            w = torch.as_tensor(np.asarray(weights) if not isinstance(weights, torch.Tensor) else weights)
            w = w.to(device=data.device, dtype=torch.float64).reshape(-1)
            if w.shape[0] != n_local:
                raise ValueError(f"weights: should be of length n={n_local} (this rank's points), got {w.shape[0]}")
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError("weights: must be finite and non-negative")
        else:
            w = torch.ones(n_local, dtype=torch.float64, device=data.device)
        sizes = all_gather_sizes([n_local, d], g, data.device).tolist()
        if len({s[1] for s in sizes}) > 1:
            raise ValueError(f"dataset: the ranks disagree on the dimension: {[s[1] for s in sizes]} (rank by rank)")
        self._counts = [s[0] for s in sizes]
        self._offset = sum(self._counts[:rank])
        self.d, self.n = d, sum(self._counts)
        if self.n * d <= 1:
            raise ValueError("dataset: input should have multiple elements")
        (tot,) = all_reduce_sum([w.sum().reshape(1)], g)
        if not float(tot) > 0:
            raise ValueError("weights: the weights sum to zero")
        self._w = w / tot  # normalised by the global total
        s1, s2 = all_reduce_sum([data @ self._w, (self._w * self._w).sum().reshape(1)], g)
        self._mean = s1
        self.neff = float(1.0 / s2)
        xc = data - s1[:, None]
        (c,) = all_reduce_sum([(xc * self._w) @ xc.T], g)
        cov = c / (1.0 - float(s2))
        self._data_covariance = 0.5 * (cov + cov.T)
        chol, info = torch.linalg.cholesky_ex(self._data_covariance)
        if int(info) != 0:
            raise np.linalg.LinAlgError("the global data covariance is singular")
        self._data_cho_cov = chol
        self._data = data
        keep = self._w > 0
        self._points = data.T[keep].contiguous()
        self._log_w = torch.log(self._w[keep]).to(dtype)
        self._wglobal = None
        self.set_bandwidth(bw_method)

    def scotts_factor(self) -> float:
        return self.neff ** (-1.0 / (self.d + 4))

    def silverman_factor(self) -> float:
        return (self.neff * (self.d + 2) / 4.0) ** (-1.0 / (self.d + 4))

    def set_bandwidth(self, bw_method=None):
        if bw_method is None or bw_method == "scott":
            f = self.scotts_factor()
        elif bw_method == "silverman":
            f = self.silverman_factor()
        elif isinstance(bw_method, numbers.Real) and not isinstance(bw_method, bool):
            f = float(bw_method)
        elif callable(bw_method):
            f = float(bw_method(self))
        else:
            raise ValueError("bw_method: should be 'scott', 'silverman', a scalar or a callable")
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"bw_method: the bandwidth factor must be positive and finite, got {f!r}")
        self.factor = f
        self._cov = self._data_covariance * f**2
        self._chol = self._data_cho_cov * f
        self.log_det = float(2.0 * torch.log(torch.diagonal(self._chol)).sum() + self.d * _LOG_2PI)
        self._white = self._whiten(self._points)

    def _whiten(self, pts):
        return torch.linalg.solve_triangular(self._chol, pts.double().T, upper=False).T.to(self._dtype).contiguous()

    def _o(self, t):
        return t if self._torch_io else t.detach().cpu().numpy()

    @property
    def covariance(self):
        return self._o(self._cov)

    @property
    def cho_cov(self):
        return self._o(self._chol)

    def logpdf(self, points):
        """Log-density at ``points`` (d, m): this rank's queries when ``queries_sharded``."""
        is_torch = isinstance(points, torch.Tensor)
        q = points if is_torch else torch.from_numpy(np.asarray(points, dtype=np.float64))
        q = q.reshape(-1, 1) if q.dim() < 2 else q
        if q.shape[0] != self.d:
            raise ValueError(f"points have dimension {q.shape[0]}, dataset has dimension {self.d}")
        z = self._whiten(q.T)
        grad = torch.is_grad_enabled() and q.requires_grad
        lse, n_eff = _lse_sq(
            z, self._white, self._log_w, self.queries_sharded, self.group, grad, kernel="gaussian", bandwidth=1.0
        )
        self.n_eff_ = n_eff
        out = lse.double() - 0.5 * self.log_det
        return out if is_torch else out.detach().numpy()

    def evaluate(self, points):
        out = self.logpdf(points)
        return torch.exp(out) if isinstance(out, torch.Tensor) else np.exp(out)

    __call__ = evaluate
    pdf = evaluate

    def resample(self, size=None, seed=None):
        """(d, size) draws from the global mixture (default size ``int(neff)``), the same on every rank."""
        size = int(self.neff) if size is None else size
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
            raise ValueError(f"size: expected a non-negative int, got {size!r}")
        g = group_info(self.group, "GaussianKDE.resample")[0]
        if self._wglobal is None:
            self._wglobal = all_gather_rows(self._w, self._counts, 0, g).cpu().numpy()
        rng = _kdm._check_random_state(seed)
        noise = rng.standard_normal((size, self.d)) @ self._chol.cpu().numpy().T
        idx = rng.choice(self.n, size=size, p=self._wglobal)
        centres = _owned_rows(self._data.T.contiguous(), idx, self._offset, g).T
        out = centres + torch.from_numpy(noise.T).to(self._data.device)
        return self._o(out)


class PrivateKernelDensity(_PrivateKernelDensity):
    """:class:`kernelfuse.kde.PrivateKernelDensity` fitted on sharded rows (same arguments, plus ``group``).

    Each rank clips, maps and quantises its own points and sums them to an integer vector; one
    int64 all-reduce forms the exact integer sum over all ranks (bit-identical to the
    single-process sum); rank 0 draws the noise once (from ``seed + 1`` as the single-process
    estimator, or from the OS's generator) and broadcasts it; every rank releases the same sketch.
    The frequencies come from ``seed`` (the same on every rank); with ``seed=None`` rank 0 draws
    them and broadcasts them.

    The sketch is computed on the CPU (exact integer arithmetic), so ``group`` must have a CPU
    backend (gloo; under NCCL pass e.g. ``torch.distributed.new_group(backend="gloo")``).

    Guarantee: the released sketch is (epsilon, delta)-DP with respect to the global data set
    (replace-one neighbours, global n public), exactly as a single-process fit: the sensitivity of
    the summed integer sketch is that of one point, and the noise is added once. The ranks are
    trusted: the un-noised integer sum is visible to every rank during the all-reduce (and the
    per-rank partial sums to the collective's transport), so this protects the data from whoever
    receives the release, not from the other ranks (that needs secure aggregation or per-rank
    noise, which this class does not do).
    """

    def __init__(
        self,
        epsilon: float,
        *,
        delta: float = 0.0,
        radius: float,
        n_features: int = 256,
        lengthscale: float = 1.0,
        seed: Optional[int] = None,
        grid: float = 2.0**-20,
        group=None,
    ):
        super().__init__(
            epsilon, delta=delta, radius=radius, n_features=n_features, lengthscale=lengthscale, seed=seed, grid=grid
        )
        self.group = group

    def fit(self, X, y=None) -> "PrivateKernelDensity":
        g, size, rank, ranks = group_info(self.group, "PrivateKernelDensity.fit")
        X = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X).to(torch.float64)
        if X.dim() != 2:
            raise ValueError(
                f"kernelfuse.distributed.PrivateKernelDensity.fit: argument 'X': expected (n, d), "
                f"got shape {tuple(X.shape)}"
            )
        sizes = all_gather_sizes([X.shape[0], X.shape[1]], g, X.device).tolist()
        if len({s[1] for s in sizes}) > 1:
            raise ValueError(
                f"kernelfuse.distributed.PrivateKernelDensity.fit: argument 'X': the ranks disagree on "
                f"the dimension: {[s[1] for s in sizes]}"
            )
        n, d, m = sum(s[0] for s in sizes), X.shape[1], self.n_features
        if n == 0:
            raise ValueError("kernelfuse.distributed.PrivateKernelDensity.fit: argument 'X': no rows on any rank")
        if self.seed is not None:
            gen = torch.Generator().manual_seed(self.seed)
            W = torch.randn(d, m, generator=gen, dtype=torch.float64) / self.lengthscale
        else:
            W = torch.empty(d, m, dtype=torch.float64)
            if rank == 0:
                gen = torch.Generator().manual_seed(secrets.randbits(62))
                W = torch.randn(d, m, generator=gen, dtype=torch.float64) / self.lengthscale
            dist.broadcast(W, src=ranks[0], group=g)
        self.W_ = W
        gamma = self._gamma()
        if X.shape[0] > 0:
            norms = X.norm(dim=1, keepdim=True)
            Xc = X * torch.clamp(self.radius / norms.clamp_min(1e-300), max=1.0)
            phi = random_features(Xc, W, kind="cos_sin", scale=1.0 / math.sqrt(m))
            S = torch.round(phi / gamma).to(torch.int64).sum(0)
        else:
            S = torch.zeros(2 * m, dtype=torch.int64)
        dist.all_reduce(S, group=g)  # exact: integers
        noise = torch.zeros(2 * m, dtype=torch.int64)
        if rank == 0:  # the noise is drawn once, on one rank
            rng = random.Random(self.seed + 1) if self.seed is not None else secrets.SystemRandom()
            d1, _ = self.sensitivity()
            if self.delta == 0:
                scale = _rational(d1 / self.epsilon)
                vals = [sample_discrete_laplace(scale, rng) for _ in range(2 * m)]
            else:
                vals = [sample_discrete_gaussian(_rational(self.noise_variance()), rng) for _ in range(2 * m)]
            noise = torch.tensor(vals, dtype=torch.int64)
        dist.broadcast(noise, src=ranks[0], group=g)
        self.sketch_ = (S + noise).to(torch.float64) * (gamma / n)
        self.n_, self.d_ = n, d
        self.noise_std_ = math.sqrt(self.noise_variance()) * gamma / n
        return self
