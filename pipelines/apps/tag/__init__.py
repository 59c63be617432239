"""Sequence tagging (named entities): ``pipelines.apps.tag.app``."""

from pipelines.apps.tag.app import APP

__all__ = ["APP"]
