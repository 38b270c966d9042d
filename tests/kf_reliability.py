"""Shared machinery of the issue-13 property sweeps over bad and odd inputs (used by
tests/test_butterfly_reliability.py and tests/test_kde_reliability.py).

A sweep is an explicit, deterministic enumeration (no randomness beyond seeded inputs, a fixed
number of cases): for each tensor argument of an op, invalid replacements (dtype, meta device,
shape, empty, 0-d), odd but valid views (non-contiguous, strided, storage offset, expanded) and
NaN / inf poisoning. Every case must end in a clear error (ValueError / TypeError / RuntimeError
naming one of the op's arguments) or a result equal to the float64 reference (same shape, same
non-finite pattern, values close); anything else is counted wrong, and the test prints
tried / clear error / correct / wrong.
"""

from __future__ import annotations

import itertools

import torch

F64 = torch.float64
C128 = torch.complex128


class Counts:
    def __init__(self):
        self.tried = self.clear = self.correct = 0
        self.wrong = []

    def report(self, capsys, label):
        with capsys.disabled():
            print(
                f"\n[{label} reliability] tried {self.tried} / clear error {self.clear} / correct {self.correct} / "
                f"wrong {len(self.wrong)}"
            )
            for w in self.wrong[:40]:
                print("   WRONG", w)
        assert self.tried == self.clear + self.correct + len(self.wrong)
        assert not self.wrong, self.wrong[:10]


def _wide(t):
    return t.to(C128) if t.is_complex() else t.to(F64)


