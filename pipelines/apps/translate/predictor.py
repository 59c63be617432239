"""Translation inference: source texts in, detokenized translations out::

    texts -> source tokenizer -> ids (one list per text, cut to data.max_length)
          -> length-sorted passes under a token budget (src_tokens (B, S), PAD-padded)
          -> models.decoding.generate (greedy or beam) -> Hypothesis lists, input order
          -> target tokenizer -> {"text", "score"} per text

The decoding itself is ``pipelines.inference.predictors.Decoder``'s, shared with speech
and captioning; ``stream`` hands out each output token and the text it adds as it is
decoded (``pipelines.inference.streaming``).
"""

from __future__ import annotations

from pipelines.inference.media import TokenRows
from pipelines.inference.predictors import Decoder
from pipelines.media.tokenization import decode, load_translation_tokenizers


class Translator(TokenRows, Decoder):
    """A loaded seq2seq text checkpoint. ``budget`` bounds one decoding pass:
    ``beam_size * rows * longest_source``, i.e. the encoder memory
    ``(rows * beam_size, S, H_mem)`` every decoder step attends over."""

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.tokenizers = load_translation_tokenizers(loaded.path)
        self.source_tokenizer = self.tokenizers.source

    def detokenize(self, tokens: list[int]) -> str:
        return decode(self.tokenizers.target, tokens)
