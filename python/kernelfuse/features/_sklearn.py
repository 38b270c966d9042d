"""scikit-learn transformers on the fused random-feature ops (see docs/features.md).

* :class:`RBFSampler` -- ``sklearn.kernel_approximation.RBFSampler`` (same parameters, validation,
  fitted attributes, random draws and output), with the projection + cosine computed by the fused
  :func:`kernelfuse.random_features` op.
* :class:`RandomFeaturesTransformer` -- the kernels and methods of
  :class:`kernelfuse.features.RandomFeatures` as a scikit-learn transformer.

scikit-learn (>= 1.6) is an optional dependency of kernelfuse: this module imports it at import
time, and ``kernelfuse.features`` imports this module only when one of the two classes is first
accessed, so ``import kernelfuse`` works without scikit-learn.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch

try:
    from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
    from sklearn.utils import check_random_state
    from sklearn.utils._param_validation import Interval, StrOptions
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without (a recent) scikit-learn
    raise ImportError(
        "kernelfuse.features.RBFSampler and RandomFeaturesTransformer need scikit-learn >= 1.6 "
        "(pip install scikit-learn); kernelfuse.features.RandomFeatures does not"
    ) from exc

from ..ops.features import default_scale
from ._random_features import _ISOTROPIC, _draw, _feature_map, _kind

__all__ = ["RBFSampler", "RandomFeaturesTransformer"]

# Sparse input: below this fraction of stored entries, X @ W is a scipy sparse product (O(nnz D))
# followed by the nonlinearity in numpy; above it (and always for the structured methods, which have
# no W) row blocks of X are densified and go through the fused op.
_SPARSE_DOT_MAX_DENSITY = 0.01
# Elements of X densified at a time (row blocks of about 32 MB in float64).
_DENSIFY_BLOCK_ELEMENTS = 1 << 22

_FLOATS = [np.float64, np.float32]


def _as_torch(a: np.ndarray, dtype=None) -> torch.Tensor:
    """A C-contiguous numpy array as a tensor sharing its memory (a copy only when the order or
    dtype differ). Read-only arrays (memmaps, sklearn's test data) are fine: nothing writes to them."""
    a = np.ascontiguousarray(a, dtype=dtype)
    if not a.flags.writeable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
            return torch.from_numpy(a)
    return torch.from_numpy(a)


def _numpy_epilogue(Z: np.ndarray, kind: str, b, scale: float, half_sq_norms) -> np.ndarray:
    """scale * f(Z + b) in place where possible (the sparse-product path; the same maps as the op)."""
    if b is not None:
        Z += b
    if kind == "cos":
        np.cos(Z, out=Z)
    elif kind == "cos_sin":
        Z = np.concatenate((np.cos(Z), np.sin(Z)), axis=1)
    elif kind == "relu":
        np.maximum(Z, 0, out=Z)
    elif kind == "step":
        Z = (Z > 0).astype(Z.dtype)
    else:  # positive, stabilize="none"
        Z -= half_sq_norms[:, None]
        np.exp(Z, out=Z)
    Z *= scale
    return Z


class _FusedMapMixin:
    """transform() for a fitted map: dense input through the fused op, CSR input by row blocks
    (or a sparse product), output in the promoted dtype of X and the fitted parameters."""

    def _map_params(self):  # -> (kind, method, lengthscale, n_freq, scale, n_out, {"W", "b", "signs", "perm"})
        raise NotImplementedError

    def _apply_map(self, X):
        kind, method, ls, n_freq, scale, n_out, arrays = self._map_params()
        out = self._apply_map_full(X, kind, method, ls, n_freq, scale, arrays)
        if out.shape[1] > n_out:  # pairs with an odd n_components: the last frequency keeps its cosine only
            out = np.ascontiguousarray(out[:, :n_out])
        return out

    def _apply_map_full(self, X, kind, method, ls, n_freq, scale, arrays):
        ref = arrays["W"] if arrays["W"] is not None else arrays["signs"]
        dt = np.result_type(X.dtype, ref.dtype)
        tens = {k: (None if v is None else _as_torch(v, None if k == "perm" else dt)) for k, v in arrays.items()}

        def dense(block):
            with torch.no_grad():
                return _feature_map(_as_torch(block, dt), kind, method, ls, n_freq, scale=scale, **tens).numpy()

        if not sp.issparse(X):
            return dense(X)
        n, d = X.shape
        if arrays["W"] is not None and X.nnz <= _SPARSE_DOT_MAX_DENSITY * n * d:
            X = X.astype(dt)
            Z = np.asarray(X @ np.asarray(arrays["W"], dtype=dt), dtype=dt)
            half_sq = None
            if kind == "positive":
                half_sq = np.asarray(X.multiply(X).sum(axis=1), dtype=dt).ravel() / (2.0 * ls * ls)
            b = None if arrays["b"] is None else np.asarray(arrays["b"], dtype=dt)
            return _numpy_epilogue(Z, kind, b, default_scale(kind, n_freq) if scale is None else scale, half_sq)
        out = None
        rows = max(1, _DENSIFY_BLOCK_ELEMENTS // max(1, d))
        for i in range(0, n, rows):
            part = dense(X[i : i + rows].toarray())
            if out is None:
                out = np.empty((n, part.shape[1]), dtype=part.dtype)
            out[i : i + part.shape[0]] = part
        return out

    def transform(self, X):
        """Apply the random feature map to X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            New data; sparse input is converted to CSR.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
            float32 when X and the fitted parameters are float32, float64 otherwise.
        """
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False, dtype=_FLOATS, order="C")
        return self._apply_map(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _x_var(X) -> float:
    """X.var() over all entries, as sklearn's RBFSampler computes it (E[X^2] - E[X]^2 if sparse)."""
    return (X.multiply(X)).mean() - (X.mean()) ** 2 if sp.issparse(X) else X.var()


class RBFSampler(_FusedMapMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Random Fourier features of the RBF kernel exp(-gamma |x - y|^2): a drop-in for
    ``sklearn.kernel_approximation.RBFSampler`` running the fused op.

    The parameters, their validation, ``gamma="scale"``, the fitted attributes and the random
    draws are scikit-learn's (W = sqrt(2 gamma) N(0, 1) and b ~ U[0, 2 pi) from
    ``check_random_state(random_state)`` in the same order), so for the same ``random_state``
    ``random_weights_`` and ``random_offset_`` are identical to sklearn's and ``transform`` equals
    sklearn's sqrt(2 / n_components) cos(X W + b) to rounding. ``transform`` computes it in one
    fused pass (projection and cosine without storing X W).

    Parameters
    ----------
    gamma : 'scale' or float, default=1.0
        Parameter of the RBF kernel exp(-gamma |x - y|^2), >= 0. ``"scale"`` uses
        1 / (n_features * X.var()) (1.0 when X.var() is 0).
    n_components : int, default=100
        Number of Monte Carlo samples: the dimension of the feature space.
    random_state : int, RandomState instance or None, default=None
        Controls the draws of the weights and offsets at :meth:`fit`.

    Attributes
    ----------
    random_offset_ : ndarray of shape (n_components,), dtype {float64, float32}
    random_weights_ : ndarray of shape (n_features, n_components), dtype {float64, float32}
        float32 when X is float32, else float64.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when X has feature names that are all strings.
    """

    _parameter_constraints: dict = {
        "gamma": [StrOptions({"scale"}), Interval(Real, 0.0, None, closed="left")],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, *, gamma=1.0, n_components=100, random_state=None):
        self.gamma = gamma
        self.n_components = n_components
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Draw the random weights and offsets for X's number of features.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self : object
        """
        X = validate_data(self, X, accept_sparse="csr", dtype=_FLOATS, order="C")
        random_state = check_random_state(self.random_state)
        n_features = X.shape[1]
        if self.gamma == "scale":
            X_var = _x_var(X)
            self._gamma = 1.0 / (n_features * X_var) if X_var != 0 else 1.0
        else:
            self._gamma = self.gamma
        self.random_weights_ = (2.0 * self._gamma) ** 0.5 * random_state.normal(size=(n_features, self.n_components))
        self.random_offset_ = random_state.uniform(0, 2 * np.pi, size=self.n_components)
        if X.dtype == np.float32:
            self.random_weights_ = self.random_weights_.astype(X.dtype, copy=False)
            self.random_offset_ = self.random_offset_.astype(X.dtype, copy=False)
        self._n_features_out = self.n_components
        return self

    def _map_params(self):
        D = self.random_weights_.shape[1]
        return (
            "cos",
            "rff",
            1.0,
            D,
            None,
            D,
            {"W": self.random_weights_, "b": self.random_offset_, "signs": None, "perm": None},
        )


# kernel name -> (kernel of RandomFeatures, lengthscale as a function of gamma)
_KERNELS = {
    "rbf": ("gaussian", lambda g: 1.0 / math.sqrt(2.0 * g)),  # exp(-gamma |x - y|^2)
    "gaussian": ("gaussian", lambda g: 1.0 / math.sqrt(2.0 * g)),
    "laplacian": ("laplacian", lambda g: 1.0 / g),  # exp(-gamma |x - y|_1)
    "cauchy": ("cauchy", lambda g: 1.0 / math.sqrt(g)),  # prod 1 / (1 + gamma (x_k - y_k)^2)
    "arccos0": ("arccos0", lambda g: 1.0 / math.sqrt(g)),  # 1 - theta / pi (gamma has no effect)
    "arccos1": ("arccos1", lambda g: 1.0 / math.sqrt(g)),  # gamma |x| |y| J1(theta) / pi
    "softmax": ("softmax", lambda g: 1.0 / math.sqrt(g)),  # exp(gamma x . y)
}
# gamma of each kernel for a lengthscale l (the inverse of the table above)
_GAMMA_OF_LS = {"gaussian": lambda l: 0.5 / (l * l), "laplacian": lambda l: 1.0 / l}


class RandomFeaturesTransformer(_FusedMapMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Random feature maps phi with phi(x) . phi(y) ~ k(x, y) as a scikit-learn transformer: the
    kernels and methods of :class:`kernelfuse.features.RandomFeatures`, on the fused ops.

    Parameters
    ----------
    kernel : {"rbf", "gaussian", "laplacian", "cauchy", "arccos0", "arccos1", "softmax"}, default="rbf"
        The kernel, with gamma as in ``sklearn.metrics.pairwise`` where sklearn has it:

        * ``"rbf"`` (alias ``"gaussian"``): exp(-gamma |x - y|^2), cos(w.x + b) features
          (random Fourier features; Gaussian frequencies)
        * ``"laplacian"``: exp(-gamma |x - y|_1) (Cauchy frequencies)
        * ``"cauchy"``: prod_k 1 / (1 + gamma (x_k - y_k)^2) (Laplace frequencies)
        * ``"arccos0"``: 1 - theta / pi, step features 1[w.x > 0] (gamma has no effect)
        * ``"arccos1"``: gamma |x| |y| (sin theta + (pi - theta) cos theta) / pi, ReLU features
        * ``"softmax"``: exp(gamma x . y), positive (FAVOR+) features exp(w.x - gamma |x|^2 / 2)
          (unstabilised: can overflow when gamma |x|^2 is large)
    n_components : int, default=100
        Output dimension (with ``pairs=True``: ceil(n_components / 2) frequencies).
    method : {"rff", "orf", "sorf", "fastfood"}, default="rff"
        ``"rff"`` i.i.d. frequencies; ``"orf"`` orthogonal blocks with chi norms; ``"sorf"`` and
        ``"fastfood"`` structured Hadamard maps (O(n_components log d) per row, no weight matrix).
        The orthogonal / structured methods need Gaussian frequencies: kernels rbf, arccos0,
        arccos1 and softmax.
    gamma : 'scale' or float, default=1.0
        Kernel parameter, > 0 (see ``kernel``). ``"scale"`` picks the lengthscale that sklearn's
        ``RBFSampler(gamma="scale")`` implies, l = sqrt(n_features * X.var() / 2), for every
        kernel (so rbf gets gamma = 1 / (n_features * X.var()), laplacian 1 / l, the others 1 / l^2).
    pairs : bool, default=False
        Trigonometric kernels (rbf, laplacian, cauchy): [cos(w.x), sin(w.x)] pairs of
        n_components / 2 frequencies (lower variance) instead of cos(w.x + b) with a uniform phase
        b. Output columns: the cosines, then the sines; an odd n_components adds one frequency with
        a uniform phase whose sine is dropped (still unbiased).
    random_state : int, RandomState instance or None, default=None
        Controls the draws at :meth:`fit` (a seed for torch's generator is taken from it).

    Attributes
    ----------
    lengthscale_ : float
        The kernel acts on x / lengthscale_ (the parameterisation of ``RandomFeatures``).
    random_weights_ : ndarray of shape (n_features, n_freq)
        Methods rff / orf: the frequencies (pre-activations X @ random_weights_ + random_offset_).
    random_signs_ : ndarray of shape (n_blocks, 3, P)
        Methods sorf / fastfood: the diagonals of the structured blocks (P = next power of two >= n_features).
    random_perm_ : ndarray of shape (n_blocks, P), int64
        Method fastfood: the permutations.
    random_offset_ : ndarray of shape (n_freq,)
        The uniform phases (trigonometric kernels: every frequency with ``pairs=False``; with
        ``pairs=True`` only for an odd n_components, zeros but the last).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)

    The float arrays are float32 when X is float32, else float64.
    """

    _parameter_constraints: dict = {
        "kernel": [StrOptions(set(_KERNELS))],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "method": [StrOptions({"rff", "orf", "sorf", "fastfood"})],
        "gamma": [StrOptions({"scale"}), Interval(Real, 0.0, None, closed="neither")],
        "pairs": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(self, *, kernel="rbf", n_components=100, method="rff", gamma=1.0, pairs=False, random_state=None):
        self.kernel = kernel
        self.n_components = n_components
        self.method = method
        self.gamma = gamma
        self.pairs = pairs
        self.random_state = random_state

    def _check_combination(self):
        name = type(self).__name__
        kern = _KERNELS[self.kernel][0]
        if self.method != "rff" and kern not in _ISOTROPIC:
            raise ValueError(
                f"kernelfuse.features.{name}: argument 'method': {self.method!r} needs Gaussian "
                f"frequencies (kernels rbf, arccos0, arccos1, softmax); kernel {self.kernel!r} "
                f"supports 'rff' only"
            )
        if self.pairs and kern not in ("gaussian", "laplacian", "cauchy"):
            raise ValueError(
                f"kernelfuse.features.{name}: argument 'pairs': [cos, sin] pairs need a trigonometric "
                f"kernel (rbf, laplacian, cauchy), got kernel {self.kernel!r}"
            )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Draw the random feature map for X's number of features.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self : object
        """
        self._check_combination()
        X = validate_data(self, X, accept_sparse="csr", dtype=_FLOATS, order="C")
        kern, ls_of_gamma = _KERNELS[self.kernel]
        d = X.shape[1]
        if self.gamma == "scale":
            X_var = _x_var(X)
            g_rbf = 1.0 / (d * X_var) if X_var != 0 else 1.0
            ls = 1.0 / math.sqrt(2.0 * g_rbf)
            self._gamma = float(_GAMMA_OF_LS.get(kern, lambda l: 1.0 / (l * l))(ls))
        else:
            self._gamma = float(self.gamma)
            ls = ls_of_gamma(self._gamma)
        if not (math.isfinite(ls) and ls > 0):
            raise ValueError(
                f"kernelfuse.features.{type(self).__name__}: argument 'gamma': gives lengthscale {ls}; "
                f"expected a positive finite one"
            )
        self.lengthscale_ = float(ls)
        kind = _kind(kern, bool(self.pairs))
        n_out = self.n_components
        n_freq = (n_out + 1) // 2 if kind == "cos_sin" else n_out
        g = torch.Generator()
        g.manual_seed(int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max)))
        drawn = _draw(d, n_freq, kern, self.method, ls, kind, g)
        scale = None
        if kind == "cos_sin":
            # n_out // 2 [cos, sin] pairs, and for an odd n_out one more frequency with a uniform
            # phase whose sine is dropped: every column scaled by sqrt(2 / n_out), which keeps
            # phi(x).phi(y) unbiased (pairs estimate k, cos(w.x + b) cos(w.y + b) estimates k / 2).
            scale = math.sqrt(2.0 / n_out)
            if n_out % 2:
                drawn["b"] = torch.zeros(n_freq, dtype=torch.float64)
                drawn["b"][-1] = 2 * math.pi * torch.rand(1, generator=g, dtype=torch.float64)
        for attr in ("random_weights_", "random_signs_", "random_perm_", "random_offset_"):
            self.__dict__.pop(attr, None)  # from an earlier fit with other settings
        for key, attr in (("W", "random_weights_"), ("signs", "random_signs_"), ("b", "random_offset_")):
            if drawn[key] is not None:
                setattr(self, attr, drawn[key].numpy().astype(X.dtype))
        if drawn["perm"] is not None:
            self.random_perm_ = drawn["perm"].numpy().astype(np.int64)
        self._fitted_map = (kind, self.method, n_freq, scale, n_out)  # what transform applies (set_params: refit)
        self._n_features_out = self.n_components
        return self

    def _map_params(self):
        kind, method, n_freq, scale, n_out = self._fitted_map
        get = self.__dict__.get
        arrays = {
            "W": get("random_weights_"),
            "b": get("random_offset_"),
            "signs": get("random_signs_"),
            "perm": get("random_perm_"),
        }
        return kind, method, self.lengthscale_, n_freq, scale, n_out, arrays
