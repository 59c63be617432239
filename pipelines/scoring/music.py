"""How generated four-voice music compares with real music: simple, documented statistics.

Each takes pieces as ``(T, 4)`` arrays of MIDI pitches (soprano first, 0 = rest, one row a
16th note)::

    pitch-class distance   total variation (0..1) between the pitch-class histograms
                           (12 bins, every sounding note of every step) of two sets
    in range               share of each voice's notes inside that voice's range in the
                           reference (its lowest..highest pitch)
    parallel fifths/octaves  of the moves where two voices both change pitch in the same
                           direction, the share that go from a perfect fifth (or octave,
                           unison) to another: what counterpoint forbids (Bach's
                           validation chorales: 0.2% fifths, 0.1% octaves)
    real or generated      leave-one-out 1-nearest-neighbour accuracy of telling the two
                           sets apart from per-piece features (pitch-class histogram,
                           melodic intervals, note lengths, rests, chord changes),
                           z-scored; 0.5: indistinguishable, 1.0: always told apart
                           (the two-sample test of Lopez-Paz & Oquab 2017, 1-NN version)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

VOICES = 4
PERFECT = {0: "octaves", 7: "fifths"}


def pitch_classes(pieces: Sequence[np.ndarray]) -> np.ndarray:
    """The normalised 12-bin pitch-class histogram of every sounding note."""
    notes = np.concatenate([p[p > 0] for p in pieces]) if pieces else np.zeros(0, dtype=int)
    counts = np.bincount(notes % 12, minlength=12).astype(float)
    return counts / max(counts.sum(), 1.0)


def pitch_class_distance(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    return float(0.5 * np.abs(pitch_classes(a) - pitch_classes(b)).sum())


def voice_ranges(pieces: Sequence[np.ndarray]) -> list[tuple[int, int]]:
    """Each voice's lowest and highest sounding pitch."""
    ranges = []
    for v in range(VOICES):
        notes = np.concatenate([p[:, v][p[:, v] > 0] for p in pieces])
        ranges.append((int(notes.min()), int(notes.max())))
    return ranges


def in_range(pieces: Sequence[np.ndarray], ranges: list[tuple[int, int]]) -> list[float]:
    shares = []
    for v, (low, high) in enumerate(ranges):
        notes = np.concatenate([p[:, v][p[:, v] > 0] for p in pieces])
        shares.append(float(((notes >= low) & (notes <= high)).mean()) if notes.size else 1.0)
    return shares


def parallels(pieces: Sequence[np.ndarray]) -> dict[str, float]:
    """``{"fifths", "octaves", "moves"}``: shares of similar moves of two voices that keep a
    perfect fifth or an octave (unison), and how many such moves there were."""
    found = {"fifths": 0, "octaves": 0}
    moves = 0
    for piece in pieces:
        before, after = piece[:-1], piece[1:]
        for i, j in itertools.combinations(range(VOICES), 2):
            sounding = (before[:, i] > 0) & (before[:, j] > 0) & (after[:, i] > 0) & (after[:, j] > 0)
            step_i, step_j = after[:, i] - before[:, i], after[:, j] - before[:, j]
            similar = sounding & (step_i != 0) & (step_j != 0) & (np.sign(step_i) == np.sign(step_j))
            moves += int(similar.sum())
            was = (before[:, i] - before[:, j]) % 12
            now = (after[:, i] - after[:, j]) % 12
            for interval, name in PERFECT.items():
                found[name] += int((similar & (was == interval) & (now == interval)).sum())
    return {"fifths": found["fifths"] / max(moves, 1), "octaves": found["octaves"] / max(moves, 1), "moves": moves}


def features(piece: np.ndarray) -> np.ndarray:
    """What the real-or-generated check compares: pitch classes (12), melodic intervals
    of every voice (-7..+7 semitones, 15 bins; larger leaps clipped), mean note length in
    steps per voice (4), rests' share, chord changes' share."""
    moves = []
    lengths = []
    for v in range(VOICES):
        voice = piece[:, v]
        changes = np.flatnonzero(np.diff(voice) != 0)
        sounding = voice[np.r_[changes, len(voice) - 1]]
        leaps = np.diff(sounding[sounding > 0])
        moves.append(np.clip(leaps, -7, 7))
        lengths.append(len(voice) / (len(changes) + 1))
    leaps = np.concatenate(moves) if moves else np.zeros(0, dtype=int)
    intervals = np.bincount(leaps + 7, minlength=15).astype(float) / max(len(leaps), 1)
    rests = float((piece == 0).mean())
    change = float((np.diff(piece, axis=0) != 0).any(axis=1).mean()) if len(piece) > 1 else 0.0
    return np.concatenate([pitch_classes([piece]), intervals, lengths, [rests, change]])


def real_or_generated(real: Sequence[np.ndarray], generated: Sequence[np.ndarray]) -> float:
    """Leave-one-out 1-NN accuracy of labelling each piece real or generated (sets of equal
    size, the larger cut to the smaller's first pieces)."""
    n = min(len(real), len(generated))
    if n < 2:
        raise ValueError("real or generated needs at least 2 pieces of each")
    x = np.stack([features(p) for p in [*real[:n], *generated[:n]]])
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    labels = np.r_[np.zeros(n), np.ones(n)]
    distances = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    return float((labels[distances.argmin(1)] == labels).mean())


def compare(generated: Sequence[np.ndarray], reference: Sequence[np.ndarray],
            ranges: list[tuple[int, int]]) -> dict[str, Any]:
    """Every statistic of ``generated`` against ``reference`` (its ranges: ``ranges``)."""
    return {"pieces": len(generated), "steps": int(sum(len(p) for p in generated)),
            "pitch_class_distance": pitch_class_distance(generated, reference),
            "in_range": in_range(generated, ranges), "parallels": parallels(generated),
            "real_or_generated_1nn": real_or_generated(reference, generated)}
