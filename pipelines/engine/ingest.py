"""How datasets reach the training workers.

Only data-parallel replicas split the data. Worker ``rank = dp_rank * pp + pp_rank``;
the first stage of each replica (``pp_rank == 0``) gets that replica's shard. Training
batches are split with ``equal=True`` so every replica takes the same number of steps
per epoch (at most ``dp - 1`` batches an epoch are left out, a different few each
epoch because the batch order is reshuffled); validation is split with
``equal=False`` so every example is scored exactly once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from ray.train import DataConfig


class ReplicaDataConfig(DataConfig):
    def __init__(self, *, dp: int, pp: int) -> None:
        super().__init__()
        self.dp, self.pp = dp, pp

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        if world_size != self.dp * self.pp:
            raise ValueError(f"world size {world_size} != dp * pp ({self.dp} * {self.pp})")
        # Ray Train wants an entry per rank; later stages never read data (None).
        output: list[dict[str, Any]] = [dict.fromkeys(datasets) for _ in range(world_size)]
        for name, ds in datasets.items():
            ds = ds.copy(ds)
            ds.context.execution_options = self._resolve_execution_options(name)
            equal = name == "train"
            for dp_rank, split in enumerate(ds.streaming_split(self.dp, equal=equal)):
                output[dp_rank * self.pp][name] = split
        return output


def shuffled_epochs(iterator, *, seed: int, buffer: int, first_epoch: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(epoch, batch_row)`` forever, each epoch's order shuffled in a seeded buffer."""
    epoch = first_epoch
    while True:
        rng = random.Random(seed * 1_000_003 + epoch)
        pending: list[dict[str, Any]] = []
        produced = False
        for row in iterator.iter_rows():
            pending.append(row)
            if len(pending) >= buffer:
                produced = True
                yield epoch, pending.pop(rng.randrange(len(pending)))
        rng.shuffle(pending)
        for row in pending:
            produced = True
            yield epoch, row
        if not produced:
            raise ValueError("the training split has no batches for this replica")
        epoch += 1
