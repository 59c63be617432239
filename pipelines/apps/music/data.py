"""Chorale data: read (CSV / MIDI files) -> check -> windows (transposed copies) -> bucket.

Training rows are windows of ``data.window + 1`` chords every ``data.window_shift``
(``data.window: 0``: whole pieces; a piece shorter than a window is one row of its own),
each also moved by every shift in ``-data.transpose..+data.transpose`` semitones that
keeps its pitches in range. Validation during training follows the Hands-On ML book's
protocol (:data:`PROTOCOL`): windows of 32 + 1 chords every 16, the first note of each
unscored. Each bucketed batch row::

    tokens   (rows, T, 4) int32   chords (MIDI pitches, 0 = rest), padded with 0
    starts   (rows,) int64        each row's first step in its piece (its bar position)
    lengths  (rows,) int64        chords per row
    labels   (rows, T, 4) int32   the notes to predict (the same chords), -1 where not scored
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from pipelines.config import DataConfig, Recipe
from pipelines.errors import DataError
from pipelines.media.bucketing import PaddingStats, bucket_with, pad_batch, padding_stats, plan_batches
from pipelines.media.chorales import VOICES, parse_piece, transposed, windows
from pipelines.media.columns import total
from pipelines.media.sources import check_records, read_file_records, resolve

log = logging.getLogger(__name__)

LABEL_PAD = -1


@dataclass(frozen=True)
class Protocol:
    """How notes are scored: windows of ``window + 1`` chords every ``shift`` (``window``
    0: whole pieces), every note but a row's first."""

    window: int
    shift: int


PROTOCOL = Protocol(window=32, shift=16)
"""The book's: ``window_size=32`` (+1 for the target), ``window_shift=16``, only full
windows; 131 notes of each 132 are scored."""
WHOLE = Protocol(window=0, shift=0)


def read_pieces(data: DataConfig, which: str) -> ray.data.Dataset:
    """Pieces ``{chords (flat, 4 per step), steps, origin, error}`` of the ``train`` or
    ``valid`` split: a file, or every file under a folder."""
    path = resolve(data.root, data.train if which == "train" else data.valid)

    def parse(raw: bytes, name: str) -> list[dict[str, Any]]:
        piece = parse_piece(raw, name)
        chords = np.asarray(piece["chords"], dtype=np.int32).reshape(-1, VOICES)
        return [{"chords": chords.reshape(-1), "steps": len(chords), "origin": name, "error": piece["error"]}]

    return read_file_records(path, which, parse)


def piece_rows(chords: np.ndarray, protocol: Protocol, *, transpose: int = 0,
               score_first: bool) -> list[tuple[int, np.ndarray]]:
    """The rows one piece gives under ``protocol``: ``(start step, (T, 4) chords)``."""
    if protocol.window == 0:
        cut = [(0, chords)]
    else:
        cut = windows(chords, protocol.window + 1, protocol.shift)
        if not cut and score_first:  # training: a short piece is a row of its own, not dropped
            cut = [(0, chords)]
    rows = []
    for start, row in cut:
        for semitones in range(-transpose, transpose + 1):
            moved = row if semitones == 0 else transposed(row, semitones)
            if moved is not None:
                rows.append((start, moved))
    return rows


def labels_of(chords: np.ndarray, score_first: bool) -> np.ndarray:
    labels = chords.astype(np.int32).copy()
    if not score_first:
        labels[0, 0] = LABEL_PAD
    return labels


class Windows:
    """``flat_map`` callable: a piece -> its rows ``{chords, labels (flat), start, length}``."""

    def __init__(self, protocol: Protocol, transpose: int, score_first: bool) -> None:
        self.protocol, self.transpose, self.score_first = protocol, transpose, score_first

    def __call__(self, piece: dict[str, Any]) -> list[dict[str, Any]]:
        chords = np.asarray(piece["chords"], dtype=np.int32).reshape(-1, VOICES)
        return [{"chords": row.reshape(-1), "labels": labels_of(row, self.score_first).reshape(-1),
                 "start": start, "length": len(row)}
                for start, row in piece_rows(chords, self.protocol, transpose=self.transpose,
                                             score_first=self.score_first)]


