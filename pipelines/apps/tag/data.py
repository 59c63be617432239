"""Tagging data: read (CoNLL columns or a Hugging Face dataset) -> check -> vocabularies
-> featurize -> bucket by sentence length.

Each bucketed batch row carries the characters too::

    tokens  (rows, T) int32      word ids, padded with 0
    cases   (rows, T) int32      case feature ids (``models.tagger.CASES``), padded with 0
    chars   (rows, T, C) int32   character ids of each word, padded with 0
    lengths (rows,) int64        words per sentence
    labels  (rows, T) int32      tag ids in ``model.tag_scheme``, padded with -1
    index   (rows,) int64        passed through when the input has an ``index`` column
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray

from pipelines.apps.tag.vocab import TaggerVocab
from pipelines.config import DataConfig, Recipe
from pipelines.errors import DataError
from pipelines.media.bucketing import PaddingStats, bucket_with, pad_batch, padding_stats, plan_batches
from pipelines.media.columns import total
from pipelines.media.featurize import map_featurized
from pipelines.media.sources import (
    CheckedSplit,
    check_records,
    is_hf_folder,
    load_hf,
    read_file_records,
    records_dataset,
    resolve,
    text_lines,
)
from pipelines.media.tags import check, convert, parse_conll, spans, tag_set

log = logging.getLogger(__name__)

FORMATS = ("conll", "token-tag", "hf")
LABEL_PAD = -1


def detect(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    return "hf" if is_hf_folder(path) else "conll"


def columns(data: DataConfig) -> tuple[str, str]:
    """An ``hf`` dataset's token and tag columns: ``data.text_column`` / ``label_column``
    when set, else ``tokens`` / ``ner_tags`` (the ``conll2003`` dataset's)."""
    return (data.text_column if data.text_column != "text" else "tokens",
            data.label_column if data.label_column != "label" else "ner_tags")


def read_tagged(data: DataConfig, which: str) -> ray.data.Dataset:
    """Sentences ``{tokens, tags, origin, error}`` of the ``train`` or ``valid`` split."""
    path = resolve(data.root, data.train if which == "train" else data.valid)
    fmt = detect(path, data.format)
    if fmt == "hf":
        return _read_hf(path, data.split if which == "train" else data.valid_split, data)
    two = fmt == "token-tag"

    def parse(raw: bytes, name: str) -> list[dict[str, Any]]:
        return parse_conll(text_lines(raw, name), name, tag_column=-1 if two else data.tag_column,
                           scheme=data.tag_scheme, columns=2 if two else None)

    return read_file_records(path, which, parse)


def _read_hf(path: Path, split: str, data: DataConfig) -> ray.data.Dataset:
    return records_dataset(hf_records(load_hf(path, split), data, f"{path}[{split}]"))


def hf_records(loaded, data: DataConfig, where: str) -> list[dict[str, Any]]:
    """Sentences of a ``datasets.Dataset`` (``where`` names it in origins and errors);
    tags given as ``ClassLabel`` ids become their names."""
    token_column, tag_column = columns(data)
    for column in (token_column, tag_column):
        if column not in loaded.column_names:
            raise DataError(f"{where}: no column {column!r} (columns: {loaded.column_names}); "
                            "set data.text_column / data.label_column")
    names = getattr(getattr(loaded.features[tag_column], "feature", None), "names", None)
    records = []
    for i, (tokens, tags) in enumerate(zip(loaded[token_column], loaded[tag_column])):
        tags = [names[t] if names is not None else str(t) for t in tags]
        if len(tokens) != len(tags):
            error = f"{len(tokens)} tokens but {len(tags)} tags"
        elif not tokens:
            error = "no tokens"
        else:
            problem = check(tags, data.tag_scheme)
            error = f"{problem} (data.tag_scheme: {data.tag_scheme})" if problem else ""
        records.append({"tokens": [str(t) for t in tokens], "tags": tags, "origin": f"{where}:row {i + 1}",
                        "error": error})
    return records


class Featurize:
    """``map_batches`` callable: sentences -> ``{words, cases, chars, labels, length,
    truncated}`` (tags converted from ``data.tag_scheme`` to the model's)."""

    def __init__(self, vocab_json: str, max_length: int) -> None:
        self.vocab = TaggerVocab.from_json(vocab_json, "vocab")
        self.max_length = max_length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, list] = {k: [] for k in ("words", "cases", "chars", "labels", "length", "truncated")}
        for tokens, tags, origin in zip(batch["tokens"], batch["tags"], batch["origin"]):
            tokens, tags = list(tokens), convert(list(tags), self.vocab.scheme)
            out["truncated"].append(len(tokens) > self.max_length)
            tokens, tags = tokens[: self.max_length], tags[: self.max_length]
            words, cases, chars = self.vocab.encode(tokens)
            out["words"].append(words)
            out["cases"].append(cases)
            out["chars"].append(chars)
            out["labels"].append(self.vocab.tag_ids(tags, origin))
            out["length"].append(len(tokens))
        result = {k: v for k, v in out.items() if k in ("words", "cases", "chars", "labels")}
        result["length"] = np.array(out["length"], dtype=np.int64)
        result["truncated"] = np.array(out["truncated"], dtype=bool)
        if "index" in batch:
            result["index"] = np.asarray(batch["index"], dtype=np.int64)
        return result


