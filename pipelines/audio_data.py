"""Audio data: ``audio-folder`` -> records -> log-mel frames (Ray Data) -> frame buckets.

An ``audio-folder`` (CONTRACT.md) is a folder of WAV/FLAC files with either

- a ``manifest.csv`` / ``manifest.jsonl`` naming each file (``path``, relative to the
  folder) and its ``label`` (classification) or ``transcript`` (speech-to-text), or
- no manifest: every ``*.wav``/``*.flac`` in it, labelled by its name's first
  ``_``-separated field (FSDD: ``7_theo_23.wav`` is a 7).

With ``data.valid`` empty and ``data.audio.valid_takes`` set, FSDD-style files whose third
field (the take) is in that range form the validation split and stay out of training;
with ``data.valid`` set, only those takes of it are scored (``rayseq eval CKPT --data
recordings --set data.audio.valid_takes=5-9``).

Listing happens in the driver (it is a directory walk); decoding, resampling and log-mel
run in Ray Data tasks (:func:`featurize_batch`), one recording per row, so the files are
read in parallel where the cluster has CPUs. A file that cannot be decoded becomes a bad
record naming it, which stops the run or, with ``data.on_bad_record: skip``, is counted
(``pipelines.sources.check_records``). Batches are cut by frame count under
``batching.max_tokens`` frames (``pipelines.bucketing``: the same pools, sort and greedy
cut as for text), and carry ``(rows, frames, n_mels)`` float32 features where text
batches carry token ids.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray

from pipelines.audio import AudioFeaturizer
from pipelines.bucketing import PaddingStats, bucket, bucket_pairs, padding_stats
from pipelines.config import AudioConfig, DataConfig, Recipe
from pipelines.errors import DataError
from pipelines.sources import CheckedSplit, check_records, resolve

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac")
MANIFESTS = ("manifest.csv", "manifest.jsonl")


def _record(path: str, origin: str, *, label: str = "", transcript: str = "", error: str = "") -> dict[str, str]:
    return {"path": path, "label": label, "transcript": transcript, "origin": origin, "error": error}


def fsdd_fields(path: Path) -> list[str]:
    """``7_theo_23.wav`` -> ``["7", "theo", "23"]``."""
    return path.stem.split("_")


def list_audio_folder(folder: Path, *, target: str) -> list[dict[str, str]]:
    """Records ``{path, label, transcript, origin, error}`` of an audio folder, in file order.

    ``target`` is ``label`` or ``transcript``: the manifest column a record needs (a
    folder without a manifest only has labels, from file names).
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (audio-folder data is a folder of WAV/FLAC files)")
    manifest = next((folder / name for name in MANIFESTS if (folder / name).is_file()), None)
    if manifest is not None:
        return _read_manifest(manifest, target)
    if target != "label":
        raise DataError(f"{folder}: speech-to-text needs a {' or '.join(MANIFESTS)} with path,{target} columns")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"{folder}: no {'/'.join(AUDIO_EXTENSIONS)} files and no manifest")
    return [_record(str(p), str(p), label=fsdd_fields(p)[0]) for p in files]


def _read_manifest(manifest: Path, target: str) -> list[dict[str, str]]:
    try:
        text = manifest.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{manifest}: not valid UTF-8 (byte {err.start})") from None
    if manifest.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = {"path", target} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{manifest}: needs columns path and {target}; missing {', '.join(sorted(missing))}")
        rows = [(f"{manifest}:row {i}", row) for i, row in enumerate(reader, start=1)]
    else:
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                rows.append((f"{manifest}:{i}", {"__error__": f"not valid JSON ({err.msg})"}))
                continue
            rows.append((f"{manifest}:{i}", row if isinstance(row, dict) else {"__error__": "not a JSON object"}))
    records = []
    for origin, row in rows:
        name, value = str(row.get("path") or "").strip(), str(row.get(target) or "").strip()
        error = row.get("__error__", "") or ("missing path" if not name else f"missing {target}" if not value else "")
        path = manifest.parent / name
        if not error and not path.is_file():
            error = f"no such file {path}"
        records.append(_record(str(path), f"{origin} ({name})" if name else origin, error=error, **{target: value}))
    return records


