"""Speech synthesis data: FSDD-style recordings -> (word, speaker, log-mel frames) -> buckets.

A recording ``{word}_{speaker}_{take}.wav`` (``7_theo_23.wav``: theo says "seven") is one
example: its conditions are the word and speaker named by its file name, its target the
log-mel frames of its audio (``data.audio``; not normalised per recording, which would
erase loudness and colour, but per band over the whole training split, with the
mean and deviation the checkpoint keeps to undo it). ``data.audio.valid_takes``
carves validation out of the training folder as the digit recipe does. Each batch row::

    tokens      (rows, T, M) float32     normalised frames, T a multiple of
                                         ``model.frames_per_step``, padded with 0
    conditions  (rows, 2) int64          word id, speaker id (the sorted names)
    lengths     (rows,) int64            real frames per row
    steps       (rows,) int64            decoder steps per row: ceil(frames / r)
    labels      (rows, T, M + 1) float32 the frames, then 1 on real frames (0: padding)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray

from pipelines.config import AudioConfig, Recipe
from pipelines.errors import DataError
from pipelines.media.audio.folders import featurize_audio, fsdd_fields, read_audio_splits, validation_records
from pipelines.media.bucketing import PaddingStats, bucket_with, pad_batch, padding_stats, plan_batches
from pipelines.media.columns import distinct, total
from pipelines.media.sources import CheckedSplit

log = logging.getLogger(__name__)


def with_speakers(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Audio-folder records (``label``: the name's first field, the word) with their
    ``speaker``: the name's second field."""
    out = []
    for record in records:
        fields = fsdd_fields(Path(record["path"]))
        if len(fields) < 2 or not fields[1]:
            raise DataError(f"{record['origin']}: speech synthesis needs FSDD-style names {{word}}_{{speaker}}_"
                            "{take}.wav (the word and speaker condition the model)")
        out.append({**record, "speaker": fields[1]})
    return out