def compare(out, exp, inf_ok=False):
    """None when ours (out) matches the reference (exp); else why not. Tuples compare item-wise
    (a None reference item is not compared). inf_ok: an inf input may give inf or NaN depending on
    the order of operations (fast transforms mix it with others: inf - inf), so ours need only be
    non-finite where the reference is."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    exps = exp if isinstance(exp, (tuple, list)) else (exp,)
    if len(outs) != len(exps):
        return f"{len(outs)} outputs, the reference has {len(exps)}"
    for o, e in zip(outs, exps):
        if e is None:
            continue
        if tuple(o.shape) != tuple(e.shape):
            return f"shape {tuple(o.shape)} != {tuple(e.shape)}"
        if o.device.type == "meta" or e.device.type == "meta":
            if o.device != e.device:
                return f"device {o.device} != {e.device}"
            continue
        if o.is_complex() != e.is_complex():
            return f"dtype {o.dtype} vs the reference's {e.dtype}"
        tol = 1e-8 if o.dtype in (F64, C128) else 2e-5
        o, e = _wide(o.detach()), _wide(e.detach())
        if inf_ok:
            if (~e.isfinite() & o.isfinite()).any():
                return "finite where the reference is not"
        else:
            if not torch.equal(o.isfinite(), e.isfinite()):
                return "non-finite pattern differs"
            if (e.isnan() & ~o.isnan()).any():
                return "NaN of the reference not NaN here"
        fin = e.isfinite() & o.isfinite()
        if fin.any():
            scale = max(1.0, e[fin].abs().max().item())
            if not torch.allclose(o[fin], e[fin], rtol=tol, atol=tol * scale):
                return f"max err {(o[fin] - e[fin]).abs().max().item():.3g}"
        both = e.isinf() & o.isinf()
        if not inf_ok and not torch.equal(o[both], e[both]):
            return "inf signs differ"
    return None


def run(c, label, call, ref, names, superset=False):
    """One case: call() must raise a clear error naming one of ``names``, or match ref() (None: an
    error is required). superset: ours may be non-finite in more places than the reference (a NaN
    times an exact zero of the transform is NaN; the FFT libraries skip some such products)."""
    inf_ok = superset or any("inf" in str(p) for p in label)
    c.tried += 1
    try:
        out = call()
    except (ValueError, TypeError, RuntimeError, NotImplementedError, IndexError) as err:
        msg = str(err)
        if "argument" in msg and any(f"'{n}'" in msg for n in names):
            c.clear += 1
        else:
            c.wrong.append((label, f"unclear error {type(err).__name__}: {msg[:160]}"))
        return
    except Exception as err:  # noqa: BLE001
        c.wrong.append((label, f"crash {type(err).__name__}: {str(err)[:160]}"))
        return
    if ref is None:
        c.wrong.append((label, "no error and no reference: expected an error"))
        return
    try:
        exp = ref()
    except Exception as err:  # noqa: BLE001 - a reference that rejects the input: ours must have too
        c.wrong.append((label, f"returned a result where the reference fails: {err}"[:200]))
        return
    why = compare(out, exp, inf_ok)
    if why is None:
        c.correct += 1
    else:
        c.wrong.append((label, why))


def variants(t):
    """Odd but valid views of t: non-contiguous, strided last dim, storage offset 1, expanded (other
    values: the reference sees the same view)."""
    v = {}
    if t.dim() >= 2:
        v["noncontig"] = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if t.dim() >= 1:
        v["strided"] = torch.stack((t, torch.full_like(t, 7.0)), -1)[..., 0]
    v["offset"] = torch.cat((torch.zeros(1, dtype=t.dtype), t.reshape(-1)))[1:].view(t.shape)
    if t.dim() >= 1 and t.shape[0] > 1:
        v["expanded"] = t[:1].expand(t.shape)
    return v


def poison(t, val):
    t = t.clone()
    t.view(-1)[t.numel() // 2] = val
    return t


def bad(t):
    """Replacements of a tensor argument that are invalid for most ops: (label, tensor). Ops that
    accept some of them (a batch dim, an empty batch, promotion) are judged against the reference."""
    other = {F64: torch.float32, torch.float32: F64, C128: torch.complex64, torch.complex64: C128}.get(t.dtype, F64)
    out = [
        ("int64", t.to(torch.int64) if not t.is_complex() else t.real.to(torch.int64)),
        ("other-float", t.to(other)),
        ("meta", t.to("meta")),
    ]
    if t.dim() >= 1 and t.shape[-1] > 1:
        out.append(("short-last-dim", t[..., :-1]))
    out.append(("extra-dim", t.unsqueeze(0).expand(2, *t.shape)))
    if t.dim() >= 1:
        out.append(("empty", t[:0]))
    out.append(("0-d", t.reshape(-1)[0].clone() if t.numel() else torch.zeros((), dtype=t.dtype)))
    return out


_run = run


class Builder:
    """fn(ts) -> the op's result for the dict ts of tensor arguments; base: the valid arguments;
    no_poison: arguments whose NaN / inf values are not an input class (indices, saved outputs);
    strict: arguments whose bad replacements must give an error (no reference consulted);
    superset: the non-finite rule of :func:`run`."""

    def __init__(self, fn, base, no_poison=(), strict=(), superset=False):
        self.fn, self.base, self.no_poison, self.strict = fn, base, set(no_poison), set(strict)
        self.superset = superset

    def __call__(self, ts):
        return self.fn(ts)


def sweep(c, opname, build, ref, names=None):
    base = build.base
    names = list(names or base)

    def run(c, label, call, ref, names):  # noqa: F811 - the module's run with the builder's rule
        _run(c, label, call, ref, names, build.superset)

    run(c, (opname, "base"), lambda: build(base), lambda: ref(base), names)
    for n, t in base.items():
        if t is None:
            continue
        for lab, b in bad(t):
            ts = dict(base, **{n: b})
            run(c, (opname, n, lab), lambda: build(ts), None if n in build.strict else (lambda: ref(ts)), names)
        for lab, v in variants(t).items():
            ts = dict(base, **{n: v})
            run(c, (opname, n, lab), lambda: build(ts), lambda: ref(ts), names)
        if (t.is_floating_point() or t.is_complex()) and n not in build.no_poison:
            for val in (float("nan"), float("inf")):
                ts = dict(base, **{n: poison(t, val)})
                run(c, (opname, n, str(val)), lambda: build(ts), lambda: ref(ts), names)


def grad_subsets(c, label, fn, ref_fn, ins, rtol=1e-10, atol=1e-12):
    """Every non-empty subset of ``ins`` requiring grad: backward runs, gives grads exactly to that
    subset, equal to the reference's (ref_fn on float64 / complex128 leaves)."""
    keys = list(ins)
    leaves = {k: _wide(v.detach()).clone().requires_grad_(True) for k, v in ins.items()}
    out = ref_fn(leaves)
    gout = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(99))
    exp = dict(zip(keys, torch.autograd.grad(out, [leaves[k] for k in keys], gout, allow_unused=True)))
    for r in range(1, len(keys) + 1):
        for sub in itertools.combinations(keys, r):
            c.tried += 1
            part = {k: v.detach().clone().requires_grad_(k in sub) for k, v in ins.items()}
            try:
                o = fn(part)
                o.backward(gout.to(o.dtype))
                ok = all((part[k].grad is None) == (k not in sub) for k in keys)
                for k in sub:
                    e = exp[k] if exp[k] is not None else torch.zeros_like(leaves[k])
                    ok = ok and torch.allclose(_wide(part[k].grad), e, rtol=rtol, atol=atol)
            except Exception as err:  # noqa: BLE001
                c.wrong.append(((label, sub), f"{type(err).__name__}: {err}"[:200]))
                continue
            if ok:
                c.correct += 1
            else:
                c.wrong.append(((label, sub), "grads wrong or given to inputs that did not ask"))


def as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


def meta_positions(op, tnames, args):
    """Raw op calls with one tensor argument moved to meta, in every position: (name, args); then the
    all-meta call (None, args)."""
    tpos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    assert len(tpos) == len(tnames), (op, tnames)
    for i, an in zip(tpos, tnames):
        a = list(args)
        a[i] = a[i].to("meta")
        yield an, a
    yield None, [t.to("meta") if isinstance(t, torch.Tensor) else t for t in args]


def fake_strides_match(op, args):
    """The fake kernel's outputs have the real kernel's shapes and strides."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = op(*args)
    with FakeTensorMode() as m:
        fa = [m.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fake = op(*fa)
    for r, f in zip(real if isinstance(real, tuple) else (real,), fake if isinstance(fake, tuple) else (fake,)):
        assert r.shape == f.shape and r.stride() == f.stride(), (op, r.shape, r.stride(), f.stride())
