"""Greedy and beam search: agreement, ordering, length penalty, limits, batching, and a
tiny model that learns to reverse sequences. No Ray."""

from __future__ import annotations

import pytest
import torch

from models import ModelConfig
from models.decoding import BeamSearch, GreedySearch, Hypothesis, generate
from models.layers import PAD_ID
from models.seq2seq import BOS_ID, EOS_ID, build_seq2seq, sequence_loss, source_tokens

A, B = 4, 5  # the two "words" of the scripted models below


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run faster on one thread


class BigramModel:
    """A scripted decoder: ``log_probs = table[prev_token]``, whatever the source.

    The table holds scores chosen by hand (rows need not sum to one), so the search's
    results can be worked out on paper.
    """

    def __init__(self, table: dict[int, dict[int, float]], vocab: int = 6, default: float = -6.0) -> None:
        self.table = torch.full((vocab, vocab), default)
        for prev, row in table.items():
            for token, score in row.items():
                self.table[prev, token] = score

    def encode(self, src_tokens, src_lengths):
        return torch.zeros(src_tokens.size(0), src_tokens.size(1), 1)

    def init_decoder_state(self, batch):
        return (torch.zeros(1, batch, 1),)

    def decode_step(self, prev_tokens, state, memory, src_lengths):
        return self.table[prev_tokens], state

    def reorder_state(self, state, index):
        return tuple(t.index_select(1, index) for t in state)


def random_model(**overrides):
    values = dict(kind="seq2seq", embed_dim=16, hidden_size=16, num_layers=2, decoder_layers=2, dropout=0.0)
    values.update(overrides)
    return build_seq2seq(ModelConfig(**values), source=source_tokens(20), tgt_vocab_size=12, seed=5).eval()


def random_sources(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 2, 7, 3])
    src = torch.randint(4, 20, (4, 7), generator=g)
    src[torch.arange(7) >= lengths.unsqueeze(1)] = PAD_ID
    return src, lengths


@torch.no_grad()
def teacher_forced_log_prob(model, src, src_len, tokens: list[int]) -> float:
    """log P(tokens + EOS | src), from the training forward pass."""
    tgt_in = torch.tensor([[BOS_ID, *tokens]])
    tgt_out = torch.tensor([[*tokens, EOS_ID]])
    logits = model((src.unsqueeze(0), tgt_in), (src_len.view(1), torch.tensor([len(tokens) + 1])))
    return -float(sequence_loss(logits, tgt_out))


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_of_one_is_greedy(alpha):
    model = random_model(cell="gru")
    src, lengths = random_sources()
    greedy = GreedySearch(alpha=alpha, max_length=12).search(model, src, lengths)
    beam = BeamSearch(beam_size=1, alpha=alpha, max_length=12).search(model, src, lengths)
    assert [h[0].tokens for h in greedy] == [h[0].tokens for h in beam]
    assert [h[0].score for h in greedy] == pytest.approx([h[0].score for h in beam], abs=1e-5)
    assert generate(model, src, lengths, alpha=alpha, max_length=12) == greedy


def test_beam_returns_finished_hypotheses_best_first_with_their_true_scores():
    model = random_model()
    src, lengths = random_sources(seed=1)
    results = generate(model, src, lengths, beam_size=4, n_best=4, alpha=0.6, max_length=10)
    assert len(results) == 4
    for row, hyps in enumerate(results):
        assert len(hyps) == 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 4
        for h in hyps:
            assert all(t not in (PAD_ID, BOS_ID, EOS_ID) for t in h.tokens) and len(h.tokens) <= 10
            # score = log P(y + EOS) / ((5 + |y| + 1) / 6) ** alpha, recomputed by teacher forcing.
            log_prob = teacher_forced_log_prob(model, src[row], lengths[row], h.tokens)
            assert h.score == pytest.approx(log_prob / ((5 + len(h.tokens) + 1) / 6) ** 0.6, abs=1e-4)
    # The beam's best is at least as good as greedy's (same score function).
    greedy = generate(model, src, lengths, alpha=0.6, max_length=10)
    assert all(b[0].score >= g[0].score - 1e-5 for b, g in zip(results, greedy))


# From BOS: stop at once (-1.0) or say "A" (-0.5); after A: B (-0.3); after B: stop (-0.4).
# Hypotheses: [] scores -1.0 (|y| = 1); [A, B] scores -1.2 (|y| = 3). Everything else is
# -6 a step (A -> EOS -8, BOS -> B -9, so no third hypothesis can finish early).
LENGTH_PENALTY_TABLE = {BOS_ID: {EOS_ID: -1.0, A: -0.5, B: -9.0}, A: {B: -0.3, EOS_ID: -8.0}, B: {EOS_ID: -0.4}}


