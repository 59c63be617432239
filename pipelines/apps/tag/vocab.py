"""A tagger's vocabularies, built from the training sentences and saved with the model
(``vocab.json``): words, characters and the tag set, and how a token becomes ids.

Words are looked up lowercased with every digit read as ``0`` (``1996`` and ``2001``
share a vector; the case feature and the characters keep what that folds away); a word
seen fewer than ``min_frequency`` times in training is the unknown word, so its vector
learns from rare words. Characters are kept as they are, every one seen in training.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from models.layers import PAD_ID
from models.tagger import UNK_ID, case_of
from pipelines.errors import DataError

MAX_WORD_CHARS = 24
"""Characters a word keeps: the first and last 12 of a longer one (prefixes and suffixes
carry the signal; URLs and long numbers would only widen every batch)."""

_DIGIT = re.compile(r"\d")


def normalize(token: str, lowercase: bool = True) -> str:
    return _DIGIT.sub("0", token.lower() if lowercase else token)


def _clip(token: str) -> str:
    half = MAX_WORD_CHARS // 2
    return token if len(token) <= MAX_WORD_CHARS else token[:half] + token[-half:]


@dataclass
class TaggerVocab:
    words: list[str]
    """Index 0 padding, 1 unknown, then by training frequency."""
    chars: list[str]
    tags: list[str]
    """The model's tag set, in ``scheme``."""
    scheme: str
    lowercase: bool = True

    def __post_init__(self) -> None:
        self._word_ids = {w: i for i, w in enumerate(self.words)}
        self._char_ids = {c: i for i, c in enumerate(self.chars)}
        self._tag_ids = {t: i for i, t in enumerate(self.tags)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], tags: list[str], scheme: str, *, min_frequency: int,
              max_words: int, lowercase: bool) -> TaggerVocab:
        words, chars = Counter(), Counter()
        for tokens in sentences:
            for token in tokens:
                words[normalize(token, lowercase)] += 1
                chars.update(_clip(token))
        kept = [w for w, n in sorted(words.items(), key=lambda x: (-x[1], x[0])) if n >= min_frequency]
        return cls(["[PAD]", "[UNK]", *kept[: max(max_words - 2, 0)]], ["[PAD]", "[UNK]", *sorted(chars)], tags,
                   scheme, lowercase)

    def encode(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(word ids (T,), case ids (T,), char ids (T, longest word))`` int32."""
        words = np.array([self._word_ids.get(normalize(t, self.lowercase), UNK_ID) for t in tokens], dtype=np.int32)
        cases = np.array([case_of(t) for t in tokens], dtype=np.int32)
        clipped = [_clip(t) for t in tokens]
        chars = np.full((len(tokens), max((len(t) for t in clipped), default=1)), PAD_ID, dtype=np.int32)
        for i, token in enumerate(clipped):
            chars[i, : len(token)] = [self._char_ids.get(c, UNK_ID) for c in token]
        return words, cases, chars

    def tag_ids(self, tags: Sequence[str], origin: str) -> np.ndarray:
        try:
            return np.array([self._tag_ids[t] for t in tags], dtype=np.int32)
        except KeyError as err:
            raise DataError(f"{origin}: tag {err.args[0]!r} was not seen in training (tags: {self.tags})") from None

    def to_json(self) -> str:
        return json.dumps({"words": self.words, "chars": self.chars, "tags": self.tags, "scheme": self.scheme,
                           "lowercase": self.lowercase}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, where: str) -> TaggerVocab:
        try:
            raw = json.loads(text)
            vocab = cls(list(raw["words"]), list(raw["chars"]), list(raw["tags"]), str(raw["scheme"]),
                        bool(raw.get("lowercase", True)))
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{where}: not a tagger vocabulary ({type(err).__name__}: {err})") from None
        if len(vocab.words) < 2 or len(vocab.chars) < 2 or len(vocab.tags) < 2:
            raise DataError(f"{where}: a tagger vocabulary needs words, characters and at least 2 tags")
        return vocab
