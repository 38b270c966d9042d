"""Issue 13 (reliability), kron / gp ops: a property-style sweep over bad-input classes (dtype,
meta, shape, empty, None, NaN / inf, non-contiguous, offset and stride-0 views) of every public and
raw kron / grid_kernel op, and every requires-grad subset against the reference's autograd. The
single regressions: tests/test_kron_reliability.py."""

import itertools
import time

import kernelfuse as kf
import torch
from kernelfuse.reference import kron as kref
from kernelfuse.reference import kron_grid as gref
from kron_reliability_common import F64, _positions, _raw_cases, _replace, _spd, _t


def _gref(x1, x2, kind, params, **kw):
    """The grid_kernel reference, and (n1, n2) zeros for no points (vmap over nothing fails)."""
    if x1.numel() == 0 or x2.numel() == 0:
        return torch.zeros(x1.shape[0], x2.shape[0], dtype=F64) + 0 * params.sum()
    return gref.grid_kernel(x1, x2, kind, params, **kw)


def _spec_cases():
    """label -> (ours(args), reference(args), [(name, tensor | list of tensors)], differentiable names)."""
    g = torch.Generator().manual_seed(11)
    r = lambda *s: torch.randn(*s, dtype=F64, generator=g)  # noqa: E731
    f2, f3 = _spd(2, g), _spd(3, g)
    s2 = torch.tensor(0.3, dtype=F64)
    lin = torch.linspace(-1, 1, 6, dtype=F64)
    post = lambda a, **kw: kf.kron_posterior(a["factors"], a["y"], a["noise"], **kw)  # noqa: E731
    rpost = lambda a, **kw: kref.kron_posterior(a["factors"], a["y"], a["noise"], **kw)  # noqa: E731
    fy = [("factors", [f2, f3]), ("y", r(6)), ("noise", s2)]
    cases = {
        "kron_matmul": (
            lambda a: kf.kron_matmul(a["factors"], a["x"]),
            lambda a: kref.kron_matmul(a["factors"], a["x"]),
            [("factors", [r(2, 3), r(3, 2)]), ("x", r(2, 6))],
            ("factors", "x"),
        ),
        "kron_matmul(T)": (
            lambda a: kf.kron_matmul(a["factors"], a["x"], transpose=True),
            lambda a: kref.kron_matmul(a["factors"], a["x"], transpose=True),
            [("factors", [r(3, 2), r(2, 3)]), ("x", r(6))],
            ("factors", "x"),
        ),
        "kron_gp_mll": (
            lambda a: kf.kron_gp_mll(a["factors"], a["y"], a["noise"]),
            lambda a: kref.kron_gp_mll(a["factors"], a["y"], a["noise"]),
            fy,
            ("factors", "y", "noise"),
        ),
        "kron_solve": (
            lambda a: kf.kron_solve(a["factors"], a["y"], a["noise"]),
            lambda a: kref.kron_solve(a["factors"], a["y"], a["noise"]),
            [("factors", [f2, f3]), ("y", r(2, 6)), ("noise", s2)],
            ("factors", "y", "noise"),
        ),
        "kron_posterior(train)": (lambda a: post(a), lambda a: rpost(a), fy, ("factors", "y", "noise")),
        "kron_posterior(grid)": (
            lambda a: post(a, cross_factors=a["cross_factors"], targets="grid", prior_var=a["prior_var"]),
            lambda a: rpost(a, cross_factors=a["cross_factors"], targets="grid", prior_var=a["prior_var"]),
            fy + [("cross_factors", [r(3, 2), r(2, 3)]), ("prior_var", r(6).abs() + 2)],
            ("factors", "y", "noise", "cross_factors"),
        ),
        "kron_posterior(scattered)": (
            lambda a: post(a, cross_factors=a["cross_factors"], targets="scattered", prior_var=a["prior_var"]),
            lambda a: rpost(a, cross_factors=a["cross_factors"], targets="scattered", prior_var=a["prior_var"]),
            fy + [("cross_factors", [r(4, 2), r(4, 3)]), ("prior_var", torch.tensor(2.5, dtype=F64))],
            ("factors", "y", "noise", "cross_factors"),
        ),
        "grid_kernel(auto)": (
            lambda a: kf.grid_kernel(a["x1"], a["x2"], "rbf", a["params"]),
            lambda a: _gref(a["x1"], a["x2"], "rbf", a["params"]),
            [("x1", lin), ("x2", lin.clone()), ("params", r(2, 2) * 0.3)],
            ("x1", "x2", "params"),
        ),
        # one tensor as x1 and x2: the Toeplitz auto-detection sees the perturbed points (item 2)
        "grid_kernel(auto, one x)": (
            lambda a: kf.grid_kernel(a["x1"], a["x1"], "stm", a["params"], orders=(0, 1)),
            lambda a: _gref(a["x1"], a["x1"], "stm", a["params"], orders=(0, 1)),
            [("x1", lin), ("params", r(2, 3) * 0.3)],
            ("x1", "params"),
        ),
        "grid_kernel(toeplitz)": (
            lambda a: kf.grid_kernel(a["x1"], a["x1"], "matern52", a["params"], orders=(1, 1), toeplitz=True),
            lambda a: _gref(a["x1"], a["x1"], "matern52", a["params"], orders=(1, 1)),
            [("x1", lin), ("params", r(1, 2) * 0.3)],
            ("x1", "params"),
        ),
        "grid_kernel(direct)": (
            lambda a: kf.grid_kernel(a["x1"], a["x2"], "sm", a["params"], orders=(2, 0), toeplitz=False),
            lambda a: _gref(a["x1"], a["x2"], "sm", a["params"], orders=(2, 0)),
            [("x1", r(5)), ("x2", r(4)), ("params", r(2, 3) * 0.3)],
            ("x1", "x2", "params"),
        ),
    }
    return cases


