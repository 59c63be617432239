"""Summarization: ``pipelines.apps.summarize.app``."""

from pipelines.apps.summarize.app import APP

__all__ = ["APP"]
