"""Image captioning (CNN -> one vector -> LSTM decoder): ``pipelines.apps.image_caption.app``."""
