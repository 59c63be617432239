"""Whole-dataset figures of one column (its distinct values, its total) without a shuffle.

``Dataset.unique`` and ``Dataset.sum`` run Ray Data's hash-shuffle aggregation (the
default ``shuffle_strategy`` of Ray 2.60), which starts aggregator actors for every
execution: measured, 3.7 s of a tiny run's 9 s of data preparation. A global figure
needs no shuffle: each block reduces itself in a map task and the driver combines one
small row per block, streaming, so memory stays bounded by the number of distinct
values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray


def distinct(dataset: ray.data.Dataset, column: str) -> list[Any]:
    """The sorted distinct non-null values of ``column``."""

    def block_values(batch: pa.Table) -> pa.Table:
        return pa.table({"value": pc.unique(batch.column(column).combine_chunks()).drop_null()})

    values: set[Any] = set()
    for batch in dataset.select_columns([column]).map_batches(block_values, batch_format="pyarrow",
                                                              batch_size=None).iter_batches(
            batch_size=None, batch_format="pyarrow"):
        values.update(batch.column("value").to_pylist())
    return sorted(values)


def total(dataset: ray.data.Dataset, column: str) -> int | float:
    """The sum of ``column`` (0 for an empty dataset; booleans count their true values)."""

    def block_total(batch: pa.Table) -> dict[str, np.ndarray]:
        values = batch.column(column)
        if pa.types.is_boolean(values.type):
            values = pc.cast(values, pa.int64())
        return {"total": np.array([pc.sum(values).as_py() or 0])}

    partials = dataset.select_columns([column]).map_batches(block_total, batch_format="pyarrow", batch_size=None)
    return sum(int(x) if float(x).is_integer() else float(x)
               for batch in partials.iter_batches(batch_size=None, batch_format="numpy") for x in batch["total"])
