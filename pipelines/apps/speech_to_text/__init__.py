"""Speech-to-text (attention decoder, or CTC as a variant): ``pipelines.apps.speech_to_text.app``."""

from pipelines.apps.speech_to_text.app import APP

__all__ = ["APP"]
