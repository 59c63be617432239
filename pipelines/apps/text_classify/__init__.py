"""Text classification: ``pipelines.apps.text_classify.app``."""

from pipelines.apps.text_classify.app import APP

__all__ = ["APP"]
