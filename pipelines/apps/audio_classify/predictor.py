"""Spoken-label inference: recordings in, label probabilities out."""

from __future__ import annotations

from pipelines.inference.media import AudioRows
from pipelines.inference.predictors import Classifier


class AudioClassifier(AudioRows, Classifier):
    """A seq2vec audio checkpoint: ``predict([(name, bytes), ...])`` -> ``{"label", "score", "scores"}``."""
