"""seq2vec: token sequence -> label (sentiment, text classification).

::

    tokens (B, T) -> TokenEmbedding -> RecurrentLayer 0 (bidirectional) -> ...
                  -> RecurrentLayer N-1 (residual from layer ``residual_from``)
                  -> PooledClassifier -> logits (B, num_labels)

All of it lives in ``self.layers`` ("0".."N+1") so a stage plan can cut it anywhere.
Each layer is initialised from its own seed (``seed``, layer index), so a pipeline stage
that builds only layers 3..5 gets exactly the weights the whole model would have.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from models.config import ModelConfig
from models.layers import PooledClassifier, RecurrentLayer, TokenEmbedding


class SequenceClassifier(nn.Module):
    """The whole model, or a contiguous slice of it (a pipeline stage).

    ``layers`` maps each layer's index in the full model to the layer, so parameter
    names (``layers.3.rnn.weight_ih_l0``) are the same in a stage and in the whole model.
    """

    def __init__(self, layers: dict[int, nn.Module]) -> None:
        super().__init__()
        indices = sorted(layers)
        if indices != list(range(indices[0], indices[-1] + 1)):
            raise ValueError(f"layers must be contiguous, got {indices}")
        self.layers = nn.ModuleDict({str(i): layers[i] for i in indices})

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Whole model: ``tokens (B, T)`` int64 -> ``(B, labels)``. A slice maps its
        first layer's input to its last layer's output. ``lengths (B,)`` int64, CPU."""
        for layer in self.layers.values():
            x = layer(x, lengths)
        return x

    def layer_costs(self) -> list[float]:
        """Estimated FLOPs per token of each layer, in order: the stage planner's cost
        model (parameter counts would put the embedding table on a stage of its own)."""
        return [layer.flops_per_token() for layer in self.layers.values()]


def seq2vec_layer_factories(config: ModelConfig, *, vocab_size: int, num_labels: int) -> list[Callable[[], nn.Module]]:
    """One constructor per layer, in order (widths are worked out without building)."""
    factories: list[Callable[[], nn.Module]] = [lambda: TokenEmbedding(vocab_size, config.embed_dim)]
    width = config.embed_dim
    for i in range(config.num_layers):
        bidirectional = config.bidirectional_bottom and i == 0
        stream = len(factories)
        factories.append(
            lambda width=width, bidirectional=bidirectional, i=i, stream=stream: RecurrentLayer(
                cell=config.cell,
                input_size=width,
                hidden_size=config.hidden_size,
                bidirectional=bidirectional,
                residual=i >= config.residual_from,
                dropout=config.dropout,
                stream=stream,
            )
        )
        width = config.hidden_size * (2 if bidirectional else 1)
    top_bidirectional = config.bidirectional_bottom and config.num_layers == 1
    stream = len(factories)
    factories.append(
        lambda width=width, stream=stream: PooledClassifier(
            input_size=width,
            num_labels=num_labels,
            pooling=config.pooling,
            bidirectional_input=top_bidirectional,
            dropout=config.dropout,
            stream=stream,
        )
    )
    return factories


def build_seq2vec(
    config: ModelConfig,
    *,
    vocab_size: int,
    num_labels: int,
    seed: int = 0,
    keep: Iterable[int] | None = None,
) -> SequenceClassifier:
    """The model, or with ``keep`` only those (contiguous) layers of it."""
    factories = seq2vec_layer_factories(config, vocab_size=vocab_size, num_labels=num_labels)
    indices = range(len(factories)) if keep is None else keep
    layers = {}
    for i in indices:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1_000_003 + i)
            layers[i] = factories[i]()
    return SequenceClassifier(layers)


def seq2vec_num_layers(config: ModelConfig) -> int:
    """Layers in the full model: embedding, ``num_layers`` recurrent layers, head."""
    return config.num_layers + 2
