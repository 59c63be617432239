"""distinct-n and Self-BLEU: hand-computed cases and the fast Self-BLEU against an O(N^2)
pair-by-pair reference. No Ray."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from pipelines.scoring.diversity import distinct_n, self_bleu


def _counts(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def self_bleu_bruteforce(samples: list[list[str]], max_order: int = 4) -> float:
    """Self-BLEU the slow, literal way: every sample against a list of all the others."""
    if len(samples) < 2:
        return 0.0
    scores = []
    for i, hyp in enumerate(samples):
        refs = samples[:i] + samples[i + 1:]
        if not hyp:
            scores.append(0.0)
            continue
        precisions = []
        for n in range(1, max_order + 1):
            hyp_counts = _counts(hyp, n)
            ref_max: Counter = Counter()
            for ref in refs:
                for gram, c in _counts(ref, n).items():
                    ref_max[gram] = max(ref_max[gram], c)
            matches = sum(min(c, ref_max[gram]) for gram, c in hyp_counts.items())
            total = sum(hyp_counts.values())
            precisions.append(matches / total if n == 1 else (matches + 1) / (total + 1))
        if precisions[0] == 0:
            scores.append(0.0)
            continue
        ref_len = min((len(r) for r in refs), key=lambda r: (abs(r - len(hyp)), r))
        bp = 1.0 if len(hyp) > ref_len else math.exp(1 - ref_len / len(hyp))
        scores.append(bp * math.exp(sum(math.log(p) for p in precisions) / max_order))
    return 100.0 * sum(scores) / len(scores)


def test_distinct_n_hand_computed():
    assert distinct_n([["a", "b", "a", "b"]], 1) == 0.5  # {a, b} of 4
    assert distinct_n([["a", "b", "a", "b"]], 2) == pytest.approx(2 / 3)  # {ab, ba} of 3
    # n-grams do not cross samples: ("b", "a") is never formed here.
    assert distinct_n([["a", "b"], ["a", "b"]], 2) == 0.5
    assert distinct_n([["a"], []], 2) == 0.0 and distinct_n([], 1) == 0.0
    with pytest.raises(ValueError):
        distinct_n([["a"]], 0)


def test_self_bleu_extremes():
    assert self_bleu([["a", "b", "c", "d", "e"]] * 3) == pytest.approx(100.0)
    assert self_bleu([["a", "b"]] * 2) == pytest.approx(100.0)  # orders past the length count 1
    assert self_bleu([["a", "b", "c"], ["d", "e"], ["f"]]) == 0.0  # no shared unigram
    assert self_bleu([["a", "b", "c"]]) == 0.0 and self_bleu([]) == 0.0


def test_self_bleu_hand_computed():
    # Each side: p1 = 1/2, p2 = (0+1)/(1+1), p3 = p4 = (0+1)/(0+1), equal lengths: sqrt(1/2).
    assert self_bleu([["a", "b"], ["a", "c"]]) == pytest.approx(100 * math.sqrt(0.5))
    # ["a"]: all precisions 1, BP exp(1 - 2/1); ["a","b"]: longer (BP 1), p1 = p2 = 1/2.
    expected = 100 * (math.exp(-1) + math.sqrt(0.5)) / 2
    assert self_bleu([["a"], ["a", "b"]]) == pytest.approx(expected)
    # An empty sample scores 0 but counts in the mean.
    assert self_bleu([["a", "b"], ["a", "b"], []]) == pytest.approx(200 / 3)
    # Clipping by the largest count in any OTHER sample: "a a" only has one "a" elsewhere.
    assert self_bleu([["a", "a"], ["a"]]) == pytest.approx(self_bleu_bruteforce([["a", "a"], ["a"]]))
    assert self_bleu([["a", "a"], ["a"]]) < self_bleu([["a", "a"], ["a", "a"]])


@pytest.mark.parametrize("seed", range(40))
def test_self_bleu_matches_bruteforce(seed):
    rng = random.Random(seed)
    vocab = ["a", "b", "c", "d", "e", "f"]
    samples: list[list[str]] = []
    for _ in range(rng.randint(2, 12)):
        if samples and rng.random() < 0.25:
            samples.append(list(rng.choice(samples)))  # duplicates: ties for the largest count
        else:
            samples.append([rng.choice(vocab) for _ in range(rng.randint(0, 8))])
    for max_order in (4, 2):
        assert abs(self_bleu(samples, max_order) - self_bleu_bruteforce(samples, max_order)) < 1e-9


def test_thousand_samples_run():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(200)]
    samples = [[rng.choice(vocab) for _ in range(20)] for _ in range(1000)]
    score = self_bleu(samples)
    assert 0.0 < score < 100.0
    assert 0.0 < distinct_n(samples, 2) <= 1.0
