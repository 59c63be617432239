"""The wavefront schedule: a pipeline over micro-batches *and* time chunks.

GNMT's observation: recurrent layer k+1 can run time step t while layer k already runs
t+1. So each micro-batch of width ``T`` is cut into ``time_chunks`` chunks of
``ceil(T / time_chunks)`` steps, and a stage sends chunk t downstream as soon as it has
it; the next stage starts on chunk t while this one computes chunk t+1. With ``p``
stages, ``m`` micro-batches and ``k`` chunks each, the pipeline fills over ``m * k``
units instead of ``m`` (fill-drain order over micro-batches, as GPipe)::

    stage 0:  F0.0 F0.1 F0.2 F1.0 F1.1 F1.2 .........  B1.2 B1.1 B1.0 B0.2 B0.1 B0.0
    stage 1:       F0.0 F0.1 F0.2 F1.0 F1.1 F1.2  B1.2 B1.1 B1.0 B0.2 B0.1 B0.0

Back-propagation is through the whole sequence, not truncated: each chunk's recurrent
state enters the next chunk as a leaf tensor, and in the backward pass (chunks in
reverse) the gradient that leaf received is fed into the previous chunk's final state.
Gradients of a stage's input chunks go upstream chunk by chunk, so the backward pass is
a wavefront too.

A stage's layers fall into three runs (``Segments``): a ``prefix`` that must see whole
rows before anything can stream (a bidirectional layer, and whatever precedes it), the
``stream`` of causal layers (``time_streaming``, with ``forward_chunk``), and a
``suffix`` that needs whole rows again (the pooled classifier). Each may be empty.

What crosses stages: chunks ``(B_i, w, width)`` of the activations forward and their
gradients backward, in chunk order forward and reverse chunk order backward; every
stage derives the same chunk bounds from the step plan's lengths. Only a micro-batch's
first chunk is announced by a shape header (``pipelines.engine.p2p``): the receiver
derives every later chunk's shape from it (rows, dtype and width are the first
chunk's, steps the chunk bound's), so a chunk's receive is posted at once instead of
after a blocking header read. Sends are posted and go out with the next receive or
before the next computation (``StageRunner``'s rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from models.dropout import dropout_key
from pipelines.engine.microbatches import StepPlan
from pipelines.engine.timeline import Timeline


@dataclass
class Segments:
    prefix: list[nn.Module]
    stream: list[nn.Module]
    suffix: list[nn.Module]


def segments(layers: list[nn.Module]) -> Segments:
    """Split a stage's layers into whole-row prefix, streaming middle, whole-row suffix."""
    end = len(layers)
    while end > 0 and not getattr(layers[end - 1], "time_streaming", False):
        end -= 1
    start = 0
    for i in range(end):
        if not getattr(layers[i], "time_streaming", False):
            start = i + 1
    return Segments(layers[:start], layers[start:end], layers[end:])


def chunk_bounds(width: int, time_chunks: int) -> list[tuple[int, int]]:
    """``(offset, steps)`` of each chunk of a ``width``-step micro-batch."""
    size = math.ceil(width / time_chunks)
    return [(offset, min(size, width - offset)) for offset in range(0, width, size)]


def _run(layers: list[nn.Module], x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x, lengths)
    return x


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().requires_grad_(True) if x.is_floating_point() else x


@dataclass
class _Chunk:
    """What the backward pass of one chunk of the stream needs."""

    inputs: torch.Tensor
    state_in: list[torch.Tensor]
    output: torch.Tensor
    state_out: list[torch.Tensor]


@dataclass
class _MicroBatch:
    bounds: list[tuple[int, int]]
    inputs: list[torch.Tensor] = field(default_factory=list)
    """The stage's input chunks as received (leaves, so their gradients can be sent)."""
    prefix_out: torch.Tensor | None = None
    stream_inputs: list[torch.Tensor] = field(default_factory=list)
    chunks: list[_Chunk] = field(default_factory=list)
    suffix_inputs: list[torch.Tensor] = field(default_factory=list)
    output: torch.Tensor | None = None
    """Suffix output: the loss on the last stage, else activations sent in chunks."""


