"""Video classification (seq2vec on RGB frames): a per-frame CNN, then the RNN stack.

    clip -> decode, sample, resize -> frame CNN -> deep RNN -> pooled -> label;
        scored by accuracy;  served on /classify with multipart uploads
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.apps.base import App, PreparedData, ServeSpec, checked_sizes, labels_from_meta
from pipelines.apps.objectives import Labels
from pipelines.apps.routes import CLASSIFY
from pipelines.apps.video_classify.generate import VIDEO


class VideoClassify(Labels, App):
    name = "video_classify"
    medium = "video"
    shapes = (("seq2vec", "video", ""),)
    formats = ("video-folder",)
    meta_keys = frozenset({"labels", "frame_size"})
    wavefront = True
    generators = (VIDEO,)
    serve = ServeSpec(route=CLASSIFY)

    def check_recipe(self, recipe) -> None:
        from pipelines.media.video.folders import check_recipe

        check_recipe(recipe)  # first: the medium's own messages (format, wavefront, frame budget)
        super().check_recipe(recipe)

    def prepare(self, recipe) -> PreparedData:
        from pipelines.apps.video_classify.data import prepare_video_classification

        data = prepare_video_classification(recipe)
        size = recipe.data.video.size
        meta = {"labels": data.labels, "frame_size": size}
        return PreparedData(data.train, data.valid, {"frame_size": size, "num_labels": len(data.labels)}, {}, meta,
                            data.train_stats.batches, data.report)

    def frontend(self, sizes: dict[str, int]):
        from models.frontends import frames

        return frames(sizes["frame_size"])

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        return {"num_labels": labels_from_meta(path, meta), **checked_sizes(path, meta, ("frame_size",))}

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.video_classify.predictor import VideoClassifier

        return VideoClassifier(loaded, budget=budget)

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        """Accuracy on the recipe's validation clips."""
        from pipelines.media.video.folders import validation_clips
        from pipelines.scoring.records import accuracy, classified

        records = validation_clips(recipe, "label")
        rows = classified(checkpoint, records.dataset, inputs="frames", device=device)
        return accuracy(rows, records.skipped, predictions)


APP = VideoClassify()
