"""Length bucketing: batches of similar length under a token budget.

Ray Data has no length bucketing, so this is ours, following OpenNMT's and fairseq's
iterators::

    examples --shuffle--> pools of ``pool_size`` --sort each pool by length-->
    cut greedily: rows * longest <= max_tokens --> pad --> shuffle the batches

Each output row of the returned dataset is one padded batch:

    tokens   (rows, longest) int32, padded with 0
    lengths  (rows,)         int64, valid tokens per row
    labels   (rows,)         int64
    index    (rows,)         int64, passed through when the input has an ``index`` column

With ``sort=False`` the same greedy cut runs on the shuffled order (random batching),
which is what the bucketing benchmark compares against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from pipelines.config import BatchingConfig


def plan_batches(lengths: np.ndarray, *, max_tokens: int, max_batch_size: int, sort: bool) -> list[np.ndarray]:
    """Positions in ``lengths`` grouped into batches with ``rows * longest <= max_tokens``.

    A single example longer than the budget still gets a batch of its own (the config
    keeps ``max_length <= max_tokens``, so that only happens on direct calls).
    """
    order = np.argsort(lengths, kind="stable") if sort else np.arange(len(lengths))
    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for i, pos in enumerate(order):
        longest_if_added = max(longest, int(lengths[pos]))
        rows_if_added = i - start + 1
        if rows_if_added > 1 and (
            rows_if_added * longest_if_added > max_tokens or rows_if_added > max_batch_size
        ):
            batches.append(order[start:i])
            start, longest_if_added = i, int(lengths[pos])
        longest = longest_if_added
    if start < len(order):
        batches.append(order[start:])
    return batches


def pad_batch(ids: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(ids), max(len(x) for x in ids)), dtype=np.int32)
    for row, x in enumerate(ids):
        out[row, : len(x)] = x
    return out


class _CutPool:
    """``map_batches`` function: one pool of examples in, its padded batches out."""

    def __init__(self, config: BatchingConfig, sort: bool) -> None:
        self.config = config
        self.sort = sort

    def __call__(self, pool: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
        lengths = np.asarray(pool["length"], dtype=np.int64)
        columns = ["tokens", "lengths", "labels"] + (["index"] if "index" in pool else [])
        out: dict[str, list[Any]] = {name: [] for name in columns}
        for rows in plan_batches(
            lengths,
            max_tokens=self.config.max_tokens,
            max_batch_size=self.config.max_batch_size,
            sort=self.sort,
        ):
            out["tokens"].append(pad_batch([pool["ids"][r] for r in rows]))
            out["lengths"].append(lengths[rows])
            out["labels"].append(np.asarray(pool["label"], dtype=np.int64)[rows])
            if "index" in pool:
                out["index"].append(np.asarray(pool["index"], dtype=np.int64)[rows])
        return out


def bucket(ds: ray.data.Dataset, config: BatchingConfig, *, seed: int, shuffle: bool = True) -> ray.data.Dataset:
    """Featurized rows ``{ids, length, label, index}`` -> materialized batch rows.

    ``shuffle=False`` (evaluation) keeps the input order inside each pool and the pool
    order, so results line up with the input.
    """
    if shuffle:
        ds = ds.random_shuffle(seed=seed)
    batches = ds.map_batches(
        _CutPool(config, sort=config.sort),
        batch_size=config.pool_size,
        batch_format="numpy",
        zero_copy_batch=True,
    )
    # Materialize before shuffling the batches: Ray Data would otherwise fuse the cut into
    # the shuffle's map stage, which feeds it single blocks instead of whole pools.
    batches = batches.materialize()
    return batches.random_shuffle(seed=seed + 1).materialize() if shuffle else batches


@dataclass
class PaddingStats:
    batches: int
    examples: int
    tokens: int
    padded_slots: int

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.tokens / self.padded_slots if self.padded_slots else 0.0

    @property
    def mean_batch_size(self) -> float:
        return self.examples / self.batches if self.batches else 0.0


def padding_stats(batches: ray.data.Dataset) -> PaddingStats:
    """Count real tokens and padded slots over every batch row."""

    def measure(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tokens = [int(np.sum(x)) for x in batch["lengths"]]
        slots = [int(t.shape[0] * t.shape[1]) for t in batch["tokens"]]
        rows = [len(x) for x in batch["lengths"]]
        return {"tokens": np.array(tokens), "slots": np.array(slots), "rows": np.array(rows)}

    stats = batches.map_batches(measure, batch_format="numpy", zero_copy_batch=True)
    totals = {"tokens": 0, "slots": 0, "rows": 0, "batches": 0}
    for part in stats.iter_batches(batch_size=None, batch_format="numpy"):
        totals["tokens"] += int(part["tokens"].sum())
        totals["slots"] += int(part["slots"].sum())
        totals["rows"] += int(part["rows"].sum())
        totals["batches"] += len(part["rows"])
    return PaddingStats(totals["batches"], totals["rows"], totals["tokens"], totals["slots"])
