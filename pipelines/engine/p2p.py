"""Point-to-point transport between pipeline stages, safe under NCCL's rules.

NCCL's point-to-point semantics are stricter than gloo's: ``ncclSend`` blocks the GPU
until the peer posts the matching ``ncclRecv``; a rank's operations run in issue order
on one stream (PyTorch puts batched P2P on the process group's communicator); matching
is per pair in order, tags are ignored; only operations fused in one group
(``batch_isend_irecv``) progress together. A schedule that sends micro-batch 1's
activations before receiving micro-batch 0's gradient, while its neighbour sends that
gradient before receiving those activations, deadlocks (1F1B's steady state did).

So a stage never issues a lone send that its next receive could wait behind: sends are
*posted* (:meth:`Transport.post`) and go out fused with the stage's next receive
(:meth:`Transport.receive`: one ``batch_isend_irecv`` group), or alone right before the
stage computes (:meth:`Transport.ship`) when no receive comes first. In 1F1B this pairs
"send activation i + receive gradient j" with the neighbour's "send gradient j +
receive activation i", as ``torch.distributed.pipelining`` does.

Bucketing makes every batch a different shape, so each activation (one tensor, or a
tuple: an encoder-decoder's ``(memory, target tokens)``) is announced by one small int64 header
``(count, then per tensor: dtype code, ndim, dims padded to MAX_DIMS)`` on a separate
gloo group on the host (:attr:`Topology.header_group`). Headers are posted the moment a
message is, so a receiver learns the shapes it must allocate without a GPU-to-host sync
and without a header ever queueing behind a payload on the NCCL stream. Gradients need
none: they have the shapes of the activations they answer, which their receiver sent. With gloo
payloads and CUDA tensors (two stage processes sharing one GPU), payloads are staged
through host memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.bool,
          torch.uint8]
MAX_DIMS = 6
MAX_TENSORS = 8
FIELDS = 2 + MAX_DIMS  # dtype code, ndim, dims
HEADER = 2 + MAX_TENSORS * FIELDS  # count, tuple flag, then the tensors

Message = torch.Tensor | tuple[torch.Tensor, ...]


def floats(x: Message) -> list[torch.Tensor]:
    """The floating-point tensors of a message: the ones gradients travel back for."""
    return [t for t in (x if isinstance(x, tuple) else (x,)) if t.is_floating_point()]


@dataclass
class Op:
    """One payload operation of a group: send ``tensor`` to ``peer``, or receive into it."""

    send: bool
    tensor: torch.Tensor
    peer: int


class Links(Protocol):
    """What a :class:`Transport` needs of the wire: a buffered host channel for headers
    and grouped payload operations. :class:`TorchLinks` is ``torch.distributed``;
    ``pipelines.engine.strict_links`` a simulator that enforces NCCL's rules."""

    def post_header(self, header: torch.Tensor, dst: int) -> Any:
        """Send a header without waiting; returns a handle that ``wait`` accepts."""

    def read_header(self, src: int) -> torch.Tensor:
        """The next header from ``src`` (blocks until it is there)."""

    def post(self, ops: list[Op]) -> Any:
        """Issue ``ops`` as one group; returns a handle for ``wait``."""

    def wait(self, handle: Any) -> None:
        """Until the group (or header send) behind ``handle`` completed."""

    def wait_receives(self, handle: Any) -> None:
        """Until the receives of the group behind ``handle`` completed (at least)."""


class TorchLinks:
    """``torch.distributed``: payloads in ``batch_isend_irecv`` groups on the default
    group (every P2P op, even a lone one, so a pair's operations never split between
    NCCL's per-pair and batched communicators), headers on ``header_group`` (gloo)."""

    def __init__(self, header_group: Any) -> None:
        self.header_group = header_group

    def post_header(self, header: torch.Tensor, dst: int) -> Any:
        return [(False, dist.isend(header, dst, group=self.header_group))]

    def read_header(self, src: int) -> torch.Tensor:
        header = torch.empty(HEADER, dtype=torch.int64)
        dist.recv(header, src, group=self.header_group)
        return header

    def post(self, ops: list[Op]) -> Any:
        works = dist.batch_isend_irecv([dist.P2POp(dist.isend if op.send else dist.irecv, op.tensor, op.peer)
                                        for op in ops])
        # (is a receive, work) per op; one coalesced work (NCCL) stands for the group
        return [(not op.send, w) for op, w in zip(ops, works)] if len(works) == len(ops) else [(True, works[0])]

    def wait(self, handle: Any) -> None:
        """Wait once for each work not waited yet (a gloo work must not be waited twice:
        its buffer would wait for a second message)."""
        while handle:
            handle.pop()[1].wait()

    def wait_receives(self, handle: Any) -> None:
        for entry in [e for e in handle if e[0]]:
            handle.remove(entry)
            entry[1].wait()


def encode_header(tensors: list[torch.Tensor], is_tuple: bool) -> torch.Tensor:
    """The header announcing ``tensors`` (see the module docstring)."""
    if len(tensors) > MAX_TENSORS:
        raise ValueError(f"cannot send {len(tensors)} tensors in one message (at most {MAX_TENSORS})")
    header = torch.zeros(HEADER, dtype=torch.int64)
    header[0], header[1] = len(tensors), int(is_tuple)
    for k, t in enumerate(tensors):
        if t.dim() > MAX_DIMS:
            raise ValueError(f"cannot send a {t.dim()}-d tensor (at most {MAX_DIMS} dims)")
        if t.dtype not in DTYPES:
            raise ValueError(f"cannot send a {t.dtype} tensor (known: {DTYPES})")
        base = 2 + k * FIELDS
        header[base], header[base + 1] = DTYPES.index(t.dtype), t.dim()
        header[base + 2 : base + 2 + t.dim()] = torch.tensor(t.shape, dtype=torch.int64)
    return header


