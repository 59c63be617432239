"""Video captioning inference: clips in, captions out (vec2seq: one video vector
conditions the decoder; seq2seq: the decoder attends over every frame)."""

from __future__ import annotations

from pipelines.inference.media import VideoRows
from pipelines.inference.predictors import Decoder
from pipelines.media.tokenization import decode, load_tokenizer


class VideoCaptioner(VideoRows, Decoder):
    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.tokenizer = load_tokenizer(loaded.tokenizer_json)

    def detokenize(self, tokens: list[int]) -> str:
        return decode(self.tokenizer, tokens)
