"""Text pairs -> bucketed seq2seq batches: read pairs -> check -> tokenizer(s) ->
featurize -> bucket by (src, tgt). What every text-to-text application shares
(translation, and any other that reads its pairs its own way: ``prepare_pairs`` takes
checked splits of ``{source, target, origin}`` records).

It runs once in the driver (``materialize()``d), and the training workers only iterate
the resulting batch rows (past ``batching.stream``'s threshold the batches stream
instead: featurized and bucketed on the fly each epoch, see
``pipelines.media.bucketing.stream_pairs``), whose layout (``src_tokens``, ``src_lengths``, ``tgt_in``,
``tgt_out``, ``tgt_lengths``, ``index``) is drawn in ``pipelines.media.bucketing``.

Every example carries ``index``, its position in its checked split (0..n-1, input
order), through featurizing and bucketing: a validation batch's hypotheses line up with
``PreparedPairs.valid_records`` (the reference texts) by it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from pipelines.config import Recipe
from pipelines.errors import ConfigError
from pipelines.media.bucketing import PaddingStats, bucket_pairs, padding_stats, stream_pairs, streams
from pipelines.media.columns import total
from pipelines.media.featurize import map_featurized
from pipelines.media.sources import CheckedSplit, with_index
from pipelines.media.tokenization import (
    TranslationTokenizers,
    encode_batch,
    encode_targets,
    load_tokenizer,
    train_translation_tokenizers,
)

log = logging.getLogger(__name__)


class FeaturizePairs:
    """``map_batches`` callable: ``{source, target, index}`` ->
    ``{src_ids, tgt_ids, src_length, tgt_length, index, truncated}``.

    ``src_ids`` is the source cut to ``max_source_length`` (``[UNK]`` if it tokenizes to
    nothing); ``tgt_ids`` is ``[BOS] y [EOS]`` with ``y`` cut to ``max_target_length``, and
    ``tgt_length = len(y) + 1``, the decoder's steps. ``truncated`` marks either side cut.
    """

    def __init__(self, source_json: str, target_json: str, max_source_length: int, max_target_length: int) -> None:
        self.source = load_tokenizer(source_json)
        self.target = self.source if target_json == source_json else load_tokenizer(target_json)
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        src, src_cut = encode_batch(self.source, list(batch["source"]), self.max_source_length)
        tgt, tgt_cut = encode_targets(self.target, list(batch["target"]), self.max_target_length)
        return {
            "src_ids": [np.asarray(x, dtype=np.int32) for x in src],
            "tgt_ids": [np.asarray(x, dtype=np.int32) for x in tgt],
            "src_length": np.array([len(x) for x in src], dtype=np.int64),
            "tgt_length": np.array([len(x) - 1 for x in tgt], dtype=np.int64),
            "index": np.asarray(batch["index"], dtype=np.int64),
            "truncated": np.logical_or(src_cut, tgt_cut),
        }


def featurize_pairs(records: ray.data.Dataset, tokenizers: TranslationTokenizers, *, max_source_length: int,
                    max_target_length: int) -> ray.data.Dataset:
    """Records with an ``index`` column -> featurized pair rows (see :class:`FeaturizePairs`)."""
    return map_featurized(records, FeaturizePairs, batch_size=1024, source_json=tokenizers.source.to_str(),
                          target_json=tokenizers.target.to_str(), max_source_length=max_source_length,
                          max_target_length=max_target_length)


@dataclass
class PreparedPairs:
    tokenizers: TranslationTokenizers
    """Source and target tokenizers (one object when ``tokenizer.joint``); save them with
    ``pipelines.media.tokenization.save_translation_tokenizers``."""
    train: ray.data.Dataset
    """Bucketed, shuffled training batches (layout in ``pipelines.media.bucketing``):
    materialized, or (``batching.stream``) a lazy dataset that buckets on the fly each
    time it is iterated."""
    valid: ray.data.Dataset | None
    """Bucketed validation batches (pools in input order), or None."""
    valid_records: ray.data.Dataset | None
    """Validation records ``{source, target, origin, index}`` in input order: the
    references for BLEU/chrF, matched to batches by ``index``."""
    train_stats: PaddingStats
    report: dict[str, Any] = field(default_factory=dict)
    stage_s: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each preparation stage (``read`` when the caller times it,
    ``tokenizer``, ``featurize``, ``bucket``, ``valid``): what ``bench/ingest.py`` reports."""


