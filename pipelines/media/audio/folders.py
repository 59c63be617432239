"""Audio data: ``audio-folder`` -> records -> log-mel frames (Ray Data) -> frame buckets.

An ``audio-folder`` (``docs/data-formats.md``) is a folder of WAV/FLAC files with either

- a ``manifest.csv`` / ``manifest.jsonl`` naming each file (``path``, relative to the
  folder) and its ``label`` (classification) or ``transcript`` (speech-to-text), or
- no manifest: every ``*.wav``/``*.flac`` in it, labelled by its name's first
  ``_``-separated field (FSDD: ``7_theo_23.wav`` is a 7), or the field
  ``data.audio.label_field`` says (1: the speaker, ``theo``).

With ``data.valid`` empty and ``data.audio.valid_takes`` set, FSDD-style files whose third
field (the take) is in that range form the validation split and stay out of training;
with ``data.valid`` set, only those takes of it are scored (``rayseq eval CKPT --data
recordings --set data.audio.valid_takes=5-9``).

With ``data.audio.speed_perturb`` or ``tail_cut_copies`` set, each training record is
listed once per copy (``speed`` and ``tail_cut`` columns) before featurizing, so
:func:`featurize_batch` makes the augmented copies in the same Ray Data pass; validation
records never get one.

Listing happens in the driver (it is a directory walk); decoding, resampling and log-mel
run in Ray Data tasks (:func:`featurize_batch`), one recording per row, so the files are
read in parallel where the cluster has CPUs. A file that cannot be decoded becomes a bad
record naming it, which stops the run or, with ``data.on_bad_record: skip``, is counted
(``pipelines.media.sources.check_records``). Batches are cut by frame count under
``batching.max_tokens`` frames (``pipelines.media.bucketing``: the same pools, sort and greedy
cut as for text), and carry ``(rows, frames, n_mels)`` float32 features where text
batches carry token ids.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import AudioConfig, DataConfig, Recipe
from pipelines.errors import ConfigError, DataError
from pipelines.media.audio.features import AudioFeaturizer
from pipelines.media.batches import MediaBatches
from pipelines.media.manifests import MANIFESTS, find_manifest, read_manifest
from pipelines.media.manifests import record as manifest_record
from pipelines.media.sources import CheckedSplit, check_records, records_dataset, resolve

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac")


def fsdd_fields(path: Path) -> list[str]:
    """``7_theo_23.wav`` -> ``["7", "theo", "23"]``."""
    return path.stem.split("_")


def list_audio_folder(folder: Path, *, target: str, label_field: int = 0) -> list[dict[str, str]]:
    """Records ``{path, <target>, origin, error}`` of an audio folder, in file order.

    ``target`` is ``label`` or ``transcript``: the manifest column a record needs (a
    folder without a manifest only has labels: field ``label_field`` of each name).
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (audio-folder data is a folder of WAV/FLAC files)")
    manifest = find_manifest(folder)
    if manifest is not None:
        return read_manifest(manifest, target)
    if target != "label":
        raise DataError(f"{folder}: speech-to-text needs a {' or '.join(MANIFESTS)} with path,{target} columns")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"{folder}: no {'/'.join(AUDIO_EXTENSIONS)} files and no manifest")
    short = next((p for p in files if len(fsdd_fields(p)) <= label_field), None)
    if short is not None:
        raise DataError(f"{short}: data.audio.label_field={label_field} needs a name of at least {label_field + 1} "
                        "'_'-separated fields ({label}_{speaker}_{take}.wav)")
    return [manifest_record(str(p), str(p), "label", fsdd_fields(p)[label_field]) for p in files]


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
    train = list_audio_folder(resolve(data.root, data.train), target=target, label_field=data.audio.label_field)
    if data.valid:
        return train, validation_records(data, target=target)
    if data.audio.valid_takes:
        from pipelines.media.audio.synthetic import parse_takes

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
    records = list_audio_folder(resolve(data.root, data.valid), target=target, label_field=data.audio.label_field)
    if data.audio.valid_takes:
        from pipelines.media.audio.synthetic import parse_takes

        records = split_takes(records, parse_takes(data.audio.valid_takes))[1]
        if not records:
            raise DataError(f"{data.valid}: no recording of takes {data.audio.valid_takes}")
    return records


def tail_cut_fractions(path: str, audio: AudioConfig) -> list[float]:
    """The fractions a recording's tail-cut copies lose: uniform in ``(0, tail_cut_max]``,
    seeded by the file's name (not its folder), so every run, worker and copy of the data
    cuts the same."""
    rng = np.random.default_rng(zlib.crc32(Path(path).name.encode()))
    return [audio.tail_cut_max * (1.0 - rng.random()) for _ in range(audio.tail_cut_copies)]


def training_copies(records: list[dict[str, str]], audio: AudioConfig) -> list[dict[str, Any]]:
    """The training records with their augmented copies (``speed`` and ``tail_cut``
    columns: one per ``speed_perturb`` factor, then ``tail_cut_copies`` cut short at full
    speed), a recording's copies together; ``records`` themselves when both are off."""
    if not audio.speed_perturb and not audio.tail_cut_copies:
        return records
    out = []
    for record in records:
        out += [{**record, "speed": s, "tail_cut": 0.0} for s in audio.speed_perturb or [1.0]]
        out += [{**record, "speed": 1.0, "tail_cut": c} for c in tail_cut_fractions(record["path"], audio)]
    return out


