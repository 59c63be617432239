"""Translation: ``pipelines.apps.translate.app``."""

from pipelines.apps.translate.app import APP

__all__ = ["APP"]
