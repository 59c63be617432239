"""Words of dialogues and summaries: one word-level vocabulary for both sides, extended
per example by the source's own unknown words (what the pointer-generator copies).

Text is NFKC-normalised and lowercased, then split into turn markers (``#Person1#`` stays
one token: who said what is half of a dialogue summary), words, apostrophe suffixes
(``smith 's``, ``don 't``) and single punctuation marks::

    "#Person1#: Hi, Mr. Smith's here."  ->  #person1# : hi , mr . smith 's here .

The tokenizer is a ``tokenizers`` WordLevel model (saved as ``tokenizer.json`` with the
checkpoint); the word strings come from its own normalizer and pre-tokenizer, so ids and
words line up one to one. **Extended ids**: a source word outside the vocabulary gets
``V + k``, ``k`` counting the distinct unknown words of that source in order of first
appearance; a target word gets the id of the same source word if it has one, else
``[UNK]`` (see ``models.pointer``). :func:`detokenize` writes words back as text: no
space before punctuation and suffixes, turn markers in their original case, sentences
capitalised.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from pipelines.config import TokenizerConfig
from pipelines.media.tokenization import SPECIAL_TOKENS, UNK

WORD_PATTERN = r"#person\d+#|[^\W_]+|'[^\W_]*|[^\w\s]|_"
"""Pieces of a whitespace-free chunk (after lowercasing): turn marker, word, suffix, mark."""

ATTACHED = frozenset(".,!?;:%)]}")
"""Marks written without a space before them."""

OPENING = frozenset("([{$#")
"""Marks written without a space after them."""


def train_word_tokenizer(texts: Iterable[str], config: TokenizerConfig) -> Tokenizer:
    """A WordLevel tokenizer on the training texts: the ``vocab_size`` most frequent words
    seen at least ``min_frequency`` times, ids 0-3 the special tokens."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")])
    trainer = trainers.WordLevelTrainer(vocab_size=config.vocab_size, min_frequency=config.min_frequency,
                                        special_tokens=SPECIAL_TOKENS,
                                        show_progress=sys.stderr.isatty())  # elsewhere its bars are blank lines
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


@dataclass
class Words:
    """A tokenizer's vocabulary and its word splitting, for extended ids."""

    tokenizer: Tokenizer

    def __post_init__(self) -> None:
        self.vocab = self.tokenizer.get_vocab()
        self.size = self.tokenizer.get_vocab_size()
        self.unk = self.vocab[UNK]
        self.bos, self.eos = self.vocab["[BOS]"], self.vocab["[EOS]"]
        self.inverse = {i: w for w, i in self.vocab.items()}

    def split(self, text: str) -> list[str]:
        """The words of ``text`` as the tokenizer sees them."""
        normalized = self.tokenizer.normalizer.normalize_str(text)
        return [w for w, _ in self.tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]

    def casing(self, text: str) -> dict[str, str]:
        """Proper names of ``text`` as it writes them: lowercased word -> its surface form,
        for words written capitalised somewhere other than a sentence's or a turn's start
        and never in lowercase (``jimmy`` -> ``Jimmy``; ``hello`` stays)."""
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        seen: dict[str, set[str]] = {}
        starts = set()
        previous = "."
        for start, end in encoding.offsets:
            surface = text[start:end]
            seen.setdefault(surface.lower(), set()).add(surface)
            if previous in ".!?:" or previous.startswith("#"):
                starts.add(surface)
            previous = surface
        cased = {}
        for word, forms in seen.items():
            proper = [f for f in forms if f != word and f[:1].isupper() and f not in starts]
            if proper and word not in forms:
                cased[word] = proper[0]
        return cased

    def source(self, words: list[str]) -> tuple[list[int], list[str]]:
        """``(extended ids, the unknown words in id order)`` of a source's words."""
        outside: dict[str, int] = {}
        ids = []
        for w in words:
            i = self.vocab.get(w)
            if i is None:
                i = outside.setdefault(w, self.size + len(outside))
            ids.append(i)
        return ids, list(outside)

    def target(self, words: list[str], outside: list[str]) -> list[int]:
        """Extended ids of a target's words given its source's unknown ``outside`` words."""
        copied = {w: self.size + k for k, w in enumerate(outside)}
        return [self.vocab.get(w, copied.get(w, self.unk)) for w in words]

    def words(self, ids: Iterable[int], outside: list[str]) -> list[str]:
        """Words of output ids (up to the first EOS; special tokens dropped)."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i >= self.size:
                k = i - self.size
                out.append(outside[k] if k < len(outside) else UNK)
            elif i > self.eos or i == self.unk:
                out.append(self.inverse[i])
        return out


def detokenize(words: list[str], casing: dict[str, str] | None = None) -> str:
    """Readable text of words: ``["#person1#", "asks", "mr", ".", "smith", "'s", ...]`` ->
    ``"#Person1# asks mr. Smith's ..."`` (sentence starts capitalised, and words ``casing``
    (:meth:`Words.casing` of the source) written as the source writes them)."""
    casing = casing or {}
    text, previous = "", ""
    for w in (casing.get(w, w) for w in words):
        glued = w[0] in ATTACHED or w.startswith("'") or previous in OPENING
        if text and not glued:
            text += " "
        text += w
        previous = w
    text = re.sub(r"#person(\d+)#", r"#Person\1#", text)
    return re.sub(r"(^|[.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
