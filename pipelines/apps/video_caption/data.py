"""Captioning data: video folders -> sampled, resized frames + ``[BOS] caption [EOS]`` tokens per clip."""

from __future__ import annotations

from pipelines.config import Recipe
from pipelines.media.batches import MediaBatches, sequence_batches
from pipelines.media.video.folders import featurize_video_splits


def prepare_captions(recipe: Recipe) -> MediaBatches:
    train, valid = featurize_video_splits(recipe.data, target="caption")
    return sequence_batches(recipe, train, valid, inputs="frames", target="caption")
