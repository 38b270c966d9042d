"""Exact kernel sums over points and queries sharded across the ranks of a process group.

Four schedules (docs/distributed.md has the cost model and when each wins):

* ``"reduce"`` -- x replicated, y (and its weights) sharded: each rank sums over its own points,
  one all-reduce combines them (``kernel_logsumexp``: an all-reduce of the per-query maxima, then
  of the rescaled sums, so the combination is stable at any magnitude).
* ``"local"`` -- x sharded, y replicated: no communication in the forward pass.
* ``"ring"`` -- both sharded: the point shards travel rank to rank (isend/irecv of the next shard
  posted before the current one is summed, so the transfer overlaps the compute) while each rank
  accumulates its own queries; memory per rank O((m + n) / P * d).
* ``"gather"`` -- both sharded, the points small enough to replicate: one all-gather of y, then
  ``"local"``.

Gradients (x, y, weights, bandwidth) flow through every schedule, with the semantics of
``torch.distributed.nn``: the objective is the sum over the ranks of the losses they
back-propagate, and each rank receives the gradient of that sum with respect to the tensors it
passed -- its own shards (which collect the contributions of every rank's loss), and its own copy
of each replicated tensor (the bandwidth always; x in "reduce"; y and the weights in "local"),
whose gradient is the contribution of that rank. The gradient of a replicated parameter is the
sum of its copies' gradients over the ranks: all-reduce it (DDP averages it for module
parameters). The ring backward sends the y-gradient accumulators around the ring with the shards.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from ..ops.kde import _bandwidth_grad, _prepare
from ._comm import Ring, all_gather_rows, all_gather_sizes, all_reduce_sum, group_info

__all__ = ["SCHEDULES", "kernel_sum", "kernel_logsumexp", "kernel_logsumexp_sq", "choose_schedule"]

SCHEDULES = ("reduce", "local", "ring", "gather")
_ops = torch.ops.kernelfuse
DEFAULT_GATHER_LIMIT = 64 << 20  # bytes of the gathered points above which "ring" replaces "gather"


@dataclass
class _Cfg:
    fn: str
    mode: str  # "sum" | "lse" | "lse_sq"
    schedule: str
    kernel: str
    exclude_self: bool
    metric: str
    p: float
    group: object
    size: int
    rank: int
    ranks: List[int]
    counts_x: List[int]
    counts_y: List[int]
    bd: int  # the points dimension (0, or 1 when batched)
    timeout: Optional[datetime.timedelta]


# ---------------------------------------------------------------- local pieces
def _apply(cfg: _Cfg, x, y, w, h, excl: bool) -> Tuple[torch.Tensor, ...]:
    if cfg.mode == "sum":
        return (_ops.kernel_sum(x, y, w, h, cfg.kernel, excl, cfg.metric, cfg.p),)
    if cfg.mode == "lse":
        return (_ops.kernel_logsumexp(x, y, w, h, cfg.kernel, excl, cfg.metric, cfg.p),)
    return tuple(_ops.kernel_logsumexp_sq(x, y, w, h, cfg.kernel, excl, cfg.metric, cfg.p))


def _combine(cfg: _Cfg, acc, part):
    if acc is None:
        return part
    if cfg.mode == "sum":
        return tuple(a + b for a, b in zip(acc, part))
    return tuple(torch.logaddexp(a, b) for a, b in zip(acc, part))


def _apply_bwd(cfg: _Cfg, g, out, x, y, w, h, excl, nx, ny, nw, nh):
    """(gx, gy, gw, gh) of one block, as kernelfuse.ops.kde's backward (None where not needed)."""
    in_pass = nh and cfg.metric == "haversine"
    need_x, need_y = nx or (nh and not in_pass), ny or (nh and not in_pass)
    need_w = nw and w is not None
    args = (x, y, w, h, cfg.kernel, excl, need_x, need_y, need_w, cfg.metric, cfg.p, in_pass)
    if cfg.mode == "lse":
        gx, gy, gw, gh = _ops.kernel_logsumexp_bwd(g, out, *args)
    else:
        gx, gy, gw, gh = _ops.kernel_sum_bwd(g, *args)
    if nh and not in_pass:
        gh = _bandwidth_grad(gx, gy, x, y, h)
    return gx if nx else None, gy if ny else None, gw if need_w else None, gh if nh else None


