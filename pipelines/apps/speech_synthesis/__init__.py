"""Speech synthesis: ``pipelines.apps.speech_synthesis.app``."""

from pipelines.apps.speech_synthesis.app import APP

__all__ = ["APP"]
