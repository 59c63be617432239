"""Translation (seq2seq text -> text): a GNMT-style LSTM encoder-decoder with attention.

    source text -> source tokenizer -> encoder (bidirectional bottom, residuals)
        -> attention decoder -> target tokenizer;  scored by BLEU, chrF, bleu_tok_lc;
        served on /generate with JSON texts (beam search, or greedy streaming)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.apps.base import App, PreparedData, ServeSpec, checked_sizes
from pipelines.apps.objectives import Tokens
from pipelines.apps.routes import GENERATE
from pipelines.apps.translate.generate import TRANSLATION


class Translate(Tokens, App):
    name = "translate"
    medium = "text"
    shapes = (("seq2seq", "text", "attention"),)
    formats = ("parallel", "csv", "tsv", "jsonl", "parquet", "hf")
    meta_keys = frozenset({"src_vocab_size", "tgt_vocab_size", "source_lang", "target_lang"})
    wavefront = True
    generators = (TRANSLATION,)
    serve = ServeSpec(route=GENERATE, streaming=True)

    def check_recipe(self, recipe) -> None:
        from pipelines.media.sources import check_token_budget

        super().check_recipe(recipe)
        check_token_budget(recipe)

    def prepare(self, recipe) -> PreparedData:
        from pipelines.apps.translate.data import prepare_translation
        from pipelines.media.tokenization import translation_tokenizer_files

        data = prepare_translation(recipe)
        src, tgt = data.tokenizers.vocab_sizes
        meta = {"src_vocab_size": src, "tgt_vocab_size": tgt, "source_lang": recipe.data.source_lang,
                "target_lang": recipe.data.target_lang}
        return PreparedData(data.train, data.valid, {"src_vocab_size": src, "tgt_vocab_size": tgt},
                            translation_tokenizer_files(data.tokenizers), meta, data.train_stats.batches, data.report,
                            stage_s=data.stage_s)

    def encoder_source(self, sizes: dict[str, int]):
        from models.seq2seq import source_tokens

        return source_tokens(sizes["src_vocab_size"])

    def missing_files(self, path: Path) -> str | None:
        from pipelines.media.tokenization import missing_translation_tokenizer

        return missing_translation_tokenizer(path)

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        return checked_sizes(path, meta, ("src_vocab_size", "tgt_vocab_size"))

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.translate.predictor import Translator

        return Translator(loaded, budget=budget)

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        """BLEU, chrF and ``bleu_tok_lc`` on ``recipe.data.valid`` (the recipe's ``decode``)."""
        from pipelines.media.sources import check_records, read_pairs, with_index
        from pipelines.scoring.records import DECODED_COLUMNS, decoded, write_predictions
        from pipelines.scoring.text import translation_scores

        records = check_records(read_pairs(recipe.data, "valid"), recipe.data.on_bad_record, "eval")
        indexed = with_index(records.dataset.select_columns(["source", "target", "origin"]), records.rows)
        decode = recipe.decode
        rows = decoded(checkpoint, indexed, inputs="source", target="target", encoded=True, batch_size=256,
                       options={"beam_size": decode.beam_size, **decode.limits()}, device=device)
        scores = translation_scores([r["hypothesis"] for r in rows], [r["reference"] for r in rows])
        return {**scores, "beam_size": decode.beam_size, "skipped_records": records.skipped,
                **write_predictions(predictions, rows, DECODED_COLUMNS)}

    def final_scores(self, checkpoint: Path, recipe) -> dict[str, Any]:
        """BLEU, chrF and ``bleu_tok_lc`` of the decoded validation split (recipe's beam)."""
        if not recipe.data.valid:
            return {}
        scores = self.score(checkpoint, recipe)
        print(f"validation: BLEU {scores['bleu']}, chrF {scores['chrf']}, bleu_tok_lc {scores['bleu_tok_lc']} "
              f"(beam {scores['beam_size']}, {scores['examples']} sentences)", flush=True)
        return {f"val_{k}": scores[k] for k in ("bleu", "chrf", "bleu_tok_lc")}


APP = Translate()
