"""Video captioning (one video vector, or attention over frames as a variant): ``pipelines.apps.video_caption.app``."""
