"""Tagging inference: text in, tokens, tags and entities with character offsets out.

A raw text is split into tokens the way CoNLL-2003 was (words, numbers with their
``.``/``,`` parts, abbreviations such as ``U.S.``, and every other symbol alone), each
with its ``[start, end)`` offsets into the text; the model tags them, the CRF decodes the
best path the tag scheme allows, and entities come back as ``{text, type, start, end}``
with ``text == input[start:end]``. Tags are answered in the recipe's ``data.tag_scheme``
(the scheme of the training files).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.crf import Allowed, viterbi
from pipelines.apps.tag.vocab import TaggerVocab
from pipelines.errors import DataError
from pipelines.inference.predictors import LoadedPredictor
from pipelines.media.bucketing import pad_batch, plan_batches
from pipelines.media.tags import allowed_moves, spans, to_scheme

ABBREVIATIONS = ("Mr", "Mrs", "Ms", "Dr", "Prof", "St", "Jr", "Sr", "Inc", "Corp", "Co", "Ltd", "Bros", "Gen", "Gov",
                 "Sen", "Rep", "Lt", "Col", "Sgt", "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept",
                 "Oct", "Nov", "Dec", "vs", "No")
"""Words CoNLL-2003 writes with their period (``Inc.``, ``Mr.``, ``Sept.``)."""

TOKEN = re.compile(
    r"(?:[A-Za-z]\.){2,}"            # U.S.  e.g.
    r"|(?:" + "|".join(ABBREVIATIONS) + r")\.(?!\w)"  # Inc.  Mr.
    r"|\d+(?:[.,:/-]\d+)*"           # 1996  3,000  1.5  12:30  1-0
    r"|\w+(?:[-'’&]\w+)*"            # words, hyphenated, O'Neill, AT&T
    r"|'s\b|n't\b"                   # clitics
    r"|[^\w\s]",                     # any other symbol alone
    re.UNICODE,
)


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """``(token, start, end)`` of every token of ``text``, in order."""
    return [(m.group(), m.start(), m.end()) for m in TOKEN.finditer(text)]


@dataclass
class TagRow:
    """One sentence: its tokens, their character offsets (None for given tokens) and ids."""

    text: str | None
    tokens: list[str]
    offsets: list[tuple[int, int]] | None
    words: np.ndarray
    cases: np.ndarray
    chars: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


def allowed_mask(tags: list[str], scheme: str) -> Allowed:
    start, trans, end = allowed_moves(tags, scheme)
    return Allowed(torch.tensor(start), torch.tensor(trans), torch.tensor(end))


class TagPredictor(LoadedPredictor):
    """``rows(texts)`` / ``token_rows(sentences)`` -> ``run(rows)`` -> one
    ``{tokens, tags, entities}`` per row."""

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        where = loaded.path / "vocab.json"
        self.vocab = TaggerVocab.from_json(where.read_text(encoding="utf-8"), str(where))
        found = {"num_words": len(self.vocab.words), "num_chars": len(self.vocab.chars),
                 "num_tags": len(self.vocab.tags)}
        wrong = [f"{k}: {found[k]} in vocab.json, {loaded.meta.get(k)} in meta.json" for k in found
                 if found[k] != loaded.meta.get(k)]
        if wrong:
            raise DataError(f"{where}: does not fit the checkpoint's model ({'; '.join(wrong)})")
        self.allowed = allowed_mask(self.vocab.tags, self.vocab.scheme)
        self.answer_scheme = loaded.recipe.data.tag_scheme
        self.max_length = loaded.recipe.data.max_length

    def _row(self, text: str | None, tokens: list[str], offsets, where: str) -> TagRow:
        if len(tokens) > self.max_length:
            raise DataError(f"{where}: {len(tokens)} tokens; this model tags at most {self.max_length} "
                            "(its data.max_length) at once: split the text")
        words, cases, chars = self.vocab.encode(tokens)
        return TagRow(text, tokens, offsets, words, cases, chars)

    def rows(self, inputs: list[str]) -> list[TagRow]:
        out = []
        for i, text in enumerate(inputs):
            found = tokenize(text)
            out.append(self._row(text, [t for t, _, _ in found], [(s, e) for _, s, e in found], f"input {i}"))
        return out

    def token_rows(self, sentences: list[list[str]], origins: list[str] | None = None) -> list[TagRow]:
        """Rows of sentences already split into tokens (a CoNLL file's)."""
        return [self._row(None, list(tokens), None, origins[i] if origins else f"sentence {i}")
                for i, tokens in enumerate(sentences)]

    def batches(self, rows: list[TagRow], budget: int) -> Iterator[tuple[np.ndarray, tuple, torch.Tensor]]:
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        for index in plan_batches(lengths, max_tokens=budget, max_batch_size=len(rows), sort=True):
            inputs = tuple(
                torch.from_numpy(pad_batch([getattr(rows[r], k) for r in index]).astype(np.int64)).to(self.device)
                for k in ("words", "cases", "chars")
            )
            yield index, inputs, torch.from_numpy(lengths[index])

    @torch.inference_mode()
    def tag_ids(self, rows: list[TagRow]) -> list[list[int]]:
        """The best allowed tag path of every row (ids into ``vocab.tags``), in input order."""
        out: list[list[int]] = [[] for _ in rows]
        present = [i for i, r in enumerate(rows) if len(r)]
        for index, inputs, lengths in self.batches([rows[i] for i in present], self.budget):
            scores = self.model(inputs, lengths).constrained(self.allowed)
            for r, path in zip(index, viterbi(scores, lengths)):
                out[present[r]] = path
        return out

    def run(self, rows: list[TagRow], **options: Any) -> list[dict[str, Any]]:
        if options:
            raise TypeError(f"a tagger takes no options, got {sorted(options)}")
        answers = []
        for row, path in zip(rows, self.tag_ids(rows)):
            found = spans([self.vocab.tags[i] for i in path])
            entities = []
            for kind, start, end in found:
                entity: dict[str, Any] = {"text": " ".join(row.tokens[start:end]), "type": kind}
                if row.offsets is not None:
                    first, last = row.offsets[start][0], row.offsets[end - 1][1]
                    entity.update(text=row.text[first:last], start=first, end=last)
                else:
                    entity.update(start=start, end=end)  # token positions: the input was tokens
                entities.append(entity)
            answers.append({"tokens": row.tokens, "tags": to_scheme(found, len(row), self.answer_scheme),
                            "entities": entities})
        return answers