@pytest.mark.parametrize(
    "alpha, expected",
    [
        (0.0, [([], -1.0), ([A, B], -1.2)]),  # plain log-probability: the short one wins
        (1.0, [([A, B], -1.2 / ((5 + 3) / 6)), ([], -1.0 / ((5 + 1) / 6))]),  # -0.9 beats -1.0
    ],
)
def test_length_penalty_changes_the_ranking_as_computed_by_hand(alpha, expected):
    model = BigramModel(LENGTH_PENALTY_TABLE)
    src, lengths = torch.ones(1, 3, dtype=torch.int64), torch.tensor([3])
    (hyps,) = generate(model, src, lengths, beam_size=2, n_best=2, alpha=alpha)
    assert [(h.tokens, round(h.score, 6)) for h in hyps] == [(tokens, pytest.approx(score))
                                                             for tokens, score in expected]


def test_max_length_follows_the_source_and_the_hard_cap():
    # A model that never wants to stop: the limits must end every hypothesis, with EOS.
    model = BigramModel({BOS_ID: {A: -0.1}, A: {A: -0.1}, EOS_ID: {}}, default=-5.0)
    src = torch.ones(3, 6, dtype=torch.int64)
    lengths = torch.tensor([2, 5, 6])
    limits = dict(max_length_ratio=1.5, max_length_offset=1, max_length=8)  # 4, 8 (8.5), 8 (10)
    for beam_size in (1, 3):
        results = generate(model, src, lengths, beam_size=beam_size, alpha=0.0, **limits)
        assert [len(h[0].tokens) for h in results] == [4, 8, 8]
        assert results[0][0] == Hypothesis(tokens=[A] * 4, score=pytest.approx(-0.1 * 4 - 5.0))


def test_a_batch_decodes_like_its_sentences_one_by_one():
    model = random_model(attention="bahdanau")
    src, lengths = random_sources(seed=2)
    batched = generate(model, src, lengths, beam_size=3, n_best=2, max_length=9)
    for row in range(len(lengths)):
        n = int(lengths[row])
        (alone,) = generate(model, src[row : row + 1, :n], lengths[row : row + 1], beam_size=3, n_best=2, max_length=9)
        assert [h.tokens for h in alone] == [h.tokens for h in batched[row]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[row]], abs=1e-5)


def test_bad_search_settings_are_refused():
    with pytest.raises(ValueError, match=r"n_best must be in \[1, beam_size\] \(\[1, 2\]\), got 3"):
        BeamSearch(beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        BeamSearch(beam_size=0)


def reversal_batch(n: int, generator: torch.Generator, vocab: int):
    """Random sequences of 2..6 "words" and their reversals: src, src_len, tgt_in, tgt_out, tgt_len."""
    lengths = torch.randint(2, 7, (n,), generator=generator)
    width = int(lengths.max())
    src = torch.zeros(n, width, dtype=torch.int64)
    tgt_in = torch.zeros(n, width + 1, dtype=torch.int64)
    tgt_out = torch.zeros(n, width + 1, dtype=torch.int64)
    for i, length in enumerate(lengths.tolist()):
        words = torch.randint(4, vocab, (length,), generator=generator)
        src[i, :length] = words
        tgt_in[i, 0], tgt_in[i, 1 : length + 1] = BOS_ID, words.flip(0)
        tgt_out[i, :length], tgt_out[i, length] = words.flip(0), EOS_ID
    return src, lengths, tgt_in, tgt_out, lengths + 1


def test_a_tiny_model_learns_to_reverse_and_both_searches_find_it():
    vocab, steps = 14, 200
    config = ModelConfig(kind="seq2seq", embed_dim=32, hidden_size=32, num_layers=2, decoder_layers=2,
                         dropout=0.0, tie_embeddings=True)
    model = build_seq2seq(config, source=source_tokens(vocab), tgt_vocab_size=vocab, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        src, src_len, tgt_in, tgt_out, tgt_len = reversal_batch(32, g, vocab)
        loss = sequence_loss(model((src, tgt_in), (src_len, tgt_len)), tgt_out) / tgt_len.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    src, src_len, *_ = reversal_batch(64, torch.Generator().manual_seed(1), vocab)
    wanted = [src[i, : src_len[i]].flip(0).tolist() for i in range(64)]
    for beam_size in (1, 4):
        results = generate(model, src, src_len, beam_size=beam_size)
        correct = sum(hyps[0].tokens == y for hyps, y in zip(results, wanted))
        assert correct >= 58, f"beam {beam_size}: {correct}/64 reversed correctly"