def _reduce(tensors: Sequence[Optional[torch.Tensor]], group) -> List[Optional[torch.Tensor]]:
    """Sum-all-reduce the non-None tensors (one collective per dtype)."""
    out = list(tensors)
    by_dtype = {}
    for i, t in enumerate(tensors):
        if t is not None:
            by_dtype.setdefault(t.dtype, []).append(i)
    for idx in by_dtype.values():
        for i, r in zip(idx, all_reduce_sum([tensors[i] for i in idx], group)):
            out[i] = r
    return out


def _lse_all_reduce(parts: Tuple[torch.Tensor, ...], group) -> Tuple[torch.Tensor, ...]:
    """log sum_r exp(parts_r) over the ranks, stably: the maximum first, then the rescaled sums."""
    (mx,) = all_reduce_sum([torch.stack(parts)], group, op=dist.ReduceOp.MAX)
    shift = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    (s,) = all_reduce_sum([torch.exp(torch.stack(parts) - shift)], group)
    out = shift + torch.log(s)
    return tuple(out.unbind(0))


def _narrow(t, dim, start, length):
    return None if t is None else t.narrow(dim, start, length)


# ---------------------------------------------------------------- forward schedules
def _forward(cfg: _Cfg, x, y, w, h):
    """Forward of every schedule: (outputs tuple, gathered (y, w) for "gather" else None)."""
    if cfg.schedule == "local":
        return _apply(cfg, x, y, w, h, False), None
    if cfg.schedule == "reduce":
        part = _apply(cfg, x, y, w, h, False)
        if cfg.mode == "sum":
            return tuple(_reduce(part, cfg.group)), None
        return _lse_all_reduce(part, cfg.group), None
    if cfg.schedule == "gather":
        yf = all_gather_rows(y, cfg.counts_y, cfg.bd, cfg.group)
        wf = None if w is None else all_gather_rows(w, cfg.counts_y, cfg.bd, cfg.group)
        return _apply(cfg, x, yf, wf, h, False), (yf, wf)
    return _ring_forward(cfg, x, y, w, h), None


def _block_like(t, dim, n):
    if t is None:
        return None
    shape = list(t.shape)
    shape[dim] = n
    return t.new_empty(shape)


def _ring_forward(cfg: _Cfg, x, y, w, h):
    P, r = cfg.size, cfg.rank
    ring = Ring(cfg.group, P, r, cfg.ranks, cfg.fn, cfg.timeout)
    blk = (y, w)
    acc = None
    for s in range(P):
        q = (r - s) % P  # the owner of the block held at this step
        handle = None
        if s < P - 1:
            n_next = cfg.counts_y[(r - s - 1) % P]
            handle, nxt = ring.start(blk, [_block_like(y, cfg.bd, n_next), _block_like(w, cfg.bd, n_next)], s)
        acc = _combine(cfg, acc, _apply(cfg, x, blk[0], blk[1], h, cfg.exclude_self and q == r))
        if handle is not None:
            ring.wait(handle)
            blk = tuple(nxt)
    if P > 1:
        ring.finish(x.device)
    return acc


# ---------------------------------------------------------------- backward schedules
def _ring_backward(cfg: _Cfg, g, out, x, y, w, h, nx, ny, nw, nh):
    P, r = cfg.size, cfg.rank
    ring = Ring(cfg.group, P, r, cfg.ranks, cfg.fn + " (backward)", cfg.timeout)
    nw = nw and w is not None
    gx = torch.zeros_like(x) if nx else None
    gh = torch.zeros_like(h) if nh else None
    blk = (y, w)
    acc = (torch.zeros_like(y) if ny else None, torch.zeros_like(w) if nw else None)
    for s in range(P):
        q = (r - s) % P
        handle = None
        if s < P - 1:  # the next points travel while this block is summed; the accumulators after
            n_next = cfg.counts_y[(r - s - 1) % P]
            handle, nxt = ring.start(blk, [_block_like(y, cfg.bd, n_next), _block_like(w, cfg.bd, n_next)], s)
        n_q = cfg.counts_y[q]
        if n_q > 0 and x.shape[cfg.bd] > 0:
            bx, by, bw, bh = _apply_bwd(cfg, g, out, x, blk[0], blk[1], h, cfg.exclude_self and q == r, nx, ny, nw, nh)
            if nx:
                gx += bx
            if nh:
                gh += bh
            acc = (acc[0] + by if ny else None, acc[1] + bw if nw else None)
        # send the accumulators of block q on to rank + 1; receive those of the next block
        n_next = cfg.counts_y[(r - s - 1) % P]
        if P > 1:
            h2, nacc = ring.start(
                acc, [_block_like(acc[0], cfg.bd, n_next), _block_like(acc[1], cfg.bd, n_next)], s, tag=2
            )
            if handle is not None:
                ring.wait(handle)
                blk = tuple(nxt)
            ring.wait(h2)
            acc = tuple(nacc)
    # after P sends each rank holds the accumulators of its own block
    if P > 1:
        ring.finish(x.device)
    return gx, acc[0], acc[1], gh


