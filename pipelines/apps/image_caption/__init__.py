"""Image captioning (CNN -> one vector -> LSTM decoder): ``pipelines.apps.image_caption.app``."""

from pipelines.apps.image_caption.app import APP

__all__ = ["APP"]
