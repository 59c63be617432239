"""Text classification (seq2vec on token ids): sentiment, question types, any labelled text.

    text -> tokenizer (trained on the training split) -> embedding -> deep RNN -> pooled
         -> label;  scored by accuracy;  served on /classify with JSON texts
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.apps.base import App, PreparedData, ServeSpec, checked_sizes, has_tokenizer, labels_from_meta
from pipelines.apps.objectives import Labels
from pipelines.apps.routes import CLASSIFY
from pipelines.apps.text_classify.generate import SENTIMENT

TEXT_FORMATS = ("labeled-lines", "sst-trees", "csv", "tsv", "jsonl", "parquet", "hf")


class TextClassify(Labels, App):
    name = "text_classify"
    medium = "text"
    shapes = (("seq2vec", "text", ""),)
    formats = TEXT_FORMATS
    pretrained_embeddings = True
    data_options = frozenset({"valid_format", "valid_fraction", "label_names", "tree_labels"})
    meta_keys = frozenset({"labels", "vocab_size"})
    wavefront = True
    generators = (SENTIMENT,)
    serve = ServeSpec(route=CLASSIFY)

    def check_recipe(self, recipe) -> None:
        from pipelines.media.sources import check_token_budget

        super().check_recipe(recipe)
        check_token_budget(recipe)

    def prepare(self, recipe) -> PreparedData:
        from pipelines.apps.text_classify.data import prepare_text_classification

        data = prepare_text_classification(recipe)
        sizes = {"vocab_size": data.tokenizer.get_vocab_size(), "num_labels": len(data.labels)}
        meta = {"labels": data.labels, "vocab_size": data.tokenizer.get_vocab_size()}
        initial = self.pretrained(recipe, data.tokenizer, sizes, data.report)
        return PreparedData(data.train, data.valid, sizes, {"tokenizer.json": data.tokenizer.to_str()}, meta,
                            data.train_stats.batches, data.report, initial)

    def pretrained(self, recipe, tokenizer, sizes: dict[str, int], report: dict[str, Any]) -> dict[str, Any]:
        """``model.pretrained_embeddings`` as the token embedding's starting value (and its
        coverage in ``report``), or nothing."""
        path = recipe.model.pretrained_embeddings
        if not path:
            return {}
        import torch

        from models.layers import TokenEmbedding
        from pipelines.media.embeddings import load_word_vectors
        from pipelines.media.tokenization import SPECIAL_TOKENS

        vectors = load_word_vectors(path, tokenizer.get_vocab(), recipe.model.embed_dim, specials=set(SPECIAL_TOKENS),
                                    seed=recipe.train.seed)
        print(f"pretrained embeddings: {vectors.covered} of {vectors.words} vocabulary words "
              f"({100 * vectors.coverage:.1f}%) have a vector in {vectors.source}"
              + (" (frozen)" if recipe.model.freeze_embeddings else ""), flush=True)
        report.update(vectors.report())
        first = self.build(recipe.model, sizes, keep=[0])  # the layer the embedding is in
        name = next(f"{n}.embed.weight" for n, m in first.named_modules() if isinstance(m, TokenEmbedding))
        return {name: torch.from_numpy(vectors.matrix)}

    def frontend(self, sizes: dict[str, int]):
        from models.frontends import tokens

        return tokens(sizes["vocab_size"])

    def missing_files(self, path: Path) -> str | None:
        return has_tokenizer(path)

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        return {"num_labels": labels_from_meta(path, meta), **checked_sizes(path, meta, ("vocab_size",))}

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.text_classify.predictor import TextClassifier

        return TextClassifier(loaded, budget=budget)

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        """Accuracy on ``recipe.data.valid``, records read and checked as in training."""
        from pipelines.media.sources import check_records, read_split, with_index
        from pipelines.scoring.records import accuracy, classified

        records = check_records(read_split(recipe.data, "valid"), recipe.data.on_bad_record, "eval")
        indexed = with_index(records.dataset.select_columns(["text", "label", "origin"]), records.rows)
        rows = classified(checkpoint, indexed, inputs="text", encoded=True, max_length=recipe.data.max_length,
                          batch_size=512, device=device)
        return accuracy(rows, records.skipped, predictions)


APP = TextClassify()