class Wavefront:
    """Runs one training step of a stage under the wavefront schedule, for ``runner``
    (the stage's ``pipelines.engine.schedules.StageRunner``, which builds this on first
    use: its module, topology, transport, task and timeline)."""

    def __init__(self, runner, time_chunks: int) -> None:
        self.runner = runner
        self.time_chunks = time_chunks
        self.parts = segments(list(runner.module.layers.values()))
        self._saved: dict[int, _MicroBatch] = {}
        if runner.topology.is_last and not self.parts.suffix:
            raise ValueError("the last stage must end with a whole-row head (the loss needs whole rows)")

    # -- transport --------------------------------------------------------------------
    def _recv(self, peer: int, micro: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """The next chunk from ``peer``: shaped ``like`` (a gradient of a chunk this stage
        sent, or an activation chunk after a micro-batch's first), else headed."""
        start = Timeline.now()
        x = self.runner.transport.receive(self.runner.topology.stage_rank(peer), None if like is None else [like])
        self.runner.timeline.record("recv", micro, start)
        return x

    def _send(self, x: torch.Tensor, peer: int, *, headed: bool = True) -> None:
        self.runner.transport.post(x, self.runner.topology.stage_rank(peer), headed=headed)

    def _send_chunk(self, x: torch.Tensor, c: int) -> None:
        """Activation chunk ``c`` downstream: headed if it is the micro-batch's first."""
        self._send(x, self.runner.topology.stage + 1, headed=c == 0)

    def _input_chunk(self, plan: StepPlan, i: int, c: int, offset: int, steps: int,
                     first: torch.Tensor | None) -> torch.Tensor:
        """Chunk ``c`` of micro-batch ``i``'s input; ``first`` is its chunk 0 (received)."""
        topo = self.runner.topology
        if topo.is_first:
            return plan.tokens[i][:, offset : offset + steps].to(self.runner.device)
        like = None if c == 0 else torch.empty((first.size(0), steps, *first.shape[2:]), dtype=first.dtype,
                                                device="meta")
        return _leaf(self._recv(topo.stage - 1, i, like))

    # -- forward ----------------------------------------------------------------------
    def forward(self, plan: StepPlan, i: int, *, key: tuple[int, ...], denominator: float) -> float:
        """Forward micro-batch ``i``; returns its summed loss on the last stage, else 0."""
        runner, topo, parts = self.runner, self.runner.topology, self.parts
        lengths = plan.lengths[i]
        mb = _MicroBatch(chunk_bounds(int(lengths.max()), self.time_chunks))
        with dropout_key(*key, i), runner.autocast():
            if parts.prefix or not parts.stream:  # whole rows needed before anything runs
                for c, (o, w) in enumerate(mb.bounds):
                    mb.inputs.append(self._input_chunk(plan, i, c, o, w, mb.inputs[0] if mb.inputs else None))
                start = runner.compute_start(i)
                mb.prefix_out = _run(parts.prefix, torch.cat(mb.inputs, 1), lengths)
                mb.stream_inputs = [_leaf(mb.prefix_out[:, o : o + w]) for o, w in mb.bounds] if parts.stream else []
                runner.timeline.record("forward", i, start)
            states: list[tuple[torch.Tensor, ...] | None] = [None] * len(parts.stream)
            for c, (offset, steps) in enumerate(mb.bounds if parts.stream else []):
                if mb.stream_inputs:
                    x = mb.stream_inputs[c]
                else:
                    x = self._input_chunk(plan, i, c, offset, steps, mb.inputs[0] if mb.inputs else None)
                    mb.inputs.append(x)
                start = runner.compute_start(i)
                state_in = [None if s is None else tuple(_leaf(t) for t in s) for s in states]
                y = x
                for j, layer in enumerate(parts.stream):
                    y, states[j] = layer.forward_chunk(y, lengths, offset, state_in[j])
                mb.chunks.append(_Chunk(x, [t for s in state_in if s is not None for t in s], y,
                                        [t for s in states if s is not None for t in s]))
                runner.timeline.record("forward", i, start)
                if parts.suffix:
                    mb.suffix_inputs.append(_leaf(y))
                else:
                    self._send_chunk(y, c)
            loss = 0.0
            if parts.suffix:
                start = runner.compute_start(i)
                rows = torch.cat(mb.suffix_inputs, 1) if parts.stream else mb.prefix_out
                out = _run(parts.suffix, rows, lengths)
                runner.timeline.record("forward", i, start)
                if topo.is_last:
                    summed = runner.loss(out, plan, i)
                    loss, mb.output = float(summed.detach()), summed / denominator
                else:
                    mb.output = out
                    for c, (offset, steps) in enumerate(mb.bounds):
                        self._send_chunk(out[:, offset : offset + steps], c)
        self._saved[i] = mb
        return loss

    # -- backward ---------------------------------------------------------------------
    def backward(self, i: int) -> None:
        runner, topo, parts = self.runner, self.runner.topology, self.parts
        mb = self._saved.pop(i)
        if parts.suffix:
            if topo.is_last:
                start = runner.compute_start(i)
                mb.output.backward()
            else:
                grads = [self._recv(topo.stage + 1, i, mb.output[:, o : o + w]) for o, w in reversed(mb.bounds)][::-1]
                start = runner.compute_start(i)
                torch.autograd.backward(mb.output, torch.cat(grads, 1))
            runner.timeline.record("backward", i, start)
        state_grads: list[torch.Tensor] = []
        for c in reversed(range(len(mb.chunks))):
            chunk = mb.chunks[c]
            grad = mb.suffix_inputs[c].grad if parts.suffix else self._recv(topo.stage + 1, i, chunk.output)
            start = runner.compute_start(i)
            tensors, grads = [chunk.output], [grad]
            for t, g in zip(chunk.state_out, state_grads):
                if g is not None:
                    tensors.append(t)
                    grads.append(g)
            torch.autograd.backward(tensors, grads)
            state_grads = [t.grad for t in chunk.state_in]
            runner.timeline.record("backward", i, start)
            if not mb.stream_inputs and not topo.is_first:
                self._send(chunk.inputs.grad, topo.stage - 1, headed=False)
        if mb.stream_inputs:
            start = runner.compute_start(i)
            torch.autograd.backward(mb.prefix_out, torch.cat([x.grad for x in mb.stream_inputs], 1))
            runner.timeline.record("backward", i, start)
        if mb.prefix_out is not None and not topo.is_first:
            for x in reversed(mb.inputs):
                self._send(x.grad, topo.stage - 1, headed=False)

    def train_step(self, plan: StepPlan, *, key: tuple[int, ...], denominator: float) -> float:
        m = len(plan.lengths)
        loss = sum(self.forward(plan, i, key=key, denominator=denominator) for i in range(m))
        for i in reversed(range(m)):
            self.backward(i)
        return loss
