"""A strict, in-process stand-in for NCCL's point-to-point rules, to test schedules.

Stages run as threads of one process; each gets :class:`StrictLinks` on a shared
:class:`StrictNetwork`, and a :class:`pipelines.engine.p2p.Transport` over them. The
network enforces what NCCL (as PyTorch drives it with ``batch_isend_irecv``) guarantees
and nothing more:

- a rank's groups run one after another in issue order, on one stream, whatever the peer;
- a send completes only when the matching receive is in the peer's running group (no
  buffering, however small the message);
- matching is per ordered pair in issue order: the k-th send from a to b meets the k-th
  receive at b from a (no tags);
- the operations of one group progress together; the group completes when all have, and
  only then may a rank read what it received.

Headers travel on a buffered host channel, as they do on the gloo header group. A rank
that waits longer than ``timeout`` seconds fails every rank with :class:`TransportDeadlock`,
whose message lists what each rank waited on and the groups queued on its stream.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

import torch

from pipelines.engine.p2p import Op


class TransportDeadlock(RuntimeError):
    """No rank can make progress: the message says which ranks waited on what."""


@dataclass(eq=False)
class _Slot:
    """One payload operation in flight."""

    op: Op
    rank: int
    seq: int
    done: bool = False

    def describe(self) -> str:
        arrow = f"send->{self.op.peer}" if self.op.send else f"recv<-{self.op.peer}"
        return f"{arrow} #{self.seq} {tuple(self.op.tensor.shape)}"


@dataclass(eq=False)
class _Group:
    rank: int
    number: int
    slots: list[_Slot] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(s.done for s in self.slots)

    def describe(self) -> str:
        return f"group {self.number} [{', '.join(s.describe() + (' done' if s.done else '') for s in self.slots)}]"


class StrictNetwork:
    """The wire shared by ``world`` ranks (threads)."""

    def __init__(self, world: int, timeout: float = 20.0) -> None:
        self.world = world
        self.timeout = timeout
        self._cond = threading.Condition()
        self._streams: list[deque[_Group]] = [deque() for _ in range(world)]
        self._headers: dict[tuple[int, int], deque[torch.Tensor]] = defaultdict(deque)
        self._next_seq: dict[tuple[bool, int, int], int] = defaultdict(int)
        self._groups = [0] * world
        self._waiting: dict[int, str] = {}
        self._failure: str | None = None
        self.completed_groups = 0

    def links(self, rank: int) -> StrictLinks:
        return StrictLinks(self, rank)

    # -- payload groups ------------------------------------------------------------------
    def post(self, rank: int, ops: list[Op]) -> _Group:
        with self._cond:
            self._groups[rank] += 1
            group = _Group(rank, self._groups[rank])
            for op in ops:
                key = (op.send, rank, op.peer) if op.send else (op.send, op.peer, rank)
                group.slots.append(_Slot(op, rank, self._next_seq[key]))
                self._next_seq[key] += 1
            self._streams[rank].append(group)
            self._progress()
            return group

    def _progress(self) -> None:
        """Match what the running groups allow, until nothing more does."""
        moved = True
        while moved:
            moved = False
            for rank, stream in enumerate(self._streams):
                if not stream:
                    continue
                for slot in stream[0].slots:
                    if slot.done or not slot.op.send:
                        continue
                    peer_stream = self._streams[slot.op.peer] if slot.op.peer < self.world else ()
                    if not peer_stream:
                        continue
                    match = next((s for s in peer_stream[0].slots if not s.done and not s.op.send
                                  and s.op.peer == rank and s.seq == slot.seq), None)
                    if match is None:
                        continue
                    self._deliver(slot, match)
                    moved = True
            for stream in self._streams:
                while stream and stream[0].complete:
                    stream.popleft()
                    self.completed_groups += 1
                    moved = True
        self._cond.notify_all()

    def _deliver(self, send: _Slot, recv: _Slot) -> None:
        src, dst = send.op.tensor, recv.op.tensor
        if src.shape != dst.shape or src.dtype != dst.dtype:
            self._failure = (f"rank {recv.rank} posted a {dst.dtype} {tuple(dst.shape)} buffer for send #{send.seq} "
                             f"of rank {send.rank}, which is {src.dtype} {tuple(src.shape)}")
            raise TransportDeadlock(self._failure)
        dst.copy_(src)
        send.done = recv.done = True

    def wait(self, rank: int, group: _Group) -> None:
        self._block(rank, lambda: group.complete, f"its {group.describe()}")

    # -- headers -------------------------------------------------------------------------
    def post_header(self, rank: int, header: torch.Tensor, dst: int) -> None:
        with self._cond:
            self._headers[(rank, dst)].append(header.clone())
            self._cond.notify_all()

    def read_header(self, rank: int, src: int) -> torch.Tensor:
        queue = self._headers[(src, rank)]
        self._block(rank, lambda: bool(queue), f"a header from rank {src}")
        with self._cond:
            return queue.popleft()

    # -- waiting -------------------------------------------------------------------------
    def _block(self, rank: int, ready, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        with self._cond:
            self._waiting[rank] = what
            try:
                while not ready():
                    if self._failure is not None:
                        raise TransportDeadlock(self._failure)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._failure = self.report(f"rank {rank} waited {self.timeout:.0f} s")
                        self._cond.notify_all()
                        raise TransportDeadlock(self._failure)
                    self._cond.wait(min(left, 0.5))
            finally:
                self._waiting.pop(rank, None)

    def fail(self, reason: str) -> None:
        """Release every waiting rank with ``reason`` (a rank's thread raised)."""
        with self._cond:
            self._failure = self._failure or reason
            self._cond.notify_all()

    def report(self, headline: str) -> str:
        """What each rank waits on, and the groups on its stream (the running one first)."""
        lines = [f"{headline}; no rank can make progress:"]
        for rank in range(self.world):
            waiting = self._waiting.get(rank, "nothing (running, or done)")
            queued = "; ".join(g.describe() for g in self._streams[rank]) or "empty"
            lines.append(f"  rank {rank} waits on {waiting}; stream: {queued}")
        return "\n".join(lines)


class StrictLinks:
    """One rank's view of a :class:`StrictNetwork` (the ``Links`` a Transport needs)."""

    def __init__(self, network: StrictNetwork, rank: int) -> None:
        self.network = network
        self.rank = rank

    def post_header(self, header: torch.Tensor, dst: int) -> None:
        self.network.post_header(self.rank, header, dst)

    def read_header(self, src: int) -> torch.Tensor:
        return self.network.read_header(self.rank, src)

    def post(self, ops: list[Op]) -> _Group:
        return self.network.post(self.rank, ops)

    def wait(self, handle: _Group | None) -> None:
        if handle is not None:
            self.network.wait(self.rank, handle)

    def wait_receives(self, handle: _Group) -> None:
        self.network.wait(self.rank, handle)  # NCCL: received data is readable once the whole group is