def _copy_name(speed: float, tail_cut: float) -> str:
    return f"speed {speed:g} copy" if tail_cut == 0 else f"copy cut by {100 * tail_cut:.0f}%"


def featurize_batch(batch: dict[str, np.ndarray], audio: dict[str, Any], raw: bool = False) -> dict[str, Any]:
    """``map_batches`` function: records -> ``{features (T, n_mels), length, cut}`` plus the
    record's columns (``raw``: log-mel frames as they are, not normalised or padded:
    what speech synthesis predicts); a recording that fails to decode keeps its row with ``error`` set
    (and a placeholder of 4 zero frames) for ``check_records`` to stop on or count.
    Rows with a ``speed`` or ``tail_cut`` column (:func:`training_copies`) are played that
    much faster or cut that much shorter.
    A plain function (Ray tasks, not actors): the featurizer is cheap to build, and tasks
    give their CPUs back between batches, which a 2-CPU node needs for the next stage."""
    featurizer = AudioFeaturizer(AudioConfig(**audio))
    speeds = batch["speed"] if "speed" in batch else np.ones(len(batch["path"]))
    tail_cuts = batch["tail_cut"] if "tail_cut" in batch else np.zeros(len(batch["path"]))
    features, lengths, cut, errors = [], [], [], []
    for path, origin, error, speed, tail_cut in zip(batch["path"], batch["origin"], batch["error"], speeds, tail_cuts):
        x, was_cut = np.zeros((4, featurizer.feature_dim), np.float32), False
        if not error:
            try:
                if raw:
                    wave = featurizer.decode(Path(path).read_bytes(), origin)
                    x = featurizer.log_mel(wave.samples).numpy()
                else:
                    x, wave = featurizer(Path(path).read_bytes(), origin, float(speed), float(tail_cut))
                was_cut = wave.cut
            except (DataError, OSError) as err:
                error = str(err).removeprefix(f"{origin}: ")
                if speed != 1.0 or tail_cut:
                    error = f"{error} ({_copy_name(speed, tail_cut)})"  # e.g. too short only once sped up
        features.append(x)
        lengths.append(len(x))
        cut.append(was_cut)
        errors.append(error)
    return {**{k: v for k, v in batch.items() if k != "error"}, "features": features,
            "length": np.array(lengths, dtype=np.int64), "cut": np.array(cut), "error": np.array(errors, dtype=object)}


def featurize_audio(records: list[dict[str, str]], audio: AudioConfig, which: str, policy: str, *,
                    raw: bool = False) -> CheckedSplit:
    """Decode and featurize ``records`` in Ray Data (``raw``: see :func:`featurize_batch`);
    bad ones stop the run or are counted."""
    ds = records_dataset([{**r, "index": i} for i, r in enumerate(records)], per_block=32)
    ds = ds.map_batches(featurize_batch, fn_kwargs={"audio": vars(audio), "raw": raw}, batch_size=32,
                        batch_format="numpy")
    return check_records(ds, policy, which)


def featurize_splits(data: DataConfig, *, target: str) -> tuple[CheckedSplit, CheckedSplit | None]:
    """The recipe's featurized train split (augmented copies included) and validation
    split (never augmented; None when there is none)."""
    train_records, valid_records = read_audio_splits(data, target=target)
    train_records = training_copies(train_records, data.audio)
    train = featurize_audio(train_records, data.audio, "train", data.on_bad_record)
    valid = featurize_audio(valid_records, data.audio, "valid", data.on_bad_record) if valid_records else None
    return train, valid


def with_copies_report(batches: MediaBatches, audio: AudioConfig) -> MediaBatches:
    """Name the augmented copies in the data line (``train_examples`` counts them)."""
    if audio.speed_perturb:
        factors = ", ".join(map(str, audio.speed_perturb))
        batches.report["speed_perturb"] = f"x{len(audio.speed_perturb)} ({factors})"
    if audio.tail_cut_copies:
        batches.report["tail_cut"] = f"+{audio.tail_cut_copies} per recording (up to {audio.tail_cut_max:.0%} cut)"
    return batches


def check_recipe(recipe: Recipe) -> None:
    """What every application reading audio folders requires of a recipe."""
    if recipe.data.format not in ("auto", "audio-folder"):
        raise ConfigError(f"model.input=audio reads data.format audio-folder, got {recipe.data.format!r}")
    if recipe.parallel.schedule == "wavefront":
        raise ConfigError("parallel.schedule: wavefront needs time-streaming layers; the audio front end "
                          "convolves over time, so use gpipe or 1f1b")
    if recipe.data.audio.max_frames > recipe.batching.max_tokens:
        raise ConfigError(
            f"batching.max_tokens is a frame budget for audio: a data.audio.max_seconds recording has "
            f"{recipe.data.audio.max_frames} frames > {recipe.batching.max_tokens}"
        )



def featurized_validation(recipe: Recipe, target: str) -> CheckedSplit:
    """The recipe's validation recordings featurized (``rayseq eval``, end-of-training scores)."""
    data = recipe.data
    return featurize_audio(validation_records(data, target=target), data.audio, "eval", data.on_bad_record)


def without_valid_takes(raw: dict) -> None:
    """``rayseq eval`` scores the folder it is given: the training carve-out
    (``data.audio.valid_takes``) is dropped from the checkpoint's raw recipe (``--set``
    may choose takes again)."""
    raw["data"].get("audio", {}).pop("valid_takes", None)
