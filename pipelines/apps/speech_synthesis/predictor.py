"""Speech synthesis inference: texts of known words in, one voice's audio out.

An input is one or more words ("seven", "four one seven", "4 1 7", "417"): each word the
model knows, or a digit whose spelled-out name or numeral it knows. Each word is
synthesized on its own (the model conditions on one word), vocoded by Griffin-Lim and
the words are joined with ``synthesis.pause_ms`` of silence. Sampling is seeded per
input and word: the same text, speaker and seed give the same audio, whatever else
shares the batch.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipelines.apps.speech_synthesis.data import FrameScale
from pipelines.errors import DataError
from pipelines.inference.predictors import LoadedPredictor, item_seed
from pipelines.media.audio.vocoder import GriffinLim, wav_bytes

SPELLED = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
"""Names of the digits: a model trained on FSDD (words "0".."9") also reads "seven"."""


@dataclass(frozen=True)
class Utterance:
    """A row: the word ids of one input, in order. Its ``len`` (what a batch budget
    counts) is the decoder steps its words may take: ``steps_per_word`` each (the longest
    word, ``synthesis.max_seconds``), since every word of a batch runs until the last
    one stops."""

    words: tuple[int, ...]
    steps_per_word: int = 1

    def __len__(self) -> int:
        return len(self.words) * self.steps_per_word


class SpeechSynthesizer(LoadedPredictor):
    """``rows(texts)`` -> :class:`Utterance` s; ``run(rows, speaker=..., seed=0)`` ->
    ``{"wav_base64", "sample_rate", "seconds"}`` per row."""

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        meta = loaded.meta
        self.words, self.speakers = list(meta["words"]), list(meta["speakers"])
        self.audio, self.synthesis = self.recipe.data.audio, self.recipe.synthesis
        self.scale = FrameScale.from_meta(loaded.path, meta, self.audio.n_mels)
        self.vocoder = GriffinLim(self.audio, iterations=self.synthesis.griffin_lim_iters)
        self.featurizer = self.vocoder.featurizer
        frames_per_second = self.audio.sample_rate / self.audio.hop_length
        self.max_frames = max(2, int(self.synthesis.max_seconds * frames_per_second))
        self.steps_per_word = -(-self.max_frames // self.recipe.model.frames_per_step)
        self._ids = {w: i for i, w in enumerate(self.words)}
        for digit, name in enumerate(SPELLED):  # "seven" for a model of the words 0..9
            if str(digit) in self._ids and name not in self._ids:
                self._ids[name] = self._ids[str(digit)]

    @property
    def sample_rate(self) -> int:
        return self.audio.sample_rate

    def known_words(self) -> str:
        return ", ".join(sorted(self._ids, key=lambda w: (self._ids[w], w)))

    def parse(self, text: str, where: str) -> Utterance:
        """A text's word ids; DataError naming an unknown word and where it is."""
        if not isinstance(text, str):
            raise DataError(f"{where}: expected a text of words, got {type(text).__name__}")
        tokens = [t for t in re.split(r"[\s,;]+", text.strip().lower()) if t]
        ids = []
        for position, token in enumerate(tokens):
            if token in self._ids:
                ids.append(self._ids[token])
            elif token.isdigit() and all(d in self._ids for d in token):  # "417": four one seven
                ids += [self._ids[d] for d in token]
            else:
                raise DataError(f"{where}: unknown word {token!r} (word {position + 1}); the model says "
                                f"{self.known_words()}")
        if not ids:
            raise DataError(f"{where}: no words to say")
        if len(ids) > self.recipe.data.max_length:
            raise DataError(f"{where}: {len(ids)} words; the model says at most {self.recipe.data.max_length} an "
                            "input (data.max_length)")
        return Utterance(tuple(ids), self.steps_per_word)

    def rows(self, inputs: list) -> list[Utterance]:
        return [self.parse(text, f"input {i}" if len(inputs) > 1 else "input") for i, text in enumerate(inputs)]

    def speaker_id(self, speaker: Any) -> int:
        if not isinstance(speaker, str) or speaker not in self.speakers:
            raise DataError(f"speaker: unknown speaker {speaker!r}; the model has {', '.join(self.speakers)}")
        return self.speakers.index(speaker)

    @torch.inference_mode()
    def spectrograms(self, rows: list[Utterance], *, speaker: str | list[str],
                     seed: int | list[int] = 0) -> list[list[np.ndarray]]:
        """Each row's words as log-mel frames ``(T, n_mels)`` (normalisation undone), in
        the voice of ``speaker`` (or ``speaker[i]``, row ``i``'s), sampled with ``seed``
        (or ``seed[i]``). Words of every row are decoded together, as many a batch as
        ``self.budget`` decoder steps hold (:class:`Utterance`)."""
        speakers = [self.speaker_id(s) for s in ([speaker] * len(rows) if isinstance(speaker, str) else speaker)]
        seeds = [seed] * len(rows) if isinstance(seed, int) else list(seed)
        jobs = [(r, w, word) for r, row in enumerate(rows) for w, word in enumerate(row.words)]
        out: list[list[np.ndarray]] = [[None] * len(row.words) for row in rows]  # type: ignore[list-item]
        per_batch = max(1, self.budget // self.steps_per_word)
        for start in range(0, len(jobs), per_batch):
            part = jobs[start : start + per_batch]
            conditions = torch.tensor([[word, speakers[r]] for r, _, word in part], device=self.device)
            generators = [torch.Generator(device=self.device).manual_seed(item_seed(seeds[r], w)) for r, w, _ in part]
            found = self.model.synthesize(conditions, max_frames=self.max_frames,
                                          stop_threshold=self.synthesis.stop_threshold, generators=generators)
            for (r, w, _), frames in zip(part, found):
                frames = frames.float().cpu().numpy()
                if len(frames) < 2:  # the vocoder needs two frames; a stop at once is a very short word
                    frames = np.concatenate([frames, frames[-1:]])
                out[r][w] = self.scale.restore(frames)
        return out

    def synthesize(self, rows: list[Utterance], *, speaker: str | list[str],
                   seed: int | list[int] = 0) -> list[np.ndarray]:
        """Each row's samples (float32 at ``sample_rate``): its words with pauses between
        (``speaker``, ``seed`` as in :meth:`spectrograms`)."""
        pause = np.zeros(int(self.synthesis.pause_ms / 1000 * self.sample_rate), dtype=np.float32)
        audio = []
        for words in self.spectrograms(rows, speaker=speaker, seed=seed):
            parts = []
            for k, frames in enumerate(words):
                parts += ([pause] if k else []) + [self.vocoder(frames)]
            audio.append(np.concatenate(parts))
        return audio

    def run(self, rows: list, *, speaker: str | None = None, seed: int = 0, **_: Any) -> list[dict[str, Any]]:
        if speaker is None:
            raise DataError(f"speaker: name one of {', '.join(self.speakers)}")
        return [{"wav_base64": base64.b64encode(wav_bytes(samples, self.sample_rate)).decode("ascii"),
                 "sample_rate": self.sample_rate, "seconds": round(len(samples) / self.sample_rate, 3)}
                for samples in self.synthesize(rows, speaker=speaker, seed=seed)]
