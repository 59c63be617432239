"""Video captioning: vec2seq (the clip pooled to one vector that conditions an LSTM
decoder) or, as a variant, seq2seq (the decoder attends over every frame's encoder state).

    clip -> frames -> frame CNN -> encoder -> summary vector | attention -> decoder
        -> caption tokenizer;  scored by exact match and BLEU;  served on /generate with
        multipart uploads
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.apps.base import App, PreparedData, ServeSpec, checked_sizes, has_tokenizer
from pipelines.apps.objectives import Tokens
from pipelines.apps.routes import GENERATE


class VideoCaption(Tokens, App):
    name = "video_caption"
    medium = "video"
    shapes = (("vec2seq", "video", ""),)
    formats = ("video-folder",)
    meta_keys = frozenset({"frame_size", "tgt_vocab_size"})
    serve = ServeSpec(route=GENERATE, streaming=True)

    def check_recipe(self, recipe) -> None:
        from pipelines.media.video.folders import check_recipe

        check_recipe(recipe)  # first: the medium's own messages (format, wavefront, frame budget)
        super().check_recipe(recipe)

    def prepare(self, recipe) -> PreparedData:
        from pipelines.apps.video_caption.data import prepare_captions

        data = prepare_captions(recipe)
        vocab, size = data.tokenizer.get_vocab_size(), recipe.data.video.size
        sizes = {"frame_size": size, "tgt_vocab_size": vocab}
        return PreparedData(data.train, data.valid, sizes, {"tokenizer.json": data.tokenizer.to_str()}, dict(sizes),
                            data.train_stats.batches, data.report)

    def encoder_source(self, sizes: dict[str, int]):
        from models.frontends import frames
        from models.seq2seq import source

        return source(frames(sizes["frame_size"]))

    def builders(self):
        from models.vec2seq import build_vec2seq, vec2seq_layer_factories

        return vec2seq_layer_factories, build_vec2seq

    def missing_files(self, path: Path) -> str | None:
        return has_tokenizer(path)

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        return checked_sizes(path, meta, ("frame_size", "tgt_vocab_size"))

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.video_caption.predictor import VideoCaptioner

        return VideoCaptioner(loaded, budget=budget)

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None) -> dict[str, Any]:
        """Exact-match rate (whitespace- and case-normalised) and BLEU on the recipe's
        validation clips, with the recipe's ``decode`` settings."""
        from pipelines.media.video.folders import validation_clips
        from pipelines.scoring.records import DECODED_COLUMNS, decoded, write_predictions
        from pipelines.scoring.text import caption_scores

        records = validation_clips(recipe, "caption")
        options = {"beam_size": recipe.decode.beam_size, "max_length": recipe.decode.max_length}
        rows = decoded(checkpoint, records.dataset, inputs="frames", target="caption", options=options, batch_size=64)
        scores = caption_scores([r["hypothesis"] for r in rows], [r["reference"] for r in rows])
        return {**scores, "beam_size": recipe.decode.beam_size, "skipped_records": records.skipped,
                **write_predictions(predictions, rows, DECODED_COLUMNS)}

    def final_scores(self, checkpoint: Path, recipe) -> dict[str, Any]:
        """Exact match and BLEU of the decoded validation captions (recipe's beam)."""
        if not recipe.data.valid:
            return {}
        scores = self.score(checkpoint, recipe)
        print(f"validation: exact match {scores['exact_match']:.4f}, BLEU {scores['bleu']} "
              f"(beam {scores['beam_size']}, {scores['examples']} clips)", flush=True)
        return {f"val_{k}": scores[k] for k in ("exact_match", "bleu")}


class AttentionCaption(VideoCaption):
    """The seq2seq attention decoder over every frame's encoder state (``model.kind:
    seq2seq``, ``input: video``): the alternative to one vector."""

    shapes = (("seq2seq", "video", "attention"),)

    def builders(self):
        return Tokens.builders(self)


class _VideoCaptionApp(VideoCaption):
    variants = (AttentionCaption(),)


APP = _VideoCaptionApp()