def _one_elem(t, v):
    t = t.clone()
    t.view(-1)[min(1, t.numel() - 1)] = v
    return t


def _perturbations(t):
    """(class, fn) applicable to a float64 tensor t."""
    out = [
        ("int64", lambda u: u.round().to(torch.int64)),
        ("float32", lambda u: u.float()),
        ("meta", lambda u: u.to("meta")),
        ("extra_dim", lambda u: u.unsqueeze(0)),
        ("None", lambda u: None),
    ]
    if t.dim() >= 1:
        out += [
            ("wrong_len", lambda u: u[..., :-1]),
            ("empty", lambda u: u[:0]),
            ("nan", lambda u: _one_elem(u, float("nan"))),
            ("inf", lambda u: _one_elem(u, float("inf"))),
            ("noncontig", lambda u: u.t().contiguous().t() if u.dim() == 2 else torch.stack([u, u * 0], -1)[..., 0]),
            ("offset", lambda u: torch.cat([u.new_zeros(1), u.reshape(-1)])[1:].view(u.shape)),
            # stride-0 views: a constant (rank-1 PSD) matrix / a constant vector
            ("expanded", lambda u: u.abs().mean().reshape([1] * u.dim()).expand(u.shape)),
        ]
    return out


def _flat(r):
    if r is None:
        return [None]
    if isinstance(r, torch.Tensor):
        return [r]
    return [u for e in r for u in _flat(e)]


def _assert_matches(got, exp, what):
    got, exp = _flat(got), _flat(exp)
    assert len(got) == len(exp), what
    for a, b in zip(got, exp):
        if a is None or b is None:
            assert a is None and b is None, what
            continue
        assert a.device.type == "cpu" and tuple(a.shape) == tuple(b.shape), (
            f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        )
        tol = dict(rtol=2e-4, atol=2e-5) if a.dtype == torch.float32 else dict(rtol=1e-7, atol=1e-9)
        a, b = a.detach().double(), b.detach().double()
        fa, fb = torch.isfinite(a), torch.isfinite(b)
        assert torch.equal(fa, fb), f"{what}: non-finite entries differ:\n{a}\n{b}"
        torch.testing.assert_close(a[fa], b[fb], **tol, msg=lambda m: f"{what}: {m}")


_SHAPE_CLASSES = ("extra_dim", "wrong_len", "empty")


def _classify(ours, ref, args, label, what, cls):
    """'error' (a clear error naming ``label``) or 'correct' (matches the float64 reference). A shape
    perturbation may make another argument the inconsistent one (a shorter factor: x no longer fits):
    then naming any argument of the op is clear."""
    try:
        got = ours(args)
    except (ValueError, TypeError, RuntimeError) as e:
        names = [label] if cls not in _SHAPE_CLASSES else [lb for lb, _ in _positions(list(args.items()))] + list(args)
        assert any(f"'{n}'" in str(e) for n in names), f"{what}: the error does not name '{label}': {e}"
        return "error"
    rargs = {
        n: ([t.detach().double() for t in v] if isinstance(v, list) else v.detach().double()) for n, v in args.items()
    }  # (a None left in would fail here: a missing argument must be an error)
    _assert_matches(got, ref(rargs), what)
    return "correct"


