"""Audio data for speech-to-text: spoken digit strings built from single-digit recordings.

The Free Spoken Digit Dataset (FSDD) holds one recording per spoken digit, named
``{digit}_{speaker}_{take}.wav``. A recognizer of single words is a classifier; to train
and test *sequence* transcription (CTC, attention) we need utterances with several words
and unknown boundaries. :func:`write_digit_utterances` builds them from any FSDD-style
folder: one speaker per utterance, 1..7 random digits joined by random pauses, a little
white noise at a set SNR, and a ``manifest.csv``::

    path,transcript,speaker,sources
    utt_00000.wav,four one seven,jackson,4_jackson_12.wav;1_jackson_30.wav;7_jackson_8.wav

``takes`` restricts which recordings may be used, so a held-out set (say takes ``0-4``)
shares no recording with training (``5-49``): the model has to recognise digits it never
heard, not memorise waveforms.

For the tests and CI, which must not depend on downloaded speech, :func:`synthesize_digit`
and :func:`write_synthetic_recordings` make an FSDD-style folder of synthetic "spoken
digits": each digit is a fixed sequence of 2-3 vowel-like segments (a harmonic tone whose
pitch depends on the speaker, shaped by two formant resonances). Some digits use the same
segments in reverse order (``1`` = a-i, ``2`` = i-a), so a model must hear the order, not
just the average spectrum. Takes vary in length, pitch and loudness. This is not speech;
it is small, learnable and deterministic.

Usage (see ``rayseq generate --help``)::

    rayseq generate digits OUT_DIR [--speakers 3] [--takes 0-9]
    rayseq generate speech RECORDINGS OUT_DIR --count N --seed S [--takes 10-49]
"""

from __future__ import annotations

import csv
import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from pipelines.errors import ConfigError, DataError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
"""Transcript word of each digit; ``DIGIT_WORDS[4] == "four"``."""

RECORDING_NAME = re.compile(r"^(\d)_([^_]+)_(\d+)\.(wav|flac)$", re.IGNORECASE)
"""FSDD naming, ``{digit}_{speaker}_{take}.wav``; the speaker name has no underscore."""

MANIFEST_HEADER = ("path", "transcript", "speaker", "sources")

# --- synthetic recordings -------------------------------------------------------------

PHONES: dict[str, tuple[float, float]] = {
    "i": (280.0, 2250.0),
    "e": (450.0, 1900.0),
    "ae": (680.0, 1650.0),
    "a": (750.0, 1150.0),
    "o": (500.0, 850.0),
    "u": (300.0, 700.0),
    "er": (480.0, 1350.0),
}
"""First two formants (Hz) of each vowel-like segment, roughly those of English vowels."""

DIGIT_PHONES: tuple[tuple[str, ...], ...] = (
    ("i", "er", "o"),   # 0
    ("a", "i"),         # 1
    ("i", "a"),         # 2: 1 reversed
    ("u", "e"),         # 3
    ("e", "u"),         # 4: 3 reversed
    ("ae", "i", "o"),   # 5
    ("o", "i", "ae"),   # 6: 5 reversed
    ("e", "er"),        # 7
    ("a", "u", "er"),   # 8
    ("er", "ae"),       # 9
)
"""Segment sequence of each synthetic digit; reversed pairs make order matter."""

SYNTH_DURATION = (0.25, 0.7)
"""Bounds (seconds) of a synthetic recording."""

FORMANT_BANDWIDTHS = (90.0, 120.0)
"""Bandwidths (Hz) of the two resonances: narrow enough for clear peaks."""

FORMANT_WEIGHTS = (1.0, 0.5)
"""Peak levels of the two resonances, added in parallel: F2 6 dB under F1, loud enough
to see in a log-mel spectrogram (a cascade would bury F2 of /i/ 40 dB down)."""


def speaker_voice(speaker: int) -> tuple[float, float]:
    """``(f0 in Hz, formant scale)`` of synthetic speaker ``speaker``.

    Spread by the golden ratio so any few speakers differ: f0 in 90-180 Hz, and a
    vocal-tract scale in 0.93-1.07 so speakers differ in timbre as well as pitch.
    """
    spread = (speaker * 0.6180339887) % 1.0
    return 90.0 + 90.0 * spread, 0.93 + 0.14 * ((speaker * 0.3819660113 + 0.5) % 1.0)


def _smooth(track: np.ndarray, width: int) -> np.ndarray:
    """``track`` convolved with a Hann window of ``width`` samples, edges held: glides
    between segments instead of clicks."""
    if width < 3:
        return track
    window = np.hanning(width)
    window /= window.sum()
    padded = np.pad(track, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, window, mode="valid")


