"""Conditional text generation: ``pipelines.apps.text_generate.app``."""

from pipelines.apps.text_generate.app import APP

__all__ = ["APP"]
