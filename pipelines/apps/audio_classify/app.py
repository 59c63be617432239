"""Spoken-label classification (seq2vec on log-mel frames): spoken digits (FSDD).

    recording -> resample, log-mel -> conv subsampler (4x fewer steps, SpecAugment)
        -> deep RNN -> pooled -> label;  scored by accuracy;  served on /classify with
        multipart uploads
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.config import SUBSAMPLING
from pipelines.apps.audio_classify.generate import DIGITS
from pipelines.apps.base import App, PreparedData, ServeSpec, checked_sizes, labels_from_meta
from pipelines.apps.objectives import Labels
from pipelines.apps.routes import CLASSIFY


class AudioClassify(Labels, App):
    name = "audio_classify"
    medium = "audio"
    shapes = (("seq2vec", "audio", ""),)
    formats = ("audio-folder",)
    meta_keys = frozenset({"labels", "feature_dim"})
    generators = (DIGITS,)
    serve = ServeSpec(route=CLASSIFY, per_token=SUBSAMPLING)

    def check_recipe(self, recipe) -> None:
        from pipelines.media.audio.folders import check_recipe

        check_recipe(recipe)  # first: the medium's own messages (format, wavefront, frame budget)
        super().check_recipe(recipe)

    def prepare(self, recipe) -> PreparedData:
        from pipelines.apps.audio_classify.data import prepare_audio_classification

        data = prepare_audio_classification(recipe)
        feature_dim = recipe.data.audio.n_mels
        sizes = {"feature_dim": feature_dim, "num_labels": len(data.labels)}
        meta = {"labels": data.labels, "feature_dim": feature_dim}
        return PreparedData(data.train, data.valid, sizes, {}, meta, data.train_stats.batches, data.report)

    def frontend(self, sizes: dict[str, int]):
        from models.frontends import log_mel

        return log_mel(sizes["feature_dim"])

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        return {"num_labels": labels_from_meta(path, meta), **checked_sizes(path, meta, ("feature_dim",))}

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.audio_classify.predictor import AudioClassifier

        return AudioClassifier(loaded, budget=budget)

    def eval_data(self, raw: dict[str, Any]) -> None:
        from pipelines.media.audio.folders import without_valid_takes

        without_valid_takes(raw)

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        """Accuracy on the recipe's validation recordings."""
        from pipelines.media.audio.folders import featurized_validation
        from pipelines.scoring.records import accuracy, classified

        records = featurized_validation(recipe, "label")
        rows = classified(checkpoint, records.dataset, inputs="features", device=device)
        return accuracy(rows, records.skipped, predictions)


APP = AudioClassify()
