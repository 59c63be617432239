"""Pipeline schedules over micro-batches: GPipe (fill-drain) and 1F1B (the wavefront
schedule over time chunks lives in ``pipelines.wavefront``).

One training step on one stage, for ``m`` micro-batches (forward ``F``, backward ``B``;
stage ``s`` of ``p``)::

    gpipe:  F0 F1 .. F(m-1)  B(m-1) .. B1 B0
    1f1b:   F0 .. F(w-1)  [F(w+i) B(i)]*  B(m-w) .. B(m-1)    with w = min(p - s - 1, m)

1F1B keeps at most ``p - s`` micro-batches of activations alive instead of ``m``. Both
give identical gradients: the loss of each micro-batch is ``sum(loss) / denominator``
(``denominator`` = examples in the step over all replicas), so accumulated gradients
equal one pass over the whole batch.

What crosses stages (``pipelines.p2p``): activations ``(B_i, T_i, width)`` forward,
their gradients backward. What every stage of a replica shares (``StepPlan``, broadcast
by stage 0 each step): each micro-batch's ``lengths (B_i,)`` and, for the last stage's
loss, its ``labels (B_i,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from models.dropout import dropout_key
from pipelines.p2p import ACTIVATION, GRADIENT, Transport
from pipelines.timeline import Timeline
from pipelines.topology import Topology

SCHEDULES = ("gpipe", "1f1b", "wavefront")


@dataclass
class StepPlan:
    """The micro-batches of one step: ``lengths[i] (B_i,)`` and ``labels[i] (B_i,)``;
    ``tokens[i] (B_i, T_i)`` only on the first stage. No micro-batches: no more data."""

    lengths: list[torch.Tensor]
    labels: list[torch.Tensor]
    tokens: list[torch.Tensor] | None = None

    @property
    def examples(self) -> int:
        return sum(len(x) for x in self.lengths)

    @property
    def tokens_count(self) -> int:
        return int(sum(int(x.sum()) for x in self.lengths))


def split_batch(tokens: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, microbatches: int) -> StepPlan:
    """Cut a padded batch into ``microbatches`` row chunks, each trimmed to its own
    longest row (dynamic unrolling: no step runs over padding it does not need)."""
    chunks = torch.arange(len(lengths)).tensor_split(min(microbatches, len(lengths)))
    plan = StepPlan([], [], [])
    for rows in chunks:
        width = int(lengths[rows].max())
        plan.tokens.append(tokens[rows, :width])
        plan.lengths.append(lengths[rows])
        plan.labels.append(labels[rows])
    return plan


def broadcast_plan(plan: StepPlan | None, topology: Topology, device: torch.device) -> StepPlan:
    """Stage 0 sends the step's lengths and labels to every stage of its replica.

    ``plan=None`` on stage 0 means the data ran out: every stage gets an empty plan.
    """
    if topology.pp == 1:
        return plan if plan is not None else StepPlan([], [])
    src = topology.stage_rank(0)
    group = topology.pipeline_group
    header = torch.zeros(2, dtype=torch.int64, device=device)
    if topology.is_first and plan is not None:
        header[0], header[1] = len(plan.lengths), plan.examples
    dist.broadcast(header, src, group=group)
    count, rows = int(header[0]), int(header[1])
    if count == 0:
        return StepPlan([], [])
    body = torch.zeros(count + 2 * rows, dtype=torch.int64, device=device)
    if topology.is_first:
        body[:count] = torch.tensor([len(x) for x in plan.lengths])
        body[count : count + rows] = torch.cat(plan.lengths)
        body[count + rows :] = torch.cat(plan.labels).to(device)
    dist.broadcast(body, src, group=group)
    if topology.is_first:
        return plan
    sizes = body[:count].tolist()
    return StepPlan(list(body[count : count + rows].cpu().split(sizes)), list(body[count + rows :].split(sizes)))


class StageRunner:
    """Runs this worker's stage of the model through a schedule.

    ``module(x, lengths)`` maps the stage's input (token ids on the first stage,
    activations ``(B, T, width)`` elsewhere) to its output (logits on the last stage).
    """

    def __init__(self, module: torch.nn.Module, topology: Topology, device: torch.device, *,
                 label_smoothing: float = 0.0, timeline: Timeline | None = None, time_chunks: int = 4) -> None:
        self.module = module
        self.time_chunks = time_chunks
        self._wavefront = None
        self.topology = topology
        self.device = device
        self.label_smoothing = label_smoothing
        self.transport = Transport(device)
        self.timeline = timeline or Timeline(stage=topology.stage)
        self._saved: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}

    # -- one micro-batch ------------------------------------------------------------
    def _input(self, plan: StepPlan, i: int) -> torch.Tensor:
        topo = self.topology
        if topo.is_first:
            return plan.tokens[i].to(self.device)
        start = Timeline.now()
        x = self.transport.recv(topo.stage_rank(topo.stage - 1), ACTIVATION)
        self.timeline.record("recv", i, start)
        return x

    def forward(self, plan: StepPlan, i: int, *, key: tuple[int, ...], denominator: float, train: bool = True) -> torch.Tensor:
        """Forward micro-batch ``i``; returns its summed loss (last stage) or output."""
        topo = self.topology
        x = self._input(plan, i)
        if train and x.is_floating_point():
            x.requires_grad_(True)
        start = Timeline.now()
        with dropout_key(*key, i), torch.set_grad_enabled(train):
            out = self.module(x, plan.lengths[i])
        self.timeline.record("forward", i, start)
        if topo.is_last:
            loss = self.loss(out, plan, i)
            if train:
                self._saved[i] = (x if x.is_floating_point() else None, loss / denominator)
            return loss.detach() if train else out.detach()
        start = Timeline.now()
        self.transport.send(out, topo.stage_rank(topo.stage + 1), ACTIVATION)
        self.timeline.record("send", i, start)
        if train:
            self._saved[i] = (x if x.is_floating_point() else None, out)
        return out.detach()

    def loss(self, out: torch.Tensor, plan: StepPlan, i: int) -> torch.Tensor:
        """Summed loss of micro-batch ``i`` from the last stage's output."""
        return F.cross_entropy(out, plan.labels[i].to(self.device), reduction="sum",
                               label_smoothing=self.label_smoothing)

    def backward(self, i: int) -> None:
        topo = self.topology
        x, out = self._saved.pop(i)
        if topo.is_last:
            start = Timeline.now()
            out.backward()
        else:
            start = Timeline.now()
            grad = self.transport.recv(topo.stage_rank(topo.stage + 1), GRADIENT)
            self.timeline.record("recv", i, start)
            start = Timeline.now()
            torch.autograd.backward(out, grad)
        self.timeline.record("backward", i, start)
        if not topo.is_first and x is not None:
            start = Timeline.now()
            self.transport.send(x.grad, topo.stage_rank(topo.stage - 1), GRADIENT)
            self.timeline.record("send", i, start)

    # -- one step ---------------------------------------------------------------------
    def train_step(self, plan: StepPlan, *, schedule: str, key: tuple[int, ...], denominator: float) -> float:
        """Accumulate this step's gradients; returns the summed loss (last stage, else 0)."""
        if schedule == "wavefront":
            if self._wavefront is None:
                from pipelines.wavefront import Wavefront
                self._wavefront = Wavefront(self, self.time_chunks)
            loss = self._wavefront.train_step(plan, key=key, denominator=denominator)
            self.transport.flush()
            return loss
        m = len(plan.lengths)
        losses: list[float] = []

        def fwd(i: int) -> None:
            value = self.forward(plan, i, key=key, denominator=denominator)
            if self.topology.is_last:
                losses.append(float(value))

        if schedule == "gpipe":
            for i in range(m):
                fwd(i)
            for i in reversed(range(m)):
                self.backward(i)
        elif schedule == "1f1b":
            warmup = min(self.topology.pp - self.topology.stage - 1, m)
            for i in range(warmup):
                fwd(i)
            for i in range(m - warmup):
                fwd(warmup + i)
                self.backward(i)
            for i in range(m - warmup, m):
                self.backward(i)
        else:
            raise ValueError(f"unknown schedule {schedule!r}; known: {SCHEDULES}")
        self.transport.flush()
        return sum(losses)

    @torch.no_grad()
    def evaluate_step(self, plan: StepPlan) -> tuple[float, float, float]:
        """Forward only; on the last stage ``(loss_sum, correct, examples)``, else zeros."""
        loss_sum = correct = 0.0
        for i in range(len(plan.lengths)):
            logits = self.forward(plan, i, key=(0,), denominator=1.0, train=False)
            if self.topology.is_last:
                labels = plan.labels[i].to(self.device)
                loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
                correct += float((logits.argmax(-1) == labels).sum())
        self.transport.flush()
        if not self.topology.is_last:
            return 0.0, 0.0, 0.0
        return loss_sum, correct, float(plan.examples)


def clip_global_norm(parameters: list[torch.nn.Parameter], max_norm: float, topology: Topology) -> float:
    """``clip_grad_norm_`` over the whole model: squared norms are summed over the
    pipeline's stages (each replica holds identical gradients after the all-reduce)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    device = grads[0].device if grads else torch.device("cpu")
    squared = torch.zeros(1, dtype=torch.float64, device=device)
    for g in grads:
        squared += torch.linalg.vector_norm(g.detach(), dtype=torch.float64) ** 2
    topology.all_reduce(squared, "pipeline")
    norm = float(squared.sqrt())
    if max_norm > 0:
        coefficient = min(max_norm / (norm + 1e-6), 1.0)
        if coefficient < 1.0:
            for g in grads:
                g.mul_(coefficient)
    return norm


def all_reduce_gradients(parameters: list[torch.nn.Parameter], topology: Topology) -> None:
    """Sum gradients over this stage's data-parallel replicas, in one flat buffer."""
    if topology.dp == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    topology.all_reduce(flat, "data")
    offset = 0
    for p, g in zip(parameters, grads):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()
