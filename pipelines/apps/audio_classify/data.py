"""Spoken-label data (FSDD digits): audio folders -> log-mel frames + label id per recording."""

from __future__ import annotations

from pipelines.config import Recipe
from pipelines.media.audio.folders import featurize_splits, with_copies_report
from pipelines.media.batches import MediaBatches, labelled_batches


def prepare_audio_classification(recipe: Recipe) -> MediaBatches:
    train, valid = featurize_splits(recipe.data, target="label")
    return with_copies_report(labelled_batches(recipe, train, valid, inputs="features"), recipe.data.audio)
