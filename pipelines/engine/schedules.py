"""Pipeline schedules over micro-batches: GPipe (fill-drain) and 1F1B (the wavefront
schedule over time chunks lives in ``pipelines.engine.wavefront``).

One training step on one stage, for ``m`` micro-batches (forward ``F``, backward ``B``;
stage ``s`` of ``p``)::

    gpipe:  F0 F1 .. F(m-1)  B(m-1) .. B1 B0
    1f1b:   F0 .. F(w-1)  [F(w+i) B(i)]*  B(m-w) .. B(m-1)    with w = min(p - s - 1, m)

1F1B keeps at most ``p - s`` micro-batches of activations alive instead of ``m``. Both
give identical gradients: the loss of each micro-batch is ``sum(loss) / denominator``
(``denominator`` = examples in the step over all replicas), so accumulated gradients
equal one pass over the whole batch.

What crosses stages (``pipelines.engine.p2p``): activations ``(B_i, T_i, width)`` forward (or
a tuple of tensors, e.g. an encoder-decoder's ``(memory, target tokens)``), gradients of
their floating-point parts backward. A stage posts what it sends and the transport
issues it fused with the stage's next receive (or alone before the next computation),
so 1F1B's crossing sends never wait on each other under NCCL's rules. What every stage
of a replica shares (``StepPlan``, broadcast by stage 0 each step): each micro-batch's
lengths and, for the last stage's loss, its targets. What differs between applications
(step plans, loss, validation counts) comes from the :class:`TrainingTask` the engine is
handed; it never names one.
"""

from __future__ import annotations

from functools import cached_property
from typing import Protocol

import torch
import torch.distributed as dist

from models.dropout import dropout_key
from pipelines.engine.microbatches import StepPlan
from pipelines.engine.microbatches import parts as _parts
from pipelines.engine.p2p import Transport, floats
from pipelines.engine.timeline import Timeline
from pipelines.engine.topology import Topology
from pipelines.engine.wavefront import Wavefront
from pipelines.precision import autocast

SCHEDULES = ("gpipe", "1f1b", "wavefront")


MAX_LABEL_INNER_DIMS = 2
"""Label dims past (rows, steps) a step plan may have: music's (rows, steps, 4 voices)."""


def broadcast_plan(plan: StepPlan | None, topology: Topology, device: torch.device) -> StepPlan:
    """Stage 0 sends the step's lengths and labels to every stage of its replica, in two
    int64 broadcasts::

        header  (count, rows, length parts, label dims, label elements, float labels,
                 label inner shape (dims 2.., padded with 1; the same in every
                 micro-batch, e.g. 4 voices))
        body    rows per micro-batch (count) | label width per micro-batch (count)
                | each length part (rows each) | labels, flattened

    Float labels (regression targets: a speech model's frames) travel as float32 bit
    patterns in the int64 body, exactly.

    ``plan=None`` on stage 0 means the data ran out: every stage gets an empty plan.
    """
    if topology.pp == 1:
        return plan if plan is not None else StepPlan([], [])
    src = topology.stage_rank(0)
    group = topology.pipeline_group
    header = torch.ones(6 + MAX_LABEL_INNER_DIMS, dtype=torch.int64, device=device)
    if topology.is_first and plan is not None:
        header[0], header[1] = len(plan.lengths), plan.examples
        header[2], header[3] = len(_parts(plan.lengths[0])), plan.labels[0].dim()
        header[4] = sum(x.numel() for x in plan.labels)
        header[5] = int(plan.labels[0].is_floating_point())
        inner = plan.labels[0].shape[2:]
        if len(inner) > MAX_LABEL_INNER_DIMS:
            raise ValueError(f"labels of {plan.labels[0].dim()} dims; a step plan's have at most "
                             f"{2 + MAX_LABEL_INNER_DIMS}")
        header[6 : 6 + len(inner)] = torch.tensor(inner, dtype=torch.int64)
    elif topology.is_first:
        header.zero_()
    dist.broadcast(header, src, group=group)
    count, rows, parts, label_dims, label_numel, floating, *inner = header.tolist()
    inner = inner[: max(label_dims - 2, 0)]
    if count == 0:
        return StepPlan([], [])
    body = torch.zeros(2 * count + parts * rows + label_numel, dtype=torch.int64, device=device)
    if topology.is_first:
        body[:count] = torch.tensor([len(x) for x in plan.labels])
        body[count : 2 * count] = torch.tensor([x[0].numel() if x.dim() > 1 else 1 for x in plan.labels])
        offset = 2 * count
        for k in range(parts):
            body[offset : offset + rows] = torch.cat([_parts(x)[k] for x in plan.lengths])
            offset += rows
        flat = torch.cat([x.reshape(-1) for x in plan.labels])
        body[offset:] = (flat.float().view(torch.int32).long() if floating else flat).to(device)
    dist.broadcast(body, src, group=group)
    if topology.is_first:
        return plan
    sizes, widths = body[:count].tolist(), body[count : 2 * count].tolist()
    offset = 2 * count
    length_parts = []
    for _ in range(parts):
        length_parts.append(body[offset : offset + rows].cpu().split(sizes))
        offset += rows
    lengths = [p[0] for p in zip(*length_parts)] if parts == 1 else list(zip(*length_parts))
    labels_body = body[offset:].int().view(torch.float32) if floating else body[offset:]
    flat = labels_body.split([n * w for n, w in zip(sizes, widths)])
    labels = [x.view(n, -1, *inner) if label_dims > 1 else x for x, n, w in zip(flat, sizes, widths)]
    return StepPlan(lengths, labels)