def column_texts(split: CheckedSplit, *columns: str):
    """A callable giving a fresh iterator over the texts of ``columns``, in one pass:
    each batch of 4,096 rows gives its first column's texts, then the next column's."""
    def iterate() -> Iterator[str]:
        for batch in split.dataset.select_columns(list(columns)).iter_batches(batch_size=4096,
                                                                               batch_format="pyarrow"):
            for column in columns:
                yield from batch.column(column).to_pylist()

    return iterate


def check_target_budget(recipe: Recipe) -> None:
    """The longest target (plus its [EOS] step) must fit one batch."""
    if recipe.data.target_max_length + 1 > recipe.batching.max_tokens:
        raise ConfigError(
            "data.max_target_length + 1 (the [EOS] step) must fit the token budget: "
            f"{recipe.data.target_max_length} + 1 > batching.max_tokens {recipe.batching.max_tokens}"
        )


def prepare_pairs(recipe: Recipe, train: CheckedSplit, valid: CheckedSplit | None) -> PreparedPairs:
    """Tokenize and bucket checked ``{source, target, origin}`` splits (once, in the
    driver): tokenizer(s) trained on the training split, sources cut to
    ``data.max_length``, targets to ``data.max_target_length``."""
    data, batching = recipe.data, recipe.batching
    check_target_budget(recipe)
    clock = time.perf_counter()
    stage_s: dict[str, float] = {}

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stage_s[stage] = round(now - clock, 3)
        clock = now

    tokenizers = train_translation_tokenizers(column_texts(train, "source"), column_texts(train, "target"),
                                              recipe.tokenizer, both=column_texts(train, "source", "target"))
    log.info(
        "tokenizer: %s %s, %d source / %d target tokens (asked %d)",
        "joint" if tokenizers.joint else "per-language", recipe.tokenizer.kind, *tokenizers.vocab_sizes,
        recipe.tokenizer.vocab_size,
    )
    lap("tokenizer")
    lengths = {"max_source_length": data.max_length, "max_target_length": data.target_max_length}
    # Featurizing reads source, target and index: the origins stay behind.
    indexed = with_index(train.dataset.select_columns(["source", "target"]), train.rows)
    streamed = streams(batching, train.rows)
    if streamed:
        # Nothing materialized past the indexed records: one counting pass (featurize and
        # cut, streaming) gives the batch count, padding and truncation figures; training
        # buckets the same pools again each epoch.
        features = featurize_pairs(indexed, tokenizers, **lengths)
        train_batches = stream_pairs(features.drop_columns(["truncated"]), batching, seed=recipe.train.seed)
        lap("featurize")
        stats = padding_stats(stream_pairs(features, batching, seed=recipe.train.seed))
        truncated = stats.truncated
        lap("bucket")
    else:
        train_features = featurize_pairs(indexed, tokenizers, **lengths).materialize()
        truncated = int(total(train_features, "truncated"))
        lap("featurize")
        train_batches = bucket_pairs(train_features.drop_columns(["truncated"]), batching, seed=recipe.train.seed)
        stats = padding_stats(train_batches)
        lap("bucket")
    report: dict[str, Any] = {
        "train_examples": train.rows,
        "skipped_records": train.skipped,
        "truncated_examples": truncated,
        "source_vocab_size": tokenizers.vocab_sizes[0],
        "target_vocab_size": tokenizers.vocab_sizes[1],
        "streamed": streamed,
    }
    valid_batches = valid_records = None
    if valid is not None:
        valid_records = with_index(valid.dataset, valid.rows)
        valid_features = featurize_pairs(valid_records.select_columns(["source", "target", "index"]), tokenizers,
                                         **lengths)
        valid_batches = bucket_pairs(
            valid_features.drop_columns(["truncated"]), batching, seed=recipe.train.seed, shuffle=False
        )
        report["valid_examples"] = valid.rows
        report["skipped_records"] += valid.skipped
        lap("valid")
    report.update(stats.report())
    return PreparedPairs(tokenizers, train_batches, valid_batches, valid_records, stats, report, stage_s)