def _resonance(freq: np.ndarray, formant: np.ndarray, bandwidth: float) -> np.ndarray:
    """Magnitude response of a two-pole resonator at ``formant`` Hz, evaluated at ``freq``,
    scaled to peak 1 so each formant's level is set by its weight alone."""
    ratio = freq / formant
    peak = formant / bandwidth
    return 1.0 / (peak * np.sqrt((1.0 - ratio**2) ** 2 + (freq * bandwidth / formant**2) ** 2))


def _harmonic_gains(harmonics: np.ndarray, f0: np.ndarray, f1: np.ndarray, f2: np.ndarray, rate: int) -> np.ndarray:
    """Amplitude ``(K, n)`` of harmonics ``(K, 1)`` through both formants (in parallel),
    with a gentle 1/sqrt(k) source tilt and nothing near Nyquist.

    Evaluated every 2.5 ms and interpolated: the tracks change slowly, and this is most
    of the synthesis time otherwise.
    """
    n = len(f0)
    hop = max(rate // 400, 1)
    frames = np.arange(0, n + hop, hop).clip(max=n - 1)
    freq = harmonics * f0[frames][None, :]
    formants = (FORMANT_WEIGHTS[0] * _resonance(freq, f1[frames], FORMANT_BANDWIDTHS[0])
                + FORMANT_WEIGHTS[1] * _resonance(freq, f2[frames], FORMANT_BANDWIDTHS[1]))
    gain = (formants / np.sqrt(harmonics) * (freq < 0.47 * rate)).astype(np.float32)
    position = np.arange(n) / hop
    left = position.astype(int)
    weight = (position - left).astype(np.float32)
    return gain[:, left] * (1 - weight) + gain[:, left + 1] * weight


def _segment_tracks(digit: int, scale: float, n: int, rate: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample ``(F1, F2)`` of ``digit``: piecewise constant per segment, then smoothed."""
    phones = DIGIT_PHONES[digit]
    weights = rng.uniform(0.8, 1.2, len(phones))
    bounds = np.round(np.cumsum(np.concatenate([[0.0], weights])) / weights.sum() * n).astype(int)
    f1, f2 = np.empty(n), np.empty(n)
    for phone, start, stop in zip(phones, bounds[:-1], bounds[1:]):
        first, second = PHONES[phone]
        f1[start:stop] = first * scale * rng.uniform(0.97, 1.03)
        f2[start:stop] = second * scale * rng.uniform(0.97, 1.03)
    glide = int(0.03 * rate)
    return _smooth(f1, glide), _smooth(f2, glide)


def _envelope(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Raised-cosine attack (25-40 ms) and decay (60-100 ms): no clicks at the ends."""
    attack = max(int(rng.uniform(0.025, 0.04) * rate), 1)
    decay = max(int(rng.uniform(0.06, 0.1) * rate), 1)
    env = np.ones(n)
    env[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    env[n - decay:] = 0.5 + 0.5 * np.cos(np.pi * np.arange(decay) / decay)
    return env


def synthesize_digit(digit: int, speaker: int, take: int, *, rate: int = 8000) -> np.ndarray:
    """A synthetic "spoken" ``digit``: float32 mono in [-1, 1], 0.25-0.7 s at ``rate``.

    Deterministic in ``(digit, speaker, take)``; takes of one digit differ in length
    (+-20%), pitch contour and loudness, so a classifier cannot match samples exactly.
    """
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be 0..9, got {digit}")
    if speaker < 0 or take < 0:
        raise ValueError(f"speaker and take must be >= 0, got speaker={speaker}, take={take}")
    if rate < 6000:
        raise ValueError(f"rate must be >= 6000 Hz (formants reach 2.4 kHz), got {rate}")
    rng = np.random.default_rng([digit, speaker, take])
    f0_base, scale = speaker_voice(speaker)
    base_seconds = 0.36 + 0.1 * (len(DIGIT_PHONES[digit]) - 2)
    seconds = float(np.clip(base_seconds * rng.uniform(0.8, 1.2), *SYNTH_DURATION))
    n = int(seconds * rate)
    t = np.arange(n) / rate

    # Pitch: a per-take offset, a falling contour and a slow wobble (jitter).
    wobble = sum(rng.uniform(0.005, 0.015) * np.sin(2 * np.pi * rng.uniform(2, 7) * t + rng.uniform(0, 2 * np.pi))
                 for _ in range(2))
    f0 = f0_base * rng.uniform(0.96, 1.04) * (1.04 - 0.08 * t / seconds + wobble)
    phase = 2 * np.pi * np.cumsum(f0) / rate

    f1, f2 = _segment_tracks(digit, scale, n, rate, rng)
    harmonics = np.arange(1, int(0.5 * rate / f0.min()) + 1)[:, None]  # (K, 1)
    gain = _harmonic_gains(harmonics, f0, f1, f2, rate)  # (K, n)
    voiced = (gain * np.sin(harmonics * phase[None, :]).astype(np.float32)).sum(axis=0)

    audio = voiced * _envelope(n, rate, rng)
    audio *= rng.uniform(0.35, 0.8) / np.abs(audio).max()
    audio += rng.normal(0.0, 0.002, n)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def write_synthetic_recordings(out_dir: str | Path, *, speakers: int = 3, takes: range | list[int] = range(10),
                               rate: int = 8000) -> Path:
    """Write ``{digit}_s{speaker}_{take}.wav`` (16-bit PCM) for every digit, speaker and take.

    An FSDD-shaped folder that :func:`write_digit_utterances` reads like the real one.
    """
    if speakers < 1:
        raise ConfigError(f"speakers must be >= 1, got {speakers}")
    numbers = sorted(set(takes))
    if not numbers or numbers[0] < 0:
        raise ConfigError(f"takes must be a non-empty set of numbers >= 0, got {takes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for speaker in range(speakers):
        for digit in range(10):
            for take in numbers:
                audio = synthesize_digit(digit, speaker, take, rate=rate)
                sf.write(out / f"{digit}_s{speaker}_{take}.wav", audio, rate, subtype="PCM_16")
    return out


# --- digit-string utterances ----------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """One FSDD-style file: its path and what its name says."""

    path: Path
    digit: int
    speaker: str
    take: int


def parse_takes(spec: str) -> set[int]:
    """Take numbers in ``spec``, inclusive ranges and single numbers: ``"5-9,12"`` -> {5..9, 12}."""
    hint = "expected e.g. '10-49' or '5,7,9-12'"
    takes: set[int] = set()
    parts = [part.strip() for part in str(spec).split(",")]
    if not any(parts):
        raise ConfigError(f"takes {spec!r} is empty; {hint}")
    for part in parts:
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if match is None:
            raise ConfigError(f"takes {spec!r}: cannot read {part!r}; {hint}")
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) is not None else start
        if stop < start:
            raise ConfigError(f"takes {spec!r}: range {part!r} ends before it starts; {hint}")
        takes.update(range(start, stop + 1))
    return takes


def list_recordings(folder: str | Path) -> list[Recording]:
    """FSDD-style recordings in ``folder``, sorted by name; other files are ignored.

    A folder with none is a :class:`DataError`: an empty dataset would only fail later,
    and less clearly.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"recordings folder {root} does not exist or is not a folder")
    found = []
    for path in sorted(root.iterdir()):
        match = RECORDING_NAME.match(path.name)
        if match and path.is_file():
            found.append(Recording(path, int(match.group(1)), match.group(2), int(match.group(3))))
    if not found:
        raise DataError(f"recordings folder {root} holds no {{digit}}_{{speaker}}_{{take}}.wav|.flac file")
    return found


def select_takes(recordings: list[Recording], takes: str | None, folder: Path) -> list[Recording]:
    """The ``recordings`` whose take is in ``takes`` (e.g. ``"10-49"``; ``None``: all)."""
    if takes is None:
        return recordings
    allowed = parse_takes(takes)
    chosen = [rec for rec in recordings if rec.take in allowed]
    if not chosen:
        found = sorted({rec.take for rec in recordings})
        raise DataError(f"recordings folder {folder} holds no recording of takes {takes} "
                        f"(it has takes {found[0]}..{found[-1]})")
    return chosen


def _audio_info(path: Path) -> Any:
    """``soundfile.info`` of ``path``; a file it cannot read is a :class:`DataError` naming it."""
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(f"{path}: not a readable audio file ({err})") from err


def common_rate(recordings: list[Recording]) -> int:
    """The one sample rate of ``recordings``; utterances join them without resampling."""
    rate = _audio_info(recordings[0].path).samplerate
    for rec in recordings[1:]:
        other = _audio_info(rec.path).samplerate
        if other != rate:
            raise DataError(f"{rec.path}: sample rate {other} Hz differs from {rate} Hz of "
                            f"{recordings[0].path.name}; resample the folder to one rate")
    return rate


def _by_speaker_digit(recordings: list[Recording]) -> dict[str, dict[int, list[Recording]]]:
    """``{speaker: {digit: [recordings]}}``, sorted, so random choices are reproducible."""
    table: dict[str, dict[int, list[Recording]]] = {}
    for rec in recordings:
        table.setdefault(rec.speaker, {}).setdefault(rec.digit, []).append(rec)
    return {speaker: table[speaker] for speaker in sorted(table)}


def _check_digits_covered(table: dict[str, dict[int, list[Recording]]], folder: Path, takes: str | None) -> None:
    """Every digit needs some speaker, else utterances with it cannot be built."""
    for digit in range(10):
        if not any(digit in digits for digits in table.values()):
            where = f" in takes {takes}" if takes else ""
            raise DataError(f"recordings folder {folder}: no speaker has a recording of digit {digit}{where}")


def _validate_utterance_args(count: int, min_digits: int, max_digits: int, pause: tuple[float, float],
                             snr_db: float) -> None:
    if count < 1:
        raise ConfigError(f"count must be >= 1, got {count}")
    if not 1 <= min_digits <= max_digits:
        raise ConfigError(f"need 1 <= min_digits <= max_digits, got min_digits={min_digits}, max_digits={max_digits}")
    if len(pause) != 2 or not 0 <= pause[0] <= pause[1]:
        raise ConfigError(f"pause must be (low, high) seconds with 0 <= low <= high, got {pause}")
    if not math.isfinite(snr_db):
        raise ConfigError(f"snr_db must be a finite number of dB, got {snr_db}")


class _AudioCache:
    """Mono float32 audio of each source file, read once however often it is drawn."""

    def __init__(self) -> None:
        self._audio: dict[Path, np.ndarray] = {}

    def __call__(self, path: Path) -> np.ndarray:
        if path not in self._audio:
            data, _ = sf.read(str(path), dtype="float32", always_2d=True)
            self._audio[path] = data.mean(axis=1)
        return self._audio[path]


def _pick_speaker(digits: list[int], table: dict[str, dict[int, list[Recording]]], rng: random.Random) -> str:
    """A random speaker among those who recorded every digit in ``digits``."""
    able = [speaker for speaker, have in table.items() if all(d in have for d in digits)]
    if not able:
        lacking = {speaker: sorted(set(digits) - set(have)) for speaker, have in table.items()}
        detail = ", ".join(f"speaker {s} lacks digit {missing[0]}" for s, missing in lacking.items())
        raise DataError(f"no speaker has recordings of all of digits {digits}: {detail}")
    return rng.choice(able)


def _silence(pause: tuple[float, float], rate: int, rng: random.Random) -> np.ndarray:
    return np.zeros(int(rng.uniform(*pause) * rate), dtype=np.float32)


def _add_noise(clean: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``clean`` plus white noise ``snr_db`` below its mean power (pauses included);
    peak-normalised only if it would clip, so levels stay comparable otherwise."""
    power = float(np.mean(clean.astype(np.float64) ** 2))
    noisy = clean + rng.normal(0.0, math.sqrt(power / 10 ** (snr_db / 10)), clean.shape)
    peak = float(np.abs(noisy).max())
    if peak > 1.0:
        noisy *= 0.99 / peak
    return noisy.astype(np.float32)


def write_digit_utterances(recordings: str | Path, out_dir: str | Path, *, count: int, seed: int,
                           takes: str | None = None, min_digits: int = 1, max_digits: int = 7,
                           pause: tuple[float, float] = (0.05, 0.3), snr_db: float = 30.0) -> Path:
    """Write ``count`` spoken digit strings, ``out_dir/utt_00000.wav``..., and ``manifest.csv``.

    Each utterance: one random speaker, ``min_digits..max_digits`` random digits, each a
    random recording of that digit by that speaker (only ``takes``, e.g. ``"10-49"``),
    joined by pauses drawn from ``pause`` seconds (also before the first and after the
    last), plus white noise at ``snr_db``. Output is 16-bit PCM at the recordings' rate.
    The same folder and arguments give the same bytes.
    """
    _validate_utterance_args(count, min_digits, max_digits, pause, snr_db)
    folder = Path(recordings)
    everything = list_recordings(folder)
    sources = select_takes(everything, takes, folder)
    rate = common_rate(everything)
    table = _by_speaker_digit(sources)
    _check_digits_covered(table, folder, takes)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng, noise_rng, audio_of = random.Random(seed), np.random.default_rng(seed), _AudioCache()
    rows = []
    for index in range(count):
        digits = [rng.randrange(10) for _ in range(rng.randint(min_digits, max_digits))]
        speaker = _pick_speaker(digits, table, rng)
        chosen = [rng.choice(table[speaker][digit]) for digit in digits]
        pieces = [_silence(pause, rate, rng)]
        for rec in chosen:
            pieces += [audio_of(rec.path), _silence(pause, rate, rng)]
        name = f"utt_{index:05d}.wav"
        sf.write(out / name, _add_noise(np.concatenate(pieces), snr_db, noise_rng), rate, subtype="PCM_16")
        rows.append((name, " ".join(DIGIT_WORDS[d] for d in digits), speaker,
                     ";".join(rec.path.name for rec in chosen)))
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MANIFEST_HEADER)
        writer.writerows(rows)
    return out


# --- the ``rayseq generate`` command --------------------------------------------------


def audio_seconds(paths: Iterable[Path]) -> float:
    """Total duration of the audio files ``paths``, read from their headers only."""
    return sum(info.frames / info.samplerate for info in (sf.info(str(p)) for p in paths))