def test_property_bad_inputs_kron_and_grid_ops(capsys):
    t0 = time.perf_counter()
    counts = {"tried": 0, "error": 0, "correct": 0}
    per_class = {}
    for op, (ours, ref, args, diff) in _spec_cases().items():
        for label, path in _positions(args):
            base = dict(args)
            t = base[path[0]] if len(path) == 1 else base[path[0]][path[1]]
            for cls, fn in _perturbations(t):
                res = _classify(ours, ref, _replace(args, path, fn), label, f"{op} / {label} / {cls}", cls)
                counts["tried"] += 1
                counts[res] += 1
                per_class.setdefault(cls, {"error": 0, "correct": 0})[res] += 1
        # every requires-grad subset of the differentiable positions: grads vs the reference's autograd
        pos = [(lb, p) for lb, p in _positions(args) if p[0] in diff]
        w = None
        for mask in itertools.product([0, 1], repeat=len(pos)):
            if not any(mask):
                continue
            grads = []
            for fwd in (ours, ref):
                a = {
                    n: ([u.detach().clone() for u in v] if isinstance(v, list) else v.detach().clone()) for n, v in args
                }
                leaves = []
                for (lb, p), m in zip(pos, mask):  # noqa: B007
                    leaf = (a[p[0]] if len(p) == 1 else a[p[0]][p[1]]).requires_grad_(bool(m))
                    leaves.append(leaf)
                outs = [o for o in _flat(fwd(a)) if o is not None and o.requires_grad]
                if w is None:
                    w = [_t(*o.shape, seed=20 + i) for i, o in enumerate(outs)]
                sum((o * wi).sum() for o, wi in zip(outs, w)).backward()
                grads.append([lf.grad for lf in leaves])
            for (lb, _), m, gm, gr in zip(pos, mask, *grads):
                if m:
                    torch.testing.assert_close(
                        gm, gr, rtol=1e-7, atol=1e-9, msg=lambda s: f"{op} grad {lb} {mask}: {s}"
                    )
                else:
                    assert gm is None, f"{op}: grad of {lb} without requires_grad"
            counts["tried"] += 1
            counts["correct"] += 1
            per_class.setdefault("requires_grad_subset", {"error": 0, "correct": 0})["correct"] += 1
    # the raw ops: bad dtype / device / None must be clear errors, views must not change the result
    for op, (call, args) in _raw_cases().items():
        base = _flat(call(dict(args)))
        for label, path in _positions(args):
            t = args[[n for n, _ in args].index(path[0])][1]
            t = t if len(path) == 1 else t[path[1]]
            cases = [c for c in _perturbations(t) if c[0] in ("int64", "float32", "meta", "noncontig", "offset")]
            if len(path) == 1:
                cases.append(("None", lambda u: None))
            for cls, fn in cases:
                counts["tried"] += 1
                what = f"raw {op} / {label} / {cls}"
                try:
                    got = call(_replace(args, path, fn))
                except (ValueError, TypeError, RuntimeError) as e:
                    assert f"'{label}'" in str(e), f"{what}: the error does not name '{label}': {e}"
                    counts["error"] += 1
                    per_class.setdefault(cls, {"error": 0, "correct": 0})["error"] += 1
                    continue
                optional = label in ("grad_nll", "grad_alpha", "prior_var", "eig")
                assert cls in ("noncontig", "offset") or (cls == "None" and optional), what
                if cls == "None":  # an optional argument left out: its results are checked by the public-op cases
                    counts["correct"] += 1
                    per_class.setdefault(cls, {"error": 0, "correct": 0})["correct"] += 1
                    continue
                _assert_matches(got, base, what)
                counts["correct"] += 1
                per_class.setdefault(cls, {"error": 0, "correct": 0})["correct"] += 1
    dt = time.perf_counter() - t0
    with capsys.disabled():
        print(
            f"\nkron/gp bad-input sweep: tried {counts['tried']}, clear error {counts['error']}, "
            f"correct {counts['correct']} ({dt:.1f} s)"
        )
        print("  " + ", ".join(f"{c}: {v['error']} err / {v['correct']} ok" for c, v in per_class.items()))
    assert counts["tried"] == counts["error"] + counts["correct"]
