"""Image captioning: vec2seq over one image (the frame CNN's vector conditions an LSTM
decoder), Show and Tell trained from scratch.

    image -> (1, size, size, 3) RGB -> frame CNN -> [encoder RNN, if num_layers > 0]
        -> summary vector -> decoder -> caption tokenizer;  scored by exact match and
        BLEU;  served on /generate with multipart PNG/JPEG uploads
        (the shared half: ``pipelines.apps.captioning``)

Its built-in dataset is ``rayseq generate digit-captions``: canvases of 2-4 real
handwritten digits whose captions say where each digit is
(``pipelines.media.image.digit_canvas``).
"""

from __future__ import annotations

from pipelines.apps.base import App
from pipelines.apps.captioning import Captioning
from pipelines.apps.image_caption.generate import DIGIT_CAPTIONS


class ImageCaption(Captioning, App):
    name = "image_caption"
    medium = "image"
    shapes = (("vec2seq", "image", ""),)
    formats = ("image-folder",)
    generators = (DIGIT_CAPTIONS,)

    def check_recipe(self, recipe) -> None:
        from pipelines.media.image.folders import check_recipe

        check_recipe(recipe)  # first: the medium's own message (format)
        super().check_recipe(recipe)

    def frame_size(self, recipe) -> int:
        return recipe.data.image.size

    def caption_batches(self, recipe):
        from pipelines.apps.image_caption.data import prepare_captions

        return prepare_captions(recipe)

    def validation_split(self, recipe):
        from pipelines.media.image.folders import validation_images

        return validation_images(recipe, "caption")

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.image_caption.predictor import ImageCaptioner

        return ImageCaptioner(loaded, budget=budget)


APP = ImageCaption()
