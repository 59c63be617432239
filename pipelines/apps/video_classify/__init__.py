"""Video classification: ``pipelines.apps.video_classify.app``."""

from pipelines.apps.video_classify.app import APP

__all__ = ["APP"]
