"""Conditional text generation: ``pipelines.apps.text_generate.app``."""
