"""Speech synthesis: ``pipelines.apps.speech_synthesis.app``."""
