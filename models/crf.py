"""A linear-chain CRF over per-token tag scores (Lafferty et al. 2001; the output layer of
Lample et al. 2016's and Ma & Hovy 2016's taggers).

A tag path ``y`` of a sentence with emissions ``e (T, K)`` scores::

    s(y) = start[y_0] + sum_t e[t, y_t] + sum_{t>0} trans[y_{t-1}, y_t] + end[y_{T-1}]

and ``p(y) = exp s(y) / Z`` with ``Z`` summed over every path (the forward algorithm);
the loss is ``log Z - s(gold)``, decoding the best path (Viterbi). A tag scheme's
forbidden moves (``O`` -> ``I-PER`` in IOB2, see ``pipelines.media.tags``) are an
``allowed`` mask: masked scores are ``-1e4``, so no path the scheme forbids is ever
decoded and training never spends probability mass on one.

Everything here is batched: ``emissions (B, T, K)``, ``lengths (B,)``; steps past a
row's length are ignored. Scores are computed in float32 whatever the emissions' dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FORBIDDEN = -1e4
"""Score of a move the tag scheme forbids: exp(-1e4) is 0 in float32, and unlike -inf it
keeps ``logsumexp`` finite when a row has no allowed path at all (a bad mask)."""


@dataclass(frozen=True)
class Allowed:
    """Which moves a tag scheme allows: ``start (K,)``, ``trans (K, K)`` (from, to), ``end (K,)``."""

    start: torch.Tensor
    trans: torch.Tensor
    end: torch.Tensor

    @classmethod
    def everything(cls, num_tags: int) -> Allowed:
        ones = torch.ones(num_tags, dtype=torch.bool)
        return cls(ones, torch.ones(num_tags, num_tags, dtype=torch.bool), ones)


@dataclass
class CRFScores:
    """What a tagger's last layer outputs: per-token scores and the CRF's own."""

    emissions: torch.Tensor
    """``(B, T, K)``"""
    start: torch.Tensor
    """``(K,)``"""
    trans: torch.Tensor
    """``(K, K)``: ``trans[i, j]`` scores tag ``j`` right after tag ``i``."""
    end: torch.Tensor
    """``(K,)``"""

    def constrained(self, allowed: Allowed) -> CRFScores:
        def mask(score: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
            return score.float().masked_fill(~ok.to(score.device), FORBIDDEN)

        return CRFScores(self.emissions.float(), mask(self.start, allowed.start), mask(self.trans, allowed.trans),
                         mask(self.end, allowed.end))

    def detach(self) -> CRFScores:
        return CRFScores(self.emissions.detach(), self.start.detach(), self.trans.detach(), self.end.detach())


def _valid(lengths: torch.Tensor, steps: int, device: torch.device) -> torch.Tensor:
    return torch.arange(steps, device=device)[None, :] < lengths.to(device)[:, None]


def log_partition(scores: CRFScores, lengths: torch.Tensor) -> torch.Tensor:
    """``log Z`` per row ``(B,)`` by the forward algorithm (rows need ``length >= 1``)."""
    e = scores.emissions
    valid = _valid(lengths, e.size(1), e.device)
    alpha = scores.start[None, :] + e[:, 0]  # (B, K)
    for t in range(1, e.size(1)):
        step = torch.logsumexp(alpha[:, :, None] + scores.trans[None], dim=1) + e[:, t]
        alpha = torch.where(valid[:, t, None], step, alpha)
    return torch.logsumexp(alpha + scores.end[None, :], dim=1)


def path_score(scores: CRFScores, tags: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``s(tags)`` per row ``(B,)``; ``tags (B, T)`` int64 (anything past a row's length is ignored)."""
    e = scores.emissions
    valid = _valid(lengths, e.size(1), e.device)
    tags = tags.clamp(min=0)
    emitted = e.gather(2, tags[:, :, None]).squeeze(2).masked_fill(~valid, 0.0).sum(1)
    moves = scores.trans[tags[:, :-1], tags[:, 1:]].masked_fill(~valid[:, 1:], 0.0).sum(1)
    last = tags.gather(1, (lengths.to(e.device) - 1).clamp(min=0)[:, None]).squeeze(1)
    return scores.start[tags[:, 0]] + emitted + moves + scores.end[last]


def neg_log_likelihood(scores: CRFScores, tags: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``log Z - s(gold)`` per row ``(B,)``."""
    return log_partition(scores, lengths) - path_score(scores, tags, lengths)


def viterbi(scores: CRFScores, lengths: torch.Tensor) -> list[list[int]]:
    """The best tag path of every row, ``lengths[b]`` tags each."""
    e = scores.emissions
    batch, steps, _ = e.shape
    valid = _valid(lengths, steps, e.device)
    best = scores.start[None, :] + e[:, 0]
    back = []
    for t in range(1, steps):
        candidates = best[:, :, None] + scores.trans[None]  # (B, from, to)
        value, arg = candidates.max(dim=1)
        back.append(arg)
        best = torch.where(valid[:, t, None], value + e[:, t], best)
    best = best + scores.end[None, :]
    last = best.argmax(dim=1).tolist()
    pointers = torch.stack(back, 1).tolist() if back else [[] for _ in range(batch)]
    paths = []
    for b, n in enumerate(lengths.tolist()):
        path = [last[b]]
        for t in range(n - 1, 0, -1):
            path.append(pointers[b][t - 1][path[-1]])
        paths.append(path[::-1])
    return paths
