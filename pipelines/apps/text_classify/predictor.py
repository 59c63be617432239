"""Text classification inference: texts in, label probabilities out (``pipelines.inference.predictors``)."""

from __future__ import annotations

from typing import Iterator

import torch

from pipelines.inference.predictors import Batch, Classifier
from pipelines.media.bucketing import length_sorted_batches
from pipelines.media.tokenization import encode_batch, load_tokenizer


class TextClassifier(Classifier):
    """Rows are token ids, cut to the recipe's ``data.max_length``."""

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.tokenizer = load_tokenizer(loaded.tokenizer_json)
        self.max_length = loaded.recipe.data.max_length

    def rows(self, inputs: list[str]) -> list[list[int]]:
        return encode_batch(self.tokenizer, inputs, self.max_length)[0]

    def batches(self, rows: list[list[int]], budget: int) -> Iterator[Batch]:
        for index, tokens, lengths in length_sorted_batches(rows, budget):
            yield index, torch.from_numpy(tokens).to(self.device), torch.from_numpy(lengths)
