"""What audio and video uploads share on their way from the ingress to a model replica
(no Ray, no HTTP, no decoder).

The ingress only splits a multipart body into :class:`Upload` s (name and bytes; the
body limit bounds them) and ships them, undecoded, to the model replica. There each
medium's reader (``serving.audio``, ``serving.video``) decodes them with the checkpoint's
own featurizer, under a :class:`DurationLimit`: the lower of what the model was trained
on and what the server allows, checked on the file's header before decoding and on what
was decoded. Going over it is :class:`~serving.errors.TooLarge` (413), naming the file
and the setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from serving.errors import TooLarge


@dataclass(frozen=True)
class Upload:
    """One ``file`` part of a request, as it crosses from the ingress to the replica."""

    name: str
    """How messages name it: ``file[1] 'seven.wav'`` (part index and file name)."""
    data: bytes


@dataclass(frozen=True)
class DurationLimit:
    """The longest upload a model takes, and which setting says so. Each medium has a
    subclass that names it (``medium``) and picks the settings (``of``)."""

    seconds: float
    setting: str
    """The server's limit (``max_audio_seconds``) or the model's (``the model's data.audio.max_seconds``)."""

    medium: ClassVar[str] = "media"
    """What a second is a second of, in messages: ``3.50 s of audio``."""

    @classmethod
    def lower(cls, model: tuple[float, str], server: tuple[float, str]) -> DurationLimit:
        """The lower of the model's ``(seconds, setting)`` (it never saw longer) and the
        server's (the decoding work one file may ask for); the model's on a tie."""
        return cls(*server) if server[0] < model[0] else cls(*model)

    def check(self, name: str, seconds: float) -> None:
        if seconds > self.seconds:
            raise TooLarge(f"{name}: {seconds:.2f} s of {self.medium}; "
                           f"the limit is {self.seconds:g} s ({self.setting})")
