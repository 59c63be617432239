"""CTC speech recognition: log-mel frames -> per-step token distributions (Graves et al. 2006).

::

    frames (B, 4T, F) -> ConvSubsampler -> RecurrentLayer 0 (bidirectional) -> ...
                      -> RecurrentLayer N-1 -> CTCHead -> log_probs (B, T, V)

The same cuttable layer list as a classifier with a per-step head instead of pooling, so
the pipeline engine runs it unchanged. Token 0 (PAD) doubles as the CTC blank: it is
never a target. Connectionist temporal classification sums over every alignment of the
target to the T steps (blanks between and around tokens, repeats merged), so no
attention has to discover the alignment: on the spoken digit strings an attention
decoder sat at the unigram loss for its first 300 steps, which CTC does not (see
``recipes/fsdd_speech.yaml``).

Decoding (:func:`ctc_greedy`, :func:`ctc_beam_search`) collapses repeats and drops
blanks; the beam search is the prefix beam search of Hannun et al. (2014) without a
language model, which merges alignments that spell the same prefix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.decoding import Hypothesis
from models.dropout import SeededDropout
from models.frontends import FrontEnd
from models.layers import padding_mask
from models.seq2vec import recurrent_factories
from models.stack import LayerStack, build_layers

BLANK_ID = 0


class CTCHead(nn.Module):
    """``(B, T, in)`` states -> ``(B, T, vocab)`` log-probabilities; padded steps are 0."""

    time_streaming = False

    def __init__(self, *, input_size: int, vocab_size: int, dropout: float, stream: int) -> None:
        super().__init__()
        self.dropout = SeededDropout(dropout, stream=stream)
        self.proj = nn.Linear(input_size, vocab_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(self.proj(self.dropout(x)).float(), dim=-1).to(x.dtype)
        return log_probs * padding_mask(lengths.to(x.device), x.size(1)).unsqueeze(-1)

    def flops_per_token(self) -> float:
        return 2.0 * self.proj.weight.numel()


class CTCRecognizer(LayerStack):
    """The whole CTC model, or a contiguous slice of it (a pipeline stage)."""


def ctc_layer_factories(config: ModelConfig, *, frontend: FrontEnd,
                        tgt_vocab_size: int) -> list[Callable[[], nn.Module]]:
    """Front end (``models.frontends.log_mel``), ``num_layers`` recurrent layers (as the
    classifier's), CTC head."""
    factories: list[Callable[[], nn.Module]] = [lambda: frontend(config)]
    width = recurrent_factories(config, factories, input_size=config.embed_dim)
    stream = len(factories)
    factories.append(lambda: CTCHead(input_size=width, vocab_size=tgt_vocab_size, dropout=config.dropout,
                                     stream=stream))
    return factories


def build_ctc(config: ModelConfig, *, frontend: FrontEnd, tgt_vocab_size: int, seed: int = 0,
              keep: Iterable[int] | None = None) -> CTCRecognizer:
    factories = ctc_layer_factories(config, frontend=frontend, tgt_vocab_size=tgt_vocab_size)
    return CTCRecognizer(build_layers(factories, seed=seed, keep=keep))


def ctc_loss(log_probs: torch.Tensor, steps: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
    """Summed CTC loss of ``log_probs (B, T, V)`` over ``steps (B,)`` valid steps against
    ``targets (B, L)`` (PAD-padded, ``target_lengths (B,)``). An utterance too short for
    its target (fewer steps than tokens plus repeats) has infinite loss, counted as 0."""
    return F.ctc_loss(log_probs.transpose(0, 1).float(), targets, steps, target_lengths, blank=BLANK_ID,
                      reduction="sum", zero_infinity=True)


def _collapse(path: list[int]) -> list[int]:
    out, prev = [], BLANK_ID
    for token in path:
        if token != prev and token != BLANK_ID:
            out.append(token)
        prev = token
    return out


def ctc_greedy(log_probs: torch.Tensor, steps: torch.Tensor) -> list[list[Hypothesis]]:
    """Best path per row: argmax each step, merge repeats, drop blanks; score = its log-probability."""
    best, best_ids = log_probs.max(dim=-1)
    out = []
    for row, n in enumerate(steps.tolist()):
        out.append([Hypothesis(tokens=_collapse(best_ids[row, :n].tolist()), score=float(best[row, :n].sum()))])
    return out


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high = max(a, b)
    return high + math.log(math.exp(a - high) + math.exp(b - high))


def _add_prefix(nxt: dict[tuple[int, ...], tuple[float, float]], prefix: tuple[int, ...], blank: float,
                token: float) -> None:
    b, k = nxt.get(prefix, (-math.inf, -math.inf))
    nxt[prefix] = (_logsumexp(b, blank), _logsumexp(k, token))


def ctc_beam_search(log_probs: torch.Tensor, steps: torch.Tensor, *, beam_size: int, n_best: int = 1,
                    prune: float = -12.0) -> list[list[Hypothesis]]:
    """Prefix beam search per row: each prefix keeps (log P ending in blank, log P ending
    in its last token); tokens below ``prune`` log-probability at a step are not tried.
    Scores are total log-probabilities of the prefix (all its alignments)."""
    out = []
    table = log_probs.float().cpu()
    for row, n in enumerate(steps.tolist()):
        beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
        for t in range(n):
            frame = table[row, t]
            candidates = [int(v) for v in torch.nonzero(frame > prune).flatten()] or [int(frame.argmax())]
            nxt: dict[tuple[int, ...], tuple[float, float]] = {}
            for prefix, (p_blank, p_token) in beams.items():
                total = _logsumexp(p_blank, p_token)
                for v in candidates:
                    p = float(frame[v])
                    if v == BLANK_ID:
                        _add_prefix(nxt, prefix, total + p, -math.inf)
                    elif prefix and prefix[-1] == v:
                        _add_prefix(nxt, prefix, -math.inf, p_token + p)  # repeat without a blank: same prefix
                        _add_prefix(nxt, prefix + (v,), -math.inf, p_blank + p)  # blank in between: a new token
                    else:
                        _add_prefix(nxt, prefix + (v,), -math.inf, total + p)
            beams = dict(sorted(nxt.items(), key=lambda kv: -_logsumexp(*kv[1]))[:beam_size])
        ranked = sorted(beams.items(), key=lambda kv: -_logsumexp(*kv[1]))[:n_best]
        out.append([Hypothesis(tokens=list(prefix), score=_logsumexp(*scores)) for prefix, scores in ranked])
    return out


@torch.no_grad()
def ctc_decode(model: CTCRecognizer, frames: torch.Tensor, steps: torch.Tensor, *, beam_size: int = 1,
               n_best: int = 1) -> list[list[Hypothesis]]:
    """Transcribe a batch: greedy for ``beam_size`` 1, else prefix beam search."""
    log_probs = model(frames, steps)
    if beam_size == 1:
        return ctc_greedy(log_probs, steps)
    return ctc_beam_search(log_probs, steps, beam_size=beam_size, n_best=n_best)
