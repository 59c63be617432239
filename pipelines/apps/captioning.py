"""Captioning frames, what video and image captioning share::

    frames (a clip, or an image: one frame) -> frame CNN -> [encoder RNN] -> one vector
        -> LSTM decoder -> caption tokens (tokenizer.json, trained on the captions);
        scored by exact match and BLEU; served on /generate with multipart uploads

A captioning application mixes :class:`Captioning` in before ``App`` and says only how
its medium is read: :meth:`~Captioning.caption_batches` (training and validation frames
with their captions, bucketed) and :meth:`~Captioning.validation_split` (the validation
frames ``rayseq eval`` and the end-of-training scores decode). The model is
``models.vec2seq`` over the frame CNN of ``models.video`` (``models.frontends.frames``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.apps.base import PreparedData, ServeSpec, checked_sizes, has_tokenizer
from pipelines.apps.objectives import Tokens
from pipelines.apps.routes import GENERATE


class Captioning(Tokens):
    """The captioning half of an application over RGB frames (``Tokens`` objective)."""

    wavefront_blocker = ("its conditioned decoder layer has no chunked form yet; translate's encoder-decoder "
                         "has one")

    meta_keys = frozenset({"frame_size", "tgt_vocab_size"})
    serve = ServeSpec(route=GENERATE, streaming=True)

    def frame_size(self, recipe) -> int:
        """The side of the recipe's square frames (``data.video.size``, ``data.image.size``)."""
        raise NotImplementedError

    def caption_batches(self, recipe):
        """The recipe's frames against their captions (``pipelines.media.batches.MediaBatches``)."""
        raise NotImplementedError

    def validation_split(self, recipe):
        """The recipe's validation frames with a ``caption`` column (a ``CheckedSplit``)."""
        raise NotImplementedError

    def prepare(self, recipe) -> PreparedData:
        data = self.caption_batches(recipe)
        sizes = {"frame_size": self.frame_size(recipe), "tgt_vocab_size": data.tokenizer.get_vocab_size()}
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

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        """Exact-match rate (whitespace- and case-normalised) and BLEU on the recipe's
        validation frames, with the recipe's ``decode`` settings."""
        from pipelines.scoring.records import DECODED_COLUMNS, decoded, write_predictions
        from pipelines.scoring.text import caption_scores

        records = self.validation_split(recipe)
        options = {"beam_size": recipe.decode.beam_size, "max_length": recipe.decode.max_length}
        rows = decoded(checkpoint, records.dataset, inputs="frames", target="caption", options=options, batch_size=64,
                       device=device)
        scores = caption_scores([r["hypothesis"] for r in rows], [r["reference"] for r in rows])
        return {**scores, "beam_size": recipe.decode.beam_size, "skipped_records": records.skipped,
                **write_predictions(predictions, rows, DECODED_COLUMNS)}

    def final_scores(self, checkpoint: Path, recipe) -> dict[str, Any]:
        """Exact match and BLEU of the decoded validation captions (recipe's beam)."""
        if not recipe.data.valid:
            return {}
        scores = self.score(checkpoint, recipe)
        print(f"validation: exact match {scores['exact_match']:.4f}, BLEU {scores['bleu']} "
              f"(beam {scores['beam_size']}, {scores['examples']} {self.medium}s)", flush=True)
        return {f"val_{k}": scores[k] for k in ("exact_match", "bleu")}
