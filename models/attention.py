"""Attention of decoder steps over the encoder output (the *memory*).

For a decoder output ``h_t`` (``H`` wide) and memory steps ``m_s`` (``H_mem`` wide)::

    luong     score(h_t, m_s) = h_t . W m_s                  (Luong et al. 2015, "general")
    bahdanau  score(h_t, m_s) = v . tanh(W_q h_t + W_m m_s)  (Bahdanau et al. 2015, additive)

    a_t = softmax_s(score(h_t, m_s)), over valid source steps only
    c_t = sum_s a_ts m_s                                      (the context, H_mem wide)

Padded source steps get a score of -inf, hence a weight of exactly 0: their memory
vectors (whatever garbage they hold) never reach the context. Every query step is scored
at once with batched matmuls; the queries are the decoder's *current* outputs (Luong
style), so without input feeding teacher-forced training is parallel over time.
"""

from __future__ import annotations

import torch
from torch import nn

NOMINAL_SOURCE_LENGTH = 30
"""Attention costs O(source length) per target token; the stage planner's per-token cost
model assumes a sentence of this many source tokens."""


class LuongScore(nn.Module):
    """``h . W m``: one bilinear form; ``W h`` is computed once per query step."""

    def __init__(self, query_size: int, memory_size: int) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_size, memory_size, bias=False)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """``query (B, T, H)``, ``memory (B, S, H_mem)`` -> ``scores (B, T, S)``."""
        return torch.bmm(self.query_proj(query), memory.transpose(1, 2))

    def flops(self, source_length: int) -> float:
        return 2.0 * self.query_proj.weight.numel() + 2.0 * source_length * self.query_proj.out_features


class BahdanauScore(nn.Module):
    """``v . tanh(W_q h + W_m m)`` with an ``H``-wide hidden layer.

    Materialises a ``(B, T, S, H)`` tensor: fine at sentence lengths, the price of the
    additive form (Luong's bilinear score needs no such tensor).
    """

    def __init__(self, query_size: int, memory_size: int) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_size, query_size, bias=False)
        self.memory_proj = nn.Linear(memory_size, query_size, bias=True)
        self.v = nn.Linear(query_size, 1, bias=False)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """``query (B, T, H)``, ``memory (B, S, H_mem)`` -> ``scores (B, T, S)``."""
        hidden = torch.tanh(self.query_proj(query).unsqueeze(2) + self.memory_proj(memory).unsqueeze(1))
        return self.v(hidden).squeeze(-1)

    def flops(self, source_length: int) -> float:
        width = self.query_proj.out_features
        # Both projections once per token (a source token per target token, roughly),
        # then add, tanh and the dot with v for every (target, source) pair.
        projections = 2.0 * (self.query_proj.weight.numel() + self.memory_proj.weight.numel())
        return projections + 4.0 * source_length * width


SCORES = {"luong": LuongScore, "bahdanau": BahdanauScore}


class Attention(nn.Module):
    """Masked attention: ``(query (B, T, H), memory (B, S, H_mem), mask (B, S))`` ->
    ``(context (B, T, H_mem), weights (B, T, S))``; ``mask`` is True on valid source
    steps (``models.layers.padding_mask``) and every row needs at least one."""

    def __init__(self, *, kind: str, query_size: int, memory_size: int) -> None:
        super().__init__()
        self.score = SCORES[kind](query_size, memory_size)
        self.memory_size = memory_size

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(query, memory).masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights, memory), weights

    def flops_per_token(self) -> float:
        """Per query step, at :data:`NOMINAL_SOURCE_LENGTH`: scores, softmax, context."""
        s = NOMINAL_SOURCE_LENGTH
        return self.score.flops(s) + 3.0 * s + 2.0 * s * self.memory_size
