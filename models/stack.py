"""The container every rayseq model is: an ordered, cuttable list of layers.

A model is ``layers`` ("0".."N"), each called as ``x = layer(x, lengths)``. A pipeline
stage is a contiguous slice of that list, built alone (:func:`build_layers`) with the
same weights the whole model would have, so the stage plan can cut between any two
layers. What ``x`` and ``lengths`` are depends on the model kind: a tensor for seq2vec,
a tuple of tensors for seq2seq.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


class LayerStack(nn.Module):
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

    def forward(self, x: Any, lengths: Any) -> Any:
        """Maps the first layer's input to the last layer's output."""
        for layer in self.layers.values():
            x = layer(x, lengths)
        return x

    def layer_costs(self) -> list[float]:
        """Estimated FLOPs per token of each layer, in order: the stage planner's cost
        model (parameter counts would put the embedding table on a stage of its own)."""
        return [layer.flops_per_token() for layer in self.layers.values()]


def build_layers(
    factories: list[Callable[[], nn.Module]], *, seed: int, keep: Iterable[int] | None = None
) -> dict[int, nn.Module]:
    """Build layers ``keep`` (default: all), layer ``i`` under its own seed
    ``seed * 1_000_003 + i``: a stage's layers are the whole model's, bit for bit,
    whatever else was built (or drawn from the global RNG) before."""
    indices = range(len(factories)) if keep is None else keep
    layers = {}
    for i in indices:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1_000_003 + i)
            layers[i] = factories[i]()
    return layers
