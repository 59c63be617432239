"""Diversity of a set of generated samples (already split into tokens by the caller).

- ``distinct_n`` (Li et al. 2016): distinct n-grams / all n-grams over the whole set;
  higher is more diverse.
- ``self_bleu`` (Zhu et al. 2018, Texygen): mean sentence BLEU of each sample against all
  the others as references, in 0..100; higher is *less* diverse.

Self-BLEU is quadratic when done pair by pair (1,000 samples: a million BLEU calls). Its
only dependence on the other samples is, per n-gram, the largest count in any other sample
and the closest other length, so both are precomputed once over the whole set: largest and
second-largest count per n-gram (and how many samples hold the largest), and a sorted list
of lengths. That makes it linear in the number of n-grams.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Sequence


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def distinct_n(samples: Sequence[Sequence[str]], n: int) -> float:
    """Distinct n-grams over all ``samples`` divided by their total count (n-grams never
    cross sample boundaries); 0.0 when no sample has ``n`` tokens."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    counts: Counter[tuple[str, ...]] = Counter()
    for tokens in samples:
        counts.update(_ngrams(tokens, n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def _closest_other_length(length: int, lengths: list[int], length_counts: Counter[int]) -> int:
    """Closest length among the *other* samples (ties: the shorter), from the sorted distinct
    ``lengths``: ``length`` itself only if another sample has it too."""
    if length_counts[length] > 1:
        return length
    i = bisect.bisect_left(lengths, length)  # lengths[i] == length, held by this sample alone
    below = lengths[i - 1] if i > 0 else None
    above = lengths[i + 1] if i + 1 < len(lengths) else None
    if above is None or (below is not None and length - below <= above - length):
        return below  # type: ignore[return-value]  # >= 2 samples, so one side exists
    return above


def self_bleu(samples: Sequence[Sequence[str]], max_order: int = 4) -> float:
    """Mean over ``samples`` of sentence BLEU against all other samples, times 100.

    Clipped counts use the largest count in any other sample; the brevity penalty the
    closest other length (ties: the shorter). Precisions are smoothed add-one for orders
    n > 1 only (Lin & Och 2004): ``(matches + 1) / (total + 1)``, so an order longer than
    the sample counts as 1, and no unigram match scores 0 rather than a smoothed small
    number. Empty samples score 0 and still count in the mean; fewer than 2 samples: 0.0.
    """
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    if len(samples) < 2:
        return 0.0
    per_sample = [[_ngrams(tokens, n) for n in range(1, max_order + 1)] for tokens in samples]
    # n-gram -> [largest count, samples holding it, second-largest count] over all samples.
    top: dict[tuple[str, ...], list[int]] = {}
    for orders in per_sample:
        for counts in orders:
            for gram, c in counts.items():
                entry = top.get(gram)
                if entry is None:
                    top[gram] = [c, 1, 0]
                elif c > entry[0]:
                    entry[2], entry[0], entry[1] = entry[0], c, 1
                elif c == entry[0]:
                    entry[1] += 1
                elif c > entry[2]:
                    entry[2] = c
    length_counts = Counter(len(tokens) for tokens in samples)
    lengths = sorted(length_counts)

    total_score = 0.0
    for tokens, orders in zip(samples, per_sample):
        hyp_len = len(tokens)
        if hyp_len == 0:
            continue
        log_sum = 0.0
        for n, counts in enumerate(orders, start=1):
            matches = 0
            for gram, c in counts.items():
                largest, holders, second = top[gram]
                other = largest if (c < largest or holders > 1) else second
                matches += min(c, other)
            if n == 1:
                if matches == 0:
                    break
                log_sum += math.log(matches / hyp_len)
            else:
                log_sum += math.log((matches + 1) / (max(hyp_len - n + 1, 0) + 1))
        else:
            ref_len = _closest_other_length(hyp_len, lengths, length_counts)
            brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
            total_score += brevity * math.exp(log_sum / max_order)
    return 100.0 * total_score / len(samples)
