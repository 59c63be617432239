"""Dropout whose masks are a pure function of (seed, step, micro-batch, layer).

A pipeline-parallel run must draw the same masks as a single process, whatever stage a
layer lands on. So masks are not drawn from the process's global RNG (whose state
depends on what else that process ran) but from a generator seeded by the key the
training loop sets with :func:`dropout_key` and the layer's own ``stream`` number.
Outside a ``dropout_key`` block (plain PyTorch use) the global RNG is used.

Sequence masks are drawn for the whole ``(batch, steps, features)`` sequence and sliced,
so a layer run over time chunks (the wavefront schedule) drops exactly what it drops
when run over the whole sequence at once.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

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


def keyed_generator(stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for ``stream``'s random draws: seeded by the ``dropout_key`` in force,
    or, outside one, from the global RNG (plain PyTorch use)."""
    key = _KEY.get()
    generator = torch.Generator(device=device)
    seed = _seed(key, stream) if key is not None else int(torch.randint(0, 2**62, (1,)))
    generator.manual_seed(seed)
    return generator


class SeededDropout(nn.Module):
    """Inverted dropout with masks keyed by (``dropout_key``, ``stream``)."""

    def __init__(self, p: float, stream: int) -> None:
        super().__init__()
        self.p = p
        self.stream = stream
        # The last mask drawn: chunks of one sequence slice it instead of redrawing.
        self._cached: tuple[tuple, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, *, offset: int = 0, steps: int | None = None) -> torch.Tensor:
        """``x (B, w, ...)`` is steps ``offset .. offset + w`` of a ``(B, steps, ...)``
        sequence (by default all of it; 2-d inputs have no time axis)."""
        if not self.training or self.p == 0.0:
            return x
        key = _KEY.get()
        if key is None:
            return nn.functional.dropout(x, self.p, training=True)
        if steps is None or x.dim() < 3:
            return x * self._keep(key, tuple(x.shape), x) / (1.0 - self.p)
        keep = self._keep(key, (x.size(0), steps, *x.shape[2:]), x)[:, offset : offset + x.size(1)]
        if keep.size(1) < x.size(1):  # steps past every row's length: padding, kept as is
            keep = torch.cat([keep, keep.new_ones(x.size(0), x.size(1) - keep.size(1), *x.shape[2:])], 1)
        return x * keep / (1.0 - self.p)

    def _keep(self, key: tuple[int, ...], shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        ident = (_seed(key, self.stream), shape, like.dtype, like.device)
        if self._cached is None or self._cached[0] != ident:
            generator = torch.Generator(device=like.device)
            generator.manual_seed(ident[0])
            keep = torch.empty(shape, dtype=like.dtype, device=like.device)
            keep.bernoulli_(1.0 - self.p, generator=generator)
            self._cached = (ident, keep)
        return self._cached[1]

    def extra_repr(self) -> str:
        return f"p={self.p}, stream={self.stream}"
