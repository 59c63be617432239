"""Sequence tagging (named entities): ``pipelines.apps.tag.app``."""
