"""Text classification inference: texts in, label probabilities out (``pipelines.inference.predictors``)."""

from __future__ import annotations

from pipelines.inference.media import TokenRows
from pipelines.inference.predictors import Classifier
from pipelines.media.tokenization import load_tokenizer


class TextClassifier(TokenRows, Classifier):
    """Rows are token ids, cut to the recipe's ``data.max_length``."""

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.source_tokenizer = load_tokenizer(loaded.tokenizer_json)
