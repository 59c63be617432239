"""Dropout whose masks are a pure function of (seed, step, micro-batch, layer).

A pipeline-parallel run must draw the same masks as a single process, whatever stage a
layer lands on. So masks are not drawn from the process's global RNG (whose state
depends on what else that process ran) but from a generator seeded by the key the
training loop sets with :func:`dropout_key` and the layer's own ``stream`` number.
Outside a ``dropout_key`` block (plain PyTorch use) the global RNG is used.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
from torch import nn

_KEY: contextvars.ContextVar[tuple[int, ...] | None] = contextvars.ContextVar(
    "rayseq_dropout_key", default=None
)
_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads nearby keys far apart


@contextlib.contextmanager
def dropout_key(*key: int) -> Iterator[None]:
    """Draw every :class:`SeededDropout` mask inside the block from ``key``."""
    token = _KEY.set(tuple(int(k) for k in key))
    try:
        yield
    finally:
        _KEY.reset(token)


def _seed(key: tuple[int, ...], stream: int) -> int:
    h = 0
    for part in (*key, stream):
        h = ((h ^ (part & 0xFFFFFFFFFFFFFFFF)) * _MIX + 1) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


class SeededDropout(nn.Module):
    """Inverted dropout with masks keyed by (``dropout_key``, ``stream``)."""

    def __init__(self, p: float, stream: int) -> None:
        super().__init__()
        self.p = p
        self.stream = stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        key = _KEY.get()
        if key is None:
            return nn.functional.dropout(x, self.p, training=True)
        generator = torch.Generator(device=x.device)
        generator.manual_seed(_seed(key, self.stream))
        keep = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        keep.bernoulli_(1.0 - self.p, generator=generator)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, stream={self.stream}"
