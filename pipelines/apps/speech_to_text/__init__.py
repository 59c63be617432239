"""Speech-to-text (attention decoder, or CTC as a variant): ``pipelines.apps.speech_to_text.app``."""
