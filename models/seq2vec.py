"""seq2vec: token sequence -> label (sentiment, text classification).

::

    tokens (B, T) -> TokenEmbedding -> RecurrentLayer 0 (bidirectional) -> ...
                  -> RecurrentLayer N-1 (residual from layer ``residual_from``)
                  -> PooledClassifier -> logits (B, num_labels)

All of it lives in ``self.layers`` ("0".."N+1") so a stage plan can cut it anywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import ModelConfig
from models.layers import PooledClassifier, RecurrentLayer, TokenEmbedding


class SequenceClassifier(nn.Module):
    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({str(i): layer for i, layer in enumerate(layers)})

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``tokens (B, T)`` int64, ``lengths (B,)`` int64 on CPU -> ``(B, labels)``."""
        x = tokens
        for layer in self.layers.values():
            x = layer(x, lengths)
        return x

    def layer_costs(self) -> list[int]:
        """Parameter count of each layer, in order: the stage planner's cost model."""
        return [sum(p.numel() for p in layer.parameters()) for layer in self.layers.values()]


def build_seq2vec(config: ModelConfig, *, vocab_size: int, num_labels: int) -> SequenceClassifier:
    layers: list[nn.Module] = [TokenEmbedding(vocab_size, config.embed_dim)]
    width = config.embed_dim
    for i in range(config.num_layers):
        bidirectional = config.bidirectional_bottom and i == 0
        layer = RecurrentLayer(
            cell=config.cell,
            input_size=width,
            hidden_size=config.hidden_size,
            bidirectional=bidirectional,
            residual=i >= config.residual_from,
            dropout=config.dropout,
            stream=len(layers),
        )
        layers.append(layer)
        width = layer.output_size
    top_bidirectional = config.bidirectional_bottom and config.num_layers == 1
    layers.append(
        PooledClassifier(
            input_size=width,
            num_labels=num_labels,
            pooling=config.pooling,
            bidirectional_input=top_bidirectional,
            dropout=config.dropout,
            stream=len(layers),
        )
    )
    return SequenceClassifier(layers)
