"""Video classification inference: clips in, label probabilities out."""

from __future__ import annotations

from pipelines.inference.media import VideoRows
from pipelines.inference.predictors import Classifier


class VideoClassifier(VideoRows, Classifier):
    """A seq2vec video checkpoint: ``predict([(name, bytes), ...])`` -> ``{"label", "score", "scores"}``."""
