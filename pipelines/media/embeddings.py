"""Pretrained word vectors (``model.pretrained_embeddings``) mapped onto a tokenizer's vocabulary.

Reads the text formats the field ships vectors in: word2vec text (a ``COUNT DIM``
header line, then ``word v1 ... vDIM``), GloVe (no header) and fastText ``.vec``
(word2vec text). Only the vocabulary's words are kept, so a multi-GB file streams
through in constant memory. A vocabulary token takes the vector of the same word, else
of its lowercase or capitalised form (GloVe is lowercase, word2vec cased); a token no
vector covers keeps a random vector of the pretrained vectors' own scale (Kim 2014:
unknown words drawn with the variance of the known ones), and ``[PAD]`` stays zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.layers import PAD_ID
from pipelines.errors import ConfigError, DataError


@dataclass
class WordVectors:
    matrix: np.ndarray
    """``(vocab_size, dim)`` float32: the rows of the tokenizer's ids."""
    covered: int
    """Whole-word vocabulary tokens that got a pretrained vector."""
    words: int
    """Whole-word vocabulary tokens (not specials, not pieces inside a word)."""
    source: str

    @property
    def coverage(self) -> float:
        return self.covered / self.words if self.words else 0.0

    def report(self) -> dict[str, float | int]:
        return {"pretrained_vectors": self.covered, "pretrained_coverage": round(self.coverage, 4)}


WORD_START = "\u2581"
"""The Metaspace marker ``▁`` the tokenizers put before a word (``pipelines.media.tokenization``):
``▁film`` is the word ``film``; a token without it is a piece inside a word."""


def _candidates(token: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((token, token.lower(), token.capitalize())))


def load_word_vectors(path: str | Path, vocab: dict[str, int], dim: int, *, specials: set[str],
                      seed: int = 0) -> WordVectors:
    """The ``(len(vocab), dim)`` embedding of ``vocab`` (token -> id, Metaspace tokens:
    ``▁word``) from the vector file ``path``; coverage counts whole-word tokens.
    ConfigError if its vectors are not ``dim`` wide, DataError naming the line of a
    malformed one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.pretrained_embeddings: no such file: {path}")
    token_of: dict[int, str] = {}  # id -> the word it stands for
    wanted: dict[str, list[int]] = {}
    for token, index in vocab.items():
        if token in specials or not token.startswith(WORD_START) or len(token) == 1:
            continue  # a subword piece inside a word has no word vector
        token_of[index] = token[1:]
        for form in _candidates(token[1:]):
            wanted.setdefault(form, []).append(index)
    words = len(token_of)
    found: dict[int, tuple[int, np.ndarray]] = {}  # id -> (rank of the form that matched, vector)
    file_dim = None
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{number}: not UTF-8 text (byte {err.start}); binary word2vec "
                                "files are not read: convert them to the text format") from err
            fields = line.rstrip(" ").split(" ")
            if number == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
                file_dim = int(fields[1])  # word2vec / .vec header: COUNT DIM
                _check_dim(file_dim, dim, path)
                continue
            if not line.strip():
                continue
            if file_dim is None:
                file_dim = len(fields) - 1
                _check_dim(file_dim, dim, path)
            if len(fields) < file_dim + 1:
                raise DataError(f"{path}:{number}: {len(fields) - 1} numbers, expected {file_dim}")
            word = " ".join(fields[: len(fields) - file_dim])  # a few GloVe words hold spaces
            targets = wanted.get(word)
            if not targets:
                continue
            try:
                vector = np.asarray(fields[len(fields) - file_dim:], dtype=np.float32)
            except ValueError as err:
                raise DataError(f"{path}:{number}: a vector entry is not a number ({err})") from err
            for index in targets:
                rank = _candidates(token_of[index]).index(word)  # the token itself beats its other cases
                if index not in found or rank < found[index][0]:
                    found[index] = (rank, vector)
    if file_dim is None:
        raise DataError(f"{path}: no vectors in the file")
    rng = np.random.default_rng(seed)
    known = np.stack([v for _, v in found.values()]) if found else np.zeros((0, dim), np.float32)
    scale = float(known.std()) if len(known) > 1 else 1.0 / math.sqrt(dim)
    matrix = rng.normal(0.0, scale, size=(len(vocab), dim)).astype(np.float32)
    for index, (_, vector) in found.items():
        matrix[index] = vector
    matrix[PAD_ID] = 0.0  # what the embedding's padding_idx row holds
    return WordVectors(matrix, len(found), words, str(path))


def _check_dim(file_dim: int, dim: int, path: Path) -> None:
    if file_dim != dim:
        raise ConfigError(f"model.pretrained_embeddings: {path} has {file_dim}-dimensional vectors but "
                          f"model.embed_dim is {dim}; set model.embed_dim={file_dim}")
