"""Video captioning: vec2seq (the clip pooled to one vector that conditions an LSTM
decoder) or, as a variant, seq2seq (the decoder attends over every frame's encoder state).

    clip -> frames -> frame CNN -> encoder -> summary vector | attention -> decoder
        -> caption tokenizer;  scored by exact match and BLEU;  served on /generate with
        multipart uploads  (the shared half: ``pipelines.apps.captioning``)
"""

from __future__ import annotations

from pipelines.apps.base import App
from pipelines.apps.captioning import Captioning
from pipelines.apps.objectives import Tokens


class VideoCaption(Captioning, App):
    name = "video_caption"
    medium = "video"
    shapes = (("vec2seq", "video", ""),)
    formats = ("video-folder",)

    def check_recipe(self, recipe) -> None:
        from pipelines.media.video.folders import check_recipe

        check_recipe(recipe)  # first: the medium's own messages (format, wavefront, frame budget)
        super().check_recipe(recipe)

    def frame_size(self, recipe) -> int:
        return recipe.data.video.size

    def caption_batches(self, recipe):
        from pipelines.apps.video_caption.data import prepare_captions

        return prepare_captions(recipe)

    def validation_split(self, recipe):
        from pipelines.media.video.folders import validation_clips

        return validation_clips(recipe, "caption")

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.video_caption.predictor import VideoCaptioner

        return VideoCaptioner(loaded, budget=budget)


class AttentionCaption(VideoCaption):
    """The seq2seq attention decoder over every frame's encoder state (``model.kind:
    seq2seq``, ``input: video``): the alternative to one vector."""

    shapes = (("seq2seq", "video", "attention"),)

    def builders(self):
        return Tokens.builders(self)


class _VideoCaptionApp(VideoCaption):
    variants = (AttentionCaption(),)


APP = _VideoCaptionApp()
