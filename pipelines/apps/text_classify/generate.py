"""The ``sentiment`` dataset (quickstart, tests): deterministic synthetic reviews.

Short reviews whose label needs word order, not just a bag of words::

    "the acting was not dull"                        -> positive (negation flips)
    "the plot seemed brilliant , but the ending was awful"  -> negative (``but`` clause wins)

``rayseq generate sentiment OUT_DIR [--size N] [--seed S]`` writes ``OUT_DIR/train.txt`` and
``OUT_DIR/valid.txt`` (``labeled-lines``); validation gets ``size // 4`` examples.
"""

from __future__ import annotations

import random
from pathlib import Path

from pipelines.apps.datasets import text_dataset

POSITIVE = ["good", "great", "brilliant", "moving", "funny", "charming", "superb", "gripping", "delightful", "clever"]
NEGATIVE = ["bad", "awful", "dull", "boring", "clumsy", "tedious", "bland", "messy", "painful", "forgettable"]
SUBJECTS = ["the movie", "the plot", "the acting", "the ending", "the script", "the score", "the cast", "the film",
            "the story", "the dialogue"]
VERBS = ["was", "seemed", "felt", "is"]
INTENSIFIERS = ["", "", "really", "truly", "quite", "rather", "very"]
OPENERS = ["", "", "", "honestly ,", "to be fair ,", "overall ,", "in the end ,", "i think"]
CLOSERS = ["", "", "", "from start to finish", "for most of its running time", "at least for me", "if you ask me"]


def _clause(rng: random.Random) -> tuple[str, bool]:
    positive = rng.random() < 0.5
    adjective = rng.choice(POSITIVE if positive else NEGATIVE)
    negated = rng.random() < 0.35
    words = [rng.choice(SUBJECTS), rng.choice(VERBS), "not" if negated else rng.choice(INTENSIFIERS), adjective]
    return " ".join(w for w in words if w), positive != negated


def review(rng: random.Random) -> tuple[str, str]:
    """One ``(text, label)``; label is ``positive`` or ``negative``."""
    first, sentiment = _clause(rng)
    parts = [rng.choice(OPENERS), first]
    if rng.random() < 0.45:
        second, sentiment = _clause(rng)
        parts += [", but", second]
    parts.append(rng.choice(CLOSERS))
    return " ".join(p for p in parts if p), "positive" if sentiment else "negative"


def write_sentiment(out_dir: str | Path, *, size: int, seed: int) -> Path:
    """Write ``train.txt`` (``size`` lines) and ``valid.txt`` (``size // 4``) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for name, count in (("train.txt", size), ("valid.txt", max(size // 4, 1))):
        lines = []
        for _ in range(count):
            text, label = review(rng)
            lines.append(f"{label} {text}\n")
        (out / name).write_text("".join(lines))
    return out


SENTIMENT = text_dataset("sentiment", "synthetic labeled-lines reviews (negation, 'X, but Y' clauses)", write_sentiment)