class _DistKernelSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cfg: _Cfg, x, y, w, h):
        outs, gathered = _forward(cfg, x, y, w, h)
        ctx.cfg = cfg
        if gathered is not None:
            ctx.save_for_backward(x, gathered[0], gathered[1], h, outs[0])
        else:
            ctx.save_for_backward(x, y, w, h, outs[0])
        return outs[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        cfg = ctx.cfg
        x, y, w, h, out = ctx.saved_tensors
        _, nx, ny, nw, nh = ctx.needs_input_grad
        nw = nw and w is not None
        g = g.contiguous()
        if cfg.schedule == "ring":
            gx, gy, gw, gh = _ring_backward(cfg, g, out, x, y, w, h, nx, ny, nw, nh)
            return None, gx, gy, gw, gh
        if cfg.schedule == "reduce":  # every rank's partial sum feeds every rank's loss
            (g,) = _reduce([g], cfg.group)
        if x.shape[cfg.bd] == 0 or y.shape[cfg.bd] == 0:
            gx, gy, gw, gh = (
                torch.zeros_like(x) if nx else None,
                torch.zeros_like(y) if ny else None,
                torch.zeros_like(w) if nw else None,
                torch.zeros_like(h) if nh else None,
            )
        else:
            gx, gy, gw, gh = _apply_bwd(cfg, g, out, x, y, w, h, False, nx, ny, nw, nh)
        if cfg.schedule == "gather":  # the gathered points' gradients go back to their owners
            gy, gw = _reduce([gy, gw], cfg.group)
            start = sum(cfg.counts_y[: cfg.rank])
            n = cfg.counts_y[cfg.rank]
            gy, gw = _narrow(gy, cfg.bd, start, n), _narrow(gw, cfg.bd, start, n)
            gy = None if gy is None else gy.contiguous()
            gw = None if gw is None else gw.contiguous()
        return None, gx, gy, gw, gh


# ---------------------------------------------------------------- public API
def choose_schedule(
    x_sharded: bool,
    y_sharded: bool,
    *,
    gathered_bytes: int = 0,
    exclude_self: bool = False,
    gather_limit_bytes: int = DEFAULT_GATHER_LIMIT,
) -> Optional[str]:
    """The automatic schedule for the layouts (None: both replicated, plain single-process op).

    x replicated + y sharded: "reduce"; x sharded + y replicated: "local"; both sharded: "gather"
    when the gathered points (and weights) take at most ``gather_limit_bytes`` per rank and no
    leave-one-out sum is asked, else "ring"."""
    if not y_sharded:
        return "local" if x_sharded else None
    if not x_sharded:
        return "reduce"
    if exclude_self or gathered_bytes > gather_limit_bytes:
        return "ring"
    return "gather"


_LAYOUT = {"reduce": (False, True), "local": (True, False), "ring": (True, True), "gather": (True, True)}


def _timeout(t, fn):
    if t is None or isinstance(t, datetime.timedelta):
        return t
    try:
        t = float(t)
    except (TypeError, ValueError):
        raise TypeError(
            f"kernelfuse.distributed.{fn}: argument 'timeout': expected seconds or a timedelta, got {type(t).__name__}"
        ) from None
    if not t > 0:
        raise ValueError(f"kernelfuse.distributed.{fn}: argument 'timeout': expected a positive number, got {t}")
    return datetime.timedelta(seconds=t)


def _run(
    fn,
    mode,
    x,
    y,
    weights,
    kernel,
    bandwidth,
    exclude_self,
    metric,
    p,
    schedule,
    x_sharded,
    y_sharded,
    group,
    gather_limit_bytes,
    timeout,
):
    wname = "weights" if mode == "sum" else "log_weights"
    x, y, w, h, metric, p = _prepare(fn, x, y, weights, bandwidth, kernel, wname, metric, p)
    if w is not None:
        w = w.contiguous()
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(
            f"kernelfuse.distributed.{fn}: argument 'schedule': expected None or one of "
            f"{', '.join(SCHEDULES)}, got {schedule!r}"
        )
    if schedule is not None:
        xs, ys = _LAYOUT[schedule]
        for name, given, implied in (("x_sharded", x_sharded, xs), ("y_sharded", y_sharded, ys)):
            if given is not None and bool(given) != implied:
                raise ValueError(
                    f"kernelfuse.distributed.{fn}: argument '{name}': schedule {schedule!r} needs "
                    f"{name}={implied}, got {given}"
                )
        x_sharded, y_sharded = xs, ys
    x_sharded = False if x_sharded is None else bool(x_sharded)
    y_sharded = True if y_sharded is None else bool(y_sharded)
    g, size, rank, ranks = group_info(group, fn)
    if x.dim() not in (2, 3) or y.dim() != x.dim():
        raise ValueError(
            f"kernelfuse.distributed.{fn}: argument 'y': expected x and y both (m, d) / (n, d) or both "
            f"batched (B, m, d) / (B, n, d), got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    bd = y.dim() - 2
    c = w.shape[-1] if (w is not None and w.dim() == y.dim()) else -1
    meta = [
        x.shape[bd],
        y.shape[bd],
        x.shape[-1],
        y.shape[-1],
        c,
        w is not None,
        x.shape[0] if bd else -1,
        y.shape[0] if bd else -1,
    ]
    allm = all_gather_sizes(meta, g, x.device).tolist()
    counts_x, counts_y = [a[0] for a in allm], [a[1] for a in allm]
    for k, what in (
        (2, "x's feature dimension"),
        (3, "y's feature dimension"),
        (4, "the weights' columns"),
        (5, "whether weights are given"),
        (6, "x's batch size"),
        (7, "y's batch size"),
    ):
        vals = sorted({a[k] for a in allm})
        if len(vals) > 1:
            raise ValueError(
                f"kernelfuse.distributed.{fn}: the ranks disagree on {what}: {[a[k] for a in allm]} (rank by rank)"
            )
    if not x_sharded and len(set(counts_x)) > 1:
        raise ValueError(
            f"kernelfuse.distributed.{fn}: argument 'x': replicated queries must have the same size on "
            f"every rank, got {counts_x} rows (rank by rank); pass x_sharded=True for sharded queries"
        )
    if not y_sharded and len(set(counts_y)) > 1:
        raise ValueError(
            f"kernelfuse.distributed.{fn}: argument 'y': replicated points must have the same size on "
            f"every rank, got {counts_y} rows (rank by rank); pass y_sharded=True for sharded points"
        )
    row_bytes = y.element_size() * y.shape[-1] * (y.shape[0] if bd else 1)
    if w is not None:
        row_bytes += w.element_size() * (max(c, 1)) * (w.shape[0] if bd else 1)
    if schedule is None:
        schedule = choose_schedule(
            x_sharded,
            y_sharded,
            gathered_bytes=sum(counts_y) * row_bytes,
            exclude_self=exclude_self,
            gather_limit_bytes=gather_limit_bytes,
        )
    if exclude_self:
        if schedule != "ring":
            raise ValueError(
                f"kernelfuse.distributed.{fn}: argument 'exclude_self': leave-one-out sums need the "
                f"'ring' schedule (x and y the same shards), got schedule {schedule!r}"
            )
        if counts_x != counts_y:
            raise ValueError(
                f"kernelfuse.distributed.{fn}: argument 'exclude_self': x and y must be the same shards, "
                f"got {counts_x} query rows and {counts_y} point rows (rank by rank)"
            )
    if schedule is None:  # nothing sharded: the single-process op
        args = dict(kernel=kernel, bandwidth=h, exclude_self=exclude_self, metric=metric, p=p)
        from ..ops import kde as _kde

        if mode == "sum":
            return _kde.kernel_sum(x, y, w, **args)
        if mode == "lse":
            return _kde.kernel_logsumexp(x, y, w, **args)
        return _kde.kernel_logsumexp_sq(x, y, w, **args)
    cfg = _Cfg(
        fn,
        mode,
        schedule,
        kernel,
        bool(exclude_self),
        metric,
        p,
        g,
        size,
        rank,
        ranks,
        counts_x,
        counts_y,
        bd,
        _timeout(timeout, fn),
    )
    if mode == "lse_sq":
        with torch.no_grad():
            outs, _ = _forward(cfg, x, y, w, h)
        return outs
    return _DistKernelSum.apply(cfg, x, y, w, h)


_DOC_ARGS = """
    Distributed arguments:
        schedule: None (automatic), "reduce", "local", "ring" or "gather" (module docstring).
        x_sharded / y_sharded: the layouts, when ``schedule`` is None: x replicated (default) or
            sharded (each rank passes its own rows), y sharded (default) or replicated. The
            weights follow y. Shards may be uneven or empty; batched inputs are sharded along the
            points dimension.
        group: the process group (None: the default group).
        gather_limit_bytes: with both sharded and ``schedule=None``, the size of the gathered
            points above which the ring is used instead of an all-gather.
        timeout: seconds (or a timedelta) each ring exchange may wait before every rank raises
            (default: the process group's timeout).
"""


def kernel_sum(
    x,
    y,
    weights=None,
    *,
    kernel: str = "gaussian",
    bandwidth=1.0,
    exclude_self: bool = False,
    metric: str = "euclidean",
    p: float = 2.0,
    schedule: Optional[str] = None,
    x_sharded: Optional[bool] = None,
    y_sharded: Optional[bool] = None,
    group=None,
    gather_limit_bytes: int = DEFAULT_GATHER_LIMIT,
    timeout=None,
) -> torch.Tensor:
    """:func:`kernelfuse.kernel_sum` over sharded points (and queries).

    Same kernels, metrics, bandwidths, weights layouts and result as the single-process op on the
    concatenated shards (float64: within 1e-12 relative; the sums only change order). Returns the
    rows of this rank's queries (all queries when x is replicated). ``exclude_self`` (x and y the
    same shards) needs the ring.
    """
    return _run(
        "kernel_sum",
        "sum",
        x,
        y,
        weights,
        kernel,
        bandwidth,
        exclude_self,
        metric,
        p,
        schedule,
        x_sharded,
        y_sharded,
        group,
        gather_limit_bytes,
        timeout,
    )


def kernel_logsumexp(
    x,
    y,
    log_weights=None,
    *,
    kernel: str = "gaussian",
    bandwidth=1.0,
    exclude_self: bool = False,
    metric: str = "euclidean",
    p: float = 2.0,
    schedule: Optional[str] = None,
    x_sharded: Optional[bool] = None,
    y_sharded: Optional[bool] = None,
    group=None,
    gather_limit_bytes: int = DEFAULT_GATHER_LIMIT,
    timeout=None,
) -> torch.Tensor:
    """:func:`kernelfuse.kernel_logsumexp` over sharded points (and queries); partial results are
    combined stably (max / rescaled-sum all-reduce, or a running logaddexp along the ring)."""
    return _run(
        "kernel_logsumexp",
        "lse",
        x,
        y,
        log_weights,
        kernel,
        bandwidth,
        exclude_self,
        metric,
        p,
        schedule,
        x_sharded,
        y_sharded,
        group,
        gather_limit_bytes,
        timeout,
    )


def kernel_logsumexp_sq(
    x,
    y,
    log_weights=None,
    *,
    kernel: str = "gaussian",
    bandwidth=1.0,
    exclude_self: bool = False,
    metric: str = "euclidean",
    p: float = 2.0,
    schedule: Optional[str] = None,
    x_sharded: Optional[bool] = None,
    y_sharded: Optional[bool] = None,
    group=None,
    gather_limit_bytes: int = DEFAULT_GATHER_LIMIT,
    timeout=None,
):
    """(lse, lse2) of :func:`kernelfuse.ops.kde.kernel_logsumexp_sq` over sharded points; not differentiable."""
    return _run(
        "kernel_logsumexp_sq",
        "lse_sq",
        x,
        y,
        log_weights,
        kernel,
        bandwidth,
        exclude_self,
        metric,
        p,
        schedule,
        x_sharded,
        y_sharded,
        group,
        gather_limit_bytes,
        timeout,
    )


for _f in (kernel_sum, kernel_logsumexp, kernel_logsumexp_sq):
    _f.__doc__ += (
        _DOC_ARGS
        + """
    Under torch.compile the call is not traced (torch.compiler.disable): the compiled function
    breaks its graph here, the shard exchange, collectives and ring run eagerly, and the code
    around the call is compiled. fullgraph=True therefore raises.
"""
    )

# Dynamo cannot trace the run-time shard-size exchange and the point-to-point ring; excluding the
# whole call keeps compiled callers to one graph break per call instead of one per collective.
kernel_sum = torch.compiler.disable(kernel_sum)
kernel_logsumexp = torch.compiler.disable(kernel_logsumexp)
kernel_logsumexp_sq = torch.compiler.disable(kernel_logsumexp_sq)
