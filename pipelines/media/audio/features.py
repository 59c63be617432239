"""One recording's bytes -> model input: decode, resample, log-mel, normalise.

    bytes --soundfile--> samples (mono float32) --soxr--> data.audio.sample_rate
          [--soxr from rate * f--> training copies at speed f (data.audio.speed_perturb)]
          [--last fraction c dropped--> training copies cut short (data.audio.tail_cut_copies)]
          --cut to max_seconds--> |STFT|^2 (Hann window, 10 ms hop) --mel filterbank-->
          log --per-band mean/variance normalisation--> frames (T, n_mels) float32
          --padded with 0 frames to a multiple of 4 (the front end's subsampling)

The same :class:`AudioFeaturizer` runs in Ray Data (training and ``rayseq eval``) and in
the Serve replicas (uploads), so a model hears an upload exactly as it heard its training
data. torchaudio would be the usual log-mel, but its wheels pin torch versions and none
matches the pinned torch 2.13, so the filterbank is written here (HTK mel scale, as
``torchaudio.functional.melscale_fbanks(norm=None)``; checked against it in the tests'
reference values) and the STFT is ``torch.stft``. Decoding is libsndfile (``soundfile``:
WAV, FLAC, OGG, ...) and resampling libsoxr (``soxr``, high quality).

Per-utterance normalisation (each band to mean 0, variance 1 over the recording) makes
features independent of recording gain and microphone colouring, which matters with six
FSDD speakers recorded on different equipment.
"""

from __future__ import annotations

import io
import math
import re
import struct
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr
import torch

from models.config import SUBSAMPLING
from pipelines.config import AudioConfig
from pipelines.errors import DataError

LOG_FLOOR = 1e-6
"""Added to the mel power before the log: silence sits at log(1e-6) = -13.8."""


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, sample_rate: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:
    """``(n_freqs, n_mels)`` triangular filters, evenly spaced on the HTK mel scale, peak 1."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = np.linspace(0, sample_rate / 2, n_freqs)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)


@dataclass
class Waveform:
    samples: np.ndarray
    """Mono float32 at the featurizer's sample rate."""
    seconds: float
    """Duration before any cut (after a speed change)."""
    cut: bool
    """True when longer than ``max_seconds`` and cut."""


