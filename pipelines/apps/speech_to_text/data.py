"""Speech-to-text data: audio folders with transcripts -> log-mel frames + ``[BOS] transcript [EOS]`` tokens."""

from __future__ import annotations

from pipelines.config import Recipe
from pipelines.media.audio.folders import featurize_splits, with_copies_report
from pipelines.media.batches import MediaBatches, sequence_batches


def prepare_speech(recipe: Recipe) -> MediaBatches:
    train, valid = featurize_splits(recipe.data, target="transcript")
    batches = sequence_batches(recipe, train, valid, inputs="features", target="transcript")
    return with_copies_report(batches, recipe.data.audio)
