"""Sequence tagger: a label per token (named entities), the BiLSTM-CRF of Lample et al.
2016 with Ma & Hovy 2016's character CNN::

    words (B, T), cases (B, T), chars (B, T, C)
      -> WordFeatures: word embedding (word dropout) | case embedding | char CNN, max-pooled
      -> RecurrentLayer 0..N-1, every one bidirectional (residual from ``residual_from``)
      -> TagScorer: per-token tag scores and the CRF's transition scores (``models.crf``)

All of it lives in ``layers`` ("0".."N+1"), so a stage plan can cut it anywhere; the CRF
is part of the last layer, so it sits on the last stage with the loss. The tag scheme's
rules (``pipelines.media.tags``) are not in the model: the loss and the decoder mask
the scores with them (:class:`models.crf.Allowed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from models.config import ModelConfig
from models.crf import CRFScores
from models.dropout import SeededDropout, keyed_generator
from models.layers import PAD_ID, RecurrentLayer
from models.stack import LayerStack, build_layers

UNK_ID = 1
"""Word and character id of anything not in the vocabulary (``PAD_ID`` is 0)."""

CASES = ("pad", "lower", "title", "upper", "mixed", "digits", "other")
CASE_DIM = 8


def case_of(token: str) -> int:
    """The case feature of a token (an index into :data:`CASES`): what lowercased word
    embeddings no longer see (``EU`` vs ``eu``), the strongest single cue for names."""
    if any(c.isdigit() for c in token):
        return 5
    letters = [c for c in token if c.isalpha()]
    if not letters:
        return 6
    if all(c.islower() for c in letters):
        return 1
    if all(c.isupper() for c in letters):
        return 3
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return 2
    return 4


class WordFeatures(nn.Module):
    """``(words, cases, chars)`` -> ``(B, T, embed_dim + CASE_DIM + char_channels)``.

    Characters: embedded, a width-3 convolution, max over the word's characters (Ma &
    Hovy's CNN; on 2 cores far cheaper than a character BiLSTM). With ``word_dropout``
    a training word becomes the unknown word with that probability, so the unknown
    word's vector learns what a rare word looks like (Lample et al.'s singleton dropout,
    applied to every word)."""

    time_streaming = False

    def __init__(self, num_words: int, num_chars: int, config: ModelConfig, *, stream: int) -> None:
        super().__init__()
        self.words = nn.Embedding(num_words, config.embed_dim, padding_idx=PAD_ID)
        nn.init.normal_(self.words.weight, std=config.embed_dim ** -0.5)
        self.cases = nn.Embedding(len(CASES), CASE_DIM, padding_idx=0)
        self.chars = nn.Embedding(num_chars, config.char_embed_dim, padding_idx=PAD_ID)
        self.char_conv = nn.Conv1d(config.char_embed_dim, config.char_channels, kernel_size=3, padding=1)
        with torch.no_grad():
            for table in (self.words, self.chars):
                table.weight[PAD_ID].zero_()
        self.char_dropout = SeededDropout(config.dropout, stream=stream)
        self.word_dropout = config.word_dropout
        self.stream = stream
        self.output_size = config.embed_dim + CASE_DIM + config.char_channels

    def forward(self, x: tuple[torch.Tensor, torch.Tensor, torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        words, cases, chars = x
        if self.training and self.word_dropout > 0:
            drop = torch.rand(words.shape, generator=keyed_generator(self.stream + 1_000_000, words.device),
                              device=words.device) < self.word_dropout
            words = words.masked_fill(drop & (words != PAD_ID), UNK_ID)
        batch, steps, width = chars.shape
        flat = chars.reshape(batch * steps, width)
        embedded = self.char_dropout(self.chars(flat))  # (BT, C, char_embed_dim)
        conv = self.char_conv(embedded.transpose(1, 2))  # (BT, channels, C)
        conv = conv.masked_fill((flat == PAD_ID)[:, None, :], float("-inf")).amax(dim=2)
        conv = torch.where(torch.isfinite(conv), conv, torch.zeros_like(conv))  # padding words: no characters
        return torch.cat([self.words(words), self.cases(cases), conv.view(batch, steps, -1)], dim=-1)

    def flops_per_token(self) -> float:
        """The character convolution dominates: ~12 characters a word."""
        conv = self.char_conv
        return float(2 * 12 * conv.in_channels * conv.out_channels * 3 + self.output_size)


class TagScorer(nn.Module):
    """``(B, T, width)`` -> :class:`~models.crf.CRFScores`: dropout, a linear layer to
    per-token tag scores, and the CRF's start / transition / end scores (learned)."""

    time_streaming = False

    def __init__(self, input_size: int, num_tags: int, *, dropout: float, stream: int) -> None:
        super().__init__()
        self.dropout = SeededDropout(dropout, stream=stream)
        self.project = nn.Linear(input_size, num_tags)
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.trans = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> CRFScores:
        return CRFScores(self.project(self.dropout(x)), self.start, self.trans, self.end)

    def flops_per_token(self) -> float:
        # the projection, plus the forward algorithm's K x K work a token
        k = self.project.out_features
        return float(2 * self.project.in_features * k + 4 * k * k)


class SequenceTagger(LayerStack):
    """The whole tagger, or a contiguous slice of it (a pipeline stage)."""


def tagger_layer_factories(config: ModelConfig, *, num_words: int, num_chars: int,
                           num_tags: int) -> list[Callable[[], nn.Module]]:
    factories: list[Callable[[], nn.Module]] = [lambda: WordFeatures(num_words, num_chars, config, stream=0)]
    width = config.embed_dim + CASE_DIM + config.char_channels
    for i in range(config.num_layers):
        stream = len(factories)
        factories.append(
            lambda width=width, i=i, stream=stream: RecurrentLayer(
                cell=config.cell, input_size=width, hidden_size=config.hidden_size, bidirectional=True,
                residual=i >= config.residual_from, dropout=config.dropout, stream=stream,
            )
        )
        width = 2 * config.hidden_size
    stream = len(factories)
    factories.append(lambda width=width, stream=stream: TagScorer(width, num_tags, dropout=config.dropout,
                                                                  stream=stream))
    return factories


def build_tagger(config: ModelConfig, *, num_words: int, num_chars: int, num_tags: int, seed: int = 0,
                 keep: Iterable[int] | None = None) -> SequenceTagger:
    """The model, or with ``keep`` only those (contiguous) layers of it."""
    factories = tagger_layer_factories(config, num_words=num_words, num_chars=num_chars, num_tags=num_tags)
    return SequenceTagger(build_layers(factories, seed=seed, keep=keep))
