"""Log-mel frames -> waveform -> 16-bit WAV: the inverse of
:meth:`~pipelines.media.audio.features.AudioFeaturizer.log_mel`.

    log-mel (T, n_mels) --exp, - floor--> mel power --non-negative least squares over the
        filterbank--> linear power (T, n_fft/2 + 1) --sqrt--> magnitude --Griffin-Lim
        (fast, momentum 0.99)--> samples at data.audio.sample_rate --> WAV (PCM 16)

Griffin-Lim (Griffin & Lim 1984) finds a phase whose STFT is consistent with the
magnitude by alternating projections; the fast variant (Perraudin, Balazs & Sondergaard
2013) adds momentum, as ``torchaudio.transforms.GriffinLim`` and ``librosa.griffinlim``
do. Neither fits here: torchaudio's wheels pin torch versions (none matches the pinned
2.13) and librosa would bring numba, llvmlite, scipy and scikit-learn for two functions.
So both steps are written on ``torch.stft``/``torch.istft`` with the featurizer's own
window, FFT size and hop (centred frames), which makes the round trip exact in its
framing. The mel inversion is librosa's ``mel_to_stft`` problem (non-negative least
squares), solved by multiplicative updates from the clamped pseudo-inverse.

Phases start from a fixed seed, so a spectrogram always gives the same samples.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile
import torch

from pipelines.config import AudioConfig
from pipelines.media.audio.features import LOG_FLOOR, AudioFeaturizer

NNLS_ITERATIONS = 30


class GriffinLim:
    """``vocoder(log_mel (T, n_mels))`` -> float32 samples in [-1, 1] at the config's rate."""

    def __init__(self, config: AudioConfig, *, iterations: int = 60, momentum: float = 0.99) -> None:
        if iterations < 1 or not 0 <= momentum < 1:
            raise ValueError(f"Griffin-Lim needs iterations >= 1 and momentum in [0, 1), got {iterations}, {momentum}")
        self.featurizer = AudioFeaturizer(config)
        self.config, self.iterations, self.momentum = config, iterations, momentum
        self.filterbank = self.featurizer.filterbank.double()  # (freqs, mels)
        self.pseudo_inverse = torch.linalg.pinv(self.filterbank)  # (mels, freqs)

    def magnitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        """``(T, n_mels)`` log-mel power -> ``(freqs, T)`` linear STFT magnitude."""
        mel = (log_mel.double().exp() - LOG_FLOOR).clamp_min(0.0)  # (T, mels)
        power = (mel @ self.pseudo_inverse).clamp_min(1e-10)  # (T, freqs), a start >= 0
        gram = self.filterbank @ self.filterbank.T  # (freqs, freqs)
        target = mel @ self.filterbank.T
        for _ in range(NNLS_ITERATIONS):  # min |power @ fb - mel|^2, power >= 0 (Lee & Seung's updates)
            power = power * target / (power @ gram).clamp_min(1e-12)
        return power.sqrt().T.float()

    def _stft(self, samples: torch.Tensor) -> torch.Tensor:
        f = self.featurizer
        return torch.stft(samples, f.n_fft, hop_length=self.config.hop_length, win_length=len(f.window),
                          window=f.window, center=True, pad_mode="constant", return_complex=True)

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        f = self.featurizer
        return torch.istft(spec, f.n_fft, hop_length=self.config.hop_length, win_length=len(f.window),
                           window=f.window, center=True, length=length)

    def __call__(self, log_mel: torch.Tensor | np.ndarray) -> np.ndarray:
        log_mel = torch.tensor(np.asarray(log_mel), dtype=torch.float32)
        if log_mel.dim() != 2 or log_mel.size(1) != self.config.n_mels or log_mel.size(0) < 2:
            raise ValueError(f"a vocoder input is (frames >= 2, {self.config.n_mels}) log-mel, "
                             f"got {tuple(log_mel.shape)}")
        magnitude = self.magnitude(log_mel)
        length = (log_mel.size(0) - 1) * self.config.hop_length
        generator = torch.Generator().manual_seed(0)
        angles = torch.polar(torch.ones_like(magnitude), 2 * np.pi * torch.rand(magnitude.shape, generator=generator))
        previous = torch.zeros_like(angles)
        for _ in range(self.iterations):
            rebuilt = self._stft(self._istft(magnitude * angles, length))
            angles = rebuilt - previous * (self.momentum / (1 + self.momentum))
            angles = angles / (angles.abs() + 1e-16)
            previous = rebuilt
        samples = self._istft(magnitude * angles, length)
        return samples.clamp(-1.0, 1.0).numpy().astype(np.float32)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono float samples in [-1, 1] as a 16-bit PCM WAV file."""
    out = io.BytesIO()
    soundfile.write(out, np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return out.getvalue()