class CutChordPool:
    """``map_batches`` function: a pool of rows -> its padded batches (``rows * longest
    <= max_tokens`` chords, sorted by length; the layout in the module docstring)."""

    def __init__(self, config, sort: bool) -> None:
        self.config, self.sort = config, sort

    def __call__(self, pool: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
        lengths = np.asarray(pool["length"], dtype=np.int64)
        out: dict[str, list[Any]] = {"tokens": [], "starts": [], "lengths": [], "labels": []}
        for rows in plan_batches(lengths, max_tokens=self.config.max_tokens,
                                 max_batch_size=self.config.max_batch_size, sort=self.sort):
            out["tokens"].append(pad_batch([np.asarray(pool["chords"][r]).reshape(-1, VOICES) for r in rows], 0))
            out["starts"].append(np.asarray(pool["start"], dtype=np.int64)[rows])
            out["lengths"].append(lengths[rows])
            out["labels"].append(pad_batch([np.asarray(pool["labels"][r]).reshape(-1, VOICES) for r in rows],
                                           LABEL_PAD))
        return out


def chord_batches(pieces: ray.data.Dataset, recipe: Recipe, protocol: Protocol, *, transpose: int,
                  score_first: bool, shuffle: bool) -> ray.data.Dataset:
    rows = pieces.flat_map(Windows(protocol, transpose, score_first))
    return bucket_with(rows, CutChordPool(recipe.batching, sort=recipe.batching.sort), recipe.batching,
                       seed=recipe.train.seed, shuffle=shuffle)


@dataclass
class PreparedChorales:
    train: ray.data.Dataset
    valid: ray.data.Dataset | None
    train_stats: PaddingStats
    report: dict[str, Any] = field(default_factory=dict)


def training_protocol(data: DataConfig) -> Protocol:
    return Protocol(window=data.window, shift=data.window_shift)


def prepare_chorales(recipe: Recipe) -> PreparedChorales:
    data = recipe.data
    train = check_records(read_pieces(data, "train"), data.on_bad_record, "train")
    valid = check_records(read_pieces(data, "valid"), data.on_bad_record, "valid") if data.valid else None
    train_batches = chord_batches(train.dataset, recipe, training_protocol(data), transpose=data.transpose,
                                  score_first=True, shuffle=True)
    report: dict[str, Any] = {"train_examples": train.rows, "skipped_records": train.skipped,
                              "train_steps": int(total(train.dataset, "steps"))}
    valid_batches = None
    if valid is not None:
        valid_batches = chord_batches(valid.dataset, recipe, PROTOCOL, transpose=0, score_first=False, shuffle=False)
        report["valid_examples"] = valid.rows
        report["skipped_records"] += valid.skipped
        if valid_batches.count() == 0:
            raise DataError(f"data.valid: no piece has {PROTOCOL.window + 1} chords, the shortest window "
                            "validation scores (the book's protocol)")
    stats = padding_stats(train_batches)
    report.update(stats.report())
    log.info("chorales: %d training pieces -> %d windows in %d batches", train.rows, stats.examples, stats.batches)
    return PreparedChorales(train_batches, valid_batches, stats, report)


def read_checked(data: DataConfig, which: str) -> list[dict[str, Any]]:
    """Every good piece of a split, in file order: ``{chords (T, 4), origin}`` (``rayseq eval``)."""
    pieces = check_records(read_pieces(data, which), data.on_bad_record, which)
    rows = sorted(pieces.dataset.iter_rows(), key=lambda r: r["origin"])
    return [{"chords": np.asarray(r["chords"], dtype=np.int64).reshape(-1, VOICES), "origin": r["origin"]}
            for r in rows]
