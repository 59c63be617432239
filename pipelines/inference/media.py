"""Rows of text, audio, video and image predictors: texts or encoded files in, token ids or
frames out, batched by length.

A text predictor encodes with the checkpoint's own source tokenizer, cut to its recipe's
``data.max_length``. A media predictor reads files with the checkpoint's own featurizer (its recipe's
``data.audio``, ``data.video`` or ``data.image``), so a file is heard or seen exactly as
the training data was::

    audio:  (name, bytes) -> AudioFeaturizer -> (4S, n_mels) float32 log-mel frames
            -> batches (B, 4S, n_mels) zero-padded, lengths in model steps S (frames / 4)
    video:  (name, bytes) -> VideoFeaturizer (sample, resize; longer clips refused)
            -> (T, size, size, 3) uint8 frames -> batches (B, T, size, size, 3)
    image:  (name, bytes) -> ImageReader (decode, resize; over max_pixels refused)
            -> (1, size, size, 3) uint8: a one-frame clip -> batches (B, 1, size, size, 3)

Mix :class:`TokenRows`, :class:`AudioRows`, :class:`VideoRows` or :class:`ImageRows` into
a ``Classifier`` or ``Decoder`` (``pipelines.inference.predictors``). Budgets count tokens
or frames.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from models.config import SUBSAMPLING
from pipelines.errors import InputTooLarge
from pipelines.inference.predictors import Batch
from pipelines.media.audio.features import AudioFeaturizer
from pipelines.media.bucketing import array_batches, length_sorted_batches
from pipelines.media.image.decode import ImageReader
from pipelines.media.tokenization import encode_batch
from pipelines.media.video.decode import VideoFeaturizer

MediaFile = tuple[str, bytes]
"""``(name, encoded bytes)``: errors name the file by ``name``."""


class TokenRows:
    """Rows are source token ids of each text, cut to the recipe's ``data.max_length`` (a
    text that tokenizes to nothing becomes ``[UNK]``, so every row has a step), or with
    ``refuse_longer`` refused (``InputTooLarge``, a 413 when served). The mixing
    predictor sets ``source_tokenizer`` (a ``tokenizers.Tokenizer``)."""

    source_tokenizer = None
    refuse_longer = False
    """Refuse a text longer than ``data.max_length`` tokens instead of cutting it (a
    summary of half a dialogue is wrong, not shorter). ``rayseq eval`` cuts, as training did."""

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.max_length = loaded.recipe.data.max_length

    def rows(self, inputs: list[str]) -> list[list[int]]:
        rows, cut = encode_batch(self.source_tokenizer, inputs, self.max_length)
        if self.refuse_longer and any(cut):
            first = cut.index(True)
            raise InputTooLarge(f"input {first}: longer than the {self.max_length} tokens this model reads "
                                f"(its data.max_length); send a shorter text")
        return rows

    def batches(self, rows: list[list[int]], budget: int) -> Iterator[Batch]:
        for index, tokens, lengths in length_sorted_batches(rows, budget):
            yield index, torch.from_numpy(tokens).to(self.device), torch.from_numpy(lengths)


class AudioRows:
    """Rows are log-mel frames; one pass holds at most ``budget`` frames."""

    default_budget = 32768
    per_step = SUBSAMPLING

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.featurizer = AudioFeaturizer(loaded.recipe.data.audio)

    def rows(self, inputs: list[MediaFile]) -> list[np.ndarray]:
        """Log-mel frames of each encoded recording; ``DataError`` names the bad one."""
        return [self.featurizer(data, name)[0] for name, data in inputs]

    def batches(self, rows: list[np.ndarray], budget: int) -> Iterator[Batch]:
        for index, frames, steps in array_batches(rows, budget, per_step=SUBSAMPLING):
            yield (index, torch.from_numpy(frames.astype(np.float32, copy=False)).to(self.device),
                   torch.from_numpy(steps))


class VideoRows:
    """Rows are sampled RGB frames; uploads over the recipe's ``max_frames`` or
    ``max_seconds`` are refused, not cut. One pass holds at most ``budget`` frames."""

    default_budget = 4096
    per_step = 1

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.featurizer = VideoFeaturizer(loaded.recipe.data.video, refuse_longer=True)

    def rows(self, inputs: list[MediaFile]) -> list[np.ndarray]:
        """Frames of each encoded clip; ``DataError`` (``ClipTooLong`` over a limit) names the bad one."""
        return [self.featurizer(data, name).frames for name, data in inputs]

    def batches(self, rows: list[np.ndarray], budget: int) -> Iterator[Batch]:
        for index, frames, lengths in array_batches(rows, budget):
            yield index, torch.from_numpy(frames).to(self.device), torch.from_numpy(lengths)


class ImageRows:
    """Rows are one RGB frame per image, read with the checkpoint's own
    :class:`~pipelines.media.image.decode.ImageReader`; images over its ``max_pixels``
    are refused (``ImageTooLarge``). Batched as one-frame clips: a pass holds at most
    ``budget`` images."""

    default_budget = 4096
    per_step = 1

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.reader = ImageReader(loaded.recipe.data.image)

    def rows(self, inputs: list[MediaFile]) -> list[np.ndarray]:
        """``(1, size, size, 3)`` uint8 of each encoded image; ``DataError`` names the bad one."""
        return [self.reader(data, name) for name, data in inputs]

    def batches(self, rows: list[np.ndarray], budget: int) -> Iterator[Batch]:
        for index, frames, lengths in array_batches(rows, budget):
            yield index, torch.from_numpy(frames).to(self.device), torch.from_numpy(lengths)
