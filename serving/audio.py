"""Uploaded recordings -> model input, in an audio model's replica (no Ray, no HTTP).

The ingress ships each ``file`` part as an :class:`~serving.uploads.Upload` (name and
bytes) to the replica, which reads it with the checkpoint's own
:class:`~pipelines.media.audio.features.AudioFeaturizer`, so an upload is heard exactly as the training
data was::

    Upload(name, bytes) --header: too long?--> 413 TooLarge (nothing decoded)
                        --AudioFeaturizer.decode--> samples at data.audio.sample_rate
                        --AudioFeaturizer.features--> (T, n_mels) float32 frames
    bad bytes (empty, not audio, truncated WAV, under 30 ms): DataError naming the part -> 422

The duration is read from the file's header before decoding: a FLAC of silence packs
an hour into a few kilobytes, and ``soundfile`` decodes no more frames than the header
declares, so checking the header bounds the decode too.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile

from pipelines.config import AudioConfig
from pipelines.media.audio.features import AudioFeaturizer
from serving import uploads
from serving.limits import ServeLimits
from serving.uploads import Upload

_UNKNOWN_FRAMES = 1 << 62
"""libsndfile reports a stream of unknown length (a FLAC without a sample count) as
``SF_COUNT_MAX`` frames; reading it fails, and the decoder reports that."""


class DurationLimit(uploads.DurationLimit):
    """The longest recording an audio model takes: ``max_audio_seconds`` (the serve
    limit) or ``the model's data.audio.max_seconds``, whichever is lower."""

    medium = "audio"

    @classmethod
    def of(cls, audio: AudioConfig, limits: ServeLimits) -> DurationLimit:
        return cls.lower(model=(audio.max_seconds, "the model's data.audio.max_seconds"),
                         server=(limits.max_audio_seconds, "max_audio_seconds"))


def most_frames(audio: AudioConfig, seconds: float) -> int:
    """Feature frames of a ``seconds`` long recording, as ``AudioFeaturizer.features``
    makes them (``AudioConfig.frames_of``)."""
    return audio.frames_of(int(seconds * audio.sample_rate))


def header_seconds(data: bytes) -> float | None:
    """Duration declared by an encoded file's header, or None when there is no readable
    header or it declares no length (the decoder then says what is wrong)."""
    try:
        info = soundfile.info(io.BytesIO(data))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    if info.samplerate <= 0 or info.frames >= _UNKNOWN_FRAMES:
        return None
    return info.frames / info.samplerate


class UploadFeaturizer:
    """Uploads -> log-mel frames for one audio model, refusing what it cannot take."""

    def __init__(self, featurizer: AudioFeaturizer, limit: DurationLimit) -> None:
        self.featurizer = featurizer
        self.limit = limit

    def __call__(self, uploads: list[Upload]) -> list[np.ndarray]:
        """``(T, n_mels)`` float32 frames per upload, in order; the first bad one raises
        (:class:`TooLarge` over the duration limit, else ``DataError``), naming it."""
        return [self.features(upload) for upload in uploads]

    def features(self, upload: Upload) -> np.ndarray:
        seconds = header_seconds(upload.data)
        if seconds is not None:
            self.limit.check(upload.name, seconds)  # before decoding: a header may declare hours
        wave = self.featurizer.decode(upload.data, upload.name)
        self.limit.check(upload.name, wave.seconds)  # whatever the header said: what was decoded
        return self.featurizer.features(wave.samples, upload.name)
