"""Deterministic synthetic datasets for the quickstart and the tests.

``sentiment``: short reviews whose label needs word order, not just a bag of words::

    "the acting was not dull"                        -> positive (negation flips)
    "the plot seemed brilliant , but the ending was awful"  -> negative (``but`` clause wins)

Usage: ``python -m pipelines.generate sentiment OUT_DIR [--size N] [--seed S]`` writes
``OUT_DIR/train.txt`` and ``OUT_DIR/valid.txt`` in the ``labeled-lines`` format.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

POSITIVE = ["good", "great", "brilliant", "moving", "funny", "charming", "superb", "gripping", "delightful", "clever"]
NEGATIVE = ["bad", "awful", "dull", "boring", "clumsy", "tedious", "bland", "messy", "painful", "forgettable"]
SUBJECTS = ["the movie", "the plot", "the acting", "the ending", "the script", "the score", "the cast", "the film", "the story", "the dialogue"]
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


GENERATORS = {"sentiment": write_sentiment}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(GENERATORS))
    parser.add_argument("out_dir")
    parser.add_argument("--size", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = GENERATORS[args.name](args.out_dir, size=args.size, seed=args.seed)
    print(f"wrote {args.name} data to {path}")


if __name__ == "__main__":
    main()