class TrainingTask(Protocol):
    """What the engine needs of an application (``pipelines.apps.base.App`` implements it)."""

    metric: str
    """The validation figure the progress line shows."""

    def step_plan(self, row: dict, microbatches: int) -> StepPlan:
        """A bucketed batch row -> this step's micro-batches (first stage only)."""

    def loss(self, out: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        """Summed loss of one micro-batch (last stage)."""

    def loss_units(self, plan: StepPlan) -> float:
        """What the loss is normalised by: examples, or target tokens."""

    loss_per_step: bool
    """``loss`` is a sum over time steps, so the wavefront may score a last stage's
    chunks one at a time (seq2seq's decoder, which ends with no whole-row head)."""

    eval_width: int
    """How many counts ``eval_counts`` returns (3, or more after ``scored``)."""

    def eval_counts(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[float, ...]:
        """``(summed loss, correct, scored, *more)`` of one validation micro-batch."""

    def validation_metrics(self, loss_sum: float, correct: float, count: float, *more: float) -> dict[str, float]:
        """The validation entry from the split's summed counts."""


class StageRunner:
    """Runs this worker's stage of the model through a schedule.

    ``module(x, lengths)`` maps the stage's input (token ids on the first stage,
    activations ``(B, T, width)`` elsewhere) to its output (logits on the last stage).
    """

    def __init__(self, module: torch.nn.Module, topology: Topology, device: torch.device, *, task: TrainingTask,
                 label_smoothing: float = 0.0, timeline: Timeline | None = None, time_chunks: int = 4,
                 transport: Transport | None = None, precision: str = "float32") -> None:
        self.task = task
        self.module = module
        self.time_chunks = time_chunks
        self.topology = topology
        self.device = device
        self.label_smoothing = label_smoothing
        self.precision = precision  # train.precision: forwards and losses under autocast
        self.transport = transport or Transport.over_torch(topology, device)
        self.timeline = timeline or Timeline(stage=topology.stage)
        self._saved: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}

    @cached_property
    def wavefront(self) -> Wavefront:
        """This stage under the wavefront schedule (built on first use: it checks the
        stage's layers, which the other schedules do not need)."""
        return Wavefront(self, self.time_chunks)

    # -- one micro-batch ------------------------------------------------------------
    def _input(self, plan: StepPlan, i: int) -> torch.Tensor:
        topo = self.topology
        if topo.is_first:
            x = plan.tokens[i]
            return tuple(t.to(self.device) for t in x) if isinstance(x, tuple) else x.to(self.device)
        start = Timeline.now()
        x = self.transport.receive(topo.stage_rank(topo.stage - 1))
        self.timeline.record("recv", i, start)
        return x

    def compute_start(self, i: int) -> float:
        """Ship what is posted and no receive took along (its span: ``send``), then
        start the compute clock."""
        start = Timeline.now()
        if self.transport.ship():
            self.timeline.record("send", i, start)
        return Timeline.now()

    def forward(self, plan: StepPlan, i: int, *, key: tuple[int, ...], denominator: float,
                train: bool = True) -> torch.Tensor:
        """Forward micro-batch ``i``; returns its summed loss (last stage) or output."""
        topo = self.topology
        x = self._input(plan, i)
        if train:
            for t in floats(x):
                t.requires_grad_(True)
        start = self.compute_start(i)
        with dropout_key(*key, i), torch.set_grad_enabled(train), self.autocast():
            out = self.module(x, plan.lengths[i])
            loss = self.loss(out, plan, i) if topo.is_last and train else None
        self.timeline.record("forward", i, start)
        if topo.is_last:
            if train:
                self._saved[i] = (floats(x), loss / denominator)
            return loss.detach() if train else _detached(out)
        self.transport.post(out, topo.stage_rank(topo.stage + 1))
        if train:
            self._saved[i] = (floats(x), out)
        return out

    def autocast(self):
        """The autocast context of ``train.precision`` (backward passes run outside it)."""
        return autocast(self.precision, self.device)

    def loss(self, out: torch.Tensor, plan: StepPlan, i: int, offset: int = 0, steps: int | None = None
             ) -> torch.Tensor:
        """Summed loss of micro-batch ``i`` from the last stage's output; with ``steps``,
        of steps ``offset .. offset + steps`` only (a wavefront chunk of a task whose
        loss is a sum over steps)."""
        labels = plan.labels[i] if steps is None else plan.labels[i][:, offset : offset + steps]
        return self.task.loss(out, labels.to(self.device), self.label_smoothing)

    def backward(self, i: int) -> None:
        topo = self.topology
        inputs, out = self._saved.pop(i)
        if topo.is_last:
            start = self.compute_start(i)
            out.backward()
        else:
            start = Timeline.now()
            grads = self.transport.receive(topo.stage_rank(topo.stage + 1), like=floats(out))
            self.timeline.record("recv", i, start)
            start = self.compute_start(i)
            pairs = [(o, g) for o, g in zip(floats(out), floats(grads)) if o.requires_grad]
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        self.timeline.record("backward", i, start)
        if not topo.is_first and inputs:
            grads = tuple(t.grad if t.grad is not None else torch.zeros_like(t) for t in inputs)
            self.transport.post(grads if len(grads) > 1 else grads[0], topo.stage_rank(topo.stage - 1), headed=False)

    # -- one step ---------------------------------------------------------------------
    def train_step(self, plan: StepPlan, *, schedule: str, key: tuple[int, ...], denominator: float) -> float:
        """Accumulate this step's gradients; returns the summed loss (last stage, else 0)."""
        if schedule == "wavefront":
            loss = self.wavefront.train_step(plan, key=key, denominator=denominator)
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
    def evaluate_step(self, plan: StepPlan) -> tuple[float, ...]:
        """Forward only; on the last stage the task's ``eval_counts`` (``loss_sum,
        correct, scored, ...``) summed over the micro-batches, else zeros."""
        totals = [0.0] * self.task.eval_width
        for i in range(len(plan.lengths)):
            out = self.forward(plan, i, key=(0,), denominator=1.0, train=False)
            if self.topology.is_last:
                with self.autocast():
                    counts = self.task.eval_counts(out, plan.labels[i].to(self.device))
                totals = [a + b for a, b in zip(totals, counts)]
        self.transport.flush()
        return tuple(totals) if self.topology.is_last else (0.0,) * self.task.eval_width


def _detached(out: torch.Tensor | tuple[torch.Tensor, ...]):
    """The last stage's output out of the graph (a tensor, or a tuple of them: a
    pointer-generator's ``(log_probs, coverage_loss)``)."""
    return tuple(t.detach() for t in out) if isinstance(out, tuple) else out.detach()


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
