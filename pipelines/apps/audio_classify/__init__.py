"""Spoken-label classification: ``pipelines.apps.audio_classify.app``."""

from pipelines.apps.audio_classify.app import APP

__all__ = ["APP"]
