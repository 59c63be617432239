"""Image data: ``image-folder`` -> records -> one RGB frame per image (Ray Data).

An ``image-folder`` (``docs/data-formats.md``) is a folder with a ``manifest.csv`` /
``manifest.jsonl`` naming each image (``path``, relative to the folder: a PNG, JPEG, BMP
or WebP file) and its ``caption`` (captioning) or ``label`` (classification);
``rayseq generate digit-captions`` writes one. ``data.train`` and ``data.valid`` are two
such folders.

Listing happens in the driver (it reads one manifest); decoding and resizing run in Ray
Data tasks (:func:`read_images`), with the same
:class:`~pipelines.media.image.decode.ImageReader` the Serve replicas use for uploads. An
image is a one-frame sequence: rows carry ``frames (1, size, size, 3)`` uint8 and
``length`` 1, the rows video folders make, so ``pipelines.media.batches`` buckets them and
the video models read them unchanged. An image that cannot be read (missing, not an
image, another format, truncated, over ``data.image.max_pixels``) becomes a bad record
naming it, which stops the run or, with ``data.on_bad_record: skip``, is counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import DataConfig, ImageConfig, Recipe
from pipelines.errors import ConfigError, DataError
from pipelines.media.image.decode import ImageReader
from pipelines.media.manifests import list_manifest_folder
from pipelines.media.sources import CheckedSplit, check_records, records_dataset, resolve


def list_image_folder(folder: Path, *, target: str) -> list[dict[str, str]]:
    """Records ``{path, <target>, origin, error}`` of an image folder, in manifest order
    (``pipelines.media.manifests.list_manifest_folder``)."""
    return list_manifest_folder(folder, target=target, kind="image")


def read_image_batch(batch: dict[str, np.ndarray], image: dict[str, Any]) -> dict[str, Any]:
    """``map_batches`` function: records -> ``{frames (1, size, size, 3) uint8, length 1,
    cut False}`` plus the record's columns; an image that cannot be read keeps its row
    with ``error`` set (and a black frame) for ``check_records`` to stop on or count."""
    reader = ImageReader(ImageConfig(**image))
    frames, errors = [], []
    for path, origin, error in zip(batch["path"], batch["origin"], batch["error"]):
        x = np.zeros((1, *reader.frame_shape), np.uint8)
        if not error:
            try:
                x = reader(Path(path), origin)
            except DataError as err:
                error = str(err).removeprefix(f"{origin}: ")
        frames.append(x)
        errors.append(error)
    rows = len(frames)
    return {**{k: v for k, v in batch.items() if k != "error"}, "frames": frames,
            "length": np.ones(rows, dtype=np.int64), "cut": np.zeros(rows, dtype=bool),
            "error": np.array(errors, dtype=object)}


def read_images(records: list[dict[str, str]], image: ImageConfig, which: str, policy: str) -> CheckedSplit:
    """Decode ``records`` in Ray Data tasks (64 images a batch: a 64x64 PNG decodes in
    well under a millisecond, so smaller batches cost more in task overhead than in
    decoding); bad ones stop the run or are counted."""
    ds = records_dataset([{**r, "index": i} for i, r in enumerate(records)], per_block=64)
    ds = ds.map_batches(read_image_batch, fn_kwargs={"image": vars(image)}, batch_size=64, batch_format="numpy")
    return check_records(ds, policy, which)


def validation_records(data: DataConfig, *, target: str) -> list[dict[str, str]]:
    return list_image_folder(resolve(data.root, data.valid), target=target) if data.valid else []


def read_image_splits(data: DataConfig, *, target: str) -> tuple[CheckedSplit, CheckedSplit | None]:
    """The training and validation images decoded, each with its ``target`` (caption or label)."""
    train_records = list_image_folder(resolve(data.root, data.train), target=target)
    valid_records = validation_records(data, target=target)
    train = read_images(train_records, data.image, "train", data.on_bad_record)
    valid = read_images(valid_records, data.image, "valid", data.on_bad_record) if valid_records else None
    return train, valid


def validation_images(recipe: Recipe, target: str) -> CheckedSplit:
    """The recipe's validation images decoded (``rayseq eval``, end-of-training scores)."""
    data = recipe.data
    records = validation_records(data, target=target)
    if not records:
        raise DataError("data.valid: no validation folder to score (set data.valid or pass --data)")
    return read_images(records, data.image, "eval", data.on_bad_record)


def check_recipe(recipe: Recipe) -> None:
    """What every application reading image folders requires of a recipe (``data.image``
    checks its own values)."""
    if recipe.data.format not in ("auto", "image-folder"):
        raise ConfigError(f"model.input=image reads data.format image-folder, got {recipe.data.format!r}")
