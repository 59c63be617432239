"""seq2vec: token sequence -> label (sentiment, text classification), log-mel frames ->
label (spoken digits) with ``model.input = audio``, or RGB frames -> label (video
classification: a per-frame CNN, then the RNN stack) with ``model.input = video``.

::

    tokens (B, T) -> TokenEmbedding (audio: frames (B, 4T, F) -> ConvSubsampler;
                                     video: frames (B, T, S, S, 3) -> FrameEncoder)
                  -> RecurrentLayer 0 (bidirectional) -> ...
                  -> RecurrentLayer N-1 (residual from layer ``residual_from``)
                  -> PooledClassifier -> logits (B, num_labels)

All of it lives in ``self.layers`` ("0".."N+1") so a stage plan can cut it anywhere.
Each layer is initialised from its own seed (``seed``, layer index), so a pipeline stage
that builds only layers 3..5 gets exactly the weights the whole model would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from models.config import ModelConfig
from models.frontends import FrontEnd
from models.layers import PooledClassifier, RecurrentLayer
from models.stack import LayerStack, build_layers


class SequenceClassifier(LayerStack):
    """The whole seq2vec model, or a contiguous slice of it (a pipeline stage)."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Whole model: ``tokens (B, T)`` int64 -> ``(B, labels)``. A slice maps its
        first layer's input to its last layer's output. ``lengths (B,)`` int64, CPU."""
        return super().forward(x, lengths)


def seq2vec_layer_factories(config: ModelConfig, *, frontend: FrontEnd,
                            num_labels: int) -> list[Callable[[], nn.Module]]:
    """One constructor per layer, in order (widths are worked out without building):
    ``frontend`` (``models.frontends``), the recurrent stack, the pooled classifier."""
    factories: list[Callable[[], nn.Module]] = [lambda: frontend(config)]
    width = recurrent_factories(config, factories, input_size=config.embed_dim)
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


def recurrent_factories(config: ModelConfig, factories: list[Callable[[], nn.Module]], *, input_size: int) -> int:
    """Append the ``num_layers`` recurrent layers (bidirectional bottom, residuals from
    ``residual_from``) to ``factories``; each layer's dropout stream is its index.
    Returns the top layer's output width."""
    width = input_size
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
    return width


def build_seq2vec(
    config: ModelConfig,
    *,
    frontend: FrontEnd,
    num_labels: int,
    seed: int = 0,
    keep: Iterable[int] | None = None,
) -> SequenceClassifier:
    """The model, or with ``keep`` only those (contiguous) layers of it."""
    factories = seq2vec_layer_factories(config, frontend=frontend, num_labels=num_labels)
    return SequenceClassifier(build_layers(factories, seed=seed, keep=keep))


def seq2vec_num_layers(config: ModelConfig) -> int:
    """Layers in the full model: embedding, ``num_layers`` recurrent layers, head."""
    return config.num_layers + 2
