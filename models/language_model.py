"""A language model conditioned on a label (text from a vector), as one cuttable layer list.

The condition (a sentiment, a topic: one id per sentence) is embedded into a vector that
the decoder reads beside the previous token at every step, and every layer above and the
output layer read it as their "context" (the conditioned LSTM LM of Ficler & Goldberg
2017, "Controlling Linguistic Style Aspects in Neural Language Generation")::

    i       layer                      x in                         -> x out
    0       SourceFrontEnd(Condition)  (condition (B, 1), tgt_in)   -> (v (B, 1, E), tgt_in)
    1       TargetEmbedding            (v, tgt_in)                  -> (v, tgt_x (B, T, E))
    2       ConditionedDecoderLayer    (v, tgt_x)                   -> (h (B, T, H), context = v)
    3..     DecoderLayer x (D-1)       (h, context)                 -> (h', context)
    D+2     Generator                  (h, context)                 -> logits (B, T, V)

It is the vec2seq decoder (``models.vec2seq``) whose "encoder" is an embedding lookup,
so the model *is* a :class:`~models.seq2seq.Seq2Seq` with a one-step memory: greedy, beam
search and sampling (``models.decoding``) run on it unchanged. ``D`` is
``model.decoder_layers``. An unconditioned language model is the same model with one
condition, whose vector is then a learned constant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from models.config import ModelConfig
from models.seq2seq import Seq2Seq, SourceFrontEnd, decoder_factories
from models.stack import build_layers
from models.vec2seq import ConditionedDecoderLayer


class Condition(nn.Module):
    """``condition ids (B, 1)`` -> ``(B, 1, E)``: one learned vector per condition, at
    the scale of the token embeddings beside it in the decoder's input (N(0, 1))."""

    def __init__(self, num_conditions: int, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_conditions, width)
        nn.init.normal_(self.embed.weight, std=1.0)
        self.output_size = width

    def forward(self, conditions: torch.Tensor, lengths) -> torch.Tensor:
        return self.embed(conditions[:, :1].long())

    def flops_per_token(self) -> float:
        return float(self.output_size)


def language_model_layer_factories(config: ModelConfig, *, num_conditions: int,
                                   vocab_size: int) -> list[Callable[[], nn.Module]]:
    """One constructor per layer, in order; the condition vector is ``embed_dim`` wide."""
    width = config.embed_dim
    factories: list[Callable[[], nn.Module]] = [lambda: SourceFrontEnd(Condition(num_conditions, width))]
    return decoder_factories(config, factories, tgt_vocab_size=vocab_size, memory_size=width,
                             bottom=ConditionedDecoderLayer)


def build_language_model(config: ModelConfig, *, num_conditions: int, vocab_size: int, seed: int = 0,
                         keep: Iterable[int] | None = None) -> Seq2Seq:
    """The model, or with ``keep`` only those (contiguous) layers of it."""
    factories = language_model_layer_factories(config, num_conditions=num_conditions, vocab_size=vocab_size)
    return Seq2Seq(build_layers(factories, seed=seed, keep=keep))

