"""Spoken-label classification: ``pipelines.apps.audio_classify.app``."""
