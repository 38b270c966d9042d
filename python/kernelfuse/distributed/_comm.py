"""Small torch.distributed helpers: group, sizes, uneven all-gather, the ring exchange.

Everything goes through torch.distributed (gloo on CPU, NCCL on GPU); nothing here opens a socket.
"""

from __future__ import annotations

import datetime
from typing import List, Optional, Sequence

import torch
import torch.distributed as dist

__all__ = ["group_info", "all_gather_sizes", "all_gather_rows", "all_reduce_sum", "Ring", "comm_stats"]


class _Stats:
    """Bytes this process sent with the helpers below (point-to-point and collectives, payload
    only), for the benchmark; ``reset()`` between measurements."""

    def __init__(self):
        self.p2p_bytes = 0
        self.collective_bytes = 0
        self.messages = 0

    def reset(self):
        self.p2p_bytes = self.collective_bytes = self.messages = 0


comm_stats = _Stats()


def group_info(group, fn: str):
    """(group, size, rank, global ranks) of ``group`` (None: the default group)."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            f"kernelfuse.distributed.{fn}: torch.distributed is not initialised; call "
            "torch.distributed.init_process_group first (e.g. under torchrun)"
        )
    g = group if group is not None else dist.group.WORLD
    size, rank = dist.get_world_size(g), dist.get_rank(g)
    ranks = dist.get_process_group_ranks(g) if g is not dist.group.WORLD else list(range(size))
    return g, size, rank, ranks


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def all_reduce_sum(tensors: Sequence[torch.Tensor], group, *, op=dist.ReduceOp.SUM) -> List[torch.Tensor]:
    """All-reduce several tensors of one dtype and device in one collective (flattened, concatenated)."""
    tensors = list(tensors)
    if not tensors:
        return []
    flat = torch.cat([t.reshape(-1) for t in tensors])
    comm_stats.collective_bytes += _bytes(flat)
    dist.all_reduce(flat, op=op, group=group)
    out, k = [], 0
    for t in tensors:
        out.append(flat[k : k + t.numel()].reshape(t.shape))
        k += t.numel()
    return out


def all_gather_sizes(values: Sequence[int], group, device) -> torch.Tensor:
    """(P, len(values)) int64 tensor of every rank's values (one small all-gather)."""
    g, size = group, dist.get_world_size(group)
    mine = torch.tensor(list(values), dtype=torch.int64, device=device)
    out = [torch.empty_like(mine) for _ in range(size)]
    dist.all_gather(out, mine, group=g)
    return torch.stack(out).cpu()


def all_gather_rows(t: torch.Tensor, counts: Sequence[int], dim: int, group) -> torch.Tensor:
    """Concatenate every rank's ``t`` along ``dim`` (uneven sizes ``counts``): pad to the largest, gather, cut."""
    mx = max(counts)
    shape = list(t.shape)
    shape[dim] = mx
    pad = t.new_zeros(shape)
    pad.narrow(dim, 0, t.shape[dim]).copy_(t)
    parts = [torch.empty_like(pad) for _ in counts]
    comm_stats.collective_bytes += _bytes(pad) * (len(counts) - 1)
    dist.all_gather(parts, pad.contiguous(), group=group)
    return torch.cat([p.narrow(dim, 0, c) for p, c in zip(parts, counts)], dim=dim)


class Ring:
    """One step of the ring: send tensors to rank + 1, receive the same-shaped tensors from rank - 1.

    Empty tensors are not sent (both sides know every shard's size). ``wait`` converts a failed
    or timed-out exchange into a RuntimeError naming the step and the peers, so that a rank that
    dies mid-ring makes its neighbours raise, and they in turn make theirs raise.
    """

    def __init__(
        self, group, size: int, rank: int, ranks: Sequence[int], fn: str, timeout: Optional[datetime.timedelta]
    ):
        self.group, self.size, self.rank, self.fn = group, size, rank, fn
        self.next_rank = ranks[(rank + 1) % size]
        self.prev_rank = ranks[(rank - 1) % size]
        self.timeout = timeout

    def start(
        self,
        send: Sequence[Optional[torch.Tensor]],
        recv_like: Sequence[Optional[torch.Tensor]],
        step: int,
        tag: int = 0,
    ):
        """Post the sends of ``send`` and receives into fresh tensors shaped like ``recv_like``
        (message k tagged ``tag + k``); returns (handle, received tensors)."""
        try:
            return self._start(send, recv_like, step, tag)
        except RuntimeError as e:  # a peer already gone: posting fails at once
            raise RuntimeError(
                f"kernelfuse.distributed.{self.fn}: ring step {step} of {self.size}: posting the exchange with "
                f"ranks {self.prev_rank} (receive) / {self.next_rank} (send) failed: {e}"
            ) from e

    def _start(self, send, recv_like, step, tag):
        works, received, keep = [], [], []
        for k, t in enumerate(send):
            if t is not None and t.numel() > 0:
                t = t.contiguous()
                keep.append(t)
                comm_stats.p2p_bytes += _bytes(t)
                comm_stats.messages += 1
                works.append(dist.isend(t, dst=self.next_rank, group=self.group, tag=tag + k))
        for k, t in enumerate(recv_like):
            if t is None:
                received.append(None)
                continue
            buf = torch.empty_like(t, memory_format=torch.contiguous_format)
            if buf.numel() > 0:
                works.append(dist.irecv(buf, src=self.prev_rank, group=self.group, tag=tag + k))
            received.append(buf)
        return (works, step, keep), received

    def finish(self, device):
        """One tiny all-reduce after the last step: every rank completes the ring or every rank
        raises (a rank downstream of a failure could otherwise have received all its blocks)."""
        flag = torch.ones(1, dtype=torch.int32, device=device)
        comm_stats.collective_bytes += 4
        try:
            work = dist.all_reduce(flag, group=self.group, async_op=True)
            ok = work.wait(self.timeout) if self.timeout is not None else work.wait()
        except Exception as e:
            raise RuntimeError(
                f"kernelfuse.distributed.{self.fn}: ring step {self.size} of {self.size} "
                f"(completion check): a rank did not complete the ring: {e}"
            ) from e
        if ok is False or int(flag.item()) != self.size:
            raise RuntimeError(
                f"kernelfuse.distributed.{self.fn}: ring step {self.size} of {self.size} "
                f"(completion check): a rank did not complete the ring"
            )

    def wait(self, handle):
        works, step, _keep = handle
        for w in works:
            try:
                if self.timeout is not None:
                    ok = w.wait(self.timeout)
                else:
                    ok = w.wait()
            except Exception as e:  # gloo: connection closed / timeout; NCCL: watchdog errors
                raise RuntimeError(
                    f"kernelfuse.distributed.{self.fn}: ring step {step} of {self.size}: the exchange with "
                    f"ranks {self.prev_rank} (receive) / {self.next_rank} (send) failed: {e}"
                ) from e
            if ok is False:
                raise RuntimeError(
                    f"kernelfuse.distributed.{self.fn}: ring step {step} of {self.size}: the exchange with "
                    f"ranks {self.prev_rank} / {self.next_rank} timed out after {self.timeout}"
                )
