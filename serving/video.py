"""Uploaded video files -> model input, in a video model's replica (no Ray, no HTTP).

The ingress ships each ``file`` part as an :class:`~serving.uploads.Upload` (name and
bytes) to the replica, which reads it with the checkpoint's own
:class:`~pipelines.media.video.decode.VideoFeaturizer` (``refuse_longer``), so an upload is sampled
and resized exactly as the training clips were::

    Upload(name, bytes) --probe (header only)--> not a video container?          -> 422
                                                 a still image (PNG, JPEG, ...)?  -> 422
                                                 declares more than the limit?    -> 413 (nothing decoded)
                        --VideoFeaturizer--> (T, size, size, 3) uint8 frames
                                                 more than data.video.max_frames? -> 413
                                                 decoded longer than the limit?   -> 413
    bad bytes (empty, not a video, no video stream, truncated, corrupt): DataError naming the part -> 422

The duration limit is the lower of the model's ``data.video.max_seconds`` and the
server's ``max_video_seconds``, and it is checked on the container's header before
decoding: a 1 fps clip packs an hour into a few kilobytes. A container that declares no
duration (a raw stream) is decoded; the featurizer stops at the model's ``max_seconds``
or ``max_frames``, whichever comes first, so the work stays bounded either way.

Only encoded video files are uploads. FFmpeg also opens a lone PNG or JPEG as a
one-frame "video"; the featurizer refuses those (in training too), so a client that
sends a clip as frame images learns it at once instead of getting one answer per frame.
"""

from __future__ import annotations

import numpy as np

from pipelines.config import VideoConfig
from pipelines.media.video.decode import ClipTooLong, VideoFeaturizer
from serving import uploads
from serving.errors import TooLarge
from serving.limits import ServeLimits
from serving.uploads import Upload


class DurationLimit(uploads.DurationLimit):
    """The longest clip a video model takes: ``max_video_seconds`` (the serve limit) or
    ``the model's data.video.max_seconds``, whichever is lower."""

    medium = "video"

    @classmethod
    def of(cls, video: VideoConfig, limits: ServeLimits) -> DurationLimit:
        return cls.lower(model=(video.max_seconds, "the model's data.video.max_seconds"),
                         server=(limits.max_video_seconds, "max_video_seconds"))


class UploadClips:
    """Uploads -> sampled RGB frames for one video model, refusing what it cannot take."""

    def __init__(self, featurizer: VideoFeaturizer, limit: DurationLimit) -> None:
        self.featurizer = featurizer
        self.limit = limit

    def __call__(self, uploads: list[Upload]) -> list[np.ndarray]:
        """``(T, size, size, 3)`` uint8 frames per upload, in order; the first bad one
        raises (:class:`TooLarge` over a limit, else ``DataError``), naming it."""
        return [self.frames(upload) for upload in uploads]

    def frames(self, upload: Upload) -> np.ndarray:
        declared = self.featurizer.probe(upload.data, upload.name)  # DataError: empty, image, not a video
        if declared.seconds is not None:
            self.limit.check(upload.name, declared.seconds)  # before decoding: a header may declare hours
        try:
            clip = self.featurizer(upload.data, upload.name)
        except ClipTooLong as exc:  # more than data.video.max_frames (or past max_seconds, undeclared)
            raise TooLarge(str(exc)) from None
        self.limit.check(upload.name, clip.seconds)  # whatever the header said: what was decoded
        return clip.frames
