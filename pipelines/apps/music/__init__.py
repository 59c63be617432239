"""Music (four-voice chorales): ``pipelines.apps.music.app``."""

from pipelines.apps.music.app import APP

__all__ = ["APP"]
