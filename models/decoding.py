"""Turning source sentences into target sentences: greedy and batched beam search, and sampling.

All drive a model's incremental decoder (:class:`IncrementalDecoder`, which
``models.seq2seq.Seq2Seq`` is) one token at a time, for a whole batch of sentences at
once, on whatever device the model is on. :func:`generate` is the entry point
(:class:`Sampling` draws instead of searching); :meth:`GreedySearch.steps` hands out
greedy decoding step by step (for streaming), and ``generate(..., beam_size=1)`` runs
those same steps to the end.

Scores are GNMT's (Wu et al. 2016, eq. 14, without the coverage term)::

    score(Y) = log P(Y | X) / lp(Y),    lp(Y) = ((5 + |Y|) / 6) ** alpha

where ``log P`` sums the log-probabilities of every output token *and* the final EOS,
and ``|Y|`` counts them (EOS included). ``alpha = 0`` ranks by plain log-probability;
larger ``alpha`` favours longer outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from models.layers import PAD_ID
from models.seq2seq import BOS_ID, EOS_ID, DecoderState

Memory = torch.Tensor | tuple[torch.Tensor, ...]
"""What ``model.encode`` returns and ``decode_step`` reads: a tensor ``(N, S, H_mem)`` or a
tuple of tensors (``models.pointer``'s ``(memory, keys, src)``), rows on dim 0 of each."""


def memory_rows(memory: Memory) -> int:
    return (memory[0] if isinstance(memory, tuple) else memory).size(0)


def memory_device(memory: Memory) -> torch.device:
    return (memory[0] if isinstance(memory, tuple) else memory).device


def select_rows(memory: Memory, index: torch.Tensor) -> Memory:
    """Rows ``index`` of the memory: beam search's expand and the sentences that stay."""
    if isinstance(memory, tuple):
        return tuple(t.index_select(0, index) for t in memory)
    return memory.index_select(0, index)


def repeated_ngram_tokens(history: list[list[int]], n: int) -> list[tuple[int, int]]:
    """``(row, token)`` pairs whose token would complete an ``n``-gram the row already
    holds (n-gram blocking, Paulus et al. 2018): each row's last ``n - 1`` tokens looked up
    among its earlier ``n``-grams."""
    banned = []
    for row, seq in enumerate(history):
        if len(seq) < n:
            continue
        prefix = tuple(seq[len(seq) - n + 1 :])
        for i in range(len(seq) - n + 1):
            if tuple(seq[i : i + n - 1]) == prefix:
                banned.append((row, seq[i + n - 1]))
    return banned


@dataclass(frozen=True)
class Hypothesis:
    """One output: target token ids without BOS/EOS, and its length-penalised score."""

    tokens: list[int]
    score: float


class IncrementalDecoder(Protocol):
    """What a search needs from a model (see ``models.seq2seq.Seq2Seq``)."""

    def encode(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor) -> Memory: ...
    def init_decoder_state(self, batch: int) -> DecoderState: ...
    def decode_step(
        self, prev_tokens: torch.Tensor, state: DecoderState, memory: Memory, src_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, DecoderState]: ...
    def reorder_state(self, state: DecoderState, index: torch.Tensor) -> DecoderState: ...


class DecodeStrategy:
    """Base of the search strategies: limits, length penalty, the tokens never generated.

    Shapes (``B`` sentences, ``K`` hypotheses kept per sentence (1 for greedy), ``N = B*K``
    decoder rows, ``S`` source steps, ``V`` target vocabulary, ``t`` steps done so far)::

        src_tokens    (B, S)        int64, padded with PAD
        src_lengths   (B,)          int64, CPU
        memory        (N, S, H_mem) model.encode output, each sentence's rows repeated K times
        row_lengths   (N,)          src_lengths repeated the same way
        state         DecoderState  model's, rows on dim 1 ((D, N, H) tensors); reordered
                                    with model.reorder_state(state, rows (N,))
        prev_tokens   (N,)          each row's last token; BOS at t = 0
        log_probs     (N, V)        model.decode_step output for the next token
        max_lengths   (B,)          output tokens allowed before EOS is forced, CPU:
                                    min(max_length, int(max_length_ratio * src_len + max_length_offset))

    ``search`` returns, per sentence, up to ``n_best`` :class:`Hypothesis`, best first.
    PAD and BOS are never generated, nor EOS before ``min_length`` output tokens, nor
    (with ``no_repeat_ngram = n > 0``) a token that would repeat an n-gram of its own
    output; at a sentence's max length only EOS may follow.
    """

    def __init__(
        self, *, alpha: float = 0.6, max_length: int = 256, max_length_ratio: float = 2.0,
        max_length_offset: int = 10, n_best: int = 1, min_length: int = 0, forbidden: tuple[int, ...] = (),
        no_repeat_ngram: int = 0,
    ) -> None:
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        if min_length < 0:
            raise ValueError(f"min_length must be >= 0, got {min_length}")
        if no_repeat_ngram < 0:
            raise ValueError(f"no_repeat_ngram must be >= 0 (0: off), got {no_repeat_ngram}")
        self.no_repeat_ngram = no_repeat_ngram
        self.alpha = alpha
        self.max_length = max_length
        self.max_length_ratio = max_length_ratio
        self.max_length_offset = max_length_offset
        self.n_best = n_best
        self.min_length = min_length
        self.forbidden = list(forbidden)

    def search(self, model: IncrementalDecoder, src_tokens: torch.Tensor,
               src_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        raise NotImplementedError

    def length_penalty(self, length: int | torch.Tensor):
        """GNMT's ``lp = ((5 + length) / 6) ** alpha``; ``length`` counts EOS."""
        return ((5.0 + length) / 6.0) ** self.alpha

    def max_lengths(self, src_lengths: torch.Tensor) -> torch.Tensor:
        limit = (src_lengths.double() * self.max_length_ratio + self.max_length_offset).long()
        return limit.clamp(min=0, max=self.max_length).cpu()

    def restrict(self, log_probs: torch.Tensor, force_eos: torch.Tensor, t: int) -> torch.Tensor:
        """Step ``t``'s ``log_probs (N, V)`` with PAD, BOS and the ``forbidden`` tokens
        (a generator's UNK) ruled out, EOS too before ``min_length`` tokens, and rows
        ``force_eos (N,)`` (at their max length, which wins) left only EOS."""
        log_probs = log_probs.clone()
        log_probs[:, [PAD_ID, BOS_ID, *self.forbidden]] = float("-inf")
        eos_only = torch.full_like(log_probs, float("-inf"))
        eos_only[:, EOS_ID] = log_probs[:, EOS_ID]
        if t < self.min_length:
            log_probs[:, EOS_ID] = float("-inf")
        return torch.where(force_eos.to(log_probs.device).unsqueeze(1), eos_only, log_probs)

    def block_repeats(self, log_probs: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        """``log_probs (N, V)`` with every token that would repeat an n-gram of its row's
        ``history (N, t)`` ruled out (``no_repeat_ngram``; off at 0). In place."""
        n = self.no_repeat_ngram
        if n < 1 or history is None or history.size(1) < n - 1:
            return log_probs
        banned = repeated_ngram_tokens(history.tolist(), n) if n > 1 else [
            (row, token) for row, seq in enumerate(history.tolist()) for token in set(seq)]
        if banned:
            rows, tokens = zip(*banned)
            log_probs[list(rows), list(tokens)] = float("-inf")
        return log_probs


@dataclass(frozen=True)
class GreedyStep:
    """One step of :meth:`GreedySearch.steps` for its ``B`` rows (tensors on the model's device).

    ``tokens (B,)`` int64 is each row's token of this step: EOS where its output ends here
    (at its max length EOS is forced), PAD for rows that ended before (they idle on).
    ``running (B,)`` bool marks the rows that decoded this step (not ended before).
    ``log_prob (B,)`` float and ``length (B,)`` int64 are each row's running sum of token
    log-probabilities and count of tokens (EOS included once it came); neither changes
    after a row ends, so ``scores`` at the step a row ends is its final score.
    """

    t: int
    tokens: torch.Tensor
    running: torch.Tensor
    log_prob: torch.Tensor
    length: torch.Tensor
    length_penalty: Callable[[torch.Tensor], torch.Tensor]

    @property
    def finished(self) -> torch.Tensor:
        """``(B,)`` bool: the rows whose output ended with this step's EOS."""
        return self.tokens == EOS_ID

    @property
    def scores(self) -> torch.Tensor:
        """``(B,)`` GNMT scores so far: final for rows that have ended."""
        return self.log_prob / self.length_penalty(self.length.to(self.log_prob.dtype))


class GreedySearch(DecodeStrategy):
    """The most probable next token, every step (``K = 1``): one row per sentence.

    :meth:`steps` is the search itself, one decoder step per item, so a caller can stream
    tokens as they come; :meth:`search` runs it to the end.
    """

    @torch.no_grad()
    def search(self, model: IncrementalDecoder, src_tokens: torch.Tensor,
               src_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        memory = model.encode(src_tokens, src_lengths)
        tokens, last = [], None
        for last in self.steps(model, memory, src_lengths):
            tokens.append(last.tokens)
        rows = torch.stack(tokens, dim=1).tolist()
        lengths, scores = last.length.tolist(), last.scores.tolist()
        return [[Hypothesis(tokens=row[: n - 1], score=score)] for row, n, score in zip(rows, lengths, scores)]

    @torch.no_grad()
    def steps(self, model: IncrementalDecoder, memory: Memory, src_lengths: torch.Tensor) -> Iterator[GreedyStep]:
        """Decode ``memory`` (``model.encode``'s, ``B`` rows) one step per item, until
        every row has ended: with EOS, or at its max length (``src_lengths (B,)`` CPU)."""
        batch = memory_rows(memory)
        device = memory_device(memory)
        history = torch.zeros(batch, 0, dtype=torch.int64, device=device) if self.no_repeat_ngram else None
        state = model.init_decoder_state(batch)
        limits = self.max_lengths(src_lengths)
        prev = torch.full((batch,), BOS_ID, dtype=torch.int64, device=device)
        log_prob = torch.zeros(batch, device=device)
        length = torch.zeros(batch, dtype=torch.int64, device=device)  # output tokens + EOS
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        for t in range(int(limits.max()) + 1):
            step_log_probs, state = model.decode_step(prev, state, memory, src_lengths)
            allowed = self.block_repeats(self.restrict(step_log_probs, limits <= t, t), history)
            best_log_prob, best = allowed.max(dim=-1)
            running = ~done
            # Out of place: a step already handed out must not change under its reader.
            log_prob = log_prob + best_log_prob.masked_fill(done, 0.0)
            length = length + running.long()
            prev = best.masked_fill(done, PAD_ID)  # rows already done just idle
            done = done | (prev == EOS_ID)
            if history is not None:
                history = torch.cat([history, prev.unsqueeze(1)], dim=1)
            yield GreedyStep(t=t, tokens=prev, running=running, log_prob=log_prob, length=length,
                             length_penalty=self.length_penalty)
            if bool(done.all()):
                return


class BeamSearch(DecodeStrategy):
    """Batched beam search: ``K = beam_size`` hypotheses alive per sentence.

    Each step every alive hypothesis is extended by every token (``(B, K*V)``
    candidates, scored by cumulative log-probability) and the best ``2K`` are taken.
    EOS candidates among the best ``K`` are set aside as finished (score divided by the
    length penalty); the best ``K`` non-EOS candidates stay alive, so the beam stays
    full. A sentence is done when it has ``K`` finished hypotheses or reaches its max
    length (where only EOS may follow, so every alive hypothesis finishes); done
    sentences leave the batch. The ``n_best`` finished ones are returned, best first.

    Beyond the base class's shapes: ``alive_log_probs (b, K)``, ``alive_tokens (b, K, t)``
    for the ``b`` sentences still searching; ``finished`` is a Python list per sentence
    (one host sync per step reads which candidates ended).
    """

    def __init__(self, *, beam_size: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if not 1 <= self.n_best <= beam_size:
            raise ValueError(f"n_best must be in [1, beam_size] ([1, {beam_size}]), got {self.n_best}")
        self.beam_size = beam_size

    @torch.no_grad()
    def search(self, model: IncrementalDecoder, src_tokens: torch.Tensor,
               src_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        batch, k = src_tokens.size(0), self.beam_size
        memory = model.encode(src_tokens, src_lengths)
        device = memory_device(memory)
        rows = torch.arange(batch).repeat_interleave(k)
        memory = select_rows(memory, rows.to(device))
        row_lengths = src_lengths[rows]
        state = model.init_decoder_state(batch * k)
        prev = torch.full((batch * k,), BOS_ID, dtype=torch.int64, device=device)
        # Only beam 0 is live at first: K copies of BOS would fill the beam with duplicates.
        alive_log_probs = torch.full((batch, k), float("-inf"), device=device)
        alive_log_probs[:, 0] = 0.0
        alive_tokens = torch.zeros(batch, k, 0, dtype=torch.int64, device=device)
        limits = self.max_lengths(src_lengths)
        sentences = list(range(batch))  # original index of each sentence still searching
        finished: list[list[Hypothesis]] = [[] for _ in range(batch)]

        for t in range(int(limits.max()) + 1):
            b = len(sentences)
            step_log_probs, state = model.decode_step(prev, state, memory, row_lengths)
            step_log_probs = self.restrict(step_log_probs, (limits <= t).repeat_interleave(k), t)
            step_log_probs = self.block_repeats(step_log_probs, alive_tokens.view(b * k, t) if t else None)
            vocab = step_log_probs.size(-1)
            candidates = (alive_log_probs.unsqueeze(-1) + step_log_probs.view(b, k, vocab)).view(b, k * vocab)
            width = min(2 * k, k * vocab)  # 2K, unless the vocabulary is tiny
            top_log_probs, top_ids = candidates.topk(width, dim=1)  # (b, 2K)
            beam, token = top_ids // vocab, top_ids % vocab
            is_eos = token == EOS_ID

            # Finish the EOS candidates that rank among the best K (one host sync).
            ends = (is_eos[:, :k] & top_log_probs[:, :k].isfinite()).nonzero().tolist()
            if ends:
                i, j = torch.tensor(ends, device=device).unbind(1)
                seqs = alive_tokens[i, beam[i, j]].tolist()
                scores = (top_log_probs[i, j] / self.length_penalty(t + 1)).tolist()
                for (s, _), seq, score in zip(ends, seqs, scores):
                    finished[sentences[s]].append(Hypothesis(tokens=seq, score=score))

            # The best K non-EOS candidates stay alive: rank EOS ones after all others.
            order = (torch.arange(width, device=device) + is_eos.long() * width).topk(k, dim=1, largest=False).indices
            alive_log_probs = top_log_probs.gather(1, order)
            beam, token = beam.gather(1, order), token.gather(1, order)
            alive_tokens = torch.cat([alive_tokens.gather(1, beam.unsqueeze(-1).expand(-1, -1, t)),
                                      token.unsqueeze(-1)], dim=2)
            flat = (torch.arange(b, device=device).unsqueeze(1) * k + beam).view(-1)
            state = model.reorder_state(state, flat)
            prev = token.view(-1)

            searching = [s for s in range(b) if len(finished[sentences[s]]) < k and t < int(limits[s])]
            if not searching:
                break
            if len(searching) < b:  # done sentences leave the batch
                keep = torch.tensor(searching)
                keep_rows = (keep.unsqueeze(1) * k + torch.arange(k)).view(-1)
                limits, row_lengths = limits[keep], row_lengths[keep_rows]
                keep, keep_rows = keep.to(device), keep_rows.to(device)
                alive_log_probs, alive_tokens = alive_log_probs[keep], alive_tokens[keep]
                memory, state = select_rows(memory, keep_rows), model.reorder_state(state, keep_rows)
                prev = prev[keep_rows]
                sentences = [sentences[s] for s in searching]

        return [sorted(hyps, key=lambda h: h.score, reverse=True)[: self.n_best] for hyps in finished]


class Sampling(DecodeStrategy):
    """Ancestral sampling: each step, one token per row drawn from the model's next-token
    distribution, divided by ``temperature`` and cut to the ``top_k`` most probable
    tokens (ties at the k-th kept) and to the nucleus (Holtzman et al. 2020): the fewest
    most probable tokens whose probability reaches ``top_p``. ``temperature = 0`` takes
    the most probable token (greedy).

    Row ``i`` draws with ``generators[i]``, one uniform number a step (inverse CDF), so
    its sample depends on its own seed only, not on what else shares the batch. Scores are
    the model's own log-probabilities of the tokens drawn (temperature 1, nothing cut),
    length-penalised as every search's.
    """

    def __init__(self, *, generators: list[torch.Generator], temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0, top_k >= 0 and top_p in (0, 1], got {temperature}, {top_k}, "
                             f"{top_p}")
        self.generators, self.temperature, self.top_k, self.top_p = generators, temperature, top_k, top_p

    def distribution(self, log_probs: torch.Tensor) -> torch.Tensor:
        """``(N, V)`` log-probabilities -> the ``(N, V)`` probabilities drawn from."""
        logits = log_probs / self.temperature
        if 0 < self.top_k < logits.size(-1):
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1:
            ordered, order = logits.sort(dim=-1, descending=True)
            probs = ordered.softmax(-1)
            outside = probs.cumsum(-1) - probs >= self.top_p  # the mass before it already reaches p
            logits = logits.masked_fill(outside.scatter(1, order, outside), float("-inf"))
        return logits.softmax(-1)

    def draw(self, log_probs: torch.Tensor) -> torch.Tensor:
        """One token per row ``(N,)``."""
        if self.temperature == 0:
            return log_probs.argmax(-1)
        probs = self.distribution(log_probs)
        cdf = probs.cumsum(-1)
        u = torch.cat([torch.rand(1, generator=g, device=g.device) for g in self.generators]).to(cdf)
        drawn = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
        return drawn.clamp(max=probs.size(-1) - 1)

    @torch.no_grad()
    def search(self, model: IncrementalDecoder, src_tokens: torch.Tensor,
               src_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        memory = model.encode(src_tokens, src_lengths)
        batch, device = memory_rows(memory), memory_device(memory)
        if len(self.generators) != batch:
            raise ValueError(f"sampling needs one generator per row: {len(self.generators)} for {batch} rows")
        state = model.init_decoder_state(batch)
        limits = self.max_lengths(src_lengths)
        prev = torch.full((batch,), BOS_ID, dtype=torch.int64, device=device)
        log_prob = torch.zeros(batch, device=device)
        length = torch.zeros(batch, dtype=torch.int64, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        tokens = []
        for t in range(int(limits.max()) + 1):
            step_log_probs, state = model.decode_step(prev, state, memory, src_lengths)
            allowed = self.restrict(step_log_probs, limits <= t, t)
            if self.no_repeat_ngram and tokens:
                allowed = self.block_repeats(allowed, torch.stack(tokens, dim=1))
            drawn = self.draw(allowed)  # every row draws every step: its t-th draw is its own
            log_prob = log_prob + allowed.gather(1, drawn.unsqueeze(1)).squeeze(1).masked_fill(done, 0.0)
            length = length + (~done).long()
            prev = drawn.masked_fill(done, PAD_ID)
            done = done | (prev == EOS_ID)
            tokens.append(prev)
            if bool(done.all()):
                break
        rows = torch.stack(tokens, dim=1).tolist()
        scores = (log_prob / self.length_penalty(length.to(log_prob.dtype))).tolist()
        return [[Hypothesis(tokens=row[: n - 1], score=score)] for row, n, score in zip(rows, length.tolist(), scores)]


def generate(
    model: IncrementalDecoder,
    src_tokens: torch.Tensor,
    src_lengths: torch.Tensor,
    *,
    beam_size: int = 1,
    alpha: float = 0.6,
    max_length: int = 256,
    max_length_ratio: float = 2.0,
    max_length_offset: int = 10,
    n_best: int = 1,
    min_length: int = 0,
    forbidden: tuple[int, ...] = (),
    no_repeat_ngram: int = 0,
) -> list[list[Hypothesis]]:
    """Translate a batch: ``src_tokens (B, S)`` int64 on the model's device (PAD-padded),
    ``src_lengths (B,)`` int64 -> per sentence, ``n_best`` hypotheses, best first.

    ``beam_size = 1`` takes the greedy path (same result as a beam of one, less work).
    Put the model in ``eval()`` mode first (dropout would otherwise apply).
    """
    if src_tokens.size(0) == 0:
        return []
    limits = dict(alpha=alpha, max_length=max_length, max_length_ratio=max_length_ratio,
                  max_length_offset=max_length_offset, n_best=n_best, min_length=min_length, forbidden=forbidden,
                  no_repeat_ngram=no_repeat_ngram)
    if beam_size == 1 and n_best == 1:
        strategy: DecodeStrategy = GreedySearch(**limits)
    else:
        strategy = BeamSearch(beam_size=beam_size, **limits)
    return strategy.search(model, src_tokens, src_lengths.cpu())
