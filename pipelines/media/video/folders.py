"""Video data: ``video-folder`` -> records -> RGB frames (Ray Data) -> frame-count buckets.

A ``video-folder`` (``docs/data-formats.md``) is a folder with a ``manifest.csv`` / ``manifest.jsonl``
naming each clip (``path``, relative to the folder: an MP4 or other video file, or a
folder of frame images) and its ``label`` (classification) or ``caption`` (captioning);
``rayseq generate video`` writes one with both columns. ``data.train`` and ``data.valid``
are two such folders.

Listing happens in the driver (it reads one manifest); decoding, frame sampling and
resizing run in Ray Data tasks (:func:`featurize_clips`), one clip per row, with the same
:class:`~pipelines.media.video.decode.VideoFeaturizer` the Serve replicas use for uploads. A clip that
cannot be decoded becomes a bad record naming it, which stops the run or, with
``data.on_bad_record: skip``, is counted. Clips longer than ``data.video.max_frames`` are
cut (decoding stops there) and counted. Batches are cut by frame count under
``batching.max_tokens`` frames (``pipelines.media.bucketing``, as for text and audio) and carry
``(rows, frames, size, size, 3)`` uint8 frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import DataConfig, Recipe, VideoConfig
from pipelines.errors import ConfigError, DataError
from pipelines.media.manifests import list_manifest_folder
from pipelines.media.sources import CheckedSplit, check_records, records_dataset, resolve
from pipelines.media.video.decode import VideoFeaturizer


def list_video_folder(folder: Path, *, target: str) -> list[dict[str, str]]:
    """Records ``{path, <target>, origin, error}`` of a video folder, in manifest order
    (``pipelines.media.manifests.list_manifest_folder``)."""
    return list_manifest_folder(folder, target=target, kind="video", folders=True)


def read_video_splits(data: DataConfig, *, target: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The train and validation records of the recipe's video folders (valid may be [])."""
    train = list_video_folder(resolve(data.root, data.train), target=target)
    return train, validation_records(data, target=target)


def validation_records(data: DataConfig, *, target: str) -> list[dict[str, str]]:
    return list_video_folder(resolve(data.root, data.valid), target=target) if data.valid else []


def featurize_clips(batch: dict[str, np.ndarray], video: dict[str, Any]) -> dict[str, Any]:
    """``map_batches`` function: records -> ``{frames (T, size, size, 3) uint8, length, cut}``
    plus the record's columns; a clip that fails to decode keeps its row with ``error``
    set (and one black placeholder frame) for ``check_records`` to stop on or count.
    Plain tasks, not actors: the featurizer costs nothing to build, and tasks give their
    CPUs back between batches."""
    featurizer = VideoFeaturizer(VideoConfig(**video))
    frames, lengths, cut, errors = [], [], [], []
    for path, origin, error in zip(batch["path"], batch["origin"], batch["error"]):
        x, was_cut = np.zeros((1, *featurizer.frame_shape), np.uint8), False
        if not error:
            try:
                clip = featurizer(Path(path), origin)
                x, was_cut = clip.frames, clip.cut
            except (DataError, OSError) as err:
                error = str(err).removeprefix(f"{origin}: ")
        frames.append(x)
        lengths.append(len(x))
        cut.append(was_cut)
        errors.append(error)
    return {**{k: v for k, v in batch.items() if k != "error"}, "frames": frames,
            "length": np.array(lengths, dtype=np.int64), "cut": np.array(cut), "error": np.array(errors, dtype=object)}


def featurize_video(records: list[dict[str, str]], video: VideoConfig, which: str, policy: str) -> CheckedSplit:
    """Decode and sample ``records`` in Ray Data; bad ones stop the run or are counted.
    Batches of 32 clips: short clips decode in ~2 ms, so smaller batches spend more on
    task overhead than on decoding (1,000 clips on 2 cores: 16 s at 8 a batch, 11 s at 32)."""
    ds = records_dataset([{**r, "index": i} for i, r in enumerate(records)], per_block=32)
    ds = ds.map_batches(featurize_clips, fn_kwargs={"video": vars(video)}, batch_size=32, batch_format="numpy")
    return check_records(ds, policy, which)


def featurize_video_splits(data: DataConfig, *, target: str) -> tuple[CheckedSplit, CheckedSplit | None]:
    """The training and validation clips decoded, each with its ``target`` (label or caption)."""
    train_records, valid_records = read_video_splits(data, target=target)
    train = featurize_video(train_records, data.video, "train", data.on_bad_record)
    valid = featurize_video(valid_records, data.video, "valid", data.on_bad_record) if valid_records else None
    return train, valid


def check_recipe(recipe: Recipe) -> None:
    """What every application reading video folders requires of a recipe."""
    video = recipe.data.video
    if recipe.data.format not in ("auto", "video-folder"):
        raise ConfigError(f"model.input=video reads data.format video-folder, got {recipe.data.format!r}")
    if video.size % 8:
        raise ConfigError(f"data.video.size must be a multiple of 8 (the frame CNN halves it three times), "
                          f"got {video.size}")
    if video.max_frames > recipe.batching.max_tokens:
        raise ConfigError(f"batching.max_tokens is a frame budget for video: data.video.max_frames "
                          f"{video.max_frames} > {recipe.batching.max_tokens}")



def validation_clips(recipe: Recipe, target: str) -> CheckedSplit:
    """The recipe's validation clips decoded (``rayseq eval``, end-of-training scores)."""
    data = recipe.data
    records = validation_records(data, target=target)
    if not records:
        raise DataError("data.valid: no validation folder to score (set data.valid or pass --data)")
    return featurize_video(records, data.video, "eval", data.on_bad_record)
