"""``torch.autocast`` rules of the kernelfuse ops (docs/autocast.md has the table and the reasons).

Each forward op gets a kernel for the AutocastCPU and AutocastCUDA dispatch keys (so the rule holds
for ``torch.ops.kernelfuse.*`` called directly and under torch.compile, which traces these
kernels), and the public wrappers that check dtypes in Python apply the same rule before their
checks (:func:`fp32_under_autocast`), so that a half tensor produced by an autocast region (e.g.
by a Linear) reaches the op instead of a dtype error.

Two policies:

- ``fftconv``: *mixed*. Activations (u, pregate, postgate) in the autocast dtype, the kernel k and
  the skip D in float32; float32 computation, the output in the autocast dtype (FlashFFTConv's
  convention: half activations, fp32 kernel).
- every other op: *float32*. float16 / bfloat16 inputs are cast to float32 and the op runs, and
  returns, in float32 (like torch's own fp32-listed ops, e.g. softmax). These ops have no half
  kernels; the kernel-sum / KDE, Kronecker / GP and grid-kernel ops are precision-sensitive
  (exponentials of distances, log-determinants, Cholesky-free eigen solves) and must not run in
  half even if they had one.

In both, float64 tensors are never cast (as with torch's autocast), and neither are tensors on
another device type. The backward ops (``*_bwd``) have no autocast kernel: they are called by
autograd on tensors whose dtypes the forward's rule already settled.
"""

from __future__ import annotations

import functools

import torch

HALF = (torch.float16, torch.bfloat16)
DEVICE_TYPES = ("cpu", "cuda")

# Ops computed in float32 under autocast (half inputs upcast; float64 kept).
FP32_OPS = (
    "kernel_sum",
    "kernel_logsumexp",
    "kernel_logsumexp_sq",  # KDE: exp / log of distances
    "grid_kernel",  # GP grid kernels
    "kron_matmul",
    "kron_gp_mll",
    "kron_posterior_var",  # Kronecker / GP solves
    "ssm_kernel",  # Vandermonde of exp(dt A)
    "butterfly_multiply",
    "monarch_multiply",
    "monarch_fft",  # no half kernels
    "fwht",
    "random_features",
    "structured_features",  # no half kernels; cos / exp of projections
    "nngp_matmul",
    "nngp_kernel",  # no half kernels; arccos recursions
)
# Ops with their own rule (below).
MIXED_OPS = ("fftconv",)
# Ops without tensor arguments (cache control): nothing to cast, no rule.
NO_TENSOR_OPS = ("monarch_fft_cache",)


def _eligible(t, device_type: str) -> bool:
    return (
        isinstance(t, torch.Tensor)
        and t.is_floating_point()
        and t.device.type == device_type
        and t.dtype is not torch.float64
    )


def _cast(t, device_type: str, dtype: torch.dtype):
    return t.to(dtype) if _eligible(t, device_type) and t.dtype != dtype else t


def fftconv_autocast_args(args, names, device_type: str, dtype: torch.dtype):
    """fftconv's rule on its argument list (by schema name, so arguments added to the schema later
    pass through): u, pregate, postgate -> ``dtype``; k, D -> float32. A float64 u: nothing cast."""
    args = list(args)
    iu = names.index("u")
    if not _eligible(args[iu], device_type):
        return args
    for i, n in enumerate(names):
        if n in ("u", "pregate", "postgate"):
            args[i] = _cast(args[i], device_type, dtype)
        elif n in ("k", "D"):
            args[i] = _cast(args[i], device_type, torch.float32)
    return args


def _up(a):
    if isinstance(a, torch.Tensor):
        return a.float() if a.dtype in HALF and torch.is_autocast_enabled(a.device.type) else a
    if isinstance(a, (list, tuple)):
        return type(a)(_up(t) for t in a)
    return a


def fp32_under_autocast(fn):
    """Decorator of a public wrapper whose dtype checks (in Python) reject half tensors: under
    ``torch.autocast`` on a tensor's device type, float16 / bfloat16 tensor arguments (also inside
    lists / tuples) become float32 before the checks run, the float32 rule of the op. Outside
    autocast it changes nothing (half inputs still get the wrappers' dtype errors)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if any(torch.is_autocast_enabled(dt) for dt in DEVICE_TYPES):
            args = tuple(_up(a) for a in args)
            kwargs = {k: _up(v) for k, v in kwargs.items()}
        return fn(*args, **kwargs)

    return wrapper


def _cast_fp32_args(args, device_type: str):
    out = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out.append(type(a)(_cast(t, device_type, torch.float32) for t in a))
        else:
            out.append(_cast(a, device_type, torch.float32))
    return out


_lib = torch.library.Library("kernelfuse", "IMPL")  # the registrations live as long as the module


def _register(opname: str, device_type: str, rewrite) -> None:
    """A kernel for Autocast<device>: rewrite the arguments, then call the op with the autocast key
    excluded (the same mechanics as torch.library.register_autocast, with our own casting rule)."""
    op = getattr(torch.ops.kernelfuse, opname).default
    key_name = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    key = getattr(torch._C.DispatchKey, key_name)
    names = [a.name for a in op._schema.arguments]

    def impl(*args, **kwargs):
        if kwargs:
            raise AssertionError(f"kernelfuse::{opname}: keyword arguments at the autocast key")
        args = rewrite(args, names, device_type)
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            return op(*args)

    if op.has_kernel_for_dispatch_key(key):
        op.py_kernels.pop(key, None)
    op.py_impl(key)(impl)  # the Python dispatcher (torch.compile / make_fx tracing)
    _lib.impl(opname, lambda _keyset, *a, **kw: impl(*a, **kw), key_name, with_keyset=True)


def _fftconv_rewrite(args, names, device_type):
    return fftconv_autocast_args(args, names, device_type, torch.get_autocast_dtype(device_type))


def _fp32_rewrite(args, names, device_type):
    return _cast_fp32_args(args, device_type)


for _dt in DEVICE_TYPES:
    if not torch._C._is_autocast_available(_dt):
        continue
    for _name in MIXED_OPS:
        _register(_name, _dt, _fftconv_rewrite)
    for _name in FP32_OPS:
        _register(_name, _dt, _fp32_rewrite)

__all__ = ["FP32_OPS", "MIXED_OPS", "NO_TENSOR_OPS", "fftconv_autocast_args", "fp32_under_autocast"]
