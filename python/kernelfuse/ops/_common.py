"""Helpers shared by the op wrappers."""

from __future__ import annotations

import contextlib
import math
from typing import Union

import torch

Number = Union[int, float]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation / parameter dtype of a storage dtype (float32 for half types)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_tensor(t, name: str, fn: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"kernelfuse.{fn}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
    return t


def positive_scalar(value, name: str, fn: str) -> float:
    """A positive finite python number, or a clear ValueError naming the argument."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"kernelfuse.{fn}: argument '{name}' must be a positive number or a tensor, got {value!r}"
        ) from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"kernelfuse.{fn}: argument '{name}' must be positive and finite, got {v}")
    return v


def check_same_device(t, ref, name: str, ref_name: str, fn: str) -> None:
    """ValueError naming ``name`` when ``t`` is not on ``ref``'s device. Checked in Python too: a
    meta or fake tensor among the inputs would route the call past the C++ checks."""
    if t.device != ref.device:
        raise ValueError(
            f"kernelfuse.{fn}: argument '{name}': expected a tensor on {ref.device} (the device of "
            f"'{ref_name}'), got one on {t.device}"
        )


def check_like(t, ref, name: str, ref_name: str, fn: str) -> None:
    """``t`` must have ``ref``'s dtype (TypeError) and device (ValueError), both naming ``name``."""
    if t.dtype != ref.dtype:
        raise TypeError(
            f"kernelfuse.{fn}: argument '{name}': expected dtype {ref.dtype} (the dtype of '{ref_name}'), got {t.dtype}"
        )
    check_same_device(t, ref, name, ref_name, fn)


def _named_tensors(named):
    """(name, tensor) of every tensor among (name, tensor | None | list of tensors) pairs; list items
    are named ``name[i]``."""
    for name, value in named:
        items = (
            [(f"{name}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, (list, tuple)) else [(name, value)]
        )
        yield from ((n, t) for n, t in items if isinstance(t, torch.Tensor))


def check_devices(fn: str, *named, name_meta: bool = False) -> None:
    """All tensors among ``named`` ((name, tensor | None | list of tensors) pairs) on one device, else
    a ValueError naming the argument that differs, its device and the expected one (check_same_device).
    The reference is the first tensor, or with ``name_meta`` the first one not on ``meta`` (so a meta
    tensor mixed with real ones is the one named). For the fake (meta) kernels and the wrappers: the
    dispatcher routes a call with any meta tensor argument to the Meta kernel, past the C++ checks."""
    ts = list(_named_tensors(named))
    if not ts:
        return
    ref_name, ref = next(((n, t) for n, t in ts if t.device.type != "meta"), ts[0]) if name_meta else ts[0]
    for n, t in ts:
        check_same_device(t, ref, n, ref_name, fn)


def check_one_device(fn: str, named) -> None:
    """:func:`check_devices` of a list of pairs, naming the meta tensor among real ones."""
    check_devices(fn, *named, name_meta=True)


def check_required(*named) -> None:
    """ValueError naming a required tensor argument given as None ((name, value) pairs): what the
    C++ kernels say through check_defined, repeated by the fake kernels (a raw op call with a meta
    tensor among its arguments reaches the fake kernel, not the C++ checks)."""
    for name, t in named:
        if t is None:
            raise ValueError(f"kernelfuse: argument '{name}': expected a Tensor, got None")


@contextlib.contextmanager
def sized(fn: str, name: str, what: str = "a buffer"):
    """Turns an allocator failure inside the block (an expanded view's copy, an output) into a
    ValueError naming the argument whose size set it, like the C++ checked_empty."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        raise ValueError(
            f"kernelfuse.{fn}: argument '{name}': too large: {what} could not be allocated: {str(err).splitlines()[0]}"
        ) from None
    except RuntimeError as err:
        msg = str(err)
        if "can't allocate memory" not in msg and "out of memory" not in msg:
            raise
        raise ValueError(
            f"kernelfuse.{fn}: argument '{name}': too large: {what} could not be allocated: {msg.splitlines()[0][:200]}"
        ) from None
