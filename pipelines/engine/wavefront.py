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

The encoder-decoder (seq2seq: ``lengths`` a ``(source, target)`` pair) streams its
*decoder* over target chunks: the attention layer, the decoder layers above it and the
generator stream (the loss is summed over the last stage's chunks), while the encoder and
the target embedding run on whole rows, since every target step attends over the whole
memory. Messages are tuples with two forms, each side telling which from its own side of
the cut: per-target-step tuples ``(h, context)`` out of a stream travel in chunks; a
whole-row tuple (memory or source features beside target tokens or embeddings) travels
whole, once per micro-batch, and a stage whose first layer reads a part whole
(``whole_inputs``: the attention layer's memory) takes its input that way and slices the
rest itself. The attention layer's input-feeding context joins the chunk-carried state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from models.dropout import dropout_key
from pipelines.engine.microbatches import Lengths, StepPlan
from pipelines.engine.p2p import Message, floats
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


def stream_lengths(lengths: Lengths) -> torch.Tensor:
    """The lengths the stream runs over: the target's of a seq2seq ``(source, target)``
    pair (its decoder streams), else the sequence's."""
    return lengths[-1] if isinstance(lengths, tuple) else lengths


def _run(layers: list[nn.Module], x: Message, lengths: Lengths) -> Message:
    for layer in layers:
        x = layer(x, lengths)
    return x


def _leaf(x: Message) -> Message:
    """``x`` cut from its graph, floating parts requiring gradients (what a stage's
    backward pass stops at, and sends gradients of)."""
    if isinstance(x, tuple):
        return tuple(_leaf(t) for t in x)
    return x.detach().requires_grad_(True) if x.is_floating_point() else x


def _steps(x: Message, offset: int, steps: int, whole: tuple[int, ...] = ()) -> Message:
    """Steps ``offset .. offset + steps`` of ``x``; tuple parts in ``whole`` as they are."""
    if isinstance(x, tuple):
        return tuple(t if k in whole else t[:, offset : offset + steps] for k, t in enumerate(x))
    return x[:, offset : offset + steps]


def _cat(chunks: list[Message]) -> Message:
    if isinstance(chunks[0], tuple):
        return tuple(torch.cat(parts, 1) for parts in zip(*chunks))
    return torch.cat(chunks, 1)


def _like(first: Message, steps: int) -> list[torch.Tensor]:
    """Meta tensors shaped as a later chunk of the message whose chunk 0 is ``first``."""
    return [torch.empty((t.size(0), steps, *t.shape[2:]), dtype=t.dtype, device="meta")
            for t in (first if isinstance(first, tuple) else (first,))]


def _grads(x: Message) -> Message:
    """Gradients of ``x``'s floating parts (zeros where none reached one), as a message."""
    grads = tuple(t.grad if t.grad is not None else torch.zeros_like(t) for t in floats(x))
    return grads if len(grads) > 1 else grads[0]


@dataclass
class _Chunk:
    """What the backward pass of one chunk of the stream needs."""

    inputs: Message | None
    """The chunk as received (leaves), when the stage's input arrives in chunks."""
    state_in: list[torch.Tensor]
    output: Message
    """The chunk's output, or on a last stage without a suffix its loss / denominator."""
    state_out: list[torch.Tensor]


@dataclass
class _MicroBatch:
    bounds: list[tuple[int, int]]
    inputs: Message | None = None
    """The stage's whole input (leaves), when it needs whole rows before streaming."""
    prefix_out: Message | None = None
    stream_in: Message | None = None
    """The stream's whole input (leaves of ``prefix_out``, or ``inputs``), sliced per chunk."""
    chunks: list[_Chunk] = field(default_factory=list)
    suffix_inputs: list[Message] = field(default_factory=list)
    output: Message | None = None
    """Suffix output: the loss on the last stage, else activations sent downstream."""


class Wavefront:
    """Runs one training step of a stage under the wavefront schedule, for ``runner``
    (the stage's ``pipelines.engine.schedules.StageRunner``, which builds this on first
    use: its module, topology, transport, task and timeline)."""

    def __init__(self, runner, time_chunks: int) -> None:
        self.runner = runner
        self.time_chunks = time_chunks
        self.parts = segments(list(runner.module.layers.values()))
        self.whole = getattr(self.parts.stream[0], "whole_inputs", ()) if self.parts.stream else ()
        """Parts of the stream's input tuple every chunk reads whole (the memory)."""
        self._saved: dict[int, _MicroBatch] = {}
        if runner.topology.is_last and not self.parts.suffix and not runner.task.loss_per_step:
            raise ValueError("the last stage must end with a whole-row head (the loss needs whole rows)")

    # -- what crosses the cuts --------------------------------------------------------
    def _input_whole(self) -> bool:
        """Whether this stage reads its input whole before anything runs: a prefix or no
        stream needs whole rows, and a tuple (seq2seq) reaches a stream whole when its
        first layer reads a part whole (it then slices the rest itself)."""
        return (self.runner.topology.is_first or bool(self.parts.prefix) or not self.parts.stream
                or bool(self.whole))

    @staticmethod
    def _travels_whole(x: Message) -> bool:
        """A whole-row tuple (mixed time axes: memory beside target tokens) goes in one
        message; a tensor goes in chunks, so the next stage's stream starts early."""
        return isinstance(x, tuple)

    # -- transport --------------------------------------------------------------------
    def _recv(self, peer: int, micro: int, like: list[torch.Tensor] | None = None) -> Message:
        """The next message from ``peer``: shaped ``like`` (a gradient of what this stage
        sent, or an activation chunk after a micro-batch's first), else headed."""
        start = Timeline.now()
        x = self.runner.transport.receive(self.runner.topology.stage_rank(peer), like)
        self.runner.timeline.record("recv", micro, start)
        return x

    def _send(self, x: Message, peer: int, *, headed: bool = True) -> None:
        self.runner.transport.post(x, self.runner.topology.stage_rank(peer), headed=headed)

    def _send_chunk(self, x: Message, c: int) -> None:
        """Activation chunk ``c`` downstream: headed if it is the micro-batch's first."""
        self._send(x, self.runner.topology.stage + 1, headed=c == 0)

    def _receive_chunk(self, i: int, steps: int, first: Message | None) -> Message:
        """The next input chunk of micro-batch ``i``; ``first``: its chunk 0 (else headed)."""
        return self._recv(self.runner.topology.stage - 1, i, None if first is None else _like(first, steps))

    def _whole_input(self, plan: StepPlan, i: int, bounds: list[tuple[int, int]]) -> Message:
        """Micro-batch ``i``'s whole input: the first stage's tokens, a tuple in one
        message, or a tensor's chunks joined (leaves)."""
        if self.runner.topology.is_first:
            x = plan.tokens[i]
            return tuple(t.to(self.runner.device) for t in x) if isinstance(x, tuple) else x.to(self.runner.device)
        if isinstance(plan.lengths[i], tuple):
            return _leaf(self._recv(self.runner.topology.stage - 1, i))
        chunks: list[Message] = []
        for _, steps in bounds:
            chunks.append(self._receive_chunk(i, steps, chunks[0] if chunks else None))
        return _leaf(_cat(chunks))

    # -- forward ----------------------------------------------------------------------
    def forward(self, plan: StepPlan, i: int, *, key: tuple[int, ...], denominator: float) -> float:
        """Forward micro-batch ``i``; returns its summed loss on the last stage, else 0."""
        runner, topo, parts = self.runner, self.runner.topology, self.parts
        lengths = plan.lengths[i]
        mb = _MicroBatch(chunk_bounds(int(stream_lengths(lengths).max()), self.time_chunks))
        loss = 0.0
        with dropout_key(*key, i), runner.autocast():
            if self._input_whole():
                mb.inputs = self._whole_input(plan, i, mb.bounds)
                if parts.prefix:
                    start = runner.compute_start(i)
                    mb.prefix_out = _run(parts.prefix, mb.inputs, lengths)
                    runner.timeline.record("forward", i, start)
                mb.stream_in = (_leaf(mb.prefix_out) if parts.prefix else mb.inputs) if parts.stream else None
            states: list[tuple[torch.Tensor, ...] | None] = [None] * len(parts.stream)
            first: Message | None = None
            for c, (offset, steps) in enumerate(mb.bounds if parts.stream else []):
                received = None
                if mb.stream_in is not None:
                    x = _steps(mb.stream_in, offset, steps, self.whole)
                else:
                    x = received = _leaf(self._receive_chunk(i, steps, first))
                    first = first if first is not None else received
                start = runner.compute_start(i)
                state_in = [None if s is None else tuple(_leaf(t) for t in s) for s in states]
                y = x
                for j, layer in enumerate(parts.stream):
                    y, states[j] = layer.forward_chunk(y, lengths, offset, state_in[j])
                output = y
                if topo.is_last and not parts.suffix:  # per-step outputs: the loss sums over chunks
                    summed = runner.loss(y, plan, i, offset, steps)
                    loss += float(summed.detach())
                    output = summed / denominator
                mb.chunks.append(_Chunk(received, [t for s in state_in if s is not None for t in s], output,
                                        [t for s in states if s is not None for t in s]))
                runner.timeline.record("forward", i, start)
                if parts.suffix:
                    mb.suffix_inputs.append(_leaf(y))
                elif not topo.is_last:
                    self._send_chunk(y, c)
            if parts.suffix:
                start = runner.compute_start(i)
                rows = _cat(mb.suffix_inputs) if parts.stream else mb.inputs
                out = _run(parts.suffix, rows, lengths)
                runner.timeline.record("forward", i, start)
                if topo.is_last:
                    summed = runner.loss(out, plan, i)
                    loss, mb.output = float(summed.detach()), summed / denominator
                else:
                    mb.output = out
                    if self._travels_whole(out):
                        self._send(out, topo.stage + 1)
                    else:
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
                if self._travels_whole(mb.output):
                    grads = floats(self._recv(topo.stage + 1, i, floats(mb.output)))
                else:
                    grads = [_cat([self._recv(topo.stage + 1, i, [mb.output[:, o : o + w]])
                                   for o, w in reversed(mb.bounds)][::-1])]
                start = runner.compute_start(i)
                torch.autograd.backward(floats(mb.output), grads)
            runner.timeline.record("backward", i, start)
        state_grads: list[torch.Tensor] = []
        for c in reversed(range(len(mb.chunks))):
            chunk = mb.chunks[c]
            if parts.suffix:
                tensors, grads = floats(chunk.output), floats(_grads(mb.suffix_inputs[c]))
            elif topo.is_last:
                tensors, grads = [chunk.output], [None]  # the chunk's loss
            else:
                tensors = floats(chunk.output)
                grads = floats(self._recv(topo.stage + 1, i, tensors))
            start = runner.compute_start(i)
            for t, g in zip(chunk.state_out, state_grads):
                if g is not None:
                    tensors.append(t)
                    grads.append(g)
            torch.autograd.backward(tensors, grads)
            state_grads = [t.grad for t in chunk.state_in]
            runner.timeline.record("backward", i, start)
            if chunk.inputs is not None and not topo.is_first:
                self._send(_grads(chunk.inputs), topo.stage - 1, headed=False)
        if mb.prefix_out is not None and mb.stream_in is not None:
            start = runner.compute_start(i)
            torch.autograd.backward(floats(mb.prefix_out), floats(_grads(mb.stream_in)))
            runner.timeline.record("backward", i, start)
        if mb.inputs is not None and not topo.is_first:
            self._send_input_grads(mb)

    def _send_input_grads(self, mb: _MicroBatch) -> None:
        """The gradient of a whole input, as it came: one message (a tuple), or by chunk
        in reverse order (a tensor's chunks)."""
        grads, upstream = _grads(mb.inputs), self.runner.topology.stage - 1
        if isinstance(mb.inputs, tuple):
            self._send(grads, upstream, headed=False)
        else:
            for offset, steps in reversed(mb.bounds):
                self._send(grads[:, offset : offset + steps], upstream, headed=False)

    def train_step(self, plan: StepPlan, *, key: tuple[int, ...], denominator: float) -> float:
        m = len(plan.lengths)
        loss = sum(self.forward(plan, i, key=key, denominator=denominator) for i in range(m))
        for i in reversed(range(m)):
            self.backward(i)
        return loss
