"""Clip classification data: video folders -> sampled, resized frames + label id per clip."""

from __future__ import annotations

from pipelines.config import Recipe
from pipelines.media.batches import MediaBatches, labelled_batches
from pipelines.media.video.folders import featurize_video_splits


def prepare_video_classification(recipe: Recipe) -> MediaBatches:
    train, valid = featurize_video_splits(recipe.data, target="label")
    return labelled_batches(recipe, train, valid, inputs="frames")
