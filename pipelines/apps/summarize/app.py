"""Summarization (seq2seq text -> shorter text that copies from it): a pointer-generator.

    dialogue (or any long text) -> words, one vocabulary for both sides, the source's own
        unknown words given extended ids -> bidirectional LSTM encoder -> attention decoder
        with coverage, mixing "write a vocabulary word" and "copy a source word" (See et
        al. 2017) -> beam search with a minimum length, n-gram blocking and length
        normalisation;  scored by ROUGE-1/2/L (F1, stemmed); served on /generate (texts
        over data.max_length words answered 413)

Translation's encoder-decoder family with its own data (a shared word vocabulary, not
subwords: copying needs whole words), model (``models.pointer``), loss (the mixture's
log-likelihood plus coverage), metric and decoding defaults (the recipe's ``decode``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.layers import PAD_ID
from pipelines.apps.base import App, PreparedData, ServeSpec, checked_sizes, has_tokenizer
from pipelines.apps.objectives import Tokens
from pipelines.apps.routes import GENERATE
from pipelines.apps.summarize.generate import DIALOGUES
from pipelines.errors import ConfigError


class Copies(Tokens):
    """The ``Tokens`` objective over the pointer-generator's output ``(log_probs (B, T,
    V + X), coverage_loss (B, T))``: targets in extended ids, loss = summed negative
    log-likelihood + coverage; validation loss and accuracy from the likelihood alone."""

    def layer_factories(self, config, sizes: dict[str, int]):
        from models.pointer import pointer_layer_factories

        return pointer_layer_factories(config, vocab_size=sizes["vocab_size"])

    def build(self, config, sizes: dict[str, int], *, seed: int = 0, keep=None):
        from models.pointer import build_pointer

        return build_pointer(config, vocab_size=sizes["vocab_size"], seed=seed, keep=keep)

    def tied_layers(self, config) -> tuple[int, int] | None:
        return None

    def loss(self, out, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        from models.pointer import copy_loss

        return copy_loss(out, targets, label_smoothing, pad_id=PAD_ID)

    def eval_counts(self, out, targets: torch.Tensor) -> tuple[float, float, float]:
        from models.pointer import copy_loss

        log_probs, coverage_loss = out
        valid = targets != PAD_ID
        nll = float(copy_loss((log_probs, torch.zeros_like(coverage_loss)), targets, 0.0, pad_id=PAD_ID))
        return nll, float(((log_probs.argmax(-1) == targets) & valid).sum()), float(valid.sum())


class Summarize(Copies, App):
    name = "summarize"
    medium = "text"
    shapes = (("pointer_generator", "text", ""),)
    wavefront_blocker = ("its pointer-generator decoder (copy attention with coverage) has no chunked form yet; "
                         "translate's encoder-decoder has one")
    formats = ("jsonl", "csv", "tsv", "parquet", "hf")
    data_options = frozenset({"reference_columns"})
    meta_keys = frozenset({"vocab_size"})
    generators = (DIALOGUES,)
    serve = ServeSpec(route=GENERATE, streaming=False,
                      no_stream="summaries are decoded with beam search, n-gram blocking and a minimum length; "
                                "send the request without stream")

    def check_recipe(self, recipe) -> None:
        from pipelines.media.sources import check_token_budget

        super().check_recipe(recipe)
        check_token_budget(recipe)
        if recipe.tokenizer.kind != "wordlevel":
            raise ConfigError(f"tokenizer.kind: summarization copies whole source words, so it needs "
                              f"'wordlevel', not {recipe.tokenizer.kind!r}")
        if recipe.model.tie_embeddings:
            raise ConfigError("model.tie_embeddings is not supported by the pointer-generator; leave it false")

    def prepare(self, recipe) -> PreparedData:
        from pipelines.apps.summarize.data import prepare_summaries

        data = prepare_summaries(recipe)
        vocab = data.tokenizers.source.get_vocab_size()
        return PreparedData(data.train, data.valid, {"vocab_size": vocab},
                            {"tokenizer.json": data.tokenizers.source.to_str()}, {"vocab_size": vocab},
                            data.train_stats.batches, data.report)

    def missing_files(self, path: Path) -> str | None:
        return has_tokenizer(path)

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        return checked_sizes(path, meta, ("vocab_size",))

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.summarize.predictor import Summarizer

        return Summarizer(loaded, budget=budget)

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        """ROUGE-1/2/L F1 (stemmed) of the decoded ``recipe.data.valid`` (the recipe's ``decode``)."""
        from pipelines.apps.summarize.evaluate import evaluate

        return evaluate(checkpoint, recipe, predictions, device=device)

    def final_scores(self, checkpoint: Path, recipe) -> dict[str, Any]:
        if not recipe.data.valid:
            return {}
        scores = self.score(checkpoint, recipe)
        print(f"validation: ROUGE-1 {scores['rouge1']}, ROUGE-2 {scores['rouge2']}, ROUGE-L {scores['rougeL']} "
              f"(beam {scores['beam_size']}, {scores['examples']} texts)", flush=True)
        return {f"val_{k}": scores[k] for k in ("rouge1", "rouge2", "rougeL")}


APP = Summarize()
