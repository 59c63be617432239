"""The ``entities`` dataset (tests, the tagging demo): deterministic synthetic news
sentences in the original CoNLL-2003 layout (``word POS chunk NER``, IOB1 tags,
``-DOCSTART-`` lines), so the demo reads files the way it reads the real ones.

Names are drawn from small pools, some shared between types (``Jordan`` the player and
the country, ``Washington`` the person and the city), so the context decides::

    -DOCSTART- -X- -X- O

    Jordan NNP I-NP I-PER
    visited VBD I-VP O
    Jordan NNP I-NP I-LOC
    . . O O

``rayseq generate entities OUT_DIR [--size N] [--seed S]`` writes ``OUT_DIR/train.txt``
(``size`` sentences) and ``OUT_DIR/valid.txt`` (``size // 4``).
"""

from __future__ import annotations

import random
from pathlib import Path

from pipelines.apps.datasets import text_dataset

NAMES = {
    "PER": ["John Smith", "Maria Lopez", "Jordan", "Washington", "Angela Merkel", "Pete Sampras", "Yasser Arafat",
            "Boris Yeltsin", "Anna", "Kim Lee", "Paul van der Berg", "Carlos"],
    "LOC": ["Paris", "New York", "Jordan", "Washington", "South Africa", "Bonn", "the Gaza Strip", "Brazil",
            "Tokyo", "Lake Geneva", "Moscow", "Kenya"],
    "ORG": ["Reuters", "Bank of England", "United Nations", "Ajax", "Microsoft", "Barclays", "the Red Cross",
            "Fiat", "NATO", "Real Madrid", "Sony", "Interfax"],
    "MISC": ["German", "French", "Olympic", "World Cup", "Dutch", "Islamic", "Grand Prix", "Japanese",
             "Euro 96", "Nobel", "Brazilian", "Davis Cup"],
}
TEMPLATES = [
    "{PER} visited {LOC} on Monday .",
    "{ORG} said {PER} would lead its {LOC} office .",
    "{PER} , a {MISC} player , joined {ORG} in {LOC} .",
    "shares in {ORG} fell 3 percent in {LOC} on Friday .",
    "{PER} met {PER} in {LOC} to discuss the {MISC} talks .",
    "the {MISC} team beat {ORG} 2-1 in {LOC} .",
    "police in {LOC} arrested {PER} , {ORG} reported .",
    "{ORG} and {ORG} agreed a deal worth 1.5 billion dollars .",
    "{PER} won the {MISC} title for the third time .",
    "prices rose in {LOC} after {ORG} cut rates .",
    "{LOC} beat {LOC} 3-0 in the {MISC} qualifier .",
    "it was a quiet day in the market , dealers said .",
]


def _pos(word: str) -> str:
    if word[0].isdigit():
        return "CD"
    if not word[0].isalnum():
        return word if word in ".,:" else "SYM"
    return "NNP" if word[0].isupper() else "NN"


def sentence(rng: random.Random) -> list[tuple[str, str]]:
    """One ``[(token, IOB1 tag)]`` sentence."""
    out: list[tuple[str, str]] = []
    for part in rng.choice(TEMPLATES).split():
        if part.startswith("{") and part.endswith("}"):
            kind = part[1:-1]
            words = rng.choice(NAMES[kind]).split()
            if words[0] == "the":
                out.append(("the", "O"))
                words = words[1:]
            adjacent = out and out[-1][1].endswith(kind)  # IOB1: B- only right after another of its type
            out += [(w, f"{'B' if adjacent and i == 0 else 'I'}-{kind}") for i, w in enumerate(words)]
        else:
            out.append((part, "O"))
    return out


def write_entities(out_dir: str | Path, *, size: int, seed: int) -> Path:
    """Write ``train.txt`` (``size`` sentences) and ``valid.txt`` (``size // 4``) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for name, count in (("train.txt", size), ("valid.txt", max(size // 4, 1))):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for i in range(count):
            if i and i % 20 == 0:
                lines += ["-DOCSTART- -X- -X- O", ""]
            lines += [f"{w} {_pos(w)} {'I-NP' if _pos(w).startswith('NN') else 'O'} {t}" for w, t in sentence(rng)]
            lines.append("")
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


ENTITIES = text_dataset("entities", "synthetic CoNLL-2003-style sentences with PER/LOC/ORG/MISC entities (IOB1)",
                        write_entities)
