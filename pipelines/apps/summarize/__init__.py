"""Summarization: ``pipelines.apps.summarize.app``."""
