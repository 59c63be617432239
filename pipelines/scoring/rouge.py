"""ROUGE for summaries (DialogSum): ``rouge-score``'s F1 for ROUGE-1, ROUGE-2 and ROUGE-L.

The figures are what the summarization literature reports: Google's ``rouge-score``
(a Python port of ROUGE-1.5.5) with ``RougeScorer(["rouge1", "rouge2", "rougeL"],
use_stemmer=True)``, F1 times 100, averaged over examples, 2 decimals.

What its tokenizer does to the text, and so to the scores:

- Lowercases, then turns every run of characters outside ``[a-z0-9]`` into a space: case
  and punctuation never count, and DialogSum's speaker tags become plain words
  (``"#Person1#: Hi, I'm Bob!"`` -> ``person1 hi i m bob``), which match like any other
  word. Letters outside ASCII are dropped too (``"café"`` -> ``caf``).
- Porter-stems tokens longer than 3 characters (``cats running`` and ``cat runs`` both
  give ``cat run``). nltk's stemmer needs no downloaded NLTK data.
- Empty text (or text with no ``[a-z0-9]``) has no tokens and scores 0, even against an
  empty reference.

``rougeL`` is the sentence-level LCS over the whole text, not ``rougeLsum`` (which splits
on newlines): DialogSum's summaries are single paragraphs.

Several references per example (DialogSum's test split has three): an example's score is
the mean over its references, the number its README asks for; the best reference per
example (what ``rouge-score``'s own ``score_multi`` gives) comes alongside as ``*_max``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@functools.lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    """The one shared scorer (built on first use)."""
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def _references(references: str | Sequence[str], index: int) -> list[str]:
    """An example's references as a list: a plain string is one reference."""
    refs = [references] if isinstance(references, str) else [str(r) for r in references]
    if not refs:
        raise ValueError(f"example {index} has no references")
    return refs


def _f1s(hypothesis: str, references: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """(mean, max) over ``references`` of each ROUGE F1, in 0..100, unrounded."""
    scorer = _scorer()
    per_ref = [scorer.score(ref, hypothesis) for ref in references]  # score(target, prediction)
    mean = {t: 100.0 * sum(s[t].fmeasure for s in per_ref) / len(per_ref) for t in ROUGE_TYPES}
    best = {t: 100.0 * max(s[t].fmeasure for s in per_ref) for t in ROUGE_TYPES}
    return mean, best


def example_rouge(hypothesis: str, references: str | Sequence[str]) -> dict[str, float]:
    """``{"rouge1", "rouge2", "rougeL"}`` F1 of one summary, in 0..100 rounded to 2 places:
    the mean over ``references`` (a plain string is one reference). For per-summary
    prediction files. Raises ``ValueError`` when there is no reference."""
    mean, _ = _f1s(str(hypothesis), _references(references, 0))
    return {t: round(v, 2) for t, v in mean.items()}


def rouge_scores(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> dict[str, float]:
    """Corpus ROUGE of ``hypotheses``, each against its references (same order).

    Each item of ``references`` is one example's reference string or a list of them.
    Returns ``rouge1``, ``rouge2``, ``rougeL``: the mean over examples of each example's
    F1 (itself the mean over its references), in 0..100 rounded to 2 places; ``examples``;
    ``references_per_example`` (the most any example has); and, only when some example has
    more than one reference, ``rouge1_max``, ``rouge2_max``, ``rougeL_max``: the same with
    each example's best reference.

    Raises ``ValueError`` when the two lists differ in length (a shifted pairing would give
    a meaningless score rather than an error) or an example has no reference.
    """
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("hypotheses and references must be lists (one item per example), not a string")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} examples' references")
    ref_lists = [_references(refs, i) for i, refs in enumerate(references)]
    mean_sum = dict.fromkeys(ROUGE_TYPES, 0.0)
    max_sum = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, refs in zip(hypotheses, ref_lists):
        mean, best = _f1s(str(hyp), refs)
        for t in ROUGE_TYPES:
            mean_sum[t] += mean[t]
            max_sum[t] += best[t]
    n = len(ref_lists)
    per_example = max((len(refs) for refs in ref_lists), default=0)
    scores: dict[str, float] = {t: round(mean_sum[t] / n, 2) if n else 0.0 for t in ROUGE_TYPES}
    if per_example > 1:
        scores.update({f"{t}_max": round(max_sum[t] / n, 2) for t in ROUGE_TYPES})
    scores["examples"] = n
    scores["references_per_example"] = per_example
    return scores
