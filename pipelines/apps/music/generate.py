"""The ``chorales`` dataset (tests, the music demo): deterministic synthetic four-voice
hymns in the JSB chorales' CSV layout, so the demo reads files the way it reads the real
ones.

Each piece is a major key's chord progression (a walk over I, ii, IV, V, vi that ends
V-I), one chord per beat or two, voiced in four parts: the bass on the root, the upper
voices on the nearest chord tones to where they were (smooth voice leading), and a
passing note in the soprano now and then. A model that learns it predicts held notes,
chord changes on beats and the voicing rules::

    note0,note1,note2,note3
    72,67,64,48
    72,67,64,48
    ...

``rayseq generate chorales OUT_DIR [--size N] [--seed S]`` writes ``OUT_DIR/train/`` (``size``
pieces) and ``OUT_DIR/valid/`` (``size // 4``), one ``chorale_NNN.csv`` each.
"""

from __future__ import annotations

import random
from pathlib import Path

from pipelines.apps.datasets import text_dataset

MAJOR = (0, 2, 4, 5, 7, 9, 11)
NEXT = {1: (4, 5, 6, 2), 2: (5,), 4: (5, 1, 2), 5: (1, 6), 6: (2, 4)}
"""Scale degree -> the degrees it may move to."""
RANGES = ((60, 79), (55, 74), (48, 69), (36, 60))
"""Soprano, alto, tenor, bass: the lowest and highest pitch each may sing."""


def _chord_tones(tonic: int, degree: int) -> set[int]:
    """Pitch classes of the triad on ``degree`` (1-based) of ``tonic``'s major scale."""
    return {(tonic + MAJOR[(degree - 1 + k) % 7]) % 12 for k in (0, 2, 4)}


def _nearest(previous: int, tones: set[int], low: int, high: int, below: int) -> int:
    """The chord tone within ``low..min(high, below)`` nearest ``previous``."""
    candidates = [p for p in range(low, min(high, below) + 1) if p % 12 in tones] or [low]
    return min(candidates, key=lambda p: (abs(p - previous), p))


def piece(rng: random.Random) -> list[list[int]]:
    """One ``(steps, 4)`` chorale as rows of pitches."""
    tonic = rng.randrange(12)
    degrees = [1]
    for _ in range(rng.randrange(10, 20)):
        degrees.append(rng.choice(NEXT[degrees[-1]]))
    degrees += [5, 1]
    voices = [72, 67, 60, 48]
    rows: list[list[int]] = []
    for i, degree in enumerate(degrees):
        tones = _chord_tones(tonic, degree)
        root = (tonic + MAJOR[degree - 1]) % 12
        bass = _nearest(voices[3], {root}, *RANGES[3], below=RANGES[3][1])
        upper = []
        ceiling = 127
        for v in range(3):
            pitch = _nearest(voices[v], tones, *RANGES[v], below=ceiling - 1)
            upper.append(pitch)
            ceiling = pitch
        chord = [*upper, bass]
        beats = 2 if i == len(degrees) - 1 or rng.random() < 0.3 else 1
        steps = 4 * beats
        for s in range(steps):
            row = list(chord)
            if s == steps - 2 and i + 1 < len(degrees) and rng.random() < 0.25:  # a passing note
                row[0] = min(max(row[0] + rng.choice((-2, -1, 1, 2)), RANGES[0][0]), RANGES[0][1])
            rows.append(row)
        voices = chord
    return rows


def write_chorales(out_dir: str | Path, *, size: int, seed: int) -> Path:
    """``train/chorale_NNN.csv`` (``size`` pieces) and ``valid/`` (``size // 4``) under ``out_dir``."""
    out = Path(out_dir)
    rng = random.Random(seed)
    number = 0
    for split, count in (("train", size), ("valid", max(size // 4, 1))):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            lines = ["note0,note1,note2,note3", *(",".join(map(str, row)) for row in piece(rng))]
            (folder / f"chorale_{number:03d}.csv").write_text("\n".join(lines) + "\n")
            number += 1
    return out


CHORALES = text_dataset("chorales", "synthetic four-voice hymns in the JSB chorales' CSV layout", write_chorales,
                        default_size=200)
