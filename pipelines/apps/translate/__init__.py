"""Translation: ``pipelines.apps.translate.app``."""
