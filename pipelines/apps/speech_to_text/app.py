"""Speech-to-text (seq2seq log-mel frames -> transcript): an attention decoder (greedy or
beam) or CTC (``model.decoder: ctc``; best path or prefix beam search).

    recording -> log-mel -> conv subsampler -> encoder -> attention decoder | CTC head
        -> transcript tokenizer;  scored by WER, CER, exact match;  served on /generate
        with multipart uploads (attention decoders also stream)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.config import SUBSAMPLING
from pipelines.apps.base import App, PreparedData, ServeSpec, checked_sizes, has_tokenizer
from pipelines.apps.objectives import CTC, Tokens
from pipelines.apps.routes import GENERATE
from pipelines.apps.speech_to_text.generate import SPEECH
from pipelines.errors import ConfigError


class _Speech(App):
    """What both decoders share: data, checkpoint files, predictor, scoring, serving."""

    medium = "audio"
    formats = ("audio-folder",)
    meta_keys = frozenset({"feature_dim", "tgt_vocab_size"})
    serve = ServeSpec(route=GENERATE, streaming=True, per_token=SUBSAMPLING)

    def check_recipe(self, recipe) -> None:
        from pipelines.media.audio.folders import check_recipe

        check_recipe(recipe)  # first: the medium's own messages (format, wavefront, frame budget)
        super().check_recipe(recipe)
        if recipe.data.audio.tail_cut_copies:
            raise ConfigError("data.audio.tail_cut_copies is for classifiers (model.kind seq2vec): a cut copy of "
                              "an utterance would keep its whole transcript")

    def prepare(self, recipe) -> PreparedData:
        from pipelines.apps.speech_to_text.data import prepare_speech

        data = prepare_speech(recipe)
        vocab, feature_dim = data.tokenizer.get_vocab_size(), recipe.data.audio.n_mels
        sizes = {"feature_dim": feature_dim, "tgt_vocab_size": vocab}
        return PreparedData(data.train, data.valid, sizes, {"tokenizer.json": data.tokenizer.to_str()}, dict(sizes),
                            data.train_stats.batches, data.report)

    def missing_files(self, path: Path) -> str | None:
        return has_tokenizer(path)

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        return checked_sizes(path, meta, ("feature_dim", "tgt_vocab_size"))

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.speech_to_text.predictor import SpeechRecognizer

        return SpeechRecognizer(loaded, budget=budget)

    def eval_data(self, raw: dict[str, Any]) -> None:
        from pipelines.media.audio.folders import without_valid_takes

        without_valid_takes(raw)

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        """WER, CER and exact-match rate on the recipe's validation recordings (its ``decode``)."""
        from pipelines.media.audio.folders import featurized_validation
        from pipelines.scoring.records import DECODED_COLUMNS, decoded, write_predictions
        from pipelines.scoring.speech import speech_scores

        records = featurized_validation(recipe, "transcript")
        options = {"beam_size": recipe.decode.beam_size, "max_length": recipe.decode.max_length}
        rows = decoded(checkpoint, records.dataset, inputs="features", target="transcript", options=options,
                       device=device)
        scores = speech_scores([r["hypothesis"] for r in rows], [r["reference"] for r in rows])
        return {**scores, "beam_size": recipe.decode.beam_size, "skipped_records": records.skipped,
                **write_predictions(predictions, rows, DECODED_COLUMNS)}

    def final_scores(self, checkpoint: Path, recipe) -> dict[str, Any]:
        """WER and CER of the decoded validation split (recipe's beam)."""
        if not (recipe.data.valid or recipe.data.audio.valid_takes):
            return {}
        scores = self.score(checkpoint, recipe)
        print(f"validation: WER {scores['wer']:.4f}, CER {scores['cer']:.4f} (beam {scores['beam_size']}, "
              f"{scores['examples']} utterances)", flush=True)
        return {f"val_{k}": scores[k] for k in ("wer", "cer", "exact_match")}


class SpeechToText(Tokens, _Speech):
    """The translation model with the audio front end in place of the source embedding."""

    name = "speech_to_text"
    shapes = (("seq2seq", "audio", "attention"),)
    generators = (SPEECH,)

    def encoder_source(self, sizes: dict[str, int]):
        from models.frontends import log_mel
        from models.seq2seq import source

        return source(log_mel(sizes["feature_dim"]))


class SpeechToTextCTC(CTC, _Speech):
    """Frames in, per-step token log-probabilities out, no decoder: no streaming."""

    name = "speech_to_text"
    shapes = (("seq2seq", "audio", "ctc"),)
    serve = ServeSpec(route=GENERATE, per_token=SUBSAMPLING,
                      no_stream="this speech model decodes with CTC, which has no step-by-step decoder to stream from")

    def layer_factories(self, config, sizes: dict[str, int]):
        from models.ctc import ctc_layer_factories
        from models.frontends import log_mel

        return ctc_layer_factories(config, frontend=log_mel(sizes["feature_dim"]),
                                   tgt_vocab_size=sizes["tgt_vocab_size"])

    def build(self, config, sizes: dict[str, int], *, seed: int = 0, keep=None):
        from models.ctc import build_ctc
        from models.frontends import log_mel

        return build_ctc(config, frontend=log_mel(sizes["feature_dim"]), tgt_vocab_size=sizes["tgt_vocab_size"],
                         seed=seed, keep=keep)


class _SpeechToTextApp(SpeechToText):
    variants = (SpeechToTextCTC(),)


APP = _SpeechToTextApp()
