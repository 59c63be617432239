"""Speech-to-text scores: word and character error rates (``jiwer``) and exact matches.

WER = (substitutions + deletions + insertions) / reference words, over the whole set
(not a mean of per-utterance rates), as Kaldi and ESPnet report it; CER the same over
characters (spaces included). Both compare lowercased text with runs of whitespace
collapsed, so "Four  one" and "four one" match.
"""

from __future__ import annotations

from typing import Any

import jiwer


def _normal(text: str) -> str:
    return " ".join(str(text).lower().split())


def speech_scores(hypotheses: list[str], references: list[str]) -> dict[str, Any]:
    """``{wer, cer, exact_match, examples, words}``; rates are fractions (0.05 = 5%)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not references:
        raise ValueError("no utterances to score")
    hyps, refs = [_normal(h) for h in hypotheses], [_normal(r) for r in references]
    if not all(refs):
        raise ValueError("an empty reference transcript cannot be scored")
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return {
        "wer": round(words.wer, 5),
        "cer": round(chars.cer, 5),
        "exact_match": round(sum(h == r for h, r in zip(hyps, refs)) / len(refs), 5),
        "examples": len(refs),
        "words": sum(len(r.split()) for r in refs),
    }


def edit_distance(reference: list, hypothesis: list) -> int:
    """Levenshtein distance (substitutions + deletions + insertions) between two token
    lists: the training loop's token error count, where ids need no detokenizing."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]
