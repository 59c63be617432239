"""Featurized media (audio frames, video frames) -> bucketed training batches.

Audio and video folders differ in how a file becomes an array (``pipelines.media.audio.folders``,
``pipelines.media.video.folders``); from there on they are the same: a checked split of rows
``{<inputs> (T, ...), length, cut, index, <target>}`` becomes either labelled batches
(classification) or source/target pairs (speech-to-text, captioning), bucketed by input
length under ``batching.max_tokens`` with the text bucketer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from pipelines.config import Recipe
from pipelines.errors import DataError
from pipelines.media.bucketing import PaddingStats, bucket, bucket_pairs, padding_stats
from pipelines.media.columns import distinct, total
from pipelines.media.sources import CheckedSplit


@dataclass
class MediaBatches:
    train: ray.data.Dataset
    valid: ray.data.Dataset | None
    train_stats: PaddingStats
    labels: list[str] = field(default_factory=list)
    """Classification: label names (ids are positions); sequence targets: empty."""
    tokenizer: Any = None
    """Sequence targets: the target tokenizer, trained on the training split; else None."""
    report: dict[str, Any] = field(default_factory=dict)


def split_report(train: CheckedSplit, valid: CheckedSplit | None) -> dict[str, Any]:
    report = {"train_examples": train.rows, "skipped_records": train.skipped,
              "truncated_examples": int(total(train.dataset, "cut"))}
    if valid is not None:
        report["valid_examples"] = valid.rows
        report["skipped_records"] += valid.skipped
    return report


def labelled_batches(recipe: Recipe, train: CheckedSplit, valid: CheckedSplit | None, *, inputs: str) -> MediaBatches:
    """Classification: ``inputs`` arrays + the ``label`` column as ids (labels sorted;
    a validation label never seen in training is an error naming its record)."""
    labels = distinct(train.dataset, "label")
    if len(labels) < 2:
        raise DataError(f"data.train: need at least 2 distinct labels, found {labels}")
    ids = {name: i for i, name in enumerate(labels)}

    def to_rows(batch: dict[str, np.ndarray]) -> dict[str, Any]:
        unknown = [(o, lab) for o, lab in zip(batch["origin"], batch["label"]) if lab not in ids]
        if unknown:
            raise DataError(f"{unknown[0][0]}: label {unknown[0][1]!r} was not seen in training (labels: {labels})")
        return {"ids": list(batch[inputs]), "length": batch["length"],
                "label": np.array([ids[lab] for lab in batch["label"]], dtype=np.int64)}

    def batches(split: CheckedSplit, shuffle: bool) -> ray.data.Dataset:
        rows = split.dataset.map_batches(to_rows, batch_format="numpy", batch_size=64)
        return bucket(rows, recipe.batching, seed=recipe.train.seed, shuffle=shuffle)

    train_batches = batches(train, True)
    stats = padding_stats(train_batches)
    return MediaBatches(train_batches, batches(valid, False) if valid else None, stats, labels=labels,
                        report={**split_report(train, valid), **stats.report()})


def sequence_batches(recipe: Recipe, train: CheckedSplit, valid: CheckedSplit | None, *, inputs: str,
                     target: str) -> MediaBatches:
    """Sequence targets: ``inputs`` arrays against ``[BOS] <target> [EOS]`` tokens of a
    tokenizer trained on the training split's ``target`` texts, bucketed as pairs
    (``pipelines.media.bucketing.bucket_pairs``)."""
    from pipelines.media.tokenization import encode_targets, load_tokenizer, train_tokenizer

    # Augmented copies (pipelines.media.audio.folders.training_copies) repeat their recording's
    # text: the tokenizer counts each recording once, as without copies.
    copies = "speed" in train.dataset.schema().names
    columns = [target, "origin"] if copies else [target]

    def texts():
        seen: set[str] = set()
        for batch in train.dataset.select_columns(columns).iter_batches(batch_size=4096, batch_format="pyarrow"):
            if not copies:
                yield from batch.column(target).to_pylist()
                continue
            for origin, text in zip(batch.column("origin").to_pylist(), batch.column(target).to_pylist()):
                if origin not in seen:
                    seen.add(origin)
                    yield text

    tokenizer = train_tokenizer(texts(), recipe.tokenizer)
    tokenizer_json, max_target = tokenizer.to_str(), recipe.data.target_max_length

    def to_pairs(batch: dict[str, np.ndarray]) -> dict[str, Any]:
        ids, cut = encode_targets(load_tokenizer(tokenizer_json), list(batch[target]), max_target)
        return {"src_ids": list(batch[inputs]), "src_length": batch["length"],
                "tgt_ids": [np.asarray(t, dtype=np.int32) for t in ids],
                "tgt_length": np.array([len(t) - 1 for t in ids], dtype=np.int64),
                "index": batch["index"], "cut": np.logical_or(batch["cut"], cut)}

    def batches(split: CheckedSplit, shuffle: bool) -> ray.data.Dataset:
        rows = split.dataset.map_batches(to_pairs, batch_format="numpy", batch_size=64)
        return bucket_pairs(rows.drop_columns(["cut"]), recipe.batching, seed=recipe.train.seed, shuffle=shuffle)

    train_batches = batches(train, True)
    stats = padding_stats(train_batches)
    report = {**split_report(train, valid), "target_vocab_size": tokenizer.get_vocab_size(), **stats.report()}
    return MediaBatches(train_batches, batches(valid, False) if valid else None, stats, tokenizer=tokenizer,
                        report=report)
