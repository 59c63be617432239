"""A training step's micro-batches (``StepPlan``): what stage 0 cuts from a bucketed batch
and broadcasts to every stage of its replica (``pipelines.engine.schedules``), and what
each application's ``step_plan`` builds (``pipelines.apps.objectives``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

Lengths = torch.Tensor | tuple[torch.Tensor, ...]


def parts(lengths: Lengths) -> tuple[torch.Tensor, ...]:
    return lengths if isinstance(lengths, tuple) else (lengths,)


@dataclass
class StepPlan:
    """The micro-batches of one step. ``lengths[i]``: ``(B_i,)`` int64, or a tuple of them
    (seq2seq: source, target); ``labels[i]``: the last stage's targets (``(B_i,)`` labels
    or ``(B_i, T_i)`` target tokens); ``tokens[i]``: the first stage's input (a tensor or
    a tuple), only on the first stage. No micro-batches: no more data."""

    lengths: list[Lengths]
    labels: list[torch.Tensor]
    tokens: list | None = None

    @property
    def examples(self) -> int:
        return sum(len(parts(x)[0]) for x in self.lengths)

    @property
    def tokens_count(self) -> int:
        """Real tokens (source and target for seq2seq)."""
        return int(sum(int(part.sum()) for x in self.lengths for part in parts(x)))


def split_batch(tokens: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, microbatches: int,
                per_step: int = 1) -> StepPlan:
    """Cut a padded batch into ``microbatches`` row chunks, each trimmed to its own
    longest row (dynamic unrolling: no step runs over padding it does not need).
    ``per_step``: input positions per model step (audio: frames per subsampled step)."""
    chunks = torch.arange(len(lengths)).tensor_split(min(microbatches, len(lengths)))
    plan = StepPlan([], [], [])
    for rows in chunks:
        width = int(lengths[rows].max()) * per_step
        plan.tokens.append(tokens[rows, :width])
        plan.lengths.append(lengths[rows])
        plan.labels.append(labels[rows])
    return plan
