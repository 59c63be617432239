"""Text classification: ``pipelines.apps.text_classify.app``."""
