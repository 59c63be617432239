"""Conditional generation data: labelled texts -> ``(condition, [BOS] text [EOS])`` pairs.

The records are a text classifier's (``labeled-lines``, ``sst-trees`` phrases, csv, ...,
with ``data.label_names``); each label is a condition. The source of a pair is its
condition id, one step long, so pairs bucket by text length alone
(``pipelines.media.bucketing.bucket_pairs``). With ``generation.conditioned: false``
every record gets the one condition ``any``: the unconditioned language model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.config import Recipe
from pipelines.errors import DataError
from pipelines.media.batches import MediaBatches, sequence_batches
from pipelines.media.columns import distinct
from pipelines.media.sources import CheckedSplit, read_checked_splits, with_index

UNCONDITIONED = "any"
"""The one condition of an unconditioned language model."""


def conditions_of(train: CheckedSplit, conditioned: bool) -> list[str]:
    """The conditions a model learns: the training labels, sorted (ids are positions)."""
    if not conditioned:
        return [UNCONDITIONED]
    labels = distinct(train.dataset, "label")
    if len(labels) < 2:
        raise DataError(f"data.train: a conditioned model needs at least 2 distinct labels, found {labels} "
                        "(set generation.conditioned=false for an unconditioned language model)")
    return labels


def as_pairs(split: CheckedSplit, conditions: list[str], conditioned: bool) -> CheckedSplit:
    """Records ``{text, label, origin}`` -> ``{condition (1,) int32, length 1, cut, index,
    text}``; a label that is not a condition (a validation label never seen in training)
    is an error naming its record."""
    ids = {name: i for i, name in enumerate(conditions)}

    def convert(batch: dict[str, np.ndarray]) -> dict[str, Any]:
        if conditioned:
            unknown = [(o, lab) for o, lab in zip(batch["origin"], batch["label"]) if lab not in ids]
            if unknown:
                raise DataError(f"{unknown[0][0]}: label {unknown[0][1]!r} is not a condition of the training "
                                f"data ({', '.join(conditions)})")
        rows = len(batch["text"])
        chosen = [ids[lab] for lab in batch["label"]] if conditioned else [0] * rows
        return {"condition": [np.array([c], dtype=np.int32) for c in chosen],
                "length": np.ones(rows, dtype=np.int64), "cut": np.zeros(rows, dtype=bool),
                "index": batch["index"], "text": batch["text"]}

    indexed = with_index(split.dataset.select_columns(["text", "label", "origin"]), split.rows)
    pairs = indexed.map_batches(convert, batch_format="numpy", batch_size=1024).materialize()
    return CheckedSplit(pairs, split.rows, split.skipped, split.skipped_examples)


def prepare_generation(recipe: Recipe) -> tuple[MediaBatches, list[str]]:
    """Bucketed training (and validation) pairs, and the conditions."""
    conditioned = recipe.generation.conditioned
    train, valid, carved = read_checked_splits(recipe.data)
    conditions = conditions_of(train, conditioned)
    batches = sequence_batches(recipe, as_pairs(train, conditions, conditioned),
                               as_pairs(valid, conditions, conditioned) if valid else None,
                               inputs="condition", target="text")
    batches.report.update(carved, conditions=conditions)
    return batches, conditions