def split_takes(records: list[dict[str, str]], takes: set[int]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """``(train, valid)``: FSDD-style names whose third field is a take in ``takes`` go to valid."""
    train, valid = [], []
    for record in records:
        fields = fsdd_fields(Path(record["path"]))
        if len(fields) < 3 or not fields[2].isdigit():
            raise DataError(f"{record['origin']}: data.audio.valid_takes needs FSDD-style names "
                            "{label}_{speaker}_{take}.wav")
        (valid if int(fields[2]) in takes else train).append(record)
    return train, valid


def read_audio_splits(data: DataConfig, *, target: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The train and validation records of the recipe's audio folders (valid may be [])."""
    train = list_audio_folder(resolve(data.root, data.train), target=target)
    if data.valid:
        return train, validation_records(data, target=target)
    if data.audio.valid_takes:
        from pipelines.audio_generate import parse_takes

        train, valid = split_takes(train, parse_takes(data.audio.valid_takes))
        if not valid or not train:
            raise DataError(f"data.audio.valid_takes={data.audio.valid_takes!r} leaves "
                            f"{len(train)} training and {len(valid)} validation recordings")
        return train, valid
    return train, []


def validation_records(data: DataConfig, *, target: str) -> list[dict[str, str]]:
    """The validation records alone (``rayseq eval``, end-of-training scores): the
    ``data.valid`` folder (only its ``valid_takes`` when set), else the ``valid_takes`` of
    the training folder."""
    if not data.valid:
        return read_audio_splits(data, target=target)[1]
    records = list_audio_folder(resolve(data.root, data.valid), target=target)
    if data.audio.valid_takes:
        from pipelines.audio_generate import parse_takes

        records = split_takes(records, parse_takes(data.audio.valid_takes))[1]
        if not records:
            raise DataError(f"{data.valid}: no recording of takes {data.audio.valid_takes}")
    return records


def featurize_batch(batch: dict[str, np.ndarray], audio: dict[str, Any]) -> dict[str, Any]:
    """``map_batches`` function: records -> ``{features (T, n_mels), length, cut}`` plus the
    record's columns; a recording that fails to decode keeps its row with ``error`` set
    (and a placeholder of 4 zero frames) for ``check_records`` to stop on or count.
    A plain function (Ray tasks, not actors): the featurizer is cheap to build, and tasks
    give their CPUs back between batches, which a 2-CPU node needs for the next stage."""
    featurizer = AudioFeaturizer(AudioConfig(**audio))
    features, lengths, cut, errors = [], [], [], []
    for path, origin, error in zip(batch["path"], batch["origin"], batch["error"]):
        x, was_cut = np.zeros((4, featurizer.feature_dim), np.float32), False
        if not error:
            try:
                x, wave = featurizer(Path(path).read_bytes(), origin)
                was_cut = wave.cut
            except (DataError, OSError) as err:
                error = str(err).removeprefix(f"{origin}: ")
        features.append(x)
        lengths.append(len(x))
        cut.append(was_cut)
        errors.append(error)
    return {**{k: v for k, v in batch.items() if k != "error"}, "features": features,
            "length": np.array(lengths, dtype=np.int64), "cut": np.array(cut), "error": np.array(errors, dtype=object)}


def featurize_audio(records: list[dict[str, str]], audio: AudioConfig, which: str, policy: str) -> CheckedSplit:
    """Decode and featurize ``records`` in Ray Data; bad ones stop the run or are counted."""
    ds = ray.data.from_items([{**r, "index": i} for i, r in enumerate(records)])
    ds = ds.map_batches(featurize_batch, fn_kwargs={"audio": vars(audio)}, batch_size=32, batch_format="numpy")
    return check_records(ds, policy, which)


@dataclass
class PreparedAudio:
    feature_dim: int
    labels: list[str]
    """Classification: label names (ids are positions); speech: empty."""
    tokenizer: Any
    """Speech: the transcript tokenizer; classification: None."""
    train: ray.data.Dataset
    valid: ray.data.Dataset | None
    train_stats: PaddingStats
    report: dict[str, Any] = field(default_factory=dict)


def _report(train: CheckedSplit, valid: CheckedSplit | None) -> dict[str, Any]:
    report = {"train_examples": train.rows, "skipped_records": train.skipped,
              "truncated_examples": int(train.dataset.sum("cut") or 0)}
    if valid is not None:
        report["valid_examples"] = valid.rows
        report["skipped_records"] += valid.skipped
    return report


def prepare_audio_classification(recipe: Recipe) -> PreparedAudio:
    """Spoken-label classification (FSDD digits): frames + label id per recording."""
    data = recipe.data
    train_records, valid_records = read_audio_splits(data, target="label")
    train = featurize_audio(train_records, data.audio, "train", data.on_bad_record)
    labels = sorted(train.dataset.unique("label"))
    if len(labels) < 2:
        raise DataError(f"data.train: need at least 2 distinct labels, found {labels}")
    ids = {name: i for i, name in enumerate(labels)}

    def to_rows(batch: dict[str, np.ndarray]) -> dict[str, Any]:
        unknown = [(o, lab) for o, lab in zip(batch["origin"], batch["label"]) if lab not in ids]
        if unknown:
            raise DataError(f"{unknown[0][0]}: label {unknown[0][1]!r} was not seen in training (labels: {labels})")
        return {"ids": list(batch["features"]), "length": batch["length"],
                "label": np.array([ids[lab] for lab in batch["label"]], dtype=np.int64)}

    def batches(split: CheckedSplit, shuffle: bool) -> ray.data.Dataset:
        rows = split.dataset.map_batches(to_rows, batch_format="numpy", batch_size=256)
        return bucket(rows, recipe.batching, seed=recipe.train.seed, shuffle=shuffle)

    valid = featurize_audio(valid_records, data.audio, "valid", data.on_bad_record) if valid_records else None
    train_batches = batches(train, True)
    stats = padding_stats(train_batches)
    report = {**_report(train, valid), **stats.report()}
    return PreparedAudio(data.audio.n_mels, labels, None, train_batches,
                         batches(valid, False) if valid else None, stats, report)


def prepare_speech(recipe: Recipe) -> PreparedAudio:
    """Speech-to-text: frames + ``[BOS] transcript [EOS]`` tokens per recording, bucketed
    as pairs (``pipelines.bucketing.bucket_pairs``: frames against target tokens)."""
    from pipelines.tokenization import encode_targets, load_tokenizer, train_tokenizer

    data = recipe.data
    train_records, valid_records = read_audio_splits(data, target="transcript")
    train = featurize_audio(train_records, data.audio, "train", data.on_bad_record)

    def transcripts():
        for batch in train.dataset.select_columns(["transcript"]).iter_batches(batch_size=4096, batch_format="pyarrow"):
            yield from batch.column("transcript").to_pylist()

    tokenizer = train_tokenizer(transcripts(), recipe.tokenizer)
    tokenizer_json, max_target = tokenizer.to_str(), data.target_max_length

    def to_pairs(batch: dict[str, np.ndarray]) -> dict[str, Any]:
        target, cut = encode_targets(load_tokenizer(tokenizer_json), list(batch["transcript"]), max_target)
        return {"src_ids": list(batch["features"]), "src_length": batch["length"],
                "tgt_ids": [np.asarray(t, dtype=np.int32) for t in target],
                "tgt_length": np.array([len(t) - 1 for t in target], dtype=np.int64),
                "index": batch["index"], "cut": np.logical_or(batch["cut"], cut)}

    def batches(split: CheckedSplit, shuffle: bool) -> ray.data.Dataset:
        rows = split.dataset.map_batches(to_pairs, batch_format="numpy", batch_size=256)
        return bucket_pairs(rows.drop_columns(["cut"]), recipe.batching, seed=recipe.train.seed, shuffle=shuffle)

    valid = featurize_audio(valid_records, data.audio, "valid", data.on_bad_record) if valid_records else None
    train_batches = batches(train, True)
    stats = padding_stats(train_batches)
    report = {**_report(train, valid), "target_vocab_size": tokenizer.get_vocab_size(), **stats.report()}
    return PreparedAudio(data.audio.n_mels, [], tokenizer, train_batches,
                         batches(valid, False) if valid else None, stats, report)
