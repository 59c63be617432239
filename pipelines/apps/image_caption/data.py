"""Captioning data: image folders -> one resized RGB frame + ``[BOS] caption [EOS]`` tokens per image."""

from __future__ import annotations

from pipelines.config import Recipe
from pipelines.media.batches import MediaBatches, sequence_batches
from pipelines.media.image.folders import read_image_splits


def prepare_captions(recipe: Recipe) -> MediaBatches:
    train, valid = read_image_splits(recipe.data, target="caption")
    return sequence_batches(recipe, train, valid, inputs="frames", target="caption")
