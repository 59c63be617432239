"""Music inference: compose (sample a continuation of a primer) and score (teacher-forced
next-note accuracy and cross-entropy).

A compose request's primer is a list of chords (4 MIDI pitches, 0 = rest), possibly
empty (music from nothing); the answer holds the sampled chords and the whole piece,
primer then continuation, as a MIDI file (one track per voice). Sampling is seeded per
request: the same primer, options and seed give the same music, whatever else shares
the batch.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.music import note_loss
from pipelines.apps.music.data import LABEL_PAD, Protocol, labels_of, piece_rows
from pipelines.errors import DataError
from pipelines.inference.predictors import LoadedPredictor
from pipelines.media.bucketing import pad_batch, plan_batches
from pipelines.media.chorales import VOICES, check_chord, chords_to_midi


def primer_chords(primer: Any, where: str) -> np.ndarray:
    """A primer (a list of chords) as ``(P, 4)`` int64; DataError naming the chord at fault."""
    if not isinstance(primer, (list, tuple, np.ndarray)):
        raise DataError(f"{where}: a primer is a list of chords, each 4 MIDI pitches, got {type(primer).__name__}")
    for i, chord in enumerate(primer):
        problem = check_chord(list(chord) if isinstance(chord, (list, tuple, np.ndarray)) else [chord],
                              f"{where} chord {i}")
        if problem:
            raise DataError(problem)
    return np.asarray(primer, dtype=np.int64).reshape(-1, VOICES)


@dataclass(frozen=True)
class Primer:
    """A row: the primer's ``(P, 4)`` chords. Its ``len`` (what a serving batch budget
    counts) is 1, one sequence sampled: sampling runs chord by chord over the whole
    batch, so its cost grows with the rows and the steps, hardly with the primer (which
    the RNN reads in one pass per chord, no heads)."""

    chords: np.ndarray

    def __len__(self) -> int:
        return 1


class MusicPredictor(LoadedPredictor):
    """``rows(primers)`` -> :class:`Primer` s; ``run(rows, steps=..., temperature=...,
    top_k=..., seed=...)`` -> ``{"chords", "primer_steps", "midi_base64"}`` per row."""

    def rows(self, inputs: list) -> list[Primer]:
        return [Primer(primer_chords(primer, f"primer {i}" if len(inputs) > 1 else "primer"))
                for i, primer in enumerate(inputs)]

    def generate(self, rows: list[Primer], *, steps: int, temperature: float = 1.0, top_k: int = 0,
                 seed: int | list[int] = 0) -> list[np.ndarray]:
        """Each row's ``(steps, 4)`` sampled continuation. Rows with primers of one length
        run together; each draws from its own generator seeded with ``seed`` (or with
        ``seed[i]``, row ``i``'s)."""
        seeds = [seed] * len(rows) if isinstance(seed, int) else list(seed)
        out: list[np.ndarray | None] = [None] * len(rows)
        by_length: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            by_length.setdefault(len(row.chords), []).append(i)
        for members in by_length.values():
            primer = torch.from_numpy(np.stack([rows[i].chords for i in members])).to(self.device)
            generators = [torch.Generator(device=self.device).manual_seed(seeds[i]) for i in members]
            with torch.inference_mode():
                sampled = self.model.sample(primer, steps, temperature=temperature, top_k=top_k,
                                            generators=generators).cpu().numpy()
            for k, i in enumerate(members):
                out[i] = sampled[k]
        return out  # type: ignore[return-value]

    def run(self, rows: list, *, steps: int = 64, temperature: float = 1.0, top_k: int = 0, seed: int = 0,
            **_: Any) -> list[dict[str, Any]]:
        answers = []
        for row, continuation in zip(rows, self.generate(rows, steps=steps, temperature=temperature, top_k=top_k,
                                                         seed=seed)):
            midi = chords_to_midi(np.concatenate([row.chords, continuation]))
            answers.append({"chords": continuation.tolist(), "primer_steps": len(row.chords),
                            "midi_base64": base64.b64encode(midi).decode("ascii")})
        return answers

    @torch.inference_mode()
    def score(self, pieces: list[np.ndarray], protocol: Protocol) -> dict[str, float]:
        """Teacher-forced ``{"loss", "accuracy", "notes", "examples"}`` over the rows
        ``protocol`` cuts from ``pieces`` (every note but a row's first; state reset per row)."""
        cut = [row for chords in pieces for row in piece_rows(chords, protocol, score_first=False)]
        starts, rows = np.array([start for start, _ in cut], dtype=np.int64), [row for _, row in cut]
        loss = correct = notes = 0.0
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        for batch in plan_batches(lengths, max_tokens=max(self.budget, int(lengths.max(initial=1))),
                                  max_batch_size=256, sort=True):
            chords = torch.from_numpy(pad_batch([rows[i] for i in batch], 0)).long().to(self.device)
            labels = torch.from_numpy(pad_batch([labels_of(rows[i], False) for i in batch], LABEL_PAD))
            labels = labels.long().to(self.device)
            logits = self.model((chords, torch.from_numpy(starts[batch])), torch.from_numpy(lengths[batch]))
            scored = labels != LABEL_PAD
            loss += float(note_loss(logits, labels))
            correct += float(((logits.argmax(-1) == labels) & scored).sum())
            notes += float(scored.sum())
        return {"loss": loss / notes if notes else float("nan"), "accuracy": correct / notes if notes else float("nan"),
                "notes": int(notes), "examples": len(rows)}
