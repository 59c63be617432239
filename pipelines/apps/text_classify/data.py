"""Text classification data: read -> check -> tokenizer -> featurize -> bucket.

Runs once in the driver (``materialize()``d), as Ray's examples do for one-time
transforms; the training workers only iterate the resulting batch rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from tokenizers import Tokenizer

from pipelines.config import Recipe
from pipelines.errors import DataError
from pipelines.media.bucketing import PaddingStats, bucket, padding_stats
from pipelines.media.columns import distinct, total
from pipelines.media.featurize import map_featurized
from pipelines.media.sources import read_checked_splits
from pipelines.media.tokenization import encode_batch, load_tokenizer, train_tokenizer

log = logging.getLogger(__name__)


class Featurize:
    """``map_batches`` callable: records ``{text, label, origin}`` -> ``{ids, length, label}``."""

    def __init__(self, tokenizer_json: str, labels: list[str], max_length: int) -> None:
        self.tokenizer = load_tokenizer(tokenizer_json)
        self.label_ids = {name: i for i, name in enumerate(labels)}
        self.max_length = max_length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        ids, truncated = encode_batch(self.tokenizer, list(batch["text"]), self.max_length)
        labels = []
        for label, origin in zip(batch["label"], batch["origin"]):
            if label not in self.label_ids:
                raise DataError(
                    f"{origin}: label {label!r} was not seen in training (labels: {sorted(self.label_ids)})"
                )
            labels.append(self.label_ids[label])
        return {
            "ids": [np.asarray(x, dtype=np.int32) for x in ids],
            "length": np.array([len(x) for x in ids], dtype=np.int64),
            "label": np.array(labels, dtype=np.int64),
            "truncated": np.array(truncated, dtype=bool),
        }


def featurize(records: ray.data.Dataset, tokenizer: Tokenizer, labels: list[str], max_length: int) -> ray.data.Dataset:
    return map_featurized(records, Featurize, batch_size=1024, tokenizer_json=tokenizer.to_str(), labels=labels,
                          max_length=max_length)


@dataclass
class PreparedText:
    tokenizer: Tokenizer
    labels: list[str]
    train: ray.data.Dataset
    """Bucketed, shuffled training batches (see ``pipelines.media.bucketing``)."""
    valid: ray.data.Dataset | None
    """Bucketed validation batches in input order, or None."""
    train_stats: PaddingStats
    report: dict[str, Any] = field(default_factory=dict)


def prepare_text_classification(recipe: Recipe) -> PreparedText:
    data = recipe.data
    train, valid, carved = read_checked_splits(data)
    labels = distinct(train.dataset, "label")
    if len(labels) < 2:
        raise DataError(f"data.train: need at least 2 distinct labels, found {labels}")

    def texts():
        for batch in train.dataset.iter_batches(batch_size=4096, batch_format="pyarrow"):
            yield from batch.column("text").to_pylist()

    tokenizer = train_tokenizer(texts(), recipe.tokenizer)
    log.info(
        "tokenizer: %s, %d tokens (asked %d); labels: %s",
        recipe.tokenizer.kind, tokenizer.get_vocab_size(), recipe.tokenizer.vocab_size, labels,
    )
    train_features = featurize(train.dataset, tokenizer, labels, data.max_length).materialize()
    truncated = int(total(train_features, "truncated"))
    train_batches = bucket(train_features.drop_columns(["truncated"]), recipe.batching, seed=recipe.train.seed)
    report: dict[str, Any] = {
        "train_examples": train.rows,
        "skipped_records": train.skipped,
        "truncated_examples": truncated,
        **carved,
    }
    valid_batches = None
    if valid is not None:
        valid_features = featurize(valid.dataset, tokenizer, labels, data.max_length)
        valid_batches = bucket(
            valid_features.drop_columns(["truncated"]), recipe.batching, seed=recipe.train.seed, shuffle=False
        )
        report["valid_examples"] = valid.rows
        report["skipped_records"] += valid.skipped
    stats = padding_stats(train_batches)
    report.update(stats.report())
    return PreparedText(tokenizer, labels, train_batches, valid_batches, stats, report)
