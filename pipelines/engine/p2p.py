"""Point-to-point transport between pipeline stages (``torch.distributed``: gloo on CPU,
NCCL on GPU).

Bucketing makes every batch a different shape, so each message is a fixed-size header
``int64[9] = (dtype code, ndim, dim0, ..., dim5, group)`` followed by the payload; the
receiver allocates from the header. What crosses a stage boundary is one tensor or a
tuple of them (an encoder-decoder's ``(memory, target tokens)``): ``group`` is 0 for a
lone tensor, else the tuple's size on its first tensor (-1 on the others). No padding to a global maximum, no shape agreed in advance
(what ``torch.distributed.pipelining`` needs).

Sends are non-blocking (``isend``): in 1F1B a stage sends activations downstream while
its neighbour sends gradients upstream, and two blocking sends would wait on each other.
Each channel (activation or gradient, per direction) has its own tag, so messages of
one kind stay in order between a pair of ranks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.bool]
HEADER = 9
MAX_DIMS = HEADER - 3

Message = torch.Tensor | tuple[torch.Tensor, ...]

ACTIVATION = 1
GRADIENT = 2


class Transport:
    """Sends and receives variable-shape tensors; keeps pending sends alive until
    :meth:`flush` (a sent buffer must outlive its ``isend``)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pending: list[tuple[dist.Work, torch.Tensor, torch.Tensor]] = []

    def send(self, message: Message, dst: int, channel: int) -> None:
        if isinstance(message, torch.Tensor):
            self._send_one(message, dst, channel, 0)
            return
        for k, tensor in enumerate(message):
            self._send_one(tensor, dst, channel, len(message) if k == 0 else -1)

    def recv(self, src: int, channel: int) -> Message:
        first, group = self._recv_one(src, channel)
        if group == 0:
            return first
        return (first, *(self._recv_one(src, channel)[0] for _ in range(group - 1)))

    def _send_one(self, tensor: torch.Tensor, dst: int, channel: int, group: int) -> None:
        if tensor.dim() > MAX_DIMS:
            raise ValueError(f"cannot send a {tensor.dim()}-d tensor (at most {MAX_DIMS} dims)")
        payload = tensor.detach().contiguous()  # gloo rejects views (e.g. batch_first LSTM output)
        header = torch.zeros(HEADER, dtype=torch.int64, device=self.device)
        header[0] = DTYPES.index(payload.dtype)
        header[1] = payload.dim()
        header[2 : 2 + payload.dim()] = torch.tensor(payload.shape, dtype=torch.int64)
        header[HEADER - 1] = group
        work_h = dist.isend(header, dst, tag=2 * channel)
        work_p = dist.isend(payload, dst, tag=2 * channel + 1)
        self._pending += [(work_h, header, header), (work_p, payload, payload)]

    def _recv_one(self, src: int, channel: int) -> tuple[torch.Tensor, int]:
        header = torch.empty(HEADER, dtype=torch.int64, device=self.device)
        dist.recv(header, src, tag=2 * channel)
        dtype = DTYPES[int(header[0])]
        shape = [int(d) for d in header[2 : 2 + int(header[1])]]
        payload = torch.empty(shape, dtype=dtype, device=self.device)
        dist.recv(payload, src, tag=2 * channel + 1)
        return payload, int(header[HEADER - 1])

    def flush(self) -> None:
        """Wait for every pending send."""
        for work, _, _ in self._pending:
            work.wait()
        self._pending.clear()
