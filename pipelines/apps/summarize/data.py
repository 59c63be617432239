"""Summarization data: ``{source, target}`` records (the recipe's ``data.source_column``
and ``data.target_column`` of JSONL/CSV/TSV/Parquet/hf, e.g. DialogSum's ``dialogue`` and
``summary``) -> one word vocabulary trained on both sides -> extended ids
(``pipelines.apps.summarize.words``) -> bucketed by source length under the token budget
(``pipelines.media.bucketing``, the layout every text pair uses).

Sources longer than ``data.max_length`` words are cut there and targets at
``data.max_target_length``; both are counted and reported (``truncated_sources``,
``truncated_targets``), never silently dropped.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import ray

from pipelines.config import Recipe
from pipelines.media.bucketing import bucket_pairs, padding_stats
from pipelines.media.columns import total
from pipelines.media.featurize import map_featurized
from pipelines.media.pairs import PreparedPairs, check_target_budget, column_texts
from pipelines.media.sources import check_records, read_pairs, with_index
from pipelines.media.tokenization import TranslationTokenizers, load_tokenizer

log = logging.getLogger(__name__)


class FeaturizeCopyPairs:
    """``map_batches`` callable: ``{source, target, index}`` -> ``{src_ids, tgt_ids,
    src_length, tgt_length, index, src_truncated, tgt_truncated}`` in extended ids:
    ``src_ids`` cut to ``max_source_length`` (copying only reaches what was kept),
    ``tgt_ids`` = ``[BOS] y [EOS]`` with ``y`` cut to ``max_target_length``."""

    def __init__(self, tokenizer_json: str, max_source_length: int, max_target_length: int) -> None:
        from pipelines.apps.summarize.words import Words

        self.words = Words(load_tokenizer(tokenizer_json))
        self.max_source_length, self.max_target_length = max_source_length, max_target_length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        src_rows, tgt_rows, src_cut, tgt_cut = [], [], [], []
        for source, target in zip(batch["source"], batch["target"]):
            src_words, tgt_words = self.words.split(str(source)), self.words.split(str(target))
            src_cut.append(len(src_words) > self.max_source_length)
            tgt_cut.append(len(tgt_words) > self.max_target_length)
            ids, outside = self.words.source(src_words[: self.max_source_length] or ["[UNK]"])
            src_rows.append(np.asarray(ids, dtype=np.int32))
            y = self.words.target(tgt_words[: self.max_target_length], outside)
            tgt_rows.append(np.asarray([self.words.bos, *y, self.words.eos], dtype=np.int32))
        return {
            "src_ids": src_rows,
            "tgt_ids": tgt_rows,
            "src_length": np.array([len(x) for x in src_rows], dtype=np.int64),
            "tgt_length": np.array([len(x) - 1 for x in tgt_rows], dtype=np.int64),
            "index": np.asarray(batch["index"], dtype=np.int64),
            "src_truncated": np.array(src_cut, dtype=bool),
            "tgt_truncated": np.array(tgt_cut, dtype=bool),
        }


def featurize(records: ray.data.Dataset, tokenizer_json: str, recipe: Recipe) -> ray.data.Dataset:
    return map_featurized(records.select_columns(["source", "target", "index"]), FeaturizeCopyPairs,
                          batch_size=512, tokenizer_json=tokenizer_json, max_source_length=recipe.data.max_length,
                          max_target_length=recipe.data.target_max_length)


def prepare_summaries(recipe: Recipe) -> PreparedPairs:
    """Read, check, build the vocabulary, featurize and bucket (once, in the driver)."""
    from pipelines.apps.summarize.words import train_word_tokenizer

    data, batching = recipe.data, recipe.batching
    check_target_budget(recipe)
    train = check_records(read_pairs(data, "train"), data.on_bad_record, "train")
    valid = check_records(read_pairs(data, "valid"), data.on_bad_record, "valid") if data.valid else None

    def both():
        yield from column_texts(train, "source")()
        yield from column_texts(train, "target")()

    tokenizer = train_word_tokenizer(both(), recipe.tokenizer)
    tokenizer_json = tokenizer.to_str()
    log.info("vocabulary: %d words (asked %d)", tokenizer.get_vocab_size(), recipe.tokenizer.vocab_size)
    features = featurize(with_index(train.dataset, train.rows), tokenizer_json, recipe).materialize()
    report: dict[str, Any] = {
        "train_examples": train.rows,
        "skipped_records": train.skipped,
        "truncated_sources": int(total(features, "src_truncated")),
        "truncated_targets": int(total(features, "tgt_truncated")),
        "vocab_size": tokenizer.get_vocab_size(),
    }
    log.info("training data: %d of %d sources cut at data.max_length %d words, %d summaries at "
             "data.max_target_length %d", report["truncated_sources"], train.rows, data.max_length,
             report["truncated_targets"], data.target_max_length)
    train_batches = bucket_pairs(features.drop_columns(["src_truncated", "tgt_truncated"]), batching,
                                 seed=recipe.train.seed)
    valid_batches = valid_records = None
    if valid is not None:
        valid_records = with_index(valid.dataset, valid.rows)
        valid_features = featurize(valid_records, tokenizer_json, recipe)
        valid_batches = bucket_pairs(valid_features.drop_columns(["src_truncated", "tgt_truncated"]), batching,
                                     seed=recipe.train.seed, shuffle=False)
        report["valid_examples"] = valid.rows
        report["skipped_records"] += valid.skipped
    stats = padding_stats(train_batches)
    report.update(stats.report())
    return PreparedPairs(TranslationTokenizers(tokenizer, tokenizer, joint=True), train_batches, valid_batches,
                         valid_records, stats, report)
