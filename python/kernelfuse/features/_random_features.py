"""RandomFeatures and exact_kernel (see docs/features.md)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..ops.features import random_features, structured_features

KERNELS = ("gaussian", "laplacian", "cauchy", "arccos0", "arccos1", "softmax")
METHODS = ("rff", "orf", "sorf", "fastfood")
_ISOTROPIC = ("gaussian", "arccos0", "arccos1", "softmax")  # Gaussian frequencies: orthogonal methods apply


def exact_kernel(kind: str, x1: torch.Tensor, x2: torch.Tensor, *, lengthscale: float = 1.0) -> torch.Tensor:
    """The kernel matrix K[i, j] = k(x1[i] / l, x2[j] / l) (l = lengthscale) approximated by
    :class:`RandomFeatures`:

    * ``gaussian``  exp(-|u - v|^2 / 2)
    * ``laplacian`` exp(-|u - v|_1)             (L1 distance: the product of 1-d Laplace kernels)
    * ``cauchy``    prod_k 1 / (1 + (u_k - v_k)^2)
    * ``arccos0``   1 - theta / pi              (the NNGP kernel of a step-activation layer)
    * ``arccos1``   |u| |v| (sin theta + (pi - theta) cos theta) / pi   (ReLU layer)
    * ``softmax``   exp(u . v)                  (Performer's softmax kernel)

    theta is the angle between u and v. Returns (n1, n2) in the inputs' dtype.
    """
    if kind not in KERNELS:
        raise ValueError(
            f"kernelfuse.features.exact_kernel: argument 'kind': unknown kernel {kind!r}; "
            f"expected one of: {', '.join(KERNELS)}"
        )
    for name, t in (("x1", x1), ("x2", x2)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(
                f"kernelfuse.features.exact_kernel: argument '{name}': expected a 2-d tensor (n, d), "
                f"got {getattr(t, 'shape', type(t))}"
            )
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(
            f"kernelfuse.features.exact_kernel: argument 'x2': expected {x1.shape[1]} columns "
            f"(as x1), got {tuple(x2.shape)}"
        )
    u, v = x1 / lengthscale, x2 / lengthscale
    if kind == "gaussian":
        return torch.exp(-0.5 * torch.cdist(u, v).square())
    if kind == "laplacian":
        return torch.exp(-torch.cdist(u, v, p=1))
    if kind == "cauchy":
        diff = u[:, None, :] - v[None, :, :]
        return (1.0 / (1.0 + diff.square())).prod(-1)
    if kind == "softmax":
        return torch.exp(u @ v.T)
    nu, nv = u.norm(dim=1), v.norm(dim=1)
    cos = ((u @ v.T) / (nu[:, None] * nv[None, :]).clamp_min(1e-300)).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    if kind == "arccos0":
        return 1.0 - theta / math.pi
    return nu[:, None] * nv[None, :] * (torch.sin(theta) + (math.pi - theta) * cos) / math.pi


def _as_tensor(X, dtype):
    if isinstance(X, torch.Tensor):
        return X, False
    return torch.as_tensor(np.asarray(X), dtype=dtype), True


class RandomFeatures(nn.Module):
    """phi(x) with phi(x).phi(y) ~ k(x, y): random Fourier / orthogonal / structured features.

    Args:
        in_features: d (None: taken from the data at :meth:`fit`).
        n_features: number of output columns D.
        kernel: one of :data:`KERNELS` (see :func:`exact_kernel` for the definitions).
        method: ``"rff"`` i.i.d. frequencies (dense fused GEMM); ``"orf"`` orthogonal frequency
            blocks with chi-distributed norms (dense); ``"sorf"`` sqrt(P) H D1 H D2 H D3 blocks;
            ``"fastfood"`` S H G Pi H B blocks (both O(D log d) per row, no W stored). The
            orthogonal methods need Gaussian frequencies: gaussian, arccos0, arccos1, softmax.
        lengthscale: l; the kernel acts on x / l. For sklearn's ``RBFSampler(gamma)``,
            exp(-gamma |x - y|^2) = exp(-|x - y|^2 / (2 l^2)) gives l = 1 / sqrt(2 gamma).
        seed: seed of the draws (None: from torch's global generator).
        pairs: trig kernels only: [cos, sin] pairs of n_features / 2 frequencies (lower variance)
            instead of cos(w.x + b) with a uniform phase b (sklearn's RBFSampler form, default).
        dtype: dtype of the drawn parameters (inputs are cast to it).

    As a module: ``forward(x)`` maps (..., d) tensors (differentiable in x). As a transformer:
    ``fit(X)`` / ``transform(X)`` / ``fit_transform(X)`` on arrays or tensors (numpy in, numpy
    out), ``get_params`` / ``set_params``. ``redraw()`` draws new frequencies. (For scikit-learn
    estimators -- clone, pipelines, check_estimator -- see :class:`kernelfuse.features.RBFSampler`
    and :class:`kernelfuse.features.RandomFeaturesTransformer`.)
    """

    def __init__(
        self,
        in_features: Optional[int] = None,
        n_features: int = 100,
        *,
        kernel: str = "gaussian",
        method: str = "rff",
        lengthscale: float = 1.0,
        seed: Optional[int] = None,
        pairs: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self._params = dict(
            in_features=in_features,
            n_features=n_features,
            kernel=kernel,
            method=method,
            lengthscale=lengthscale,
            seed=seed,
            pairs=pairs,
            dtype=dtype,
        )
        self._validate()
        self._draws = 0
        self.register_buffer("W", None)
        self.register_buffer("b", None)
        self.register_buffer("signs", None)
        self.register_buffer("perm", None)
        if in_features is not None:
            self.redraw()

    # ---------------------------------------------------------------- sklearn-style API
    def get_params(self, deep: bool = True) -> dict:
        return dict(self._params)

    def set_params(self, **params) -> "RandomFeatures":
        for k, v in params.items():
            if k not in self._params:
                raise ValueError(
                    f"kernelfuse.features.RandomFeatures.set_params: unknown parameter {k!r}; "
                    f"expected one of: {', '.join(self._params)}"
                )
            self._params[k] = v
        self._validate()
        if self._params["in_features"] is not None:
            self.redraw()
        return self

    @classmethod
    def rbf_sampler(
        cls, gamma: float = 1.0, n_components: int = 100, random_state: Optional[int] = None, **kw
    ) -> "RandomFeatures":
        """The module equivalent of ``sklearn.kernel_approximation.RBFSampler(gamma, n_components,
        random_state)``: Gaussian kernel, cos(w.x + b) features, lengthscale 1/sqrt(2 gamma) (torch
        draws). Not a scikit-learn estimator: :class:`kernelfuse.features.RBFSampler` is the drop-in."""
        return cls(
            None,
            n_components,
            kernel="gaussian",
            method="rff",
            lengthscale=1.0 / math.sqrt(2.0 * gamma),
            seed=random_state,
            **kw,
        )

    def fit(self, X, y=None) -> "RandomFeatures":
        X, _ = _as_tensor(X, self._params["dtype"])
        d = X.shape[-1]
        if self._params["in_features"] != d or self.W is None and self.signs is None:
            self._params["in_features"] = d
            self.redraw()
        return self

    def transform(self, X):
        Xt, was_numpy = _as_tensor(X, self._params["dtype"])
        if self.W is None and self.signs is None:
            raise RuntimeError("kernelfuse.features.RandomFeatures: call fit(X) (or pass in_features) before transform")
        with torch.no_grad():
            out = self.forward(Xt)
        return out.numpy() if was_numpy else out

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    # ---------------------------------------------------------------- parameters
    def _validate(self):
        p = self._params
        if p["kernel"] not in KERNELS:
            raise ValueError(
                f"kernelfuse.features.RandomFeatures: argument 'kernel': unknown kernel {p['kernel']!r}; "
                f"expected one of: {', '.join(KERNELS)}"
            )
        if p["method"] not in METHODS:
            raise ValueError(
                f"kernelfuse.features.RandomFeatures: argument 'method': unknown method {p['method']!r}; "
                f"expected one of: {', '.join(METHODS)}"
            )
        if p["method"] != "rff" and p["kernel"] not in _ISOTROPIC:
            raise ValueError(
                f"kernelfuse.features.RandomFeatures: argument 'method': {p['method']!r} needs Gaussian "
                f"frequencies (kernels {', '.join(_ISOTROPIC)}); kernel {p['kernel']!r} supports 'rff' only"
            )
        if not (isinstance(p["n_features"], (int, np.integer)) and p["n_features"] >= 1):
            raise ValueError(
                f"kernelfuse.features.RandomFeatures: argument 'n_features': expected a positive int, "
                f"got {p['n_features']!r}"
            )
        if p["pairs"] and (p["kernel"] not in ("gaussian", "laplacian", "cauchy") or p["n_features"] % 2):
            raise ValueError(
                "kernelfuse.features.RandomFeatures: argument 'pairs': needs a trigonometric kernel "
                f"(gaussian, laplacian, cauchy) and an even n_features, got {p['kernel']!r}, "
                f"{p['n_features']}"
            )
        ls = p["lengthscale"]
        if not (isinstance(ls, (int, float)) and math.isfinite(ls) and ls > 0):
            raise ValueError(
                f"kernelfuse.features.RandomFeatures: argument 'lengthscale': expected a positive number, got {ls!r}"
            )

    @property
    def kind(self) -> str:
        return _kind(self._params["kernel"], self._params["pairs"])

    @property
    def n_freq(self) -> int:
        D = self._params["n_features"]
        return D // 2 if self.kind == "cos_sin" else D

    def redraw(self, seed: Optional[int] = None) -> None:
        """Draw new frequencies (and phases / signs). seed None: the constructor's seed advanced by
        the number of draws so far (or torch's global generator when that seed is None)."""
        p = self._params
        d, m, ls, dt = p["in_features"], self.n_freq, float(p["lengthscale"]), p["dtype"]
        if d is None:
            raise ValueError("kernelfuse.features.RandomFeatures.redraw: in_features is not known yet; call fit(X)")
        g = torch.Generator()
        if seed is not None:
            g.manual_seed(int(seed))
        elif p["seed"] is not None:
            g.manual_seed(int(p["seed"]) + 1000003 * self._draws)
        else:
            g.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self._draws += 1
        dev = next((t.device for t in (self.W, self.signs) if t is not None), torch.device("cpu"))
        self.W = self.signs = self.perm = self.b = None
        drawn = _draw(d, m, p["kernel"], p["method"], ls, self.kind, g)
        for name, t in drawn.items():
            if t is not None:
                setattr(self, name, (t if name == "perm" else t.to(dt)).to(dev))

    # ---------------------------------------------------------------- the map
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.W is None and self.signs is None:
            raise RuntimeError("kernelfuse.features.RandomFeatures: in_features unknown; call fit(X) first")
        p = self._params
        d = p["in_features"]
        if x.shape[-1] != d:
            raise ValueError(
                f"kernelfuse.features.RandomFeatures: argument 'x': expected last dimension {d} "
                f"(in_features), got shape {tuple(x.shape)}"
            )
        ref = self.W if self.W is not None else self.signs
        x = x.to(dtype=ref.dtype, device=ref.device)
        return _feature_map(
            x,
            self.kind,
            p["method"],
            float(p["lengthscale"]),
            self.n_freq,
            W=self.W,
            b=self.b,
            signs=self.signs,
            perm=self.perm,
        )

    def extra_repr(self) -> str:
        p = self._params
        return (
            f"in_features={p['in_features']}, n_features={p['n_features']}, kernel={p['kernel']!r}, "
            f"method={p['method']!r}, lengthscale={p['lengthscale']}"
        )


def _chi(k: int, shape, g: torch.Generator) -> torch.Tensor:
    """chi-distributed samples with k degrees of freedom (norms of k-dim standard Gaussians)."""
    out = torch.zeros(shape, dtype=torch.float64)
    for _ in range(k):
        out += torch.randn(shape, generator=g, dtype=torch.float64).square()
    return out.sqrt()


def _orthogonal_gaussian(d: int, m: int, g: torch.Generator) -> torch.Tensor:
    """(d, m): columns in blocks of d orthogonal directions, each with a chi_d norm (so each
    column is marginally N(0, I_d), columns within a block exactly orthogonal)."""
    nb = -(-m // d)
    Q, R = torch.linalg.qr(torch.randn(nb, d, d, generator=g, dtype=torch.float64))  # batched
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))[:, None, :]
    Q = Q * torch.randn(nb, d, d, generator=g, dtype=torch.float64).norm(dim=1)[:, None, :]
    return Q.permute(1, 0, 2).reshape(d, nb * d)[:, :m]


def _kind(kernel: str, pairs: bool) -> str:
    """The fused op's ``kind`` for a kernel of :data:`KERNELS`."""
    if kernel in ("gaussian", "laplacian", "cauchy"):
        return "cos_sin" if pairs else "cos"
    return {"arccos0": "step", "arccos1": "relu", "softmax": "positive"}[kernel]


def _draw(d: int, m: int, kernel: str, method: str, ls: float, kind: str, g: torch.Generator) -> dict:
    """The random parameters of a feature map with m frequencies on d inputs, drawn from g in
    float64 (perm int64), the 1/lengthscale folded in: {"W", "b", "signs", "perm"} (None where the
    method has none). Shared by :class:`RandomFeatures` and the scikit-learn transformers."""
    f64 = torch.float64
    W = signs = perm = b = None
    if method in ("rff", "orf"):
        if kernel == "laplacian":  # product of 1-d Laplace kernels: Cauchy frequencies
            W = torch.tan(math.pi * (torch.rand(d, m, generator=g, dtype=f64) - 0.5))
        elif kernel == "cauchy":  # product of 1-d Cauchy kernels: Laplace frequencies
            u = torch.rand(d, m, generator=g, dtype=f64) - 0.5
            W = -torch.sign(u) * torch.log1p(-2 * u.abs())
        elif method == "rff":
            W = torch.randn(d, m, generator=g, dtype=f64)
        else:
            W = _orthogonal_gaussian(d, m, g)
        W = W / ls
    else:
        P = 1 << max(0, (d - 1).bit_length())
        nb = -(-m // P)
        if method == "sorf":
            signs = torch.randint(0, 2, (nb, 3, P), generator=g).to(f64) * 2 - 1
            signs[:, 2] /= ls
        else:
            B = torch.randint(0, 2, (nb, P), generator=g).to(f64) * 2 - 1
            G = torch.randn(nb, P, generator=g, dtype=f64)
            S = _chi(P, (nb, P), g)
            S = S / G.norm(dim=1, keepdim=True)
            signs = torch.stack((B / ls, G, S), dim=1)
            perm = torch.stack([torch.randperm(P, generator=g) for _ in range(nb)])
    if kind == "cos":
        b = 2 * math.pi * torch.rand(m, generator=g, dtype=f64)
    return {"W": W, "b": b, "signs": signs, "perm": perm}


def _feature_map(
    x: torch.Tensor,
    kind: str,
    method: str,
    ls: float,
    n_freq: int,
    *,
    W=None,
    b=None,
    signs=None,
    perm=None,
    scale=None,
) -> torch.Tensor:
    """phi(x) from the parameters of :func:`_draw` (x already in their dtype and on their device);
    scale None: the op's default (unbiased for n_freq frequencies)."""
    if kind == "positive":
        # |x|^2/2 is taken on the op's input, so the 1/l folded into the parameters moves to x;
        # stabilize="none": phi(x).phi(y) estimates exp(x.y / l^2) itself.
        x = x / ls
        if W is not None:
            return random_features(x, W * ls, None, kind=kind, scale=scale, stabilize="none")
        signs = signs.clone()
        signs[:, 2 if method == "sorf" else 0] *= ls
        return structured_features(
            x, signs, kind=kind, block=method, scale=scale, perm=perm, n_features=n_freq, stabilize="none"
        )
    if W is not None:
        return random_features(x, W, b, kind=kind, scale=scale)
    return structured_features(x, signs, kind=kind, block=method, scale=scale, perm=perm, b=b, n_features=n_freq)
