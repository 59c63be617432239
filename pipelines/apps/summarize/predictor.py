"""Summarization inference: texts in, summaries out::

    text -> words (pipelines.apps.summarize.words) -> extended ids, the text's own unknown
         words kept beside them (a SourceRow) -> length-sorted passes under a token budget
         -> beam search over the pointer-generator (min length, n-gram blocking, GNMT
         length normalisation: the recipe's ``decode``) -> ids -> words (an id past the
         vocabulary is the source word it points at) -> text

A text longer than ``data.max_length`` words is refused (``InputTooLarge``: 413 when
served): the model never read past that point in training, and a summary of the first
half of a dialogue would be wrong, not shorter. ``rayseq eval`` cuts instead, as
training did, and counts the cut sources.
"""

from __future__ import annotations

from typing import Any

from pipelines.apps.summarize.words import Words, detokenize
from pipelines.errors import InputTooLarge
from pipelines.inference.media import TokenRows
from pipelines.inference.predictors import Decoder
from pipelines.media.tokenization import load_tokenizer


class SourceRow(list):
    """A source's extended ids, with ``outside``: its words the vocabulary lacks, in id
    order (id ``V + k`` is ``outside[k]``), and ``casing``: how it writes its proper
    names (the vocabulary is lowercase; a summary writes ``Jimmy`` as its dialogue does)."""

    outside: list[str]
    casing: dict[str, str]


class Summarizer(TokenRows, Decoder):
    refuse_longer = True

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.words = Words(load_tokenizer((loaded.path / "tokenizer.json").read_text()))

    def rows(self, inputs: list[str]) -> list[SourceRow]:
        rows = []
        for i, text in enumerate(inputs):
            words = self.words.split(text)
            if len(words) > self.max_length:
                if self.refuse_longer:
                    raise InputTooLarge(f"input {i}: {len(words)} words; this model reads at most {self.max_length} "
                                        "(its data.max_length): send a shorter text")
                words = words[: self.max_length]
            ids, outside = self.words.source(words or ["[UNK]"])
            row = SourceRow(ids)
            row.outside, row.casing = outside, self.words.casing(text)
            rows.append(row)
        return rows

    def text(self, tokens: list[int], outside: list[str], casing: dict[str, str] | None = None) -> str:
        return detokenize(self.words.words(tokens, outside), casing)

    def detokenize(self, tokens: list[int]) -> str:
        return self.text(tokens, [])

    def run(self, rows: list[SourceRow], **options: Any) -> list[dict[str, Any]]:
        found = self.search(rows, **options)
        return [{"text": self.text(h[0].tokens, getattr(row, "outside", []), getattr(row, "casing", None)),
                 "score": float(h[0].score)} for row, h in zip(rows, found)]
