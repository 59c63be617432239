"""Speech-to-text inference: recordings in, transcripts out::

    (name, bytes) -> log-mel frames -> passes under a frame budget
        -> attention decoder: models.decoding.generate (greedy or beam)
           CTC: models.ctc.ctc_decode (best path or prefix beam search)
        -> transcript tokenizer -> {"text", "score"}
"""

from __future__ import annotations

from typing import Any

import torch

from models.ctc import ctc_decode
from models.decoding import Hypothesis
from pipelines.inference.media import AudioRows
from pipelines.inference.predictors import Decoder
from pipelines.media.tokenization import decode, load_tokenizer


class SpeechRecognizer(AudioRows, Decoder):
    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.tokenizer = load_tokenizer(loaded.tokenizer_json)

    @property
    def ctc(self) -> bool:
        return self.recipe.model.decoder == "ctc"

    def detokenize(self, tokens: list[int]) -> str:
        return decode(self.tokenizer, tokens)

    def _rows_per_source(self, beam_size: int) -> int:
        return 1 if self.ctc else beam_size  # CTC's prefix beams share one encoder pass

    def _search(self, inputs: torch.Tensor, lengths: torch.Tensor, **options: Any) -> list[list[Hypothesis]]:
        if self.ctc:
            return [found[:1] for found in ctc_decode(self.model, inputs, lengths, beam_size=options["beam_size"])]
        return super()._search(inputs, lengths, **options)

    def stream(self, rows: list, **options: Any):
        """Greedy decoding as it goes; attention decoders only: CTC has no step-by-step
        decoder to stream from."""
        if self.ctc:
            raise ValueError("streaming needs an attention decoder; this checkpoint's model.decoder is ctc")
        return super().stream(rows, **options)
