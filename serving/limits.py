"""What one Serve application accepts from a client, in one place.

Every limit here is enforced at the HTTP edge and answered with a 4xx that names the
limit; none of them may surface as a 500. The same object travels to the model
deployments, where ``max_batch_tokens`` and ``batch_wait_timeout_s`` shape
``@serve.batch``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from pipelines.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ServeLimits:
    max_body_bytes: int = 1 << 20
    """Largest request body, checked on ``Content-Length`` and on the bytes actually
    received (chunked uploads included); larger answers 413 before JSON parsing."""
    max_inputs: int = 64
    """Most texts in one request's ``inputs``; bounds the work a single call can ask for."""
    max_chars: int = 2000
    """Longest text in characters; tokens past the model's ``data.max_length`` are cut
    anyway, so this only stops clients from shipping megabytes that get thrown away."""
    max_batch_tokens: int = 8192
    """Token budget of one model batch: ``@serve.batch`` sizes batches by the total
    token count of the queued requests, not by how many requests there are."""
    batch_wait_timeout_s: float = 0.005
    """How long a partly filled batch waits for more requests before it runs."""
    max_beam_size: int = 16
    """Largest ``beam_size`` a generate request may ask for."""
    max_generate_length: int = 512
    """Largest ``max_length`` (output tokens) a generate request may ask for."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "batch_wait_timeout_s":
                if not isinstance(value, (int, float)) or value < 0:
                    raise ConfigError(f"serve limit {f.name} must be a number >= 0, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"serve limit {f.name} must be an integer >= 1, got {value!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "ServeLimits":
        """Limits from a plain mapping (a Serve config's ``args``); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown serve limit(s) {unknown}; known: {sorted(known)}")
        return cls(**values)
