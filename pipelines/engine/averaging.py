"""Exponential moving average of a stage's parameters (``train.ema_decay``).

Polyak-style averaging: after every optimizer step each parameter's shadow moves towards
it, ``shadow += (1 - d) * (param - shadow)``, with ``d = min(decay, (1 + n) / (10 + n))``
after ``n`` updates (TensorFlow's ``ExponentialMovingAverage`` warm-up, so the first
steps' random weights fade fast). Validation scores the shadow and the exported
checkpoint holds it; training goes on from the raw weights.

Every pipeline stage averages its own parameters: the update is elementwise, so a
pipeline-parallel run averages exactly what a single process does, with no communication.
Data-parallel replicas hold identical parameters after each step, hence identical shadows.
Buffers (none in the RNN stacks; batch statistics in the video CNN) are used as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class ParameterAverage:
    """The shadow parameters of ``module`` (in ``module.parameters()`` order)."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.params = list(module.parameters())
        self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move every shadow towards its parameter (after an optimizer step)."""
        self.updates += 1
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.current_decay())

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The module holds the shadow weights inside the block, its own again after it."""
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.params]
            for param, shadow in zip(self.params, self.shadow):
                param.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, own in zip(self.params, raw):
                    param.copy_(own)

    @torch.no_grad()
    def restart_from_module(self, updates: int = 0) -> None:
        """Shadows := the module's current weights, ``updates`` updates made (resuming
        from a checkpoint whose model file holds the shadow)."""
        for shadow, param in zip(self.shadow, self.params):
            shadow.copy_(param)
        self.updates = updates
