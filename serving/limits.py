"""What one Serve application accepts from a client, in one place.

Every limit here is answered with a 4xx that names the limit; none of them may surface
as a 500. Most are enforced at the HTTP edge; an upload's duration is only known once
the model replica reads its header, so ``max_audio_seconds`` and ``max_video_seconds``
are enforced there (and still answered 413). The same object travels to the model
deployments, where ``max_batch_tokens`` and ``batch_wait_timeout_s`` shape the
batches (``serving.batcher``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from pipelines.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ServeLimits:
    max_body_bytes: int = 1 << 20
    """Largest JSON (non-multipart) request body, checked on ``Content-Length`` and on the
    bytes actually received (chunked uploads included); larger answers 413 before parsing."""
    max_upload_bytes: int = 10 << 20
    """Largest ``multipart/form-data`` body (all of one request's audio or video files
    together), checked the same way. Uploads are buffered in the ingress and shipped to
    the model replica, so this bounds the memory one request can hold."""
    max_inputs: int = 64
    """Most texts in one request's ``inputs``, or files in its ``file`` parts; bounds the
    work a single call can ask for."""
    max_audio_seconds: float = 30.0
    """Longest audio upload in seconds, whatever the model's ``data.audio.max_seconds``
    (the lower of the two applies). Longer files answer 413 instead of being cut as
    training data is: a client should know that the end of its recording went unheard."""
    max_video_seconds: float = 60.0
    """Longest video upload in seconds, whatever the model's ``data.video.max_seconds``
    (the lower of the two applies), checked on the container's header before decoding and
    on what was decoded; longer answers 413. (Its frames are bounded by the model's
    ``data.video.max_frames``: more answers 413 too.)"""
    max_chars: int = 2000
    """Longest text in characters; tokens past the model's ``data.max_length`` are cut
    anyway, so this only stops clients from shipping megabytes that get thrown away."""
    max_batch_tokens: int = 8192
    """Token budget of one model batch: batches are sized by the total token count of
    the queued requests, not by how many requests there are. For audio
    models a token is one step of the recurrent stack, i.e. ``SUBSAMPLING`` (4) feature
    frames (40 ms), so a batch holds ``4 x max_batch_tokens`` frames; for video models a
    token is one sampled frame."""
    batch_wait_timeout_s: float = 0.005
    """The most a request waits for company before its batch runs, counted from its
    arrival (``serving.batcher``). A batch only waits when more requests are likely to
    come (the model's last batch held more than are queued now), so a lone request, or
    any at one client, runs at once; under load the batch that follows a running one
    takes what queued meanwhile without waiting. 0: never wait."""
    max_beam_size: int = 16
    """Largest ``beam_size`` a generate request may ask for."""
    max_generate_length: int = 512
    """Largest ``max_length`` (output tokens) a generate request may ask for."""
    max_compose_steps: int = 1024
    """Most chords a compose request may ask for (``steps``; 1024 16th-note steps are 64
    bars of 4/4)."""
    max_primer_chords: int = 2048
    """Longest primer (chords) of a compose request."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "batch_wait_timeout_s":
                if not _is_number(value) or value < 0:
                    raise ConfigError(f"serve limit {f.name} must be a number >= 0, got {value!r}")
            elif f.name in ("max_audio_seconds", "max_video_seconds"):
                if not _is_number(value) or value <= 0:
                    raise ConfigError(f"serve limit {f.name} must be a number > 0, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"serve limit {f.name} must be an integer >= 1, got {value!r}")

    @classmethod
    def from_dict(cls, values: dict) -> ServeLimits:
        """Limits from a plain mapping (a Serve config's ``args``); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown serve limit(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
