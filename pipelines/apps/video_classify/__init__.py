"""Video classification: ``pipelines.apps.video_classify.app``."""