def decode_header(header: torch.Tensor) -> tuple[list[tuple[torch.dtype, list[int]]], bool]:
    """``([(dtype, shape) per tensor], is_tuple)`` of a header."""
    values = header.tolist()
    layout = []
    for k in range(values[0]):
        base = 2 + k * FIELDS
        layout.append((DTYPES[values[base]], values[base + 2 : base + 2 + values[base + 1]]))
    return layout, bool(values[1])


class Transport:
    """Sends and receives variable-shape messages between this stage and its neighbours.

    ``post`` defers a send; ``receive`` issues the deferred sends and the receive as one
    group and returns the message; ``ship`` issues the deferred sends alone (call it
    before computing); ``flush`` ships and waits for every send to complete (a sent
    buffer must outlive its operation).

    A message posted with ``headed=False`` travels without a header: its receiver passes
    ``like``, the tensors whose shapes and dtypes it has (a gradient has the shape of
    the activation it answers, which the receiver sent). Such a receive never waits on
    a header, which is what makes fusing every send with the next receive safe: the
    only header a fused group waits on is an activation's, which the upstream stage
    computes before it needs anything this stage sends it.
    """

    def __init__(self, links: Links, device: torch.device, *, host_staging: bool = False) -> None:
        self.links = links
        self.device = device
        self.host_staging = host_staging  # gloo payloads of CUDA tensors go through host memory
        self._outbox: list[tuple[Message, int, bool]] = []  # (message, destination, headed)
        self._pending: list[tuple[Any, list[torch.Tensor]]] = []
        self.groups = 0  # payload groups issued (what the tests and the benchmark count)
        self.headers = 0  # headers read, and the seconds spent blocked reading them (bench/pipeline.py)
        self.header_s = 0.0

    @classmethod
    def over_torch(cls, topology, device: torch.device) -> Transport:
        """The transport of a ``torch.distributed`` run (``topology`` made by
        :meth:`Topology.create`, which makes the header group)."""
        staging = device.type != "cpu" and dist.is_initialized() and dist.get_backend() == "gloo"
        return cls(TorchLinks(topology.header_group), device, host_staging=staging)

    def post(self, message: Message, dst: int, *, headed: bool = True) -> None:
        """Send ``message`` to ``dst`` with the next receive, or the next ship."""
        self._outbox.append((message, dst, headed))

    def receive(self, src: int, like: list[torch.Tensor] | None = None) -> Message:
        """The next message from ``src`` (shaped ``like``, for one posted without a
        header), in one group with everything posted."""
        return self.exchange(self._take_outbox(), [(src, like)])[0]

    def ship(self) -> bool:
        """Issue the posted sends as one group; whether there were any."""
        if not self._outbox:
            return False
        self.exchange(self._take_outbox(), [])
        return True

    def flush(self) -> None:
        """Ship what is posted, then wait for every send."""
        self.ship()
        for handle, _ in self._pending:
            self.links.wait(handle)
        self._pending.clear()

    def _take_outbox(self) -> list[tuple[Message, int, bool]]:
        outbox, self._outbox = self._outbox, []
        return outbox

    def exchange(self, sends: list[tuple[Message, int, bool]],
                 recvs: list[tuple[int, list[torch.Tensor] | None]]) -> list[Message]:
        """Send ``sends`` ``(message, dst, headed)`` and receive one message from each
        ``(src, like)`` of ``recvs``, in one group."""
        ops: list[Op] = []
        kept: list[torch.Tensor] = []
        for message, dst, headed in sends:
            tensors = list(message) if isinstance(message, tuple) else [message]
            if headed:
                header = encode_header(tensors, isinstance(message, tuple))
                self._pending.append((self.links.post_header(header, dst), [header]))
            payloads = [self._wire(t) for t in tensors]
            ops += [Op(True, p, dst) for p in payloads]
            kept += payloads
        received = []
        wire_device = torch.device("cpu") if self.host_staging else self.device
        for src, like in recvs:
            if like is None:
                start = time.perf_counter()
                header = self.links.read_header(src)
                self.header_s += time.perf_counter() - start
                self.headers += 1
                layout, is_tuple = decode_header(header)
            else:
                layout, is_tuple = [(t.dtype, list(t.shape)) for t in like], len(like) > 1
            buffers = [torch.empty(shape, dtype=dtype, device=wire_device) for dtype, shape in layout]
            ops += [Op(False, b, src) for b in buffers]
            received.append((buffers, is_tuple))
        if not ops:
            return []
        handle = self.links.post(ops)
        self.groups += 1
        self._pending.append((handle, kept))
        if recvs:
            self.links.wait_receives(handle)
        return [self._message(buffers, is_tuple) for buffers, is_tuple in received]

    def _wire(self, tensor: torch.Tensor) -> torch.Tensor:
        payload = tensor.detach().contiguous()  # gloo and NCCL take contiguous buffers only
        return payload.cpu() if self.host_staging else payload

    def _message(self, buffers: list[torch.Tensor], is_tuple: bool) -> Message:
        if self.host_staging:
            buffers = [b.to(self.device) for b in buffers]
        return tuple(buffers) if is_tuple else buffers[0]