class CutTagPool:
    """``map_batches`` function: a pool of featurized sentences -> its padded batches
    (``rows * longest <= max_tokens``, sorted by length; the layout in the module docstring)."""

    def __init__(self, config, sort: bool) -> None:
        self.config, self.sort = config, sort

    def __call__(self, pool: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
        lengths = np.asarray(pool["length"], dtype=np.int64)
        names = ["tokens", "cases", "chars", "lengths", "labels"] + (["index"] if "index" in pool else [])
        out: dict[str, list[Any]] = {name: [] for name in names}
        for rows in plan_batches(lengths, max_tokens=self.config.max_tokens,
                                 max_batch_size=self.config.max_batch_size, sort=self.sort):
            out["tokens"].append(pad_batch([pool["words"][r] for r in rows]))
            out["cases"].append(pad_batch([pool["cases"][r] for r in rows]))
            out["chars"].append(pad_batch([np.asarray(pool["chars"][r]).reshape(lengths[r], -1) for r in rows]))
            out["lengths"].append(lengths[rows])
            out["labels"].append(pad_batch([pool["labels"][r] for r in rows], LABEL_PAD))
            if "index" in pool:
                out["index"].append(np.asarray(pool["index"], dtype=np.int64)[rows])
        return out


def bucket_sentences(features: ray.data.Dataset, recipe: Recipe, *, shuffle: bool) -> ray.data.Dataset:
    return bucket_with(features, CutTagPool(recipe.batching, sort=recipe.batching.sort), recipe.batching,
                       seed=recipe.train.seed, shuffle=shuffle)


def featurize(records: ray.data.Dataset, vocab: TaggerVocab, max_length: int) -> ray.data.Dataset:
    return map_featurized(records, Featurize, batch_size=512, vocab_json=vocab.to_json(), max_length=max_length)


@dataclass
class PreparedTags:
    vocab: TaggerVocab
    train: ray.data.Dataset
    valid: ray.data.Dataset | None
    train_stats: PaddingStats
    report: dict[str, Any] = field(default_factory=dict)


def training_sentences(split: CheckedSplit) -> tuple[list[list[str]], set[str]]:
    """The training tokens (for the vocabularies) and the entity types their tags name."""
    sentences, types = [], set()
    for batch in split.dataset.select_columns(["tokens", "tags"]).iter_batches(batch_size=4096, batch_format="pyarrow"):
        for tokens, tags in zip(batch.column("tokens").to_pylist(), batch.column("tags").to_pylist()):
            sentences.append(tokens)
            types.update(kind for kind, _, _ in spans(tags))
    return sentences, types


def prepare_tagging(recipe: Recipe) -> PreparedTags:
    data = recipe.data
    train = check_records(read_tagged(data, "train"), data.on_bad_record, "train")
    valid = check_records(read_tagged(data, "valid"), data.on_bad_record, "valid") if data.valid else None
    sentences, types = training_sentences(train)
    if not types:
        raise DataError(f"data.train: no entities in {train.rows} sentences: every tag is O")
    vocab = TaggerVocab.build(sentences, tag_set(sorted(types), recipe.model.tag_scheme), recipe.model.tag_scheme,
                              min_frequency=recipe.tokenizer.min_frequency, max_words=recipe.tokenizer.vocab_size,
                              lowercase=recipe.tokenizer.lowercase)
    log.info("vocabulary: %d words, %d characters; tags (%s): %s", len(vocab.words), len(vocab.chars),
             vocab.scheme, " ".join(vocab.tags))
    features = featurize(train.dataset, vocab, data.max_length).materialize()
    truncated = int(total(features, "truncated"))
    train_batches = bucket_sentences(features.drop_columns(["truncated"]), recipe, shuffle=True)
    report: dict[str, Any] = {"train_examples": train.rows, "skipped_records": train.skipped,
                              "truncated_examples": truncated}
    valid_batches = None
    if valid is not None:
        valid_features = featurize(valid.dataset, vocab, 1 << 30).drop_columns(["truncated"])
        valid_batches = bucket_sentences(valid_features, recipe, shuffle=False)
        report["valid_examples"] = valid.rows
        report["skipped_records"] += valid.skipped
    stats = padding_stats(train_batches)
    report.update(stats.report())
    return PreparedTags(vocab, train_batches, valid_batches, stats, report)