class AudioFeaturizer:
    """Decode and featurize recordings the way :class:`~pipelines.config.AudioConfig` says."""

    def __init__(self, config: AudioConfig) -> None:
        self.config = config
        self.n_fft = 1 << max(self.config.window_length - 1, 1).bit_length()
        self.window = torch.hann_window(config.window_length, periodic=True)
        self.filterbank = torch.from_numpy(mel_filterbank(self.n_fft // 2 + 1, config.sample_rate, config.n_mels))

    @property
    def feature_dim(self) -> int:
        return self.config.n_mels

    def decode(self, data: bytes, origin: str, speed: float = 1.0, tail_cut: float = 0.0) -> Waveform:
        """Samples of an encoded recording (played ``speed`` times faster, the last
        ``tail_cut`` of it dropped); :class:`DataError` naming ``origin`` when it is empty,
        not audio, truncated to nothing or silent-length."""
        if not data:
            raise DataError(f"{origin}: empty file")
        missing = wav_missing_bytes(data)
        if missing:
            raise DataError(f"{origin}: truncated WAV file ({missing} bytes of samples missing)")
        try:
            samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
            raise DataError(f"{origin}: not a readable audio file ({_first_line(err)})") from None
        if samples.shape[0] == 0:
            raise DataError(f"{origin}: no audio samples (truncated or empty recording)")
        samples = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
        if not np.isfinite(samples).all():
            raise DataError(f"{origin}: audio contains NaN or infinite samples")
        return self.prepare(samples, rate, speed, tail_cut)

    def prepare(self, samples: np.ndarray, rate: int, speed: float = 1.0, tail_cut: float = 0.0) -> Waveform:
        """Mono samples at ``rate`` -> the configured rate, played ``speed`` times faster,
        the last ``tail_cut`` fraction dropped (never below 30 ms), cut to ``max_seconds``
        (after the speed change, which changes the duration)."""
        seconds = len(samples) / rate / speed
        if rate * speed != self.config.sample_rate:
            # At speed f the samples are taken as recorded at rate * f: len / f samples, every
            # frequency times f (sox's `speed` effect, which Ko et al. 2015 used); one pass.
            samples = soxr.resample(samples, rate * speed, self.config.sample_rate, quality="HQ").astype(np.float32)
        if tail_cut:
            shortest = min(len(samples), (SUBSAMPLING - 1) * self.config.hop_length)  # 4 centred frames
            samples = samples[: max(math.ceil(len(samples) * (1.0 - tail_cut)), shortest)]
        limit = int(self.config.max_seconds * self.config.sample_rate)
        cut = len(samples) > limit
        return Waveform(np.ascontiguousarray(samples[:limit], dtype=np.float32), seconds, cut)

    def features(self, samples: np.ndarray, origin: str = "audio") -> np.ndarray:
        """``(T, n_mels)`` float32 normalised log-mel frames, ``T`` padded up to a multiple
        of :data:`~models.frontend.SUBSAMPLING` with 0 frames (each band's mean after
        normalisation). Padding, not cutting: the last 30 ms of a tightly trimmed word can
        hold its final consonant (FSDD's "eight"; docs/apps/audio.md)."""
        frames = self.config.centred_frames(len(samples))
        if frames < SUBSAMPLING:
            raise DataError(f"{origin}: too short ({len(samples) / self.config.sample_rate * 1000:.0f} ms); needs "
                            f"{SUBSAMPLING} frames ({(SUBSAMPLING - 1) * self.config.hop_ms:.0f} ms)")
        logmel = self.log_mel(samples)
        mean, std = logmel.mean(0, keepdim=True), logmel.std(0, keepdim=True, unbiased=False)
        normalised = (logmel - mean) / std.clamp_min(1e-3)
        padded = torch.nn.functional.pad(normalised, (0, 0, 0, self.config.frames_of(len(samples)) - frames))
        return padded.numpy().astype(np.float32)

    def log_mel(self, samples: np.ndarray) -> torch.Tensor:
        """``(1 + len // hop, n_mels)`` natural-log mel power of mono ``samples`` (frames
        centred on every hop, zeros beyond the ends), not normalised: what the vocoder
        (``pipelines.media.audio.vocoder``) inverts and speech synthesis predicts."""
        wave = torch.nn.functional.pad(torch.from_numpy(samples), (self.n_fft // 2, self.n_fft // 2))
        spec = torch.stft(wave, self.n_fft, hop_length=self.config.hop_length, win_length=len(self.window),
                          window=self.window, center=False, return_complex=True)
        power = spec.abs().pow(2).T  # (frames, freqs)
        return torch.log(power @ self.filterbank + LOG_FLOOR)

    def __call__(self, data: bytes, origin: str, speed: float = 1.0,
                 tail_cut: float = 0.0) -> tuple[np.ndarray, Waveform]:
        """Encoded bytes -> ``(features, waveform)``; ``speed``, ``tail_cut``: a training copy
        played faster or slower, or cut short."""
        wave = self.decode(data, origin, speed, tail_cut)
        return self.features(wave.samples, origin), wave


def wav_missing_bytes(data: bytes) -> int:
    """How many bytes of its ``data`` chunk a RIFF/WAVE file lacks (0 if whole or not a
    WAV). libsndfile silently reads what is there, so a cut-off download would otherwise
    train as a shorter recording."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        if chunk == b"data":
            return max(0, size - (len(data) - offset - 8)) if size != 0xFFFFFFFF else 0
        offset += 8 + size + (size & 1)
    return 0


def _first_line(err: BaseException) -> str:
    text = re.sub(r"Error opening <[^>]*>: ", "", str(err).strip())
    return text.splitlines()[0] if text else type(err).__name__
