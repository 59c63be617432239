"""Music (four-voice chorales): ``pipelines.apps.music.app``."""
