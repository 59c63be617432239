"""Image captioning inference: images in, captions out (one image vector conditions the decoder)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from models.decoding import Hypothesis
from pipelines.inference.media import ImageRows
from pipelines.inference.predictors import Decoder
from pipelines.media.tokenization import decode, load_tokenizer

NO_RATIO = 1e9
"""``max_length_ratio`` for one image: so large that only ``max_length`` caps a caption."""


class ImageCaptioner(ImageRows, Decoder):
    """Captions of images. An image is one source step, and decoding caps an output at
    ``max_length_ratio x source steps + 10`` tokens (``models.decoding``), sized for
    sentences: the recipe's ratio (2) would cut every caption after 12 tokens, silently.
    An image has no length to scale its caption by, so here only ``max_length``
    (``decode.max_length``, a request's ``max_length``) caps it."""

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.tokenizer = load_tokenizer(loaded.tokenizer_json)

    def detokenize(self, tokens: list[int]) -> str:
        return decode(self.tokenizer, tokens)

    def search(self, rows: list, **options: Any) -> list[list[Hypothesis]]:
        return super().search(rows, **{**options, "max_length_ratio": NO_RATIO})

    def stream(self, rows: list, **limits: Any) -> Iterator[dict[str, Any]]:
        return super().stream(rows, **{**limits, "max_length_ratio": NO_RATIO})
