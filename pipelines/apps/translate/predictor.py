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

from typing import Iterator

import torch

from pipelines.inference.predictors import Batch, Decoder
from pipelines.media.bucketing import length_sorted_batches
from pipelines.media.tokenization import decode, encode_batch, load_translation_tokenizers


class Translator(Decoder):
    """A loaded seq2seq text checkpoint. ``budget`` bounds one decoding pass:
    ``beam_size * rows * longest_source``, i.e. the encoder memory
    ``(rows * beam_size, S, H_mem)`` every decoder step attends over."""

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.tokenizers = load_translation_tokenizers(loaded.path)
        self.max_length = loaded.recipe.data.max_length  # source tokens kept per text

    def rows(self, inputs: list[str]) -> list[list[int]]:
        """Source token ids of each text (cut to the recipe's ``data.max_length``; a text
        that tokenizes to nothing becomes ``[UNK]``, so every source has a step)."""
        return encode_batch(self.tokenizers.source, inputs, self.max_length)[0]

    def batches(self, rows: list[list[int]], budget: int) -> Iterator[Batch]:
        for index, tokens, lengths in length_sorted_batches(rows, budget):
            yield index, torch.from_numpy(tokens).to(self.device), torch.from_numpy(lengths)

    def detokenize(self, tokens: list[int]) -> str:
        return decode(self.tokenizers.target, tokens)