@dataclass(frozen=True)
class FrameScale:
    """Per-band mean and deviation of the training frames: the model reads and predicts
    ``(log_mel - mean) / std``."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, split: CheckedSplit) -> FrameScale:
        total = squares = count = 0.0
        for batch in split.dataset.select_columns(["features"]).iter_batches(batch_size=256, batch_format="numpy"):
            for frames in batch["features"]:
                frames = np.asarray(frames, dtype=np.float64)
                total, squares, count = total + frames.sum(0), squares + (frames ** 2).sum(0), count + len(frames)
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean ** 2, 1e-6))
        return cls(mean.astype(np.float32), std.astype(np.float32))

    @classmethod
    def from_meta(cls, path: Any, meta: dict[str, Any], bands: int) -> FrameScale:
        mean, std = meta.get("frame_mean"), meta.get("frame_std")
        if (not isinstance(mean, list) or not isinstance(std, list) or len(mean) != bands or len(std) != bands
                or min(std, default=0) <= 0):
            raise DataError(f"{path}/meta.json: needs 'frame_mean' and 'frame_std', {bands} numbers each (std > 0)")
        return cls(np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32))

    def meta(self) -> dict[str, list[float]]:
        return {"frame_mean": [round(float(x), 6) for x in self.mean],
                "frame_std": [round(float(x), 6) for x in self.std]}

    def normalise(self, frames: np.ndarray) -> np.ndarray:
        return ((frames - self.mean) / self.std).astype(np.float32)

    def restore(self, frames: np.ndarray) -> np.ndarray:
        return (frames * self.std + self.mean).astype(np.float32)


class CutFramePool:
    """``map_batches`` function: a pool of rows -> its padded batches (``rows * longest <=
    max_tokens`` frames; the layout in the module docstring)."""

    def __init__(self, config, scale: FrameScale, frames_per_step: int, ids: dict[str, dict[str, int]],
                 sort: bool) -> None:
        self.config, self.scale, self.r, self.ids, self.sort = config, scale, frames_per_step, ids, sort

    def __call__(self, pool: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
        lengths = np.asarray(pool["length"], dtype=np.int64)
        out: dict[str, list[Any]] = {"tokens": [], "conditions": [], "lengths": [], "steps": [], "labels": []}
        for rows in plan_batches(lengths, max_tokens=self.config.max_tokens, max_batch_size=self.config.max_batch_size,
                                 sort=self.sort):
            frames = [self.scale.normalise(np.asarray(pool["features"][r], dtype=np.float32)) for r in rows]
            padded = pad_batch(frames, 0)
            extra = -padded.shape[1] % self.r  # whole decoder steps
            padded = np.pad(padded, ((0, 0), (0, extra), (0, 0)))
            real = np.pad(pad_batch([np.ones(len(f), np.float32) for f in frames], 0), ((0, 0), (0, extra)))
            out["tokens"].append(padded)
            out["conditions"].append(np.array([[self.ids["words"][pool["label"][r]],
                                                self.ids["speakers"][pool["speaker"][r]]] for r in rows],
                                              dtype=np.int64))
            out["lengths"].append(lengths[rows])
            out["steps"].append(-(-lengths[rows] // self.r))
            out["labels"].append(np.concatenate([padded, real[..., None]], axis=-1))
        return out


@dataclass
class PreparedSpeech:
    train: ray.data.Dataset
    valid: ray.data.Dataset | None
    train_stats: PaddingStats
    words: list[str]
    speakers: list[str]
    scale: FrameScale
    report: dict[str, Any] = field(default_factory=dict)


def featurized(records: list[dict[str, Any]], audio: AudioConfig, which: str, policy: str) -> CheckedSplit:
    return featurize_audio(with_speakers(records), audio, which, policy, raw=True)


def prepare_speech(recipe: Recipe) -> PreparedSpeech:
    data = recipe.data
    train_records, valid_records = read_audio_splits(data, target="label")
    train = featurized(train_records, data.audio, "train", data.on_bad_record)
    valid = featurized(valid_records, data.audio, "valid", data.on_bad_record) if valid_records else None
    words, speakers = distinct(train.dataset, "label"), distinct(train.dataset, "speaker")
    ids = {"words": {w: i for i, w in enumerate(words)}, "speakers": {s: i for i, s in enumerate(speakers)}}
    if valid is not None:
        for column, known in (("label", ids["words"]), ("speaker", ids["speakers"])):
            unseen = sorted(set(distinct(valid.dataset, column)) - set(known))
            if unseen:
                what = "word" if column == "label" else "speaker"
                raise DataError(f"data.valid: {what} {unseen[0]!r} is not in the training recordings "
                                f"(known: {', '.join(known)})")
    scale = FrameScale.of(train)

    def batches(split: CheckedSplit, shuffle: bool) -> ray.data.Dataset:
        cut = CutFramePool(recipe.batching, scale, recipe.model.frames_per_step, ids, sort=recipe.batching.sort)
        return bucket_with(split.dataset, cut, recipe.batching, seed=recipe.train.seed, shuffle=shuffle)

    train_batches = batches(train, True)
    stats = padding_stats(train_batches)
    report: dict[str, Any] = {"train_examples": train.rows, "skipped_records": train.skipped,
                              "words": len(words), "speakers": len(speakers),
                              "truncated_examples": int(total(train.dataset, "cut"))}
    if valid is not None:
        report["valid_examples"] = valid.rows
        report["skipped_records"] += valid.skipped
    report.update(stats.report())
    log.info("speech: %d recordings of %d words by %d speakers -> %d batches", train.rows, len(words),
             len(speakers), stats.batches)
    return PreparedSpeech(train_batches, batches(valid, False) if valid else None, stats, words, speakers, scale,
                          report)


def evaluation_records(recipe: Recipe) -> list[dict[str, Any]]:
    """The recordings ``rayseq eval`` compares against: the recipe's validation records,
    each with its ``word`` (``label``) and ``speaker``."""
    return with_speakers(validation_records(recipe.data, target="label"))
